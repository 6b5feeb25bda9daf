// Against diffusers 0.31 (tools/pyref/gen_sdxl_pipeline.py, cases 6-8; weights seeded on both sides):
// guidance_rescale in StableDiffusionXLPipeline and StableDiffusionPipeline (batch 2: the std is per
// image), the base -> refiner handoff (denoising_end 0.8 with output_type "latent", then the refiner's
// img2img from those latents with denoising_start 0.8), and a VAE whose config has latents_mean /
// latents_std (img2img from an RGB image: the encode and the decode both use them).
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { readSafetensorsFile, type HostTensor } from './fixture.js';
import { getEngine, relL2, track, reportWorst } from './helpers.js';
import { buildTinySdxlFolder, readSdxlManifest, SDXL_DIR, type SdxlLayout } from './tiny_sdxl.js';
import { StableDiffusionPipeline, StableDiffusionXLPipeline, type Engine, type Tensor } from '../src/index.js';
import type { AutoencoderKL } from '../src/models/autoencoder_kl.js';

const m = readSdxlManifest();
const refs = readSafetensorsFile(join(SDXL_DIR, 'refs.safetensors'));
const ref = (k: string): HostTensor => {
  const r = refs[k];
  if (!r) throw new Error(`no ${k} in refs`);
  return r;
};
const f32 = (k: string) => ref(k).data as Float32Array;

