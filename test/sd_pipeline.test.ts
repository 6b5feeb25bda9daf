// StableDiffusionPipeline: the two diffusers text-to-image fixtures step by step (PNDM and DDIM,
// guidance 7.5), a tiny SD folder built on disk and loaded like a real one (tokenizer + CLIP text
// encoder + UNet + VAE) generating from a prompt, image-to-image, and inpainting both ways.
import { describe, it, expect, afterAll, beforeAll, vi } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { StableDiffusionPipeline, UNet2DConditionModel, AutoencoderKL, AutoencoderTiny, WeightSource, createScheduler, type Engine } from '../src/index.js';
import { getEngine, relL2, track, reportWorst, randArray } from './helpers.js';
import { loadCase, FIXTURES } from './fixture.js';
import { buildTinySdFolder } from './tiny_sd.js';
import { randomTensorSource } from '../bench/text_encoder.js';

afterAll(() => reportWorst('sd pipeline'));

type Cfg = Record<string, Record<string, unknown>>;

async function fixturePipeline(engine: Engine, name: string) {
  const c = loadCase(name);
  const cfg = c.config as Cfg;
  const w = WeightSource.fromBytes(readFileSync(join(c.dir, 'weights.safetensors')), name);
  const unet = await UNet2DConditionModel.load(engine, cfg.unet, w.withPrefix('unet.'));
  const vae = await AutoencoderKL.load(engine, cfg.vae, w.withPrefix('vae.'));
  return { pipe: new StableDiffusionPipeline({ unet, vae, scheduler: createScheduler(cfg.scheduler) }), c };
}

describe('StableDiffusionPipeline vs diffusers', () => {
  for (const name of ['pipelines/txt2img_cfg_pndm', 'pipelines/txt2img_cfg_ddim']) {
    it(`${name}: latents at every step and the final image`, async () => {
      const engine = await getEngine();
      const { pipe, c } = await fixturePipeline(engine, name);
      const pe = engine.tensor(Float32Array.from(c.input('prompt_embeds').data), c.input('prompt_embeds').shape);
      const ne = engine.tensor(Float32Array.from(c.input('negative_prompt_embeds').data), c.input('negative_prompt_embeds').shape);
      const steps = c.output('latents_steps');
      const per = steps.data.length / steps.shape[0];
      const seen: number[] = [];
      const out = await pipe.generate({
        promptEmbeds: pe,
        negativePromptEmbeds: ne,
        steps: 10,
        guidanceScale: 7.5,
        latents: Float32Array.from(c.input('latents_T').data),
        onStep: async ({ step, timestep, latents }) => {
          seen.push(timestep);
          const got = await latents.read();
          expect(track(`${name} latents per step`, relL2(got, steps.data.subarray((step - 1) * per, step * per))), `step ${step}`).toBeLessThan(1e-4);
        },
      });
      expect(seen).toEqual(Array.from(c.output('timesteps').data));
      expect(track(`${name} image`, relL2(await out.images.read(), c.output('image').data))).toBeLessThan(1e-4);
      [pe, ne, out.images].forEach((t) => t.dispose());
      pipe.dispose();
    });
  }
});

describe('text to image end to end from a diffusers folder on disk', () => {
  let dir = '';
  beforeAll(() => {
    dir = buildTinySdFolder();
  });

  it('loads the folder through the same loader as a real model and generates from a prompt', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, dir);
    expect(pipe.tokenizer).not.toBeNull();
    expect(pipe.textEncoder).not.toBeNull();
    const gen = () => pipe.generate({ prompt: 'a photograph of an astronaut riding a horse', negativePrompt: 'blurry', steps: 3, guidanceScale: 7.5, seed: 42 });
    const a = await gen();
    const b = await gen();
    expect(a.images.shape).toEqual([1, 3, 64, 64]);
    const va = await a.images.read();
    expect(va.every((v) => Number.isFinite(v) && v >= 0 && v <= 1)).toBe(true);
    expect(await b.images.read()).toEqual(va);
    // a different prompt changes the image: the text actually conditions the UNet
    const c = await pipe.generate({ prompt: 'a red cube', negativePrompt: 'blurry', steps: 3, guidanceScale: 7.5, seed: 42 });
    expect(relL2(await c.images.read(), va)).toBeGreaterThan(1e-3);
    [a.images, b.images, c.images].forEach((t) => t.dispose());
    pipe.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
  });
});

