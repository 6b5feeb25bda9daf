// Headless Chromium with WebGPU for the browser benchmark and the browser tests. On a machine
// without a GPU Chromium's WebGPU runs on SwiftShader with exactly these flags (no
// --use-webgpu-adapter or --use-angle needed); a page must come from a secure origin
// (http://127.0.0.1 counts) for navigator.gpu to exist.
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'puppeteer-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export const CHROMIUM_FLAGS = [
  '--enable-unsafe-webgpu',
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export async function launchChromium(extraArgs: string[] = []): Promise<{ browser: Browser; close: () => Promise<void> }> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: run scripts/setup.sh (apt-get install chromium) or set CHROMIUM_PATH`);
  let puppeteer: typeof import('puppeteer-core').default;
  try {
    puppeteer = (await import('puppeteer-core')).default;
  } catch (e) {
    throw new Error(`the browser runs need the puppeteer-core package (npm install -D puppeteer-core): ${(e as Error).message}`);
  }
  const profile = mkdtempSync(join(tmpdir(), 'ldm-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, ...extraArgs],
    protocolTimeout: 600_000,
  });
  return {
    browser,
    close: async () => {
      await browser.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
