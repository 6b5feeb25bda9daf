// LoRA merged at load on an f16 engine (lavapipe's shader-f16): the LCM-LoRA-shaped case of
// test/fixtures/lora (4 LCM steps, guidance 1.5) against diffusers' f32 reference, and the GPU memory a
// merge needs beyond the plain load: only the f32 temporaries of one tensor at a time (no second copy
// of the model), with nothing left in use after dispose.
import { describe, it, expect, afterAll } from 'vitest';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES, readSafetensorsFile } from '../fixture.js';
import { getF16Engine, relL2, track, reportWorst } from '../helpers.js';
import { buildTinySdFolder } from '../tiny_sd.js';
import { seededSafetensors, type ManifestEntry } from '../seeded.js';
import { StableDiffusionPipeline } from '../../src/index.js';

afterAll(() => reportWorst('f16 lora'));

const DIR = join(FIXTURES, 'lora');
const meta = JSON.parse(readFileSync(join(DIR, 'case.json'), 'utf8')) as {
  prompt: string;
  files: Record<string, ManifestEntry[]>;
  cases: Record<string, { loras: { file: string; scale: number }[]; steps?: number; guidance_scale?: number; seed?: number }>;
};
const refs = readSafetensorsFile(join(DIR, 'refs.safetensors'));

describe('LoRA in f16', () => {
  it('pipe/lcm: f16 UNet and text encoder with the LoRA merged at load vs diffusers f32; memory', async () => {
    const engine = await getF16Engine();
    expect(engine.f16).toBe(true);
    const dir = buildTinySdFolder();
    try {
      const c = meta.cases['pipe/lcm'];
      const loras = c.loras.map((l) => ({ source: seededSafetensors(meta.files[l.file]), scale: l.scale }));
      const before = engine.memory().inUseBytes;

      engine.resetPeakMemory();
      const plain = await StableDiffusionPipeline.fromPretrained(engine, dir);
      const plainPeak = engine.memory().peakInUseBytes - before;
      const plainHeld = engine.memory().inUseBytes - before;
      plain.dispose();

      engine.resetPeakMemory();
      const pipe = await StableDiffusionPipeline.fromPretrained(engine, dir, { loras });
      const loraPeak = engine.memory().peakInUseBytes - before;
      expect(pipe.unet.dtype).toBe('f16');
      expect(engine.memory().inUseBytes - before).toBe(plainHeld);
      // the largest merged tensor, as f32: the merge holds its base, one delta product and the f16 cast
      const largest = Math.max(...pipe.loraReport!.applied.map((a) => pipe.unet.parameter(`${a.split(': unet.')[1]}.weight`)!.size)) * 4;
      expect(loraPeak - plainPeak).toBeLessThanOrEqual(3 * largest);

      const out = await pipe.generate({ prompt: meta.prompt, negativePrompt: '', steps: c.steps, guidanceScale: c.guidance_scale, seed: c.seed, sampler: 'lcm' });
      expect(track('f16 pipe/lcm image', relL2(await out.images.read(), refs['pipe/lcm/image'].data))).toBeLessThan(6e-3);
      out.images.dispose();
      pipe.dispose();
      expect(engine.memory().inUseBytes).toBe(before);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
