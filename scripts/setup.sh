#!/usr/bin/env bash
# Installs what the engine needs on a fresh Debian/Ubuntu machine, and nothing that is already there:
# Chromium (its SwiftShader is the WebGPU adapter on machines without a GPU, and the browser for the
# browser tests), the Vulkan loader Dawn opens in Node, and the npm dependencies.
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

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
