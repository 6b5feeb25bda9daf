// End to end in headless Chromium (WebGPU on SwiftShader where there is no GPU): the demo page
// served by Vite loads, generates with the bundled ldm-mnist, matches the Node output for the same
// options, can be cancelled, reports a corrupt file, and turns a text prompt into an image with a
// tiny Stable Diffusion folder given by URL. A failing test leaves a screenshot in
// test/artifacts/<test>.png.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type ViteDevServer } from 'vite';
import { mkdirSync, mkdtempSync, writeFileSync, rmSync, readFileSync, statSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve, sep } from 'node:path';
import type { Browser, ElementHandle, Page } from 'puppeteer-core';
import { launchChromium } from '../../bench/chromium.js';
import { Engine, LDMPipeline } from '../../src/index.js';
import { buildTinySdFolder } from '../tiny_sd.js';

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

/** Serves `dir` at /tiny-sd/ over plain HTTP on 127.0.0.1, like a static host of a diffusers folder. The page
 * comes from the Vite port, so the answers carry CORS headers. */
async function serveFolder(dir: string): Promise<{ url: string; requests: string[]; close: () => Promise<void> }> {
  const requests: string[] = [];
  const srv: Server = createHttpServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requests.push(path);
    const file = resolve(dir, '.' + path.replace(/^\/tiny-sd(?=\/)/, ''));
    let ok = false;
    try {
      ok = path.startsWith('/tiny-sd/') && file.startsWith(dir + sep) && statSync(file).isFile();
    } catch {
      ok = false;
    }
    const headers = { 'access-control-allow-origin': '*' };
    if (!ok) {
      res.writeHead(404, headers).end(`${path} not found`);
      return;
    }
    const body = readFileSync(file);
    res.writeHead(200, { ...headers, 'content-length': String(body.length), 'content-type': 'application/octet-stream' }).end(body);
  });
  await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
  const port = (srv.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}/tiny-sd`, requests, close: () => new Promise<void>((ok) => srv.close(() => ok())) };
}

beforeAll(async () => {
  server = await createServer({ configFile: join(root, 'vite.config.ts'), // No HMR and no watching: edits elsewhere in the checkout must not reload the page mid-test.
    server: { host: '127.0.0.1', port: 0, strictPort: false, hmr: false, watch: { ignored: ['**/*'] } }, logLevel: 'error', clearScreen: false });
  await server.listen();
  const addr = server.httpServer!.address() as { port: number };
  url = `http://127.0.0.1:${addr.port}/`;
  ({ browser, close: closeBrowser } = await launchChromium());
  page = await browser.newPage();
  page.setDefaultTimeout(110_000);
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${(e as Error).message}`));
}, 120_000);

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
    const info = await page.$eval('#gpu-info', (e) => e.textContent ?? '');
    expect(info).toMatch(/WebGPU adapter/);
    expect(await page.$eval('#generate', (b) => (b as HTMLButtonElement).disabled)).toBe(false);
  }, 120_000);

  let browserPixels: number[] = [];
  it('generates a digit with the bundled ldm-mnist (class 3, 4 steps, seed 0)', async () => {
    await setOptions(OPTS);
    await page.click('#generate');
    const state = await waitState(['done', 'error', 'cancelled'], 115_000);
    expect(state, await page.$eval('#error', (e) => e.textContent ?? '')).toBe('done');
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
    expect(await page.$eval('#download', (a) => (a as HTMLAnchorElement).href)).toMatch(/^blob:/);
  }, 120_000);

  it('draws the same pixels as the Node pipeline for the same seed and options', async () => {
    expect(browserPixels.length).toBe(32 * 32 * 4);
    const engine = await Engine.create({ adapterKind: 'swiftshader', f16: false });
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
  }, 120_000);

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

  it('cancels a generation, then generates again (model from Cache Storage, no network request)', async () => {
    await openDemo();
    await setOptions({ ...OPTS, steps: 50 });
    await page.click('#generate');
    await page.waitForFunction(() => (document.getElementById('step-progress') as HTMLProgressElement).value >= 1, { timeout: 110_000, polling: 100 });
    await page.click('#cancel');
    expect(await waitState(['cancelled', 'done', 'error'], 60_000)).toBe('cancelled');
    expect(await page.$eval('#status', (e) => e.textContent ?? '')).toMatch(/cancelled at step \d+ \/ 50/);
    // The reload loaded the weights again, from the cache this time.
    expect(await page.evaluate(() => (globalThis as unknown as { ldmDemo: { networkRequests: number } }).ldmDemo.networkRequests)).toBe(0);
    await setOptions({ ...OPTS, steps: 2 });
    await page.click('#generate');
    expect(await waitState(['done', 'error', 'cancelled'], 100_000)).toBe('done');
  }, 120_000);

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
      expect(await waitState(['error', 'done', 'cancelled'], 30_000)).toBe('error');
      const msg = await page.$eval('#error', (e) => e.textContent ?? '');
      console.log(`error shown for the corrupt file: ${msg}`);
      expect(msg).toMatch(/corrupt\.safetensors/);
      expect(msg).toMatch(/header/i);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('says so when the browser has no WebGPU, or when the device limits are too small', async () => {
    const check = async (patch: () => void, expected: RegExp) => {
      const p = await browser.newPage();
      try {
        await p.evaluateOnNewDocument(patch);
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
    await check(() => {
      Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true });
    }, /WebGPU is not available in this browser \(navigator\.gpu is missing\)/);
    await check(() => {
      const real = Object.getOwnPropertyDescriptor(GPUAdapter.prototype, 'limits')!.get!;
      Object.defineProperty(GPUAdapter.prototype, 'limits', {
        configurable: true,
        get() {
          const l = real.call(this) as GPUSupportedLimits;
          return new Proxy(l, { get: (t, k) => (k === 'maxComputeWorkgroupStorageSize' ? 4096 : Reflect.get(t, k)) });
        },
      });
    }, /limits are too small.*maxComputeWorkgroupStorageSize is 4096, needs 16384/);
  }, 60_000);

  it('generates an image from a text prompt with a tiny Stable Diffusion folder given by URL', async () => {
    const dir = buildTinySdFolder();
    const host = await serveFolder(dir);
    const modelUrl = host.url;
    try {
      await openDemo();
      await page.click('input[name=source][value=url]');
      await page.type('#model-url', modelUrl);
      // The prompt row and the size fields open up once an SD model is loaded; set them as the
      // page reads them at Generate so the first run is already at the tiny model's 64x64.
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
        set('width', '64');
        set('height', '64');
      });
      const t0 = performance.now();
      await page.click('#generate');
      const state = await waitState(['done', 'error', 'cancelled'], 170_000);
      const error = await page.$eval('#error', (e) => e.textContent ?? '');
      expect(state, error).toBe('done');
      expect(error).toBe('');
      console.log(`tiny SD from a prompt in the browser: ${((performance.now() - t0) / 1000).toFixed(1)} s (${await page.$eval('#status', (e) => e.textContent ?? '')})`);
      const r = await page.evaluate(() => {
        const c = document.getElementById('result') as HTMLCanvasElement;
        const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height);
        return {
          w: c.width,
          h: c.height,
          data: Array.from(d.data),
          steps: (document.getElementById('step-progress') as HTMLProgressElement).value,
          promptShown: !document.getElementById('prompt-row')!.classList.contains('hidden'),
          classHidden: document.getElementById('class-row')!.classList.contains('hidden'),
        };
      });
      expect([r.w, r.h]).toEqual([64, 64]);
      expect(r.steps).toBe(2);
      expect(r.promptShown).toBe(true);
      expect(r.classHidden).toBe(true);
      const distinct = new Set<number>();
      for (let i = 0; i < r.data.length; i += 4) distinct.add((r.data[i] << 16) | (r.data[i + 1] << 8) | r.data[i + 2]);
      console.log(`result: ${r.w}x${r.h}, ${distinct.size} distinct colours`);
      expect(distinct.size).toBeGreaterThan(1);
      // Every component came from the served folder.
      const base = new URL(modelUrl).pathname;
      for (const f of ['model_index.json', 'tokenizer/vocab.json', 'text_encoder/model.safetensors', 'unet/diffusion_pytorch_model.safetensors', 'vae/diffusion_pytorch_model.safetensors']) {
        expect(host.requests).toContain(`${base}/${f}`);
      }
    } finally {
      await host.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
