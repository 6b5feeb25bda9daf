// End to end in headless Chromium (WebGPU on SwiftShader where there is no GPU): the demo page
// served by Vite loads, generates with the bundled ldm-mnist (progress, timings, gallery), matches
// the Node output for the same options, writes PNGs whose parameters restore the form when dropped
// back (and regenerate the same bytes, after a lost device and its recovery), cancels with the GPU
// memory back where it was, reports a corrupt file, a 404 and a truncated safetensors file, says
// so without WebGPU, and turns a text prompt into an image with a tiny Stable Diffusion folder given
// by URL, and with a tiny SDXL folder run with the SD-Turbo family's defaults from the family picker. Screenshots at desktop and phone width go to test/artifacts/demo-*.png (a failing test
// leaves test/artifacts/<test>.png).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { build, createServer, type ViteDevServer } from 'vite';
import { cpSync, mkdirSync, mkdtempSync, writeFileSync, rmSync, readFileSync, statSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, resolve, sep } from 'node:path';
import type { Browser, ElementHandle, Page } from 'puppeteer-core';
import { CHROMIUM, CHROMIUM_FLAGS, launchChromium } from '../../bench/chromium.js';
import { Engine, LDMPipeline, readGenerationParameters, readTextChunks } from '../../src/index.js';
import { buildTinySdFolder } from '../tiny_sd.js';
import { buildTinyText2ImgFolder } from '../tiny_text2img.js';
import { buildTinySdxlFolder } from '../tiny_sdxl.js';

const root = resolve(import.meta.dirname, '..', '..');
const ARTIFACTS = join(root, 'test', 'artifacts');
const OPTS = { classLabel: 3, steps: 4, seed: 0, guidance: 3 };

let server: ViteDevServer;
let url: string;
let browser: Browser;
let closeBrowser: () => Promise<void>;
let page: Page;
const consoleLines: string[] = [];

async function openDemo(): Promise<void> {
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(() => ['ready', 'nogpu', 'error'].includes(document.body.dataset.state ?? ''), { timeout: 90_000 });
  const state = await page.evaluate(() => document.body.dataset.state);
  if (state !== 'ready') throw new Error(`demo page is ${state}: ${await page.$eval('#error', (e) => e.textContent)}`);
}

async function setOptions(o: { steps: number; seed: number; guidance: number; classLabel: number; sampler?: string }): Promise<void> {
  await page.evaluate((o) => {
    const set = (id: string, v: string) => {
      const e = document.getElementById(id) as HTMLInputElement | HTMLSelectElement;
      e.value = v;
      e.dispatchEvent(new Event('change'));
    };
    (document.querySelector('input[name=source][value=default]') as HTMLInputElement).checked = true;
    set('steps', String(o.steps));
    set('seed', String(o.seed));
    set('guidance', String(o.guidance));
    set('class', String(o.classLabel));
    set('sampler', o.sampler ?? '');
  }, o);
}

async function waitState(states: string[], timeout: number): Promise<string> {
  await page.waitForFunction((s: string[]) => s.includes(document.body.dataset.state ?? ''), { timeout, polling: 200 }, states);
  return (await page.evaluate(() => document.body.dataset.state))!;
}

/** Serves the folders under `dir` over plain HTTP on 127.0.0.1, like a static host of diffusers folders. The
 * page comes from the Vite port, so the answers carry CORS headers. */
async function serveFolders(dir: string): Promise<{ url: string; requests: string[]; close: () => Promise<void> }> {
  const requests: string[] = [];
  const srv: Server = createHttpServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requests.push(path);
    const file = resolve(dir, '.' + path);
    let ok = false;
    try {
      ok = file.startsWith(dir + sep) && statSync(file).isFile();
    } catch {
      ok = false;
    }
    const headers = { 'access-control-allow-origin': '*' };
    if (!ok) {
      res.writeHead(404, headers).end(`${path} not found`);
      return;
    }
    const body = readFileSync(file);
    const type = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json' }[extname(file)] ?? 'application/octet-stream';
    res.writeHead(200, { ...headers, 'content-length': String(body.length), 'content-type': type }).end(body);
  });
  await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
  const port = (srv.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, requests, close: () => new Promise<void>((ok) => srv.close(() => ok())) };
}