describe('guidance off (guidanceScale <= 1, as diffusers: do_classifier_free_guidance = scale > 1)', () => {
  it('runs the UNet once per step on the un-doubled batch with the prompt embeddings only, and equals the guided formula at scale 1', async () => {
    const engine = await getEngine();
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, buildTinySdFolder());
    const base = engine.memory().inUseBytes;
    const spy = vi.spyOn(pipe.unet, 'forward');
    // per UNet call: [sample batch, encoder_hidden_states batch]
    const run = async (guidanceScale: number) => {
      spy.mockClear();
      const out = await pipe.generate({ prompt: ['a red cube', 'a blue ball'], negativePrompt: 'blurry', steps: 3, guidanceScale, seed: 7 });
      const batches = spy.mock.calls.map(([x, , o]) => [x.shape[0], o?.encoderHiddenStates?.shape[0]]);
      const v = await out.images.read();
      out.images.dispose();
      return { batches, v };
    };
    try {
      for (const s of [1, 0.5, 0]) expect((await run(s)).batches, `scale ${s}`).toEqual([[2, 2], [2, 2], [2, 2]]);
      const off = await run(1);
      // just above 1 guidance is on: a doubled batch [uncond, cond], and uncond + s (cond - uncond) ~ cond
      const on = await run(1 + 2 ** -20);
      expect(on.batches).toEqual([[4, 4], [4, 4], [4, 4]]);
      expect(relL2(off.v, on.v)).toBeLessThan(1e-4);
      // and the single pass is conditioned on the prompt, not the negative prompt or the empty one
      expect(relL2(off.v, (await run(7.5)).v)).toBeGreaterThan(1e-3);
      // LCM's few-step sampling without guidance: one pass per step, same seed -> same image
      spy.mockClear();
      const lcm = () => pipe.generate({ prompt: 'a red cube', steps: 4, guidanceScale: 1, seed: 5, sampler: 'lcm' });
      const [a, b] = [await lcm(), await lcm()];
      expect(spy.mock.calls.map(([x]) => x.shape[0])).toEqual(Array(8).fill(1));
      const va = await a.images.read();
      expect(va.every((v) => Number.isFinite(v) && v >= 0 && v <= 1)).toBe(true);
      expect(await b.images.read()).toEqual(va);
      a.images.dispose();
      b.images.dispose();
    } finally {
      spy.mockRestore();
      pipe.dispose();
    }
    expect(engine.memory().inUseBytes).toBeLessThanOrEqual(base);
  }, 300_000);
});

describe('previews', () => {
  it('decodes a TAESD preview at every step when asked', async () => {
    const engine = await getEngine();
    const { pipe, c } = await fixturePipeline(engine, 'pipelines/txt2img_cfg_ddim');
    pipe.previewDecoder = await AutoencoderTiny.fromTaesd(engine, { decoder: join(FIXTURES, 'models', 'taesd', 'taesd_decoder.safetensors') });
    const pe = engine.tensor(Float32Array.from(c.input('prompt_embeds').data), [1, 7, 32]);
    const ne = engine.tensor(Float32Array.from(c.input('negative_prompt_embeds').data), [1, 7, 32]);
    const sizes: string[] = [];
    const out = await pipe.generate({ promptEmbeds: pe, negativePromptEmbeds: ne, steps: 3, seed: 2, preview: true, onStep: ({ preview }) => void sizes.push(preview ? `${preview[0].width}x${preview[0].height}:${preview[0].data.length}` : 'none') });
    expect(sizes).toEqual(Array(3).fill('64x64:16384'));
    [pe, ne, out.images].forEach((t) => t.dispose());
    pipe.dispose();
  });
});

