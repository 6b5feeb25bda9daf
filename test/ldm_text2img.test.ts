// LDMTextToImagePipeline (diffusers' port of the paper's text-to-image LDM) loaded from a diffusers
// folder, against diffusers 0.31 itself (tools/pyref/gen_ldm_text2img.py; weights seeded on both sides).
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { readSafetensorsFile } from './fixture.js';
import { getEngine, relL2, track, reportWorst } from './helpers.js';
import { buildTinyText2ImgFolder, readText2ImgManifest, TEXT2IMG_DIR } from './tiny_text2img.js';
import type { Engine } from '../src/runtime/engine.js';
import { LDMTextToImagePipeline } from '../src/pipelines/ldm_text2img.js';

const DIR = TEXT2IMG_DIR;
const m = readText2ImgManifest();
const refs = readSafetensorsFile(join(DIR, 'refs.safetensors'));

describe('LDMTextToImagePipeline vs diffusers', () => {
  let engine: Engine;
  let folder: string;
  beforeAll(async () => {
    engine = await getEngine();
    folder = mkdtempSync(join(tmpdir(), 'ldm-t2i-'));
    buildTinyText2ImgFolder(folder, m);
  });
  afterAll(() => rmSync(folder, { recursive: true, force: true }));

  it('prompt embeddings and a 5-step guided DDIM image match diffusers', async () => {
    const pipe = await LDMTextToImagePipeline.fromPretrained(engine, folder);
    try {
      const emb = pipe.encodePrompt([m.prompt]);
      expect(track('LDMBert prompt_embeds', relL2(await emb.read(), refs.prompt_embeds.data))).toBeLessThan(1e-4);
      emb.dispose();
      const before = engine.memory().inUseBytes;
      const out = await pipe.generate({ prompt: m.prompt, steps: m.steps, guidanceScale: m.guidance_scale, latents: refs.latents.data as Float32Array });
      expect(out.images.shape).toEqual(refs.image.shape);
      expect(track('LDMTextToImagePipeline image', relL2(await out.images.read(), refs.image.data))).toBeLessThan(1e-3);
      out.images.dispose();
      expect(engine.memory().inUseBytes).toBe(before);
      await expect(pipe.generate({ prompt: m.prompt, height: 60 })).rejects.toThrow(/multiples of 8/);
      // checked before anything runs: guidance NaN, and a latent size the UNet cannot halve often enough
      await expect(pipe.generate({ prompt: m.prompt, guidanceScale: NaN })).rejects.toThrow(/guidanceScale must be a finite number/);
      const f = 2 ** ((pipe.components.unet.config.block_out_channels as number[]).length - 1);
      if (f > 1) await expect(pipe.generate({ prompt: m.prompt, height: 8 * (f + 1) })).rejects.toThrow(/does not fit the UNet, which downsamples by/);
      expect(engine.memory().inUseBytes).toBe(before);
    } finally {
      pipe.dispose();
    }
  }, 300_000);

  it('guidance off (scale 1) runs the UNet once per step on the un-doubled batch and equals the guided formula at scale 1', async () => {
    const pipe = await LDMTextToImagePipeline.fromPretrained(engine, folder);
    const spy = vi.spyOn(pipe.components.unet, 'forward');
    // per UNet call: [sample batch, encoder_hidden_states batch]
    const run = async (guidanceScale: number) => {
      spy.mockClear();
      const out = await pipe.generate({ prompt: [m.prompt, 'a red cube'], steps: 2, guidanceScale, seed: 3 });
      const batches = spy.mock.calls.map(([x, , o]) => [x.shape[0], o?.encoderHiddenStates?.shape[0]]);
      const v = await out.images.read();
      out.images.dispose();
      return { batches, v };
    };
    try {
      const off = await run(1);
      expect(off.batches).toEqual([[2, 2], [2, 2]]);
      // diffusers' LDMTextToImagePipeline guides whenever scale != 1: a doubled batch [uncond, cond]
      const on = await run(1 + 2 ** -20);
      expect(on.batches).toEqual([[4, 4], [4, 4]]);
      expect(relL2(off.v, on.v)).toBeLessThan(1e-4);
      expect(relL2(off.v, (await run(6)).v)).toBeGreaterThan(1e-3);
    } finally {
      spy.mockRestore();
      pipe.dispose();
    }
  }, 300_000);

  it('report', () => reportWorst('ldm text2img'));
});
