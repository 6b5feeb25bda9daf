// The `ldm-webgpu` command from source: argument errors exit with 2 and print the usage on stderr;
// `generate` writes a PNG of the right size from the bundled ldm-mnist; a batch writes out-N.png.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PNG } from 'pngjs';
import { outputNames } from '../src/cli/generate.js';
import { parseGenerateArgs, parseBenchArgs, UsageError, defaultModel } from '../src/cli/main.js';
import { buildTinySdFolder } from './tiny_sd.js';
import { readGenerationParameters, readTextChunks } from '../src/image/png_metadata.js';

const root = resolve(import.meta.dirname, '..');
const cli = (args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), ...args], { cwd: root, encoding: 'utf8', timeout: 240_000 });

describe('CLI arguments', () => {
  it('parses generate options', () => {
    const a = parseGenerateArgs(['--class', '3,1,4', '--steps', '5', '--seed', '9', '--guidance', '2.5', '--out', 'x.png']);
    expect(a).toMatchObject({ classLabels: [3, 1, 4], steps: 5, seed: 9, guidance: 2.5, out: 'x.png' });
    expect(parseGenerateArgs(['--class', '7', '--batch', '3']).classLabels).toEqual([7, 7, 7]);
    expect(parseGenerateArgs([]).model).toBe(defaultModel());
    expect(existsSync(join(defaultModel(), 'model_index.json'))).toBe(true);
    expect(parseBenchArgs(['--browser', '--no-tfjs', '--suite', 'ops'])).toMatchObject({ browser: true, tfjs: false, suite: ['ops'] });
    expect(parseBenchArgs(['--dtype', 'f32,f16', '--adapter', 'lavapipe'])).toMatchObject({ dtypes: ['f32', 'f16'], adapter: 'lavapipe' });
    expect(parseBenchArgs([]).dtypes).toEqual(['f32']);
  });

  it('rejects bad arguments with a UsageError', () => {
    for (const bad of [['--steps', 'x'], ['--steps', '0'], ['--class', '3', '--prompt', 'a'], ['--out', 'a.jpg'], ['--bogus'], ['--class', '1,2', '--batch', '3'], ['--negative-prompt', 'x']]) {
      expect(() => parseGenerateArgs(bad), bad.join(' ')).toThrow(UsageError);
    }
    expect(() => parseBenchArgs(['--suite', 'gpu'])).toThrow(UsageError);
    expect(() => parseBenchArgs(['--dtype', 'bf16'])).toThrow(UsageError);
    expect(() => parseBenchArgs(['--adapter', 'cpu'])).toThrow(UsageError);
  });

  it('names batch outputs out-1.png, out-2.png, ...', () => {
    expect(outputNames('a/out.png', 1)).toEqual(['a/out.png']);
    expect(outputNames('a/out.png', 3)).toEqual(['a/out-1.png', 'a/out-2.png', 'a/out-3.png']);
  });

  it('exits with 2 and prints the usage on stderr for bad arguments', () => {
    for (const args of [['generate', '--steps', 'many'], ['frobnicate'], []]) {
      const r = cli(args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/usage:\n {2}ldm-webgpu generate/);
    }
  }, 60_000);

  it('generates from a prompt with a Stable Diffusion folder', () => {
    const model = buildTinySdFolder();
    const dir = mkdtempSync(join(tmpdir(), 'sd-cli-'));
    try {
      const out = join(dir, 'sd.png');
      const r = cli(['generate', '--model', model, '--prompt', 'an astronaut riding a horse', '--negative-prompt', 'blurry', '--steps', '2', '--seed', '3', '--out', out]);
      expect(r.status, r.stderr).toBe(0);
      const png = PNG.sync.read(readFileSync(out));
      expect([png.width, png.height]).toEqual([64, 64]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(model, { recursive: true, force: true });
    }
  }, 240_000);

  it('generates a PNG with the bundled ldm-mnist', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ldm-cli-'));
    try {
      const out = join(dir, 'digit.png');
      const r = cli(['generate', '--class', '7', '--steps', '3', '--seed', '1', '--out', out]);
      expect(r.status, r.stderr).toBe(0);
      const png = PNG.sync.read(readFileSync(out));
      expect([png.width, png.height]).toEqual([32, 32]);
      let bright = 0;
      for (let i = 0; i < png.data.length; i += 4) if (png.data[i] > 128) bright++;
      expect(bright).toBeGreaterThan(10);
      expect(r.stderr).toMatch(/wrote .*digit\.png \(32x32\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);

  it('writes the parameters into each PNG, and --from reruns one of a batch to the same bytes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ldm-from-'));
    try {
      const out = join(dir, 'b.png');
      const r = cli(['generate', '--class', '7,2', '--steps', '2', '--seed', '5', '--sampler', 'euler', '--out', out]);
      expect(r.status, r.stderr).toBe(0);
      const second = readFileSync(join(dir, 'b-2.png'));
      expect(readTextChunks(second).parameters).toBe('Steps: 2, Sampler: Euler, CFG scale: 3, Seed: 5, Size: 32x32, Model: ldm-mnist, Class: 7 2, Batch size: 2, Batch pos: 1');
      expect(readGenerationParameters(second)?.params).toMatchObject({ model: 'ldm-mnist', classLabels: [7, 2], steps: 2, sampler: 'euler', guidanceScale: 3, seed: 5, batchSize: 2, batchIndex: 1 });
      const again = join(dir, 'again.png');
      const r2 = cli(['generate', '--from', join(dir, 'b-2.png'), '--out', again]);
      expect(r2.status, r2.stderr).toBe(0);
      expect(readFileSync(again).equals(second)).toBe(true);
      expect(readFileSync(join(dir, 'b-1.png')).equals(second)).toBe(false);
      // Other options next to --from are refused: the PNG is the whole recipe.
      const r3 = cli(['generate', '--from', again, '--steps', '3']);
      expect(r3.status).toBe(2);
      expect(r3.stderr).toMatch(/only --model and --out may be added/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);
});
