// StableDiffusionPipeline: the two diffusers text-to-image fixtures step by step (PNDM and DDIM,
// guidance 7.5), a tiny SD folder built on disk and loaded like a real one (tokenizer + CLIP text
// encoder + UNet + VAE) generating from a prompt, image-to-image, and inpainting both ways.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { readFileSync, mkdtempSync, mkdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { StableDiffusionPipeline, UNet2DConditionModel, AutoencoderKL, WeightSource, createScheduler, type Engine } from '../src/index.js';
import { getEngine, relL2, track, reportWorst, randArray } from './helpers.js';
import { loadCase, FIXTURES } from './fixture.js';
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
    // A tiny SD 1.x folder: the real CLIP tokenizer, the tiny CLIP text encoder fixture (width 32)
    // and the tiny UNet/VAE of the txt2img fixture (cross_attention_dim 32), in diffusers layout.
    dir = mkdtempSync(join(tmpdir(), 'tiny-sd-'));
    const c = loadCase('pipelines/txt2img_cfg_ddim');
    const cfg = c.config as Cfg;
    const index = {
      _class_name: 'StableDiffusionPipeline',
      _diffusers_version: '0.31.0',
      scheduler: ['diffusers', 'DDIMScheduler'],
      text_encoder: ['transformers', 'CLIPTextModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'UNet2DConditionModel'],
      vae: ['diffusers', 'AutoencoderKL'],
      safety_checker: [null, null],
      feature_extractor: [null, null],
    };
    writeFileSync(join(dir, 'model_index.json'), JSON.stringify(index));
    for (const sub of ['scheduler', 'text_encoder', 'tokenizer', 'unet', 'vae']) mkdirSync(join(dir, sub));
    writeFileSync(join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify(cfg.scheduler));
    for (const f of ['vocab.json', 'merges.txt']) copyFileSync(join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14', f), join(dir, 'tokenizer', f));
    copyFileSync(join(FIXTURES, 'clip_text', 'quick_gelu', 'config.json'), join(dir, 'text_encoder', 'config.json'));
    copyFileSync(join(FIXTURES, 'clip_text', 'quick_gelu', 'model.safetensors'), join(dir, 'text_encoder', 'model.safetensors'));
    writeFileSync(join(dir, 'unet', 'config.json'), JSON.stringify(cfg.unet));
    writeFileSync(join(dir, 'vae', 'config.json'), JSON.stringify(cfg.vae));
    // the fixture stores both models in one file with unet./vae. prefixes: split it
    const bytes = readFileSync(join(c.dir, 'weights.safetensors'));
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString()) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    for (const part of ['unet', 'vae']) {
      const entries: [string, { dtype: string; shape: number[]; data_offsets: [number, number] }][] = [];
      const chunks: Buffer[] = [];
      let off = 0;
      for (const [k, h] of Object.entries(header)) {
        if (!k.startsWith(part + '.')) continue;
        const data = bytes.subarray(8 + n + h.data_offsets[0], 8 + n + h.data_offsets[1]);
        entries.push([k.slice(part.length + 1), { dtype: h.dtype, shape: h.shape, data_offsets: [off, off + data.length] }]);
        chunks.push(Buffer.from(data));
        off += data.length;
      }
      let hjson = JSON.stringify(Object.fromEntries(entries));
      hjson += ' '.repeat((8 - (hjson.length % 8)) % 8);
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(hjson.length));
      writeFileSync(join(dir, part, 'diffusion_pytorch_model.safetensors'), Buffer.concat([len, Buffer.from(hjson), ...chunks]));
    }
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
    expect(timesteps[0]).toBe(pipe.scheduler.timesteps[4]);
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