describe('image to image and inpainting', () => {
  it('img2img runs floor(steps * strength) steps from the noised image', async () => {
    const engine = await getEngine();
    const { pipe, c } = await fixturePipeline(engine, 'pipelines/txt2img_cfg_ddim');
    const pe = engine.tensor(Float32Array.from(c.input('prompt_embeds').data), [1, 7, 32]);
    const ne = engine.tensor(Float32Array.from(c.input('negative_prompt_embeds').data), [1, 7, 32]);
    const image = engine.tensor(randArray(3 * 64 * 64, 5, 0, 1), [1, 3, 64, 64]);
    const timesteps: number[] = [];
    const out = await pipe.generate({ promptEmbeds: pe, negativePromptEmbeds: ne, image, strength: 0.6, steps: 10, seed: 1, onStep: ({ timestep }) => void timesteps.push(timestep) });
    expect(timesteps.length).toBe(6);
    const full = pipe.scheduler.clone(); // generate() runs on its own copy of the scheduler
    full.setTimesteps(10);
    expect(timesteps[0]).toBe(full.timesteps[4]);
    expect(out.images.shape).toEqual([1, 3, 64, 64]);
    [pe, ne, image, out.images].forEach((t) => t.dispose());
    pipe.dispose();
  });

  it('latent-blending inpainting keeps the unmasked region: mask 0 everywhere gives back the encoded image', async () => {
    const engine = await getEngine();
    const { pipe, c } = await fixturePipeline(engine, 'pipelines/txt2img_cfg_ddim');
    const pe = engine.tensor(Float32Array.from(c.input('prompt_embeds').data), [1, 7, 32]);
    const ne = engine.tensor(Float32Array.from(c.input('negative_prompt_embeds').data), [1, 7, 32]);
    const image = engine.tensor(randArray(3 * 64 * 64, 6, 0, 1), [1, 3, 64, 64]);
    const mask = engine.tensor(new Float32Array(64 * 64), [1, 1, 64, 64]);
    const out = await pipe.generate({ promptEmbeds: pe, negativePromptEmbeds: ne, image, maskImage: mask, steps: 4, seed: 9 });
    const lat = pipe.encodeImage(image, 9);
    const ref = pipe.decodeLatents(lat);
    expect(relL2(await out.images.read(), await ref.read())).toBeLessThan(1e-5);
    [pe, ne, image, mask, out.images, lat, ref].forEach((t) => t.dispose());
    pipe.dispose();
  });

  it('a 9-channel inpainting UNet gets [latents, mask, masked-image latents]', async () => {
    const engine = await getEngine();
    const c = loadCase('pipelines/txt2img_cfg_ddim');
    const cfg = c.config as Cfg;
    const w = WeightSource.fromBytes(readFileSync(join(c.dir, 'weights.safetensors')), 'w');
    const vae = await AutoencoderKL.load(engine, cfg.vae, w.withPrefix('vae.'));
    const unet = await UNet2DConditionModel.load(engine, { ...cfg.unet, in_channels: 9 }, randomTensorSource(3));
    const pipe = new StableDiffusionPipeline({ unet, vae, scheduler: createScheduler(cfg.scheduler) });
    const pe = engine.tensor(randArray(7 * 32, 1), [1, 7, 32]);
    const ne = engine.tensor(randArray(7 * 32, 2), [1, 7, 32]);
    const image = engine.tensor(randArray(3 * 64 * 64, 7, 0, 1), [1, 3, 64, 64]);
    const m = new Float32Array(64 * 64);
    for (let i = 0; i < m.length; i++) m[i] = i % 64 < 32 ? 1 : 0;
    const mask = engine.tensor(m, [1, 1, 64, 64]);
    const out = await pipe.generate({ promptEmbeds: pe, negativePromptEmbeds: ne, image, maskImage: mask, steps: 2, seed: 3 });
    expect(out.images.shape).toEqual([1, 3, 64, 64]);
    await expect(pipe.generate({ promptEmbeds: pe, negativePromptEmbeds: ne, steps: 2 })).rejects.toThrow(/inpainting UNet \(9 channels\)/);
    [pe, ne, image, mask, out.images].forEach((t) => t.dispose());
    pipe.dispose();
  });
});
