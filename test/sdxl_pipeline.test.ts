// StableDiffusionXLPipeline against diffusers 0.31 (tools/pyref/gen_sdxl_pipeline.py; weights seeded on
// both sides): tiny SDXL folders loaded like real ones, stage by stage: both tokenizers' ids, the
// concatenated penultimate hidden states and the pooled text_embeds (negative prompt, zeros for an empty
// one, prompt_2, clip_skip), the micro-conditioning time ids the UNet gets, the latents after every step
// and the image; the refiner layout doing img2img with aesthetic scores; an LCM UNet (guidance embedding).
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { readSafetensorsFile, type HostTensor } from './fixture.js';
import { getEngine, relL2, track, reportWorst } from './helpers.js';
import { buildTinySdxlFolder, buildTinySdxlSingleFile, readSdxlManifest, SDXL_DIR, type SdxlLayout } from './tiny_sdxl.js';
import { FIXTURES } from './fixture.js';
import { seededSafetensors, type ManifestEntry } from './seeded.js';
import { StableDiffusionPipeline, StableDiffusionXLPipeline, type Engine, type Tensor } from '../src/index.js';

const m = readSdxlManifest();
const refs = readSafetensorsFile(join(SDXL_DIR, 'refs.safetensors'));
const ref = (k: string): HostTensor => {
  const r = refs[k];
  if (!r) throw new Error(`no ${k} in refs`);
  return r;
};
const f32 = (k: string) => ref(k).data as Float32Array;

type Call = Record<string, unknown>;