describe('guidance rescale, base -> refiner handoff, latents_mean/std VAEs vs diffusers', () => {
  let engine: Engine;
  let root: string;
  const folder = (layout: SdxlLayout) => {
    const dir = join(root, layout);
    buildTinySdxlFolder(dir, layout, m);
    return dir;
  };
  beforeAll(async () => {
    engine = await getEngine();
    root = mkdtempSync(join(tmpdir(), 'tiny-sdxl-handoff-'));
  });
  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
    reportWorst('sdxl handoff');
  });

  /** generate() checking every step's latents against `name`'s; returns the output (the caller disposes it). */
  async function run(pipe: StableDiffusionXLPipeline | StableDiffusionPipeline, name: string, opts: Record<string, unknown>) {
    const steps = ref(`${name}.latents_steps`);
    const per = steps.data.length / steps.shape[0];
    const seen: number[] = [];
    const out = await pipe.generate({
      ...opts,
      onStep: async ({ step, timestep, latents }) => {
        seen.push(timestep);
        expect(track(`${name} latents per step`, relL2(await latents.read(), steps.data.subarray((step - 1) * per, step * per))), `step ${step}`).toBeLessThan(1e-4);
      },
    });
    expect(seen.length).toBe(steps.shape[0]);
    return { out, seen, all: Array.from(ref(`${name}.timesteps`).data) };
  }

  async function image(name: string, out: { images: Tensor }) {
    expect(out.images.shape).toEqual(ref(`${name}.image`).shape);
    expect(track(`${name} image`, relL2(await out.images.read(), f32(`${name}.image`)))).toBeLessThan(1e-4);
    out.images.dispose();
  }

  it('guidanceRescale 0.7 in StableDiffusionXLPipeline, batch 2', async () => {
    const c = m.cases.rescale;
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, folder('base'));
    try {
      const before = engine.memory().inUseBytes;
      const o = { prompt: c.prompt, negativePrompt: c.negative_prompt, steps: c.num_inference_steps, guidanceScale: c.guidance_scale, latents: f32('rescale.latents_T') };
      const { out } = await run(pipe, 'rescale', { ...o, guidanceRescale: c.guidance_rescale });
      await image('rescale', out);
      // it matters: without it the image is another
      const plain = await pipe.generate(o as never);
      expect(relL2(await plain.images.read(), f32('rescale.image'))).toBeGreaterThan(1e-3);
      plain.images.dispose();
      expect(engine.memory().inUseBytes).toBe(before);
    } finally {
      pipe.dispose();
    }
  }, 300_000);

  it('guidanceRescale 0.5 in StableDiffusionPipeline, batch 2', async () => {
    const c = m.cases.sd_rescale;
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, folder('sd'));
    try {
      const { out } = await run(pipe, 'sd_rescale', {
        prompt: c.prompt, negativePrompt: c.negative_prompt, steps: c.num_inference_steps, guidanceScale: c.guidance_scale,
        guidanceRescale: c.guidance_rescale, height: c.height, width: c.width, latents: f32('sd_rescale.latents_T'),
      });
      await image('sd_rescale', out);
    } finally {
      pipe.dispose();
    }
  }, 300_000);

  it("base (denoisingEnd 0.8, outputType 'latent') -> refiner (denoisingStart 0.8) gives diffusers' latents, steps and image", async () => {
    const cb = m.cases.handoff_base;
    const cr = m.cases.handoff_refiner;
    const base = await StableDiffusionXLPipeline.fromPretrained(engine, folder('base'));
    const refiner = await StableDiffusionXLPipeline.fromPretrained(engine, folder('refiner'));
    try {
      const before = engine.memory().inUseBytes;
      const b = await run(base, 'handoff_base', {
        prompt: cb.prompt, negativePrompt: cb.negative_prompt, steps: cb.num_inference_steps, guidanceScale: cb.guidance_scale,
        denoisingEnd: cb.denoising_end, outputType: 'latent', latents: f32('handoff_base.latents_T'),
      });
      // the first 8 of 10 timesteps (those >= 200), then latents, not an image
      expect(b.seen).toEqual(b.all.slice(0, 8));
      expect(b.out.rgba).toEqual([]);
      const lat = b.out.images;
      expect(lat.shape).toEqual([1, 4, 16, 16]);
      expect(track('handoff base latents', relL2(await lat.read(), f32('handoff_base.latents_out')))).toBeLessThan(1e-4);
      // nothing but the latents is left of the base run
      expect(engine.memory().inUseBytes - before).toBe(lat.size * 4);
      const r = await run(refiner, 'handoff_refiner', { prompt: cr.prompt, image: lat, steps: cr.num_inference_steps, guidanceScale: cr.guidance_scale, denoisingStart: cr.denoising_start });
      expect(r.seen).toEqual(r.all.slice(8));
      lat.dispose();
      await image('handoff_refiner', r.out);
      expect(engine.memory().inUseBytes).toBe(before);
    } finally {
      base.dispose();
      refiner.dispose();
    }
  }, 300_000);

  it('a VAE with latents_mean / latents_std: img2img from an RGB image normalises the encoded latents and denormalises before decoding', async () => {
    const c = m.cases.vae_norm;
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, folder('refiner_norm'));
    const vae = pipe.vae as AutoencoderKL;
    const E = engine.tensor(f32('vae_norm.posterior_noise'), ref('vae_norm.posterior_noise').shape);
    const rgb = engine.tensor(f32('vae_norm.image_in'), ref('vae_norm.image_in').shape);
    // diffusers' posterior sample drew torch noise: the generator gave it as E on both sides
    const sample = vae.sample.bind(vae);
    const spy = vi.spyOn(vae, 'sample').mockImplementation((dist) => sample(dist, { noise: E }));
    try {
      expect(pipe.latentsNorm).toEqual({ mean: [0.3, -0.8, 0.1, 0.5], std: [1.7, 0.6, 2.2, 0.9] });
      const { out } = await run(pipe, 'vae_norm', { prompt: c.prompt, image: rgb, strength: c.strength, steps: c.num_inference_steps, guidanceScale: c.guidance_scale, latents: f32('vae_norm.noise') });
      expect(spy).toHaveBeenCalledTimes(1);
      await image('vae_norm', out);
    } finally {
      spy.mockRestore();
      E.dispose();
      rgb.dispose();
      pipe.dispose();
    }
  }, 300_000);

  it('refuses bad handoff and rescale options before allocating, and a VAE config with only one of latents_mean / latents_std', async () => {
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, folder('base'));
    const sd = await StableDiffusionPipeline.fromPretrained(engine, folder('sd'));
    try {
      const before = engine.memory().inUseBytes;
      const img = engine.tensor(new Float32Array(4 * 16 * 16).fill(0.1), [1, 4, 16, 16]);
      const bad: [Record<string, unknown>, RegExp][] = [
        [{ denoisingStart: 0.8 }, /denoisingStart needs image/],
        [{ image: img, denoisingStart: 0.8, denoisingEnd: 0.5 }, /denoisingStart 0.8 must be below denoisingEnd 0.5/],
        [{ image: img, denoisingStart: 0.8, latents: new Float32Array(4 * 16 * 16) }, /latents .* is not used with denoisingStart/],
        [{ denoisingEnd: 1 }, /denoisingEnd must be a number in \(0, 1\)/],
        [{ denoisingEnd: 0.01, steps: 2 }, /denoisingEnd 0.01 with 2 steps leaves no step to run \(every timestep is below 990\)/],
        [{ image: img, denoisingStart: 0.9999, steps: 2 }, /denoisingStart 0.9999 with 2 steps leaves no step to run \(no timestep below 0\)/],
        [{ guidanceRescale: 1.5 }, /guidanceRescale must be a number in \[0, 1\]/],
        [{ outputType: 'png' }, /outputType must be 'image' or 'latent'/],
      ];
      const made = engine.memory().inUseBytes;
      for (const [o, re] of bad) await expect(pipe.generate({ steps: 3, prompt: 'a', ...o }), String(re)).rejects.toThrow(re);
      await expect(sd.generate({ steps: 1, prompt: 'a', guidanceRescale: -0.1 })).rejects.toThrow(/guidanceRescale must be a number in \[0, 1\]/);
      expect(engine.memory().inUseBytes).toBe(made);
      img.dispose();
      expect(engine.memory().inUseBytes).toBe(before);
      // SD's latents come back too
      const lat = await sd.generate({ steps: 1, prompt: 'a', seed: 1, height: 16, width: 16, outputType: 'latent' });
      expect(lat.images.shape).toEqual([1, 4, 8, 8]);
      lat.images.dispose();
      expect(engine.memory().inUseBytes).toBe(before);
      const vcfg = pipe.vae.config as Record<string, unknown>;
      for (const [extra, re] of [
        [{ latents_mean: [0, 0, 0, 0] }, /latents_mean without latents_std; both or neither/],
        [{ latents_mean: [0, 0, 0, 0], latents_std: [1, 1, 0, 1] }, /latents_std must be 4 finite positive numbers/],
      ] as const) {
        Object.assign(vcfg, extra);
        try {
          expect(() => new StableDiffusionXLPipeline({ unet: pipe.unet, vae: pipe.vae, scheduler: pipe.scheduler, textEncoder: pipe.textEncoder, textEncoder2: pipe.textEncoder2, tokenizer: pipe.tokenizer, tokenizer2: pipe.tokenizer2 })).toThrow(re);
        } finally {
          delete vcfg.latents_mean;
          delete vcfg.latents_std;
        }
      }
    } finally {
      pipe.dispose();
      sd.dispose();
    }
  }, 300_000);
});
