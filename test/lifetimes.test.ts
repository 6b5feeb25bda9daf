// No leaks on failure: every public entry point, made to fail at its first, a middle and its last
// kernel dispatch (engine.faults, a test hook), gives back every byte it took: engine.memory()
// .inUseBytes returns exactly to its value before the call. Plus the failures reported in issue #9
// §1: an absurd batch, an absurd sample_size, NaN guidance, dispose() during a run, odd SD sizes.
import { describe, it, expect } from 'vitest';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AutoencoderKL,
  AutoencoderTiny,
  CLIPTextModel,
  CLIPTextModelWithProjection,
  LDMPipeline,
  StableDiffusionPipeline,
  StableDiffusionXLPipeline,
  UNet2DConditionModel,
  UNet2DModel,
  VQModel,
  WeightSource,
  createScheduler,
  type Engine,
  type Tensor,
} from '../src/index.js';
import { getEngine, randArray } from './helpers.js';
import { loadCase, FIXTURES } from './fixture.js';
import { buildTinySdFolder } from './tiny_sd.js';
import { modernCase, caseWeights, idsOf } from './modern_text_case.js';
import { buildTinySdxlFolder } from './tiny_sdxl.js';

const inUse = (e: Engine) => e.memory().inUseBytes;

function input(engine: Engine, shape: number[], seed: number): Tensor {
  return engine.tensor(randArray(shape.reduce((a, b) => a * b, 1), seed), shape);
}

/** Disposes every tensor in a result (a tensor, or arrays/objects of them). */
function disposeAll(v: unknown): void {
  if (!v || typeof v !== 'object') return;
  if ((v as Tensor).isTensor) return (v as Tensor).dispose();
  for (const x of Object.values(v)) disposeAll(x);
}

/**
 * Runs `call` once to count its dispatches (its result freed, memory back to the start), then
 * makes dispatch 1, the middle one and the last one throw: each failure must leave inUseBytes as
 * it was. Returns the dispatch count.
 */
async function failEverywhere(engine: Engine, name: string, call: () => unknown): Promise<number> {
  const f = engine.faults;
  const start = inUse(engine);
  f.dispatches = 0;
  f.failAt = Infinity; // count only
  try {
    disposeAll(await call());
  } finally {
    f.failAt = 0;
  }
  const n = f.dispatches;
  expect(n, `${name}: dispatches`).toBeGreaterThan(2);
  expect(inUse(engine), `${name}: after a successful call`).toBe(start);
  for (const k of [...new Set([1, Math.ceil(n / 2), n])]) {
    f.dispatches = 0;
    f.failAt = k;
    let err: unknown = null;
    try {
      disposeAll(await call());
    } catch (e) {
      err = e;
    } finally {
      f.failAt = 0;
    }
    expect(String(err), `${name}: dispatch ${k}/${n} must fail`).toMatch(/injected failure/);
    expect(inUse(engine), `${name}: in-use bytes after a failure at dispatch ${k}/${n}`).toBe(start);
  }
  await engine.sync();
  return n;
}

function fixtureBytes(name: string): Uint8Array {
  return readFileSync(join(FIXTURES, name, 'weights.safetensors'));
}

async function ldmFixturePipeline(engine: Engine, unetOverrides: Record<string, unknown> = {}): Promise<LDMPipeline> {
  const c = loadCase('pipelines/ldm_uncond_vq_ddim');
  const cfg = c.config as Record<string, Record<string, unknown>>;
  const w = WeightSource.fromBytes(readFileSync(join(c.dir, 'weights.safetensors')), 'ldm fixture');
  const unet = await UNet2DModel.load(engine, { ...cfg.unet, ...unetOverrides }, w.withPrefix('unet.'));
  const vqvae = await VQModel.load(engine, cfg.vqvae, w.withPrefix('vqvae.'));
  return new LDMPipeline({ unet, vqvae, scheduler: createScheduler(cfg.scheduler) });
}