describe('StableDiffusionXLPipeline vs diffusers', () => {
  let engine: Engine;
  let root: string;
  const folders: Partial<Record<SdxlLayout, string>> = {};
  const folder = (layout: SdxlLayout) => {
    if (!folders[layout]) {
      folders[layout] = join(root, layout);
      buildTinySdxlFolder(folders[layout]!, layout, m);
    }
    return folders[layout]!;
  };
  beforeAll(async () => {
    engine = await getEngine();
    root = mkdtempSync(join(tmpdir(), 'tiny-sdxl-'));
  });
  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
    reportWorst('sdxl pipeline');
  });

  async function compareEmbeds(label: string, got: { promptEmbeds: Tensor; pooledPromptEmbeds: Tensor }, prefix: string) {
    expect(got.promptEmbeds.shape).toEqual(ref(`${prefix}prompt_embeds`).shape);
    expect(track(`${label} prompt_embeds`, relL2(await got.promptEmbeds.read(), f32(`${prefix}prompt_embeds`)))).toBeLessThan(1e-4);
    expect(got.pooledPromptEmbeds.shape).toEqual(ref(`${prefix}pooled_prompt_embeds`).shape);
    expect(track(`${label} pooled_prompt_embeds`, relL2(await got.pooledPromptEmbeds.read(), f32(`${prefix}pooled_prompt_embeds`)))).toBeLessThan(1e-4);
    got.promptEmbeds.dispose();
    got.pooledPromptEmbeds.dispose();
  }

  /** generate() with the case's options; checks the time ids the UNet saw, every step and the image. */
  async function runCase(pipe: StableDiffusionXLPipeline | StableDiffusionPipeline, name: string, opts: Call, timeIds?: number[][]) {
    const steps = ref(`${name}.latents_steps`);
    const per = steps.data.length / steps.shape[0];
    const seen: number[] = [];
    const spy = vi.spyOn(pipe.unet, 'forward');
    const before = engine.memory().inUseBytes;
    try {
      const out = await pipe.generate({
        ...opts,
        onStep: async ({ step, timestep, latents }) => {
          seen.push(timestep);
          const got = await latents.read();
          expect(track(`sdxl ${name} latents per step`, relL2(got, steps.data.subarray((step - 1) * per, step * per))), `step ${step}`).toBeLessThan(1e-4);
        },
      });
      const ts = Array.from(ref(`${name}.timesteps`).data);
      expect(seen).toEqual(ts.slice(ts.length - seen.length));
      expect(seen.length).toBe(steps.shape[0]);
      const added = spy.mock.calls[0][2] as { addedCondKwargs?: { timeIds?: number[][] | Tensor } };
      const ids = added.addedCondKwargs?.timeIds;
      if (timeIds) expect(Array.isArray(ids) ? ids : await (ids as Tensor).read().then((v) => [...v])).toEqual(timeIds);
      expect(out.images.shape).toEqual(ref(`${name}.image`).shape);
      expect(track(`sdxl ${name} image`, relL2(await out.images.read(), f32(`${name}.image`)))).toBeLessThan(1e-4);
      out.images.dispose();
      expect(engine.memory().inUseBytes).toBe(before);
      return spy.mock.calls.length;
    } finally {
      spy.mockRestore();
    }
  }

  it('base layout: token ids of both tokenizers, prompt and negative embeddings, time ids, 3 Euler steps with guidance 5, the image', async () => {
    const c = m.cases.base;
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, folder('base'));
    try {
      expect(pipe.forceZerosForEmptyPrompt).toBe(true);
      expect(pipe.tokenizer2!.padTokenId).toBe(0);
      expect(pipe.tokenizer!.encode(c.prompt as string)).toEqual(Array.from(ref('base.input_ids').data));
      expect(pipe.tokenizer2!.encode(c.prompt as string)).toEqual(Array.from(ref('base.input_ids_2').data));
      await compareEmbeds('sdxl base', pipe.encodePrompt([c.prompt as string]), 'base.');
      await compareEmbeds('sdxl base negative', pipe.encodePrompt([c.negative_prompt as string]), 'base.negative_');
      const ids = [...ref('base.add_time_ids').data];
      // default size: unet sample_size x the VAE's factor
      const calls = await runCase(
        pipe,
        'base',
        { prompt: c.prompt, negativePrompt: c.negative_prompt, steps: c.num_inference_steps, guidanceScale: c.guidance_scale, latents: f32('base.latents_T') },
        [ids, ids],
      );
      expect(calls).toBe(3);
    } finally {
      pipe.dispose();
    }
  }, 300_000);

  it("diffusers' prompt embeddings given instead of prompts (promptEmbeds, pooledPromptEmbeds and negatives) give its image", async () => {
    const c = m.cases.base;
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, folder('base'));
    const up = (k: string) => engine.tensor(f32(k), ref(k).shape);
    const embeds = {
      promptEmbeds: up('base.prompt_embeds'),
      pooledPromptEmbeds: up('base.pooled_prompt_embeds'),
      negativePromptEmbeds: up('base.negative_prompt_embeds'),
      negativePooledPromptEmbeds: up('base.negative_pooled_prompt_embeds'),
    };
    try {
      const ids = [...ref('base.add_time_ids').data];
      await runCase(pipe, 'base', { ...embeds, steps: c.num_inference_steps, guidanceScale: c.guidance_scale, latents: f32('base.latents_T') }, [ids, ids]);
    } finally {
      Object.values(embeds).forEach((t) => t.dispose());
      pipe.dispose();
    }
  }, 300_000);

  it('prompt_2, zeros for the missing negative prompt, clip_skip 1, micro-conditioning, 24x40, batch 2', async () => {
    const c = m.cases.cond;
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, folder('base'));
    try {
      await compareEmbeds('sdxl cond', pipe.encodePrompt(c.prompt as string[], c.prompt_2 as string[], 1), 'cond.');
      expect([...f32('cond.negative_prompt_embeds')].every((v) => v === 0)).toBe(true);
      const ids = [...ref('cond.add_time_ids').data];
      await runCase(
        pipe,
        'cond',
        {
          prompt: c.prompt,
          prompt2: c.prompt_2,
          clipSkip: c.clip_skip,
          height: c.height,
          width: c.width,
          originalSize: c.original_size,
          cropsCoordsTopLeft: c.crops_coords_top_left,
          targetSize: c.target_size,
          steps: c.num_inference_steps,
          guidanceScale: c.guidance_scale,
          latents: f32('cond.latents_T'),
        },
        [ids, ids, ids, ids],
      );
    } finally {
      pipe.dispose();
    }
  }, 300_000);

  it('refiner layout (text_encoder_2 only, aesthetic score): img2img from latents at strength 0.6', async () => {
    const c = m.cases.refiner;
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, folder('refiner'));
    try {
      expect(pipe.textEncoder).toBeNull();
      expect(pipe.requiresAestheticsScore).toBe(true);
      expect(pipe.forceZerosForEmptyPrompt).toBe(false);
      await compareEmbeds('sdxl refiner', pipe.encodePrompt([c.prompt as string]), 'refiner.');
      await compareEmbeds('sdxl refiner negative', pipe.encodePrompt(['']), 'refiner.negative_');
      const il = ref('refiner.image_latents');
      const image = engine.tensor(il.data as Float32Array, il.shape);
      try {
        await runCase(
          pipe,
          'refiner',
          {
            prompt: c.prompt,
            image,
            strength: c.strength,
            steps: c.num_inference_steps,
            guidanceScale: c.guidance_scale,
            aestheticScore: c.aesthetic_score,
            negativeAestheticScore: c.negative_aesthetic_score,
            latents: f32('refiner.noise'),
          },
          [[...ref('refiner.negative_add_time_ids').data], [...ref('refiner.add_time_ids').data]],
        );
      } finally {
        image.dispose();
      }
    } finally {
      pipe.dispose();
    }
  }, 300_000);

  it('LCM UNet (time_cond_proj_dim): guidance as an embedding, one UNet pass per step on the plain batch', async () => {
    const c = m.cases.lcm;
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, folder('lcm'));
    try {
      const ids = [32, 32, 0, 0, 32, 32];
      const calls = await runCase(pipe, 'lcm', { prompt: c.prompt, steps: c.num_inference_steps, guidanceScale: c.guidance_scale, latents: f32('lcm.latents_T') }, [ids]);
      expect(calls).toBe(1);
    } finally {
      pipe.dispose();
    }
  }, 300_000);

  it('LCM UNet in StableDiffusionPipeline too: the guidance embedding, no classifier-free guidance', async () => {
    const c = m.cases.sd_lcm;
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, folder('sd_lcm'));
    try {
      const calls = await runCase(pipe, 'sd_lcm', { prompt: c.prompt, steps: c.num_inference_steps, guidanceScale: c.guidance_scale, height: c.height, width: c.width, latents: f32('sd_lcm.latents_T') });
      expect(calls).toBe(1);
    } finally {
      pipe.dispose();
    }
  }, 300_000);

  describe('single file (sgm keys)', () => {
    const tokenizer = join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14');

    it('the base file: CLIP-L + bigG + UNet + VAE give the same embeddings, steps and image as the folder', async () => {
      const c = m.cases.base;
      const before = engine.memory().inUseBytes;
      const pipe = await StableDiffusionXLPipeline.fromSingleFile(engine, buildTinySdxlSingleFile('base', m), {
        unetConfig: m.configs.unet,
        vaeConfig: m.configs.vae,
        textEncoderConfig: m.configs.text_encoder,
        textEncoder2Config: m.configs.text_encoder_2,
        schedulerConfig: { _class_name: 'EulerDiscreteScheduler', ...m.configs.scheduler },
        tokenizer,
      });
      try {
        expect(pipe.tokenizer2!.padTokenId).toBe(0); // SDXL's tokenizer_2 pads with '!'
        expect(pipe.requiresAestheticsScore).toBe(false);
        await compareEmbeds('sdxl single file', pipe.encodePrompt([c.prompt as string]), 'base.');
        const ids = [...ref('base.add_time_ids').data];
        await runCase(
          pipe,
          'base',
          { prompt: c.prompt, negativePrompt: c.negative_prompt, steps: c.num_inference_steps, guidanceScale: c.guidance_scale, latents: f32('base.latents_T') },
          [ids, ids],
        );
      } finally {
        pipe.dispose();
      }
      expect(engine.memory().inUseBytes).toBe(before);
    }, 300_000);

    it("the refiner's file (bigG as conditioner.embedders.0.model): refiner time ids, img2img as the folder", async () => {
      const c = m.cases.refiner;
      const pipe = await StableDiffusionXLPipeline.fromSingleFile(engine, buildTinySdxlSingleFile('refiner', m), {
        unetConfig: m.configs.unet_refiner,
        vaeConfig: m.configs.vae,
        textEncoder2Config: m.configs.text_encoder_2,
        schedulerConfig: { _class_name: 'EulerDiscreteScheduler', ...m.configs.scheduler },
        tokenizer,
      });
      const il = ref('refiner.image_latents');
      const image = engine.tensor(il.data as Float32Array, il.shape);
      try {
        expect(pipe.textEncoder).toBeNull();
        expect(pipe.requiresAestheticsScore).toBe(true);
        expect(pipe.forceZerosForEmptyPrompt).toBe(false);
        await runCase(
          pipe,
          'refiner',
          { prompt: c.prompt, image, strength: c.strength, steps: c.num_inference_steps, guidanceScale: c.guidance_scale, aestheticScore: c.aesthetic_score, negativeAestheticScore: c.negative_aesthetic_score, latents: f32('refiner.noise') },
          [[...ref('refiner.negative_add_time_ids').data], [...ref('refiner.add_time_ids').data]],
        );
      } finally {
        image.dispose();
        pipe.dispose();
      }
    }, 300_000);

    it('loras: the single file merges UNet, CLIP-L and bigG (lora_te2_ / text_encoder_2.* on q/k/v split from in_proj) LoRAs into the same weights as the folder', async () => {
      const lm = JSON.parse(readFileSync(join(FIXTURES, 'lora', 'case.json'), 'utf8')) as {
        files: Record<string, ManifestEntry[]>;
        cases: Record<string, { loras: { file: string; scale: number }[]; weights: string[] }>;
      };
      const cs = lm.cases['merge/sdxl'];
      const loras = () => cs.loras.map((l) => ({ source: seededSafetensors(lm.files[l.file]), scale: l.scale }));
      const sfOpts = { unetConfig: m.configs.unet, vaeConfig: m.configs.vae, textEncoderConfig: m.configs.text_encoder, textEncoder2Config: m.configs.text_encoder_2, tokenizer };
      const before = engine.memory().inUseBytes;
      // a bigG LoRA of the wrong width is refused by name, freeing everything
      const wide = lm.files.sdxl_kohya.map((e) => (e.key.startsWith('lora_te2_') && e.key.endsWith('lora_down.weight') ? { ...e, shape: [4, e.shape[1] + 1] } : e));
      await expect(StableDiffusionXLPipeline.fromSingleFile(engine, buildTinySdxlSingleFile('base', m), { ...sfOpts, loras: [{ source: seededSafetensors(wide) }] })).rejects.toThrow(/does not fit the text_encoder_2/);
      expect(engine.memory().inUseBytes).toBe(before);
      const a = await StableDiffusionXLPipeline.fromPretrained(engine, folder('base'), { loras: loras() });
      const b = await StableDiffusionXLPipeline.fromSingleFile(engine, buildTinySdxlSingleFile('base', m), { ...sfOpts, loras: loras() });
      try {
        expect(b.loraReport!.applied.length).toBeGreaterThan(0);
        expect([...b.loraReport!.applied].sort()).toEqual([...a.loraReport!.applied].sort()); // components load in another order
        expect(b.textEncoder2!.unexpectedWeights).toEqual([]);
        const model = (p: StableDiffusionXLPipeline, c: string) => (c === 'unet' ? p.unet : c === 'text_encoder' ? p.textEncoder! : p.textEncoder2!);
        expect(cs.weights.filter((n) => /^text_encoder_2\..*(q|k|v)_proj/.test(n)).length).toBeGreaterThan(0);
        for (const n of cs.weights) {
          const [comp, ...rest] = n.split('.');
          const wa = await model(a, comp).parameter(rest.join('.'))!.read();
          const wb = await model(b, comp).parameter(rest.join('.'))!.read();
          expect(relL2(wb, wa), n).toBeLessThan(1e-6);
        }
      } finally {
        a.dispose();
        b.dispose();
      }
    }, 120_000);

    it('refuses an SD 1.x file and a file without tokenizer, freeing what it loaded', async () => {
      const before = engine.memory().inUseBytes;
      await expect(StableDiffusionXLPipeline.fromSingleFile(engine, buildTinySdxlSingleFile('base', m), { unetConfig: m.configs.unet, vaeConfig: m.configs.vae, textEncoderConfig: m.configs.text_encoder, textEncoder2Config: m.configs.text_encoder_2 })).rejects.toThrow(/carry no tokenizer/);
      expect(engine.memory().inUseBytes).toBe(before);
      const { writeSafetensors } = await import('../src/index.js');
      const sd1 = writeSafetensors({ 'cond_stage_model.transformer.text_model.final_layer_norm.weight': { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } });
      await expect(StableDiffusionXLPipeline.fromSingleFile(engine, sd1, { tokenizer })).rejects.toThrow(/not an SDXL single file/);
      await expect(StableDiffusionPipeline.fromSingleFile(engine, buildTinySdxlSingleFile('base', m), { tokenizer })).rejects.toThrow(/SDXL single file .*StableDiffusionXLPipeline\.fromSingleFile/);
      expect(engine.memory().inUseBytes).toBe(before);
    });
  });
});

