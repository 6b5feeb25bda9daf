// Hostile review of the modern families (issue #13): cases a user can hit that the reference tests
// do not. Each test failed before its fix.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { getEngine } from './helpers.js';
import { buildTinySdxlFolder, readSdxlManifest } from './tiny_sdxl.js';
import { StableDiffusionXLPipeline, type Engine } from '../src/index.js';

const m = readSdxlManifest();

let engine: Engine;
let root: string;
beforeAll(async () => {
  engine = await getEngine();
  root = mkdtempSync(join(tmpdir(), 'hostile-'));
  buildTinySdxlFolder(join(root, 'sdxl'), 'base', m);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('StableDiffusionXLPipeline.generate: options it used to accept silently', () => {
  let pipe: StableDiffusionXLPipeline;
  beforeAll(async () => {
    pipe = await StableDiffusionXLPipeline.fromPretrained(engine, join(root, 'sdxl'));
  });
  afterAll(() => pipe.dispose());

  it('strength out of (0, 1] without an image, and an empty prompt list, are refused before allocating', async () => {
    const before = engine.memory().inUseBytes;
    const small = { steps: 2, width: 16, height: 16, prompt: 'a cat' };
    await expect(pipe.generate({ ...small, strength: 1.5 })).rejects.toThrow(/strength must be in \(0, 1\]/);
    await expect(pipe.generate({ ...small, strength: NaN })).rejects.toThrow(/strength must be in \(0, 1\]/);
    await expect(pipe.generate({ ...small, prompt: [] })).rejects.toThrow(/StableDiffusionXLPipeline.generate: prompt is an empty list/);
    expect(engine.memory().inUseBytes).toBe(before);
  });
});
