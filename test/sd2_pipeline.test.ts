// Stable Diffusion 2.x at pipeline level against diffusers 0.31 (tools/pyref/gen_sd2_pipeline.py; weights
// seeded on both sides): a tiny SD 2.x-shaped folder loaded like a real one, stage by stage (the '!'-padded
// token ids, the gelu text encoder's embeddings, the v_prediction latents after every step, the image)
// with DDIM (leading spacing, SD 2.1's scheduler config) and Euler (trailing); and SD-Turbo's way of running
// (sd-turbo's scheduler config run as the euler_a_trailing preset, guidance 0, 1 and 4 steps) with
// diffusers' own ancestral noise handed to our sampler.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { readSafetensorsFile } from './fixture.js';
import { getEngine, relL2, track, reportWorst } from './helpers.js';
import { buildTinySd2Folder, readSd2Manifest, SD2_DIR } from './tiny_sd2.js';
import { EulerAncestralDiscreteScheduler, StableDiffusionPipeline, type Engine, type Tensor } from '../src/index.js';

const m = readSd2Manifest();
const refs = readSafetensorsFile(join(SD2_DIR, 'refs.safetensors'));

describe('SD 2.x pipeline vs diffusers', () => {
  let engine: Engine;
  let root: string;
  beforeAll(async () => {
    engine = await getEngine();
    root = mkdtempSync(join(tmpdir(), 'tiny-sd2-'));
  });
  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
    reportWorst('sd2 pipeline');
  });

  it("tokenizer ids (padded with '!') and the gelu text encoder's prompt embeddings", async () => {
    const dir = join(root, 'ddim');
    buildTinySd2Folder(dir, 'ddim', m);
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, dir);
    try {
      expect(pipe.tokenizer!.padTokenId).toBe(0);
      expect(pipe.tokenizer!.encode(m.prompt)).toEqual(Array.from(refs.input_ids.data));
      expect(pipe.tokenizer!.encode(m.negative_prompt)).toEqual(Array.from(refs.negative_input_ids.data));
      const emb = pipe.encodePrompt([m.prompt, m.negative_prompt]);
      const v = await emb.read();
      emb.dispose();
      const n = refs.prompt_embeds.data.length;
      expect(track('sd2 prompt_embeds', relL2(v.subarray(0, n), refs.prompt_embeds.data))).toBeLessThan(1e-4);
      expect(track('sd2 negative_prompt_embeds', relL2(v.subarray(n), refs.negative_prompt_embeds.data))).toBeLessThan(1e-4);
    } finally {
      pipe.dispose();
    }
  }, 120_000);

  for (const name of Object.keys(m.cases)) {
    it(`${name} (v_prediction, guidance ${m.guidance_scale}): latents after every step and the image`, async () => {
      const dir = join(root, name);
      buildTinySd2Folder(dir, name, m);
      const pipe = await StableDiffusionPipeline.fromPretrained(engine, dir);
      const before = engine.memory().inUseBytes;
      try {
        expect(pipe.scheduler.predictionType).toBe('v_prediction');
        const steps = refs[`${name}.latents_steps`];
        const per = steps.data.length / steps.shape[0];
        const seen: number[] = [];
        const out = await pipe.generate({
          prompt: m.prompt,
          negativePrompt: m.negative_prompt,
          height: m.height,
          width: m.width,
          steps: m.steps,
          guidanceScale: m.guidance_scale,
          latents: refs.latents_T.data as Float32Array,
          onStep: async ({ step, timestep, latents }) => {
            seen.push(timestep);
            const got = await latents.read();
            expect(track(`sd2 ${name} latents per step`, relL2(got, steps.data.subarray((step - 1) * per, step * per))), `step ${step}`).toBeLessThan(1e-4);
          },
        });
        expect(seen).toEqual(m.cases[name].timesteps);
        expect(out.images.shape).toEqual(refs[`${name}.image`].shape);
        expect(track(`sd2 ${name} image`, relL2(await out.images.read(), refs[`${name}.image`].data))).toBeLessThan(1e-4);
        out.images.dispose();
        expect(engine.memory().inUseBytes).toBe(before);
      } finally {
        pipe.dispose();
      }
    }, 300_000);
  }

  for (const n of Object.keys(m.turbo.runs)) {
    it(`SD-Turbo-shaped: ${m.turbo.sampler}, ${n} step(s), guidance ${m.turbo.guidance_scale} (one UNet pass): latents per step and the image`, async () => {
      const dir = join(root, 'turbo');
      buildTinySd2Folder(dir, 'turbo', m);
      const pipe = await StableDiffusionPipeline.fromPretrained(engine, dir);
      // diffusers' ancestral draws, in order, instead of our seeded ones (the step takes a given noise)
      const noise = refs[`turbo${n}.noise`];
      const per = noise.data.length / noise.shape[0];
      const proto = EulerAncestralDiscreteScheduler.prototype;
      const step = proto.step;
      let draws = 0;
      proto.step = function (this: EulerAncestralDiscreteScheduler, out: Tensor, t: number, x: Tensor, opts = {}) {
        const nz = engine.tensor(noise.data.slice(draws * per, ++draws * per) as Float32Array, x.shape);
        try {
          return step.call(this, out, t, x, { ...opts, noise: nz });
        } finally {
          nz.dispose();
        }
      };
      const before = engine.memory().inUseBytes;
      try {
        const steps = refs[`turbo${n}.latents_steps`];
        const seen: number[] = [];
        const out = await pipe.generate({
          prompt: m.prompt,
          height: m.height,
          width: m.width,
          steps: Number(n),
          guidanceScale: m.turbo.guidance_scale,
          sampler: m.turbo.sampler,
          latents: refs.latents_T.data as Float32Array,
          onStep: async ({ step: k, timestep, latents }) => {
            seen.push(timestep);
            expect(track('sd2 turbo latents per step', relL2(await latents.read(), steps.data.subarray((k - 1) * per, k * per))), `step ${k}`).toBeLessThan(1e-4);
          },
        });
        expect(seen).toEqual(m.turbo.runs[n]);
        expect(draws).toBe(Number(n));
        expect(track(`sd2 turbo ${n}-step image`, relL2(await out.images.read(), refs[`turbo${n}.image`].data))).toBeLessThan(1e-4);
        out.images.dispose();
        expect(engine.memory().inUseBytes).toBe(before);
      } finally {
        proto.step = step;
        pipe.dispose();
      }
    }, 300_000);
  }
});
