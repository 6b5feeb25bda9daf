// StableDiffusionXLPipeline in f16 (lavapipe's shader-f16) against diffusers' f32 reference: the tiny
// seeded SDXL base folder of test/fixtures/sdxl_pipeline. The UNet and text encoders run in f16, the
// VAE (force_upcast: true) in f32 beside them; latents after every step and the image stay within the
// f16 project's tolerance and nothing is left in use.
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { readSafetensorsFile } from '../fixture.js';
import { getF16Engine, relL2, track, reportWorst } from '../helpers.js';
import { buildTinySdxlFolder, readSdxlManifest, SDXL_DIR } from '../tiny_sdxl.js';
import { StableDiffusionXLPipeline } from '../../src/index.js';

const m = readSdxlManifest();
const refs = readSafetensorsFile(join(SDXL_DIR, 'refs.safetensors'));
afterAll(() => reportWorst('f16 sdxl pipeline'));

describe('StableDiffusionXLPipeline in f16', () => {
  it('base case: f16 UNet and text encoders, f32 VAE (force_upcast); steps and image vs diffusers f32', async () => {
    const engine = await getF16Engine();
    expect(engine.f16).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'tiny-sdxl-f16-'));
    try {
      buildTinySdxlFolder(dir, 'base', m);
      const before = engine.memory().inUseBytes;
      const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, dir);
      try {
        expect(pipe.unet.dtype).toBe('f16');
        expect(pipe.textEncoder2!.dtype).toBe('f16');
        expect(pipe.vae.dtype).toBe('f32');
        const c = m.cases.base;
        const steps = refs['base.latents_steps'];
        const per = steps.data.length / steps.shape[0];
        const out = await pipe.generate({
          prompt: c.prompt as string,
          negativePrompt: c.negative_prompt as string,
          steps: c.num_inference_steps as number,
          guidanceScale: c.guidance_scale as number,
          latents: refs['base.latents_T'].data as Float32Array,
          onStep: async ({ step, latents }) => {
            const err = track('f16 sdxl latents per step', relL2(await latents.read(), steps.data.subarray((step - 1) * per, step * per)));
            expect(err, `step ${step}`).toBeLessThan(6e-3);
          },
        });
        expect(out.images.dtype).toBe('f32');
        expect(track('f16 sdxl image', relL2(await out.images.read(), refs['base.image'].data))).toBeLessThan(6e-3);
        out.images.dispose();
      } finally {
        pipe.dispose();
      }
      expect(engine.memory().inUseBytes).toBe(before);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