/** The bytes behind the page's "download PNG" link. */
async function downloadedPng(): Promise<Buffer> {
  const bytes = await page.evaluate(async () => {
    const a = document.getElementById('download') as HTMLAnchorElement;
    return Array.from(new Uint8Array(await (await fetch(a.href)).arrayBuffer()));
  });
  return Buffer.from(bytes);
}

const memory = () => page.evaluate(() => (globalThis as unknown as { ldmDemo: { engine: Engine } }).ldmDemo.engine.memory().inUseBytes);
const text = (sel: string) => page.$eval(sel, (e) => e.textContent ?? '');

beforeAll(async () => {
  server = await createServer({ configFile: join(root, 'vite.config.ts'), // No HMR and no watching: edits elsewhere in the checkout must not reload the page mid-test.
    server: { host: '127.0.0.1', port: 0, strictPort: false, hmr: false, watch: { ignored: ['**/*'] } }, logLevel: 'error', clearScreen: false });
  await server.listen();
  const addr = server.httpServer!.address() as { port: number };
  url = `http://127.0.0.1:${addr.port}/`;
  ({ browser, close: closeBrowser } = await launchChromium());
  page = await browser.newPage();
  page.setDefaultTimeout(280_000);
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${(e as Error).message}`));
}, 300_000);

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail' && page) {
    mkdirSync(ARTIFACTS, { recursive: true });
    const name = ctx.task.name.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').toLowerCase();
    await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true }).catch(() => {});
    writeFileSync(join(ARTIFACTS, `${name}.console.txt`), consoleLines.join('\n'));
  }
});

afterAll(async () => {
  await closeBrowser?.();
  await server?.close();
});

describe('demo page in headless Chromium', () => {
  it('loads and finds a WebGPU adapter', async () => {
    await openDemo();
    expect(await text('#gpu-info')).toMatch(/WebGPU adapter: .* · features: /);
    expect(await page.$eval('#generate', (b) => (b as HTMLButtonElement).disabled)).toBe(false);
    await page.waitForFunction(() => /cache: \d+ file/.test(document.getElementById('cache-size')?.textContent ?? ''));
  }, 300_000);

  let browserPixels: number[] = [];
  let firstPng: Buffer;
  it('generates a digit with the bundled ldm-mnist (class 3, 4 steps, seed 0): progress, timings, gallery, PNG parameters', async () => {
    await setOptions(OPTS);
    await page.click('#generate');
    const state = await waitState(['done', 'error', 'cancelled'], 280_000);
    expect(state, await text('#error')).toBe('done');
    const r = await page.evaluate(() => {
      const c = document.getElementById('result') as HTMLCanvasElement;
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height);
      const preview = document.getElementById('preview') as HTMLCanvasElement;
      return { w: c.width, h: c.height, data: Array.from(d.data), previewW: preview.width, steps: (document.getElementById('step-progress') as HTMLProgressElement).value, net: (globalThis as unknown as { ldmDemo: { networkRequests: number } }).ldmDemo.networkRequests };
    });
    expect([r.w, r.h]).toEqual([32, 32]);
    expect(r.previewW).toBe(32);
    expect(r.steps).toBe(OPTS.steps);
    expect(r.net).toBeGreaterThan(0);
    browserPixels = r.data;
    // A digit: a few bright strokes on black.
    let bright = 0;
    for (let i = 0; i < r.data.length; i += 4) if (r.data[i] > 128) bright++;
    expect(bright).toBeGreaterThan(20);
    expect(bright).toBeLessThan(600);
    // Progress, timings and the download progress as the page shows them.
    const stepText = await text('#step-text');
    const timings = await text('#timings');
    console.log(`progress: ${stepText} | download: ${await text('#download-text')} | ${await text('#cache-size')}\ntimings: ${timings}`);
    expect(stepText).toMatch(/^step 4 \/ 4 · \d+\.\d\d it\/s · ETA 0 ms$/);
    expect(timings).toMatch(/steps4 × [\d.]+ m?s \(\d+, \d+, \d+, \d+ ms\)live preview[\d.]+ m?sdecode[\d.]+ m?s.*peak GPU memory\d+\.\d MiB/);
    expect(await text('#download-text')).toMatch(/loaded \d+\.\d MiB in/);
    expect(await text('#cache-size')).toMatch(/cache: [1-9]\d* file\(s\), [1-9][\d.]* MiB/);
    expect(await page.$$eval('#gallery li', (l) => l.length)).toBe(1);
    // The PNG carries the parameters (A1111 text and exact JSON).
    firstPng = await downloadedPng();
    expect(readTextChunks(firstPng).parameters).toBe('Steps: 4, Sampler: DDIM, CFG scale: 3, Seed: 0, Size: 32x32, Model: ldm-mnist, Class: 3');
    expect(readGenerationParameters(firstPng)?.params).toMatchObject({ model: 'ldm-mnist', classLabels: [3], steps: 4, guidanceScale: 3, seed: 0, width: 32, height: 32, batchSize: 1, batchIndex: 0 });
  }, 300_000);

  it('draws the same pixels as the Node pipeline for the same seed and options', async () => {
    expect(browserPixels.length).toBe(32 * 32 * 4);
    // SwiftShader and the page's precision (Node would pick lavapipe, with shader-f16, by default).
    const engine = await Engine.create({ adapterKind: 'swiftshader', f16: readGenerationParameters(firstPng)!.params.f16 ?? false });
    const pipe = await LDMPipeline.fromPretrained(engine, join(root, 'models', 'ldm-mnist'));
    const out = await pipe.generate({ classLabels: [OPTS.classLabel], steps: OPTS.steps, guidanceScale: OPTS.guidance, seed: OPTS.seed });
    out.images.dispose();
    pipe.dispose();
    const node = out.rgba[0].data;
    let maxDiff = 0;
    let differing = 0;
    for (let i = 0; i < node.length; i++) {
      const d = Math.abs(node[i] - browserPixels[i]);
      if (d > 0) differing++;
      maxDiff = Math.max(maxDiff, d);
    }
    console.log(`browser vs Node (ldm-mnist class 3, 4 steps, seed 0): largest difference ${maxDiff}/255, ${differing} of ${node.length} bytes differ`);
    // Both run the same WGSL on SwiftShader (forced in Node: lavapipe would be the default); the bound allows for a different Vulkan driver build.
    expect(maxDiff).toBeLessThanOrEqual(2);
  }, 600_000);

  it('an ancestral sampler (Euler a: fresh noise every step) draws the same pixels in the browser as in Node', async () => {
    const o = { ...OPTS, seed: 5, sampler: 'euler-a' };
    await openDemo();
    await setOptions(o);
    await page.click('#generate');
    expect(await waitState(['done', 'error', 'cancelled'], 240_000), await page.$eval('#error', (e) => e.textContent ?? '')).toBe('done');
    const browser = await page.evaluate(() => {
      const c = document.getElementById('result') as HTMLCanvasElement;
      return Array.from(c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data);
    });
    const engine = await Engine.create({ adapterKind: 'swiftshader', f16: false });
    const pipe = await LDMPipeline.fromPretrained(engine, join(root, 'models', 'ldm-mnist'));
    const out = await pipe.generate({ classLabels: [o.classLabel], steps: o.steps, guidanceScale: o.guidance, seed: o.seed, sampler: o.sampler });
    out.images.dispose();
    pipe.dispose();
    const node = out.rgba[0].data;
    let maxDiff = 0;
    for (let i = 0; i < node.length; i++) maxDiff = Math.max(maxDiff, Math.abs(node[i] - browser[i]));
    console.log(`browser vs Node, Euler a (ldm-mnist class 3, 4 steps, seed 5): largest difference ${maxDiff}/255`);
    expect(browser.length).toBe(node.length);
    expect(maxDiff).toBeLessThanOrEqual(2); // as for the default sampler above
  }, 300_000);

  it('restores the parameters from a dropped PNG and, after a lost device and its recovery, makes the same bytes', async () => {
    // Other values in the form, then the PNG dropped onto the page.
    await setOptions({ steps: 9, seed: 77, guidance: 5, classLabel: 8 });
    await page.evaluate((bytes: number[]) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], 'digit.png', { type: 'image/png' }));
      document.querySelector('.stage')!.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, Array.from(firstPng));
    await page.waitForFunction(() => /parameters restored from digit\.png/.test(document.getElementById('status')?.textContent ?? ''));
    const form = await page.evaluate(() => ['steps', 'seed', 'guidance', 'class', 'batch'].map((id) => (document.getElementById(id) as HTMLInputElement).value));
    expect(form).toEqual(['4', '0', '3', '3', '1']);
    // The device goes away (as after a driver reset); the page makes a new engine by itself and
    // loads the model again from Cache Storage (no network request).
    const net = () => page.evaluate(() => (globalThis as unknown as { ldmDemo: { networkRequests: number } }).ldmDemo.networkRequests);
    const netBefore = await net();
    await page.evaluate(() => (globalThis as unknown as { ldmDemo: { engine: Engine } }).ldmDemo.engine.device.destroy());
    await page.waitForFunction(() => /recovered/.test(document.getElementById('status')?.textContent ?? ''), { timeout: 60_000 });
    expect(await text('#error')).toMatch(/The GPU device was lost \(destroyed/);
    await page.click('#generate');
    expect(await waitState(['done', 'error', 'cancelled'], 280_000), await text('#error')).toBe('done');
    const again = await downloadedPng();
    expect(again.equals(firstPng)).toBe(true);
    expect(await net()).toBe(netBefore);
    expect(await page.$$eval('#gallery li', (l) => l.length)).toBe(2);
    // The page at desktop and phone width, for a look; nothing wider than the phone's screen.
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.setViewport({ width: 1280, height: 860 });
    await page.screenshot({ path: join(ARTIFACTS, 'demo-desktop.png'), fullPage: true });
    await page.setViewport({ width: 390, height: 844 }); // (isMobile would reload the page)
    await page.screenshot({ path: join(ARTIFACTS, 'demo-phone.png'), fullPage: true });
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await page.setViewport({ width: 800, height: 600 });
  }, 400_000);

  it('cancels a generation within a step, with the GPU memory back where it was', async () => {
    const before = await memory();
    await setOptions({ ...OPTS, steps: 50 });
    await page.click('#generate');
    await page.waitForFunction(() => (document.getElementById('step-progress') as HTMLProgressElement).value >= 1, { timeout: 280_000, polling: 100 });
    await page.click('#cancel');
    expect(await waitState(['cancelled', 'done', 'error'], 200_000)).toBe('cancelled');
    const status = await text('#status');
    expect(status).toMatch(/cancelled at step \d+ \/ 50; GPU memory in use/);
    const step = Number(/step (\d+)/.exec(status)![1]);
    expect(step).toBeLessThan(50);
    const after = await memory();
    console.log(`cancel at step ${step}/50: GPU memory in use ${before} bytes before, ${after} after`);
    expect(after).toBe(before);
  }, 300_000);

  it('shows the error for a corrupt safetensors file given through the file picker', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ldm-bad-'));
    try {
      const bad = join(dir, 'corrupt.safetensors');
      // A header length far beyond the file, then junk.
      const bytes = new Uint8Array(64);
      new DataView(bytes.buffer).setBigUint64(0, 1_000_000n, true);
      bytes.fill(0x7b, 8);
      writeFileSync(bad, bytes);
      const input = (await page.$('#files-input')) as ElementHandle<HTMLInputElement> | null;
      await input!.uploadFile(bad);
      await page.waitForFunction(() => (document.getElementById('local-summary')?.textContent ?? '').includes('corrupt.safetensors'));
      await page.click('#generate');
      expect(await waitState(['error', 'done', 'cancelled'], 120_000)).toBe('error');
      const msg = await text('#error');
      console.log(`error shown for the corrupt file: ${msg}`);
      expect(msg).toMatch(/corrupt\.safetensors/);
      expect(msg).toMatch(/header/i);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('says so when the browser has no WebGPU (Chromium without the flag, or navigator.gpu gone), or when the device limits are too small', async () => {
    const check = async (b: Browser, patch: (() => void) | null, expected: RegExp) => {
      const p = await b.newPage();
      try {
        if (patch) await p.evaluateOnNewDocument(patch);
        await p.goto(url, { waitUntil: 'load' });
        await p.waitForFunction(() => ['ready', 'nogpu', 'error'].includes(document.body.dataset.state ?? ''), { timeout: 60_000 });
        expect(await p.evaluate(() => document.body.dataset.state)).toBe('nogpu');
        const msg = await p.$eval('#error', (e) => e.textContent ?? '');
        console.log(`shown: ${msg}`);
        expect(msg).toMatch(expected);
        expect(await p.$eval('#generate', (b) => (b as HTMLButtonElement).disabled)).toBe(true);
      } finally {
        await p.close();
      }
    };
    // Chromium without --enable-unsafe-webgpu: no adapter on this machine (or no navigator.gpu).
    const puppeteer = (await import('puppeteer-core')).default;
    const profile = mkdtempSync(join(tmpdir(), 'ldm-nogpu-'));
    const plain = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_FLAGS.filter((f) => f !== '--enable-unsafe-webgpu'), `--user-data-dir=${profile}`] });
    try {
      await check(plain, null, /WebGPU is not available in this browser|WebGPU is present but no adapter was returned: .*--enable-unsafe-webgpu/);
    } finally {
      await plain.close();
      rmSync(profile, { recursive: true, force: true });
    }
    await check(browser, () => {
      Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true });
    }, /WebGPU is not available in this browser \(navigator\.gpu is missing\)\. It works in Chrome and Edge/);
    await check(browser, () => {
      const real = Object.getOwnPropertyDescriptor(GPUAdapter.prototype, 'limits')!.get!;
      Object.defineProperty(GPUAdapter.prototype, 'limits', {
        configurable: true,
        get() {
          const l = real.call(this) as GPUSupportedLimits;
          return new Proxy(l, { get: (t, k) => (k === 'maxComputeWorkgroupStorageSize' ? 4096 : Reflect.get(t, k)) });
        },
      });
    }, /limits are too small.*maxComputeWorkgroupStorageSize is 4096, needs 16384/);
  }, 120_000);

  it('builds a static folder (npm run build:demo) that works from a sub-path of any static host', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'ldm-static-'));
    const out = join(parent, 'some', 'sub-path');
    try {
      await build({ configFile: join(root, 'vite.config.ts'), logLevel: 'error', build: { outDir: out, emptyOutDir: true } });
      expect(statSync(join(out, 'models', 'ldm-mnist', 'unet', 'diffusion_pytorch_model.safetensors')).size).toBeGreaterThan(1e6);
      const host = await serveFolders(parent);
      const p = await browser.newPage();
      try {
        await p.goto(`${host.url}/some/sub-path/index.html`, { waitUntil: 'load' });
        await p.waitForFunction(() => ['ready', 'nogpu', 'error'].includes(document.body.dataset.state ?? ''), { timeout: 60_000 });
        expect(await p.evaluate(() => document.body.dataset.state)).toBe('ready');
        // The bundled model is found next to the page, not at the host's root.
        const index = await p.evaluate(async () => (await fetch(new URL('models/ldm-mnist/model_index.json', document.baseURI))).json());
        expect(index._class_name).toBe('LDMPipeline');
        expect(host.requests.some((r) => r.startsWith('/some/sub-path/assets/'))).toBe(true);
      } finally {
        await p.close();
        await host.close();
      }
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  }, 120_000);

  it('Stable Diffusion and the paper\'s text-to-image LDM by URL: 404 and truncated files give the loader\'s message, a bad size its reason, then prompts make images', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'ldm-hosted-'));
    const tiny = buildTinySdFolder();
    cpSync(tiny, join(parent, 'tiny-sd'), { recursive: true });
    cpSync(tiny, join(parent, 'cut-sd'), { recursive: true });
    rmSync(tiny, { recursive: true, force: true });
    buildTinyText2ImgFolder(join(parent, 'tiny-t2i'));
    // A download cut short: the UNet's safetensors loses its last kilobytes.
    const unet = join(parent, 'cut-sd', 'unet', 'diffusion_pytorch_model.safetensors');
    writeFileSync(unet, readFileSync(unet).subarray(0, statSync(unet).size - 4096));
    const host = await serveFolders(parent);
    const useUrl = async (u: string) => {
      await page.click('input[name=source][value=url]');
      await page.$eval('#model-url', (e, v) => ((e as HTMLInputElement).value = v), u);
    };
    try {
      await openDemo();
      await useUrl(`${host.url}/no-such-model`);
      await page.click('#generate');
      expect(await waitState(['error', 'done', 'cancelled'], 120_000)).toBe('error');
      expect(await text('#error')).toMatch(/no-such-model\/model_index\.json: HTTP 404/);

      await useUrl(`${host.url}/cut-sd`);
      await page.click('#generate');
      expect(await waitState(['error', 'done', 'cancelled'], 120_000)).toBe('error');
      const cut = await text('#error');
      console.log(`truncated file: ${cut}`);
      expect(cut).toMatch(/unet.*diffusion_pytorch_model\.safetensors/);
      expect(cut).toMatch(/outside the data section|truncated|beyond the end/);

      const modelUrl = `${host.url}/tiny-sd`;
      await useUrl(modelUrl);
      await page.evaluate(() => {
        const set = (id: string, v: string) => {
          const e = document.getElementById(id) as HTMLInputElement | HTMLSelectElement;
          e.value = v;
          e.dispatchEvent(new Event('input'));
          e.dispatchEvent(new Event('change'));
        };
        set('prompt', 'a photograph of an astronaut riding a horse');
        set('negative-prompt', 'blurry');
        set('steps', '2');
        set('seed', '42');
        set('guidance', '7.5');
        set('sampler', '');
        set('batch', '1');
        set('width', '60');
        set('height', '64');
      });
      // 60 is not a multiple of the VAE's factor: refused with the reason, after the model loaded.
      await page.click('#generate');
      expect(await waitState(['done', 'error', 'cancelled'], 280_000)).toBe('error');
      expect(await text('#error')).toMatch(/width 60 is not a positive multiple of 8 .*use 56 or 64/);
      await page.$eval('#width', (e) => ((e as HTMLInputElement).value = '64'));
      const t0 = performance.now();
      await page.click('#generate');
      const state = await waitState(['done', 'error', 'cancelled'], 280_000);
      const error = await text('#error');
      expect(state, error).toBe('done');
      expect(error).toBe('');
      console.log(`tiny SD from a prompt in the browser: ${((performance.now() - t0) / 1000).toFixed(1)} s (${await text('#status')})\n${await text('#timings')}`);
      expect(await text('#timings')).toMatch(/text encoding[\d.]+ m?s/);
      const r = await page.evaluate(() => {
        const c = document.getElementById('result') as HTMLCanvasElement;
        const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height);
        return {
          w: c.width,
          h: c.height,
          data: Array.from(d.data),
          steps: (document.getElementById('step-progress') as HTMLProgressElement).value,
          previewW: (document.getElementById('preview') as HTMLCanvasElement).width,
          promptShown: !document.getElementById('prompt-row')!.classList.contains('hidden'),
          classHidden: document.getElementById('class-row')!.classList.contains('hidden'),
        };
      });
      expect([r.w, r.h]).toEqual([64, 64]);
      expect(r.previewW).toBe(64); // no taesd/: the full decoder drew the preview at step 1
      expect(await text('#preview-caption')).toMatch(/full decoder every 1 step/);
      expect(r.steps).toBe(2);
      expect(r.promptShown).toBe(true);
      expect(r.classHidden).toBe(true);
      const distinct = new Set<number>();
      for (let i = 0; i < r.data.length; i += 4) distinct.add((r.data[i] << 16) | (r.data[i + 1] << 8) | r.data[i + 2]);
      console.log(`result: ${r.w}x${r.h}, ${distinct.size} distinct colours`);
      expect(distinct.size).toBeGreaterThan(1);
      expect(readTextChunks(await downloadedPng()).parameters).toBe(
        `a photograph of an astronaut riding a horse\nNegative prompt: blurry\nSteps: 2, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: tiny-sd`,
      );
      // Every component came from the served folder.
      for (const f of ['model_index.json', 'tokenizer/vocab.json', 'text_encoder/model.safetensors', 'unet/diffusion_pytorch_model.safetensors', 'vae/diffusion_pytorch_model.safetensors']) {
        expect(host.requests).toContain(`/tiny-sd/${f}`);
      }

      // The paper's text-to-image LDM (LDMBert): a prompt, no negative prompt.
      await useUrl(`${host.url}/tiny-t2i`);
      await page.$eval('#guidance', (e) => ((e as HTMLInputElement).value = '6'));
      await page.click('#generate');
      expect(await waitState(['done', 'error', 'cancelled'], 280_000), await text('#error')).toBe('done');
      expect(await page.$eval('#negative-prompt', (e) => (e as HTMLTextAreaElement).disabled)).toBe(true);
      const t2i = readTextChunks(await downloadedPng()).parameters;
      console.log(`LDMTextToImagePipeline in the browser: ${await text('#status')}\n${t2i}`);
      expect(t2i).toBe(`a photograph of an astronaut riding a horse\nSteps: 2, Sampler: DDIM, CFG scale: 6, Seed: 42, Size: 64x64, Model: tiny-t2i`);
      const grey = await page.evaluate(() => {
        const c = document.getElementById('result') as HTMLCanvasElement;
        const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
        return new Set(Array.from({ length: d.length / 4 }, (_, i) => d[4 * i] + 256 * d[4 * i + 1])).size;
      });
      expect(grey).toBeGreaterThan(1);
    } finally {
      await host.close();
      rmSync(parent, { recursive: true, force: true });
    }
  }, 900_000);

  it('the family picker sets each family\'s defaults; a tiny SDXL folder by URL runs with SD-Turbo\'s (1 step, guidance off, trailing Euler a)', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'ldm-hosted-xl-'));
    buildTinySdxlFolder(join(parent, 'tiny-sdxl'));
    const host = await serveFolders(parent);
    try {
      await openDemo();
      const families = await page.$$eval('#family option', (os) => os.map((o) => (o as HTMLOptionElement).value));
      expect(families).toEqual(['', 'sd1', 'sd2', 'sdxl', 'sd-turbo', 'lcm', 'lcm-lora', 'ldm']);
      const pick = (v: string) => page.$eval('#family', (e, v) => {
        (e as HTMLSelectElement).value = v;
        e.dispatchEvent(new Event('change'));
      }, v);
      const form = () => page.evaluate(() => ['steps', 'guidance', 'sampler', 'width', 'height'].map((id) => (document.getElementById(id) as HTMLInputElement).value));
      await pick('lcm');
      expect(await form()).toEqual(['4', '8.5', 'lcm', '512', '512']);
      await pick('sdxl');
      expect(await form()).toEqual(['20', '5', '', '1024', '1024']);
      await pick('lcm-lora');
      expect(await text('#family-note')).toMatch(/needs the LoRA file/);
      await pick('sd-turbo');
      expect(await form()).toEqual(['1', '0', 'euler_a_trailing', '512', '512']);
      await page.click('input[name=source][value=url]');
      await page.$eval('#model-url', (e, v) => ((e as HTMLInputElement).value = v), `${host.url}/tiny-sdxl`);
      await page.evaluate(() => {
        for (const [id, v] of [['prompt', 'a red cube'], ['negative-prompt', ''], ['width', '32'], ['height', '32'], ['seed', '7'], ['batch', '1']]) {
          (document.getElementById(id) as HTMLInputElement).value = v;
        }
      });
      await page.click('#generate');
      const state = await waitState(['done', 'error', 'cancelled'], 280_000);
      expect(state, await text('#error')).toBe('done');
      expect(await text('#family-note')).toMatch(/looks like Stable Diffusion XL/);
      expect(readTextChunks(await downloadedPng()).parameters).toBe('a red cube\nSteps: 1, Sampler: Euler a, Schedule type: SGM Uniform, CFG scale: 0, Seed: 7, Size: 32x32, Model: tiny-sdxl');
      expect(readGenerationParameters(await downloadedPng())?.params).toMatchObject({ steps: 1, sampler: 'euler_a_trailing', guidanceScale: 0, width: 32, height: 32 });
      for (const f of ['model_index.json', 'tokenizer_2/vocab.json', 'text_encoder_2/model.safetensors', 'unet/diffusion_pytorch_model.safetensors']) expect(host.requests).toContain(`/tiny-sdxl/${f}`);
    } finally {
      await host.close();
      rmSync(parent, { recursive: true, force: true });
    }
  }, 600_000);
});