describe('StableDiffusionXLPipeline: guidance off, seeds, bad input', () => {
  let engine: Engine;
  let root: string;
  let pipe: StableDiffusionXLPipeline;
  beforeAll(async () => {
    engine = await getEngine();
    root = mkdtempSync(join(tmpdir(), 'tiny-sdxl-b-'));
    buildTinySdxlFolder(join(root, 'base'), 'base', m);
    pipe = await StableDiffusionXLPipeline.fromPretrained(engine, join(root, 'base'));
  });
  afterAll(() => {
    pipe.dispose();
    rmSync(root, { recursive: true, force: true });
  });
  const small = { steps: 2, width: 16, height: 16 };
  const read = async (o: { images: Tensor }) => {
    const v = await o.images.read();
    o.images.dispose();
    return v;
  };

  it('guidance <= 1 runs the UNet once per step on the plain batch, with the positive conditioning only', async () => {
    const spy = vi.spyOn(pipe.unet, 'forward');
    try {
      await read(await pipe.generate({ ...small, prompt: ['a cat', 'a dog'], guidanceScale: 1, seed: 3 }));
      expect(spy.mock.calls.map(([x, , o]) => [x.shape[0], o?.encoderHiddenStates?.shape[0], (o?.addedCondKwargs?.timeIds as number[][]).length])).toEqual([
        [2, 2, 2],
        [2, 2, 2],
      ]);
      spy.mockClear();
      await read(await pipe.generate({ ...small, prompt: ['a cat', 'a dog'], guidanceScale: 2, seed: 3 }));
      expect(spy.mock.calls.map(([x]) => x.shape[0])).toEqual([4, 4]);
    } finally {
      spy.mockRestore();
    }
  }, 120_000);

  it('same options give the same bytes; image i of a batch equals a run with seed + i; another seed differs', async () => {
    const a = await read(await pipe.generate({ ...small, prompt: ['a cat', 'a dog'], seed: 7 }));
    const b = await read(await pipe.generate({ ...small, prompt: ['a cat', 'a dog'], seed: 7 }));
    expect(b).toEqual(a);
    const one = await read(await pipe.generate({ ...small, prompt: 'a dog', seed: 8 }));
    expect(one).toEqual(a.subarray(a.length / 2));
    const other = await read(await pipe.generate({ ...small, prompt: 'a dog', seed: 9 }));
    expect(relL2(other, one)).toBeGreaterThan(1e-3);
  }, 120_000);

  it('img2img from an image [B, 3, H, W] equals img2img from its encodeImage latents (the path checked against diffusers)', async () => {
    const image = engine.tensor(Float32Array.from({ length: 2 * 3 * 16 * 16 }, (_, i) => 0.5 + 0.45 * Math.sin(i * 0.37)), [2, 3, 16, 16]);
    const lat = pipe.encodeImage(image, 5);
    try {
      expect(lat.shape).toEqual([2, 4, 8, 8]);
      const o = { prompt: ['a cat', 'a dog'], steps: 4, strength: 0.5, seed: 5 };
      const a = await read(await pipe.generate({ ...o, image }));
      const b = await read(await pipe.generate({ ...o, image: lat }));
      expect(a).toEqual(b);
      // strength matters: more of the schedule, further from the image
      const c = await read(await pipe.generate({ ...o, image, strength: 1 }));
      expect(relL2(c, a)).toBeGreaterThan(1e-3);
    } finally {
      image.dispose();
      lat.dispose();
    }
  }, 120_000);

  it("negative micro-conditioning follows diffusers' rules (text-to-image vs img2img)", async () => {
    const spy = vi.spyOn(pipe.unet, 'forward');
    const ids = async (o: Record<string, unknown>) => {
      spy.mockClear();
      await read(await pipe.generate({ ...small, steps: 1, prompt: 'a cat', seed: 1, cropsCoordsTopLeft: [2, 4], ...o }));
      return spy.mock.calls[0][2]!.addedCondKwargs!.timeIds as number[][];
    };
    try {
      const pos = [16, 16, 2, 4, 16, 16];
      // text-to-image: one negative size alone is ignored; both give own ids with crop (0, 0) by default
      expect(await ids({ negativeOriginalSize: [8, 8] })).toEqual([pos, pos]);
      expect(await ids({ negativeOriginalSize: [8, 8], negativeTargetSize: [12, 12] })).toEqual([[8, 8, 0, 0, 12, 12], pos]);
      expect(await ids({ negativeOriginalSize: [8, 8], negativeTargetSize: [12, 12], negativeCropsCoordsTopLeft: [1, 1] })).toEqual([[8, 8, 1, 1, 12, 12], pos]);
      // img2img: each negative size defaults to the positive one, the crop is the positive crop
      const image = engine.tensor(new Float32Array(4 * 8 * 8).fill(0.25), [1, 4, 8, 8]);
      try {
        expect(await ids({ image, strength: 1, negativeOriginalSize: [8, 8] })).toEqual([[8, 8, 2, 4, 16, 16], pos]);
      } finally {
        image.dispose();
      }
    } finally {
      spy.mockRestore();
    }
  }, 120_000);

  it('refuses bad options before allocating, naming the option', async () => {
    const before = engine.memory().inUseBytes;
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ aestheticScore: 6 }, /aestheticScore is for refiner models/],
      [{ originalSize: [32] }, /originalSize must be \[height, width\]/],
      [{ targetSize: [32, NaN] }, /targetSize must be \[height, width\]/],
      [{ prompt: ['a', 'b'], prompt2: ['c'] }, /1 prompt2 for 2 prompts/],
      [{ prompt: ['a', 'b'], negativePrompt: ['c'] }, /1 negativePrompt for 2 prompts/],
      [{ height: 21 }, /height and width must be multiples of 2/],
      [{ height: 18 }, /does not fit the UNet, which downsamples by 2/],
      [{ clipSkip: -1 }, /clipSkip must be an integer in \[0, \d+\]/],
      [{ guidanceScale: NaN }, /guidanceScale must be a finite number/],
      [{ image: engine.tensor(new Float32Array(3 * 16 * 16), [1, 3, 16, 16]), strength: 0 }, /strength must be in \(0, 1\]/],
      [{ promptEmbeds: engine.tensor(new Float32Array(77 * 80), [1, 77, 80]) }, /promptEmbeds needs pooledPromptEmbeds/],
    ];
    const made = engine.memory().inUseBytes;
    for (const [o, re] of bad) await expect(pipe.generate({ ...small, ...o }), String(re)).rejects.toThrow(re);
    expect(engine.memory().inUseBytes).toBe(made);
    for (const [o] of bad) for (const v of Object.values(o)) if ((v as Tensor)?.isTensor) (v as Tensor).dispose();
    expect(engine.memory().inUseBytes).toBe(before);
  }, 60_000);

  it('a UNet whose added embedding does not fit the time ids is refused at construction, with the fix named', async () => {
    await expect(
      (async () => new StableDiffusionXLPipeline({ unet: pipe.unet, vae: pipe.vae, scheduler: pipe.scheduler, textEncoder: pipe.textEncoder, textEncoder2: pipe.textEncoder2, tokenizer: pipe.tokenizer, tokenizer2: pipe.tokenizer2, requiresAestheticsScore: true }))(),
    ).rejects.toThrow(/takes 72 inputs but 5 time ids x 8 \+ the 24-wide pooled text embedding make 64 \(it fits 6 ids: set requires_aesthetics_score false/);
  });
});
