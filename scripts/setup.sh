#!/usr/bin/env bash
# Installs what the engine needs on a fresh Debian/Ubuntu machine, and nothing that is already there:
# Chromium (its SwiftShader is a WebGPU adapter on machines without a GPU, and the browser for the
# browser tests), the Vulkan loader Dawn opens in Node, on Debian 12 Mesa's lavapipe from
# bookworm-backports (a faster CPU adapter with shader-f16; bookworm's own Mesa 22 does not work
# with Dawn), and the npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in chromium libvulkan1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing ${missing[*]} with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install ${missing[*]} (no apt-get here); a GPU with Vulkan drivers also works" >&2
  fi
fi

# Lavapipe: Debian 12 only (other systems are left alone). Mesa >= 25 comes from bookworm-backports.
lavapipe_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null) || return 1
  dpkg --compare-versions "$v" ge 25
}
if [ -r /etc/os-release ] && . /etc/os-release && [ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ] \
  && command -v apt-get >/dev/null 2>&1; then
  if lavapipe_ok; then
    : # already there
  else
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "setup: adding the bookworm-backports apt source (/etc/apt/sources.list.d/bookworm-backports.sources)" >&2
      printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' 'Components: main' \
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
        | $sudo tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
    fi
    echo "setup: installing mesa-vulkan-drivers (lavapipe, Mesa >= 25) from bookworm-backports" >&2
    if $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -t bookworm-backports \
      mesa-vulkan-drivers libvulkan1 >/dev/null && lavapipe_ok; then
      echo "setup: lavapipe installed ($(dpkg-query -W -f='${Version}' mesa-vulkan-drivers))" >&2
    else
      echo "setup: could not install lavapipe from bookworm-backports; SwiftShader stays the CPU adapter (f16 tests will fail)" >&2
    fi
  fi
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
