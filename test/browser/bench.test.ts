// `ldm-webgpu bench --browser`: the library and the bench page built with Vite into a temporary
// dist/, served on 127.0.0.1, one op case run in headless Chromium. Also checks that the browser
// bundle imports no Node built-ins and does not bundle Node's `webgpu` package.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build } from 'vite';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runBrowserBench } from '../../bench/browser.js';

const root = resolve(import.meta.dirname, '..', '..');
let tmp: string;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'ldm-dist-'));
  for (const mode of ['browser', 'bench']) {
    await build({ configFile: join(root, 'vite.lib.config.ts'), mode, logLevel: 'error', build: { outDir: join(tmp, 'dist', mode), sourcemap: false } });
  }
}, 180_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('browser build and benchmark', () => {
  it('builds a browser bundle without Node imports', () => {
    const src = readFileSync(join(tmp, 'dist', 'browser', 'index.js'), 'utf8');
    const specs = [...src.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s*)["'`]([^"'`]+)["'`]/g)].map((m) => m[1]);
    expect(specs.filter((s) => s.startsWith('node:') || s === 'webgpu')).toEqual([]);
    expect(src).not.toMatch(/dawn\.node/);
    expect(src).toMatch(/StableDiffusionPipeline|LDMPipeline/);
  });

  it('runs an op benchmark in headless Chromium and returns the rows', async () => {
    const lines: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => lines.push(a.join(' '));
    let result: { rows: { name: string; ours: { medianMs: number } }[]; adapter: string };
    try {
      result = (await runBrowserBench({ tfjs: false, root: tmp, filter: 'groupNorm' })) as typeof result;
    } finally {
      console.log = log;
    }
    expect(result.rows.length).toBe(1);
    expect(result.rows[0].name).toMatch(/groupNorm/);
    expect(result.rows[0].ours.medianMs).toBeGreaterThan(0);
    expect(result.adapter.length).toBeGreaterThan(0);
    expect(lines.join('\n')).toMatch(/op\s+ours ms/);
  }, 120_000);
});