describe('a failure at any dispatch frees everything the call made', () => {
  it('AutoencoderKL encode, decode and tiled decode', async () => {
    const engine = await getEngine();
    const vae = await AutoencoderKL.fromConfig(engine, loadCase('autoencoder_kl/small').config, fixtureBytes('autoencoder_kl/small'));
    const f = 2 ** (vae.shape.blockOutChannels.length - 1);
    const x = input(engine, [1, vae.shape.inChannels, 4 * f, 4 * f], 1);
    const z = input(engine, [2, vae.shape.latentChannels, 6, 5], 2);
    await failEverywhere(engine, 'AutoencoderKL.encode', () => vae.encode(x));
    await failEverywhere(engine, 'AutoencoderKL.sample', () => engine.scope(() => vae.sample(vae.encode(x), { seed: 3 })));
    await failEverywhere(engine, 'AutoencoderKL.decode', () => vae.decode(z));
    await failEverywhere(engine, 'AutoencoderKL.decode tiled', () => vae.decode(z, { tile: 3, overlap: 1 }));
    [x, z].forEach((t) => t.dispose());
    vae.dispose();
  });

  it('VQModel encode, quantize and decode', async () => {
    const engine = await getEngine();
    const vq = await VQModel.fromConfig(engine, loadCase('vq_model/small').config, fixtureBytes('vq_model/small'));
    const x = input(engine, [2, vq.shape.inChannels, 16, 12], 4);
    const h = input(engine, [2, vq.embedDim, 5, 7], 5);
    await failEverywhere(engine, 'VQModel.encode', () => vq.encode(x));
    await failEverywhere(engine, 'VQModel.decode', () => vq.decode(h));
    await failEverywhere(engine, 'VQModel.decode forceNotQuantize', () => vq.decode(h, { forceNotQuantize: true }));
    [x, h].forEach((t) => t.dispose());
    vq.dispose();
  });

  it('UNet2DModel and UNet2DConditionModel forward', async () => {
    const engine = await getEngine();
    const u = await UNet2DModel.fromConfig(engine, loadCase('unet2d/class_cond').config, fixtureBytes('unet2d/class_cond'));
    const x = input(engine, [2, u.inChannels, 8, 8], 6);
    const n = await failEverywhere(engine, 'UNet2DModel.forward', () => u.forward(x, [10, 500], { classLabels: [0, 1] }));
    expect(n).toBeGreaterThan(20);
    x.dispose();
    u.dispose();

    const uc = await UNet2DConditionModel.fromConfig(engine, loadCase('unet2d_condition/conv_proj').config, fixtureBytes('unet2d_condition/conv_proj'));
    const s = input(engine, [2, uc.inChannels, 8, 8], 7);
    const ctx = input(engine, [2, 5, uc.crossAttentionDim], 8);
    await failEverywhere(engine, 'UNet2DConditionModel.forward', () => uc.forward(s, 981, { encoderHiddenStates: ctx }));
    [s, ctx].forEach((t) => t.dispose());
    uc.dispose();
  });

  it('CLIPTextModel forward (with hidden states and clip skip)', async () => {
    const engine = await getEngine();
    const dir = join(FIXTURES, 'clip_text', 'quick_gelu');
    const te = await CLIPTextModel.fromConfig(engine, JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')), readFileSync(join(dir, 'model.safetensors')));
    const ids = [
      [49406, 320, 1125, 539, 49407, 49407],
      [49406, 1929, 49407, 49407, 49407, 49407],
    ].map((r) => r.map((v) => v % te.shape.vocabSize));
    await failEverywhere(engine, 'CLIPTextModel.forward', () => te.forward(ids));
    await failEverywhere(engine, 'CLIPTextModel.forward hidden states', () => te.forward(ids, { outputHiddenStates: true, clipSkip: 1 }));
    te.dispose();
  });

  it('CLIPTextModelWithProjection forward and hiddenState', async () => {
    const engine = await getEngine();
    const c = modernCase('with_projection_legacy_eos');
    const te = await CLIPTextModelWithProjection.fromConfig(engine, c.config, caseWeights(c));
    const ids = idsOf(c.input('input_ids')).map((r) => r.slice(0, 12));
    await failEverywhere(engine, 'CLIPTextModelWithProjection.forward', () => te.forward(ids, { hiddenStateIndex: -2 }));
    await failEverywhere(engine, 'CLIPTextModelWithProjection.forward hidden states', () => te.forward(ids, { outputHiddenStates: true, clipSkip: 1 }));
    await failEverywhere(engine, 'CLIPTextModelWithProjection.hiddenState', () => te.hiddenState(ids, -2));
    te.dispose();
  });

  it('AutoencoderTiny encode and decode', async () => {
    const engine = await getEngine();
    const dir = join(FIXTURES, 'models', 'taesd');
    const taesd = await AutoencoderTiny.fromTaesd(engine, { encoder: join(dir, 'taesd_encoder.safetensors'), decoder: join(dir, 'taesd_decoder.safetensors') });
    const x = input(engine, [1, 3, 16, 16], 9);
    const z = input(engine, [1, taesd.shape.latentChannels, 3, 2], 10);
    await failEverywhere(engine, 'AutoencoderTiny.encode', () => taesd.encode(x));
    await failEverywhere(engine, 'AutoencoderTiny.decode', () => taesd.decode(z));
    [x, z].forEach((t) => t.dispose());
    taesd.dispose();
  });

  it('LDMPipeline.generate (class-free and guided)', async () => {
    const engine = await getEngine();
    const pipe = await ldmFixturePipeline(engine);
    await failEverywhere(engine, 'LDMPipeline.generate', () => pipe.generate({ batchSize: 2, steps: 3, seed: 1 }));
    pipe.dispose();
    const mnist = await LDMPipeline.fromPretrained(engine, 'models/ldm-mnist');
    await failEverywhere(engine, 'LDMPipeline.generate guided', () => mnist.generate({ classLabels: [3, 7], steps: 2, guidanceScale: 3, seed: 1 }));
    mnist.dispose();
  });

  it('StableDiffusionPipeline.generate (prompts, guidance, img2img, inpainting by blending)', async () => {
    const engine = await getEngine();
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, buildTinySdFolder());
    const f = pipe.vaeScaleFactor;
    const size = 8 * f;
    await failEverywhere(engine, 'StableDiffusionPipeline.generate', () => pipe.generate({ prompt: ['a cat', 'a dog'], steps: 2, seed: 1, width: size, height: size }));
    const image = engine.tensor(randArray(3 * size * size, 11, 0, 1), [1, 3, size, size]);
    const mask = engine.tensor(randArray(size * size, 12, 0, 1), [1, 1, size, size]);
    await failEverywhere(engine, 'StableDiffusionPipeline.generate inpaint', () =>
      pipe.generate({ prompt: 'a cat', steps: 3, strength: 0.7, seed: 2, image, maskImage: mask, sampler: 'dpm++2m' }),
    );
    [image, mask].forEach((t) => t.dispose());
    pipe.dispose();
  });

  it('StableDiffusionXLPipeline.generate (two encoders, zeros negative, guidance; refiner img2img through the VAE)', async () => {
    const engine = await getEngine();
    const root = mkdtempSync(join(tmpdir(), 'tiny-sdxl-life-'));
    try {
      buildTinySdxlFolder(join(root, 'base'), 'base');
      buildTinySdxlFolder(join(root, 'refiner'), 'refiner');
      const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, join(root, 'base'));
      await failEverywhere(engine, 'StableDiffusionXLPipeline.generate', () => pipe.generate({ prompt: ['a cat', 'a dog'], steps: 2, seed: 1, width: 16, height: 24 }));
      pipe.dispose();
      const refiner = await StableDiffusionXLPipeline.fromPretrained(engine, join(root, 'refiner'));
      const image = engine.tensor(randArray(3 * 16 * 16, 13, 0, 1), [1, 3, 16, 16]);
      await failEverywhere(engine, 'StableDiffusionXLPipeline.generate img2img', () =>
        refiner.generate({ prompt: 'a cat', negativePrompt: 'blurry', image, strength: 0.7, steps: 3, seed: 2, sampler: 'dpm++2m' }),
      );
      image.dispose();
      refiner.dispose();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('the leaks of issue #9 §1', () => {
  it('an absurd batch fails before allocating anything, with a clear error', async () => {
    const engine = await getEngine();
    const pipe = await ldmFixturePipeline(engine);
    await engine.sync();
    const before = engine.memory();
    for (let i = 0; i < 3; i++) await expect(pipe.generate({ batchSize: 100000, steps: 2 })).rejects.toThrow(/batch of 100000 .* at most \d+ fit/);
    expect(engine.memory().inUseBytes).toBe(before.inUseBytes);
    expect(engine.memory().heldBytes).toBe(before.heldBytes); // nothing was even allocated
    pipe.dispose();
  });

  it('a UNet config with sample_size 2048 fails before allocating, with a clear error', async () => {
    const engine = await getEngine();
    const pipe = await ldmFixturePipeline(engine, { sample_size: 2048 });
    await engine.sync();
    const before = engine.memory();
    await expect(pipe.generate({ steps: 2 })).rejects.toThrow(/2048x2048 latents/);
    expect(engine.memory().inUseBytes).toBe(before.inUseBytes);
    expect(engine.memory().heldBytes).toBe(before.heldBytes);
    pipe.dispose();
  });

  it('NaN guidance and dispose() during a run leave nothing in use', async () => {
    const engine = await getEngine();
    const start = inUse(engine);
    const mnist = await LDMPipeline.fromPretrained(engine, 'models/ldm-mnist');
    const loaded = inUse(engine);
    await expect(mnist.generate({ classLabels: [1], steps: 2, guidanceScale: NaN, seed: 1 })).rejects.toThrow();
    expect(inUse(engine)).toBe(loaded);
    // the pipeline is disposed at step 1 of 3: the run fails at step 2 and frees what it made
    await expect(mnist.generate({ classLabels: [1], steps: 3, seed: 1, onStep: ({ step }) => (step === 1 ? mnist.dispose() : undefined) })).rejects.toThrow(/disposed/);
    expect(inUse(engine)).toBe(start);
  });

  it('Stable Diffusion sizes 8, 24 and 40: an image or a clear error, and nothing left in use', async () => {
    const engine = await getEngine();
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, buildTinySdFolder());
    const base = inUse(engine);
    for (const size of [8, 24, 40]) {
      try {
        const out = await pipe.generate({ prompt: 'a cat', steps: 2, seed: 1, width: size, height: size });
        expect(out.images.shape).toEqual([1, 3, size, size]);
        out.images.dispose();
      } catch (e) {
        expect(e).toBeInstanceOf(Error);
      }
      expect(inUse(engine), `size ${size}`).toBe(base);
    }
    pipe.dispose();
  });
});
