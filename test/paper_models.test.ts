// LatentDiffusion.fromOriginal against CompVis latent-diffusion itself: each release config shrunk
// in size (tools/pyref/gen_paper_models.py), weights seeded identically on both sides (test/seeded.ts),
// compared stage by stage: conditioning encoder, UNet eps for given x/t/cond, first-stage encode, a
// 4-step DDIM run from a given x_T (with the release's guidance) and the decoded image.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES, readSafetensorsFile } from './fixture.js';
import { getEngine, relL2, track, reportWorst } from './helpers.js';
import { seededSafetensors, type ManifestEntry } from './seeded.js';
import type { Engine } from '../src/runtime/engine.js';
import { LatentDiffusion, ClassEmbedder, BERTEmbedder, SpatialRescaler, IdentityEncoder, FirstStageConditioning } from '../src/pipelines/latent_diffusion.js';
import type { Tensor } from '../src/runtime/tensor.js';
import { concat } from '../src/kernels/index.js';
import { VQModel } from '../src/models/vq_model.js';
import type { AutoencoderKL } from '../src/models/autoencoder_kl.js';
import { BertTokenizer } from '../src/text/bert_tokenizer.js';
import { OriginalConfigError } from '../src/loaders/original.js';

interface Meta {
  class_labels?: number[];
  prompts?: string[];
  tokens?: number[][];
  unet_t: number[];
  guidance_scale: number;
  steps: number;
  scale_factor: number;
}

function load(name: string) {
  const dir = join(FIXTURES, 'paper', name);
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { meta: Meta; tensors: ManifestEntry[] };
  return {
    config: readFileSync(join(dir, 'config.yaml'), 'utf8'),
    checkpoint: seededSafetensors(manifest.tensors),
    meta: manifest.meta,
    refs: readSafetensorsFile(join(dir, 'refs.safetensors')),
  };
}

const SUPPORTED = ['cin256-v2', 'txt2img-1p4B', 'celeba256', 'bsr_sr', 'semantic_synthesis256', 'cin256', 'lsun_churches256', 'text2img256', 'layout2img-openimages256', 'inpainting_big', 'ffhq256', 'lsun_beds256', 'semantic_synthesis512'];

describe('LatentDiffusion.fromOriginal vs CompVis (shrunk release configs)', () => {
  let engine: Engine;
  let tokenizer: BertTokenizer;
  beforeAll(async () => {
    engine = await getEngine();
    tokenizer = new BertTokenizer(readFileSync(join(FIXTURES, 'tokenizers', 'bert-base-uncased', 'vocab.txt'), 'utf8'));
  });

  for (const name of SUPPORTED) {
    it(name, async () => {
      const { config, checkpoint, meta, refs } = load(name);
      const ldm = await LatentDiffusion.fromOriginal(engine, { checkpoint, config, tokenizer });
      try {
        expect(ldm.scaleFactor).toBeCloseTo(meta.scale_factor, 6);
        const T = (k: string) => engine.tensor(refs[k].data as Float32Array, refs[k].shape);
        // conditioning
        let cond: Tensor | null = null;
        let onehot: Tensor | null = null;
        const cs = ldm.condStage;
        if (meta.class_labels) cond = (cs as ClassEmbedder).encode(meta.class_labels);
        else if (meta.prompts) cond = (cs as BERTEmbedder).encode(meta.prompts);
        else if (meta.tokens) cond = (cs as BERTEmbedder).encode(meta.tokens);
        else if (refs.inpaint_image) cond = (cs as FirstStageConditioning).encode({ image: T('inpaint_image'), mask: T('inpaint_mask') });
        else if (refs.seg_labels) {
          const lab = refs.seg_labels;
          const [, H, W] = lab.shape;
          const oh = new Float32Array(182 * H * W);
          lab.data.forEach((v, i) => (oh[v * H * W + i] = 1));
          onehot = engine.tensor(oh, [1, 182, H, W]);
          cond = (cs as SpatialRescaler).encode(onehot);
        } else if (refs.low_res) cond = (cs as IdentityEncoder).encode(T('low_res'));
        if (refs.cond) expect(track(`${name} cond`, relL2(await cond!.read(), refs.cond.data))).toBeLessThan(1e-4);
        // UNet for x [2], t [999, 321], cond [cond, uncond] (or cond twice)
        const c2 = cond ? (cond.shape[0] === 2 ? cond : concat([cond, cond], 0)) : null;
        const eps = ldm.applyModel(T('unet_x'), meta.unet_t, c2);
        expect(track(`${name} unet`, relL2(await eps.read(), refs.unet_out.data))).toBeLessThan(1e-4);
        // first stage encode (VQ: pre-quant h; KL: the mean), without scale_factor
        const fs = ldm.firstStage;
        const enc = fs instanceof VQModel ? fs.encode(T('fs_image')) : (fs as AutoencoderKL).encode(T('fs_image')).mean;
        expect(track(`${name} first stage encode`, relL2(await enc.read(), refs.fs_encode.data))).toBeLessThan(1e-4);
        // DDIM, 4 steps from x_T with the release's guidance
        const out = await ldm.generate({
          classLabels: meta.class_labels?.slice(0, 1),
          prompt: meta.prompts?.slice(0, 1),
          tokens: meta.tokens?.slice(0, 1),
          segmentation: onehot ?? undefined,
          lowRes: refs.low_res ? T('low_res') : undefined,
          image: refs.inpaint_image ? T('inpaint_image') : undefined,
          mask: refs.inpaint_mask ? T('inpaint_mask') : undefined,
          steps: meta.steps,
          guidanceScale: meta.guidance_scale,
          latents: refs.x_T.data as Float32Array,
        });
        expect(track(`${name} ddim latents`, relL2(await out.latents.read(), refs.ddim_latents.data))).toBeLessThan(1e-3);
        expect(track(`${name} image`, relL2(await out.images.read(), refs.image.data))).toBeLessThan(1e-3);
      } finally {
        ldm.dispose();
      }
    }, 300_000);
  }

  it('seed rule: image i of a batch equals a single run with seed + i (eta 1: per-step noise too)', async () => {
    const { config, checkpoint } = load('cin256-v2');
    const ldm = await LatentDiffusion.fromOriginal(engine, { checkpoint, config, tokenizer });
    try {
      const run = async (classLabels: number[], seed: number) => {
        const out = await ldm.generate({ classLabels, seed, steps: 2, eta: 1 });
        const v = await out.latents.read();
        out.latents.dispose();
        out.images.dispose();
        return v;
      };
      const batch = await run([3, 5], 10);
      const a = await run([3], 10);
      const b = await run([5], 11);
      expect(Array.from(batch.subarray(0, a.length))).toEqual(Array.from(a));
      expect(Array.from(batch.subarray(a.length))).toEqual(Array.from(b));
      await expect(ldm.generate({ classLabels: [3], seed: -1, steps: 2 })).rejects.toThrow(/LatentDiffusion.generate: seed must be an integer/);
    } finally {
      ldm.dispose();
    }
  }, 300_000);

  it('refuses what it does not support yet, naming the option', async () => {
    const churches = load('lsun_churches256');
    const cin = load('cin256-v2');
    const st = cin.config.replace('use_spatial_transformer: true', 'use_spatial_transformer: true\n        use_scale_shift_norm: true');
    expect(st).not.toBe(cin.config);
    await expect(LatentDiffusion.fromOriginal(engine, { checkpoint: cin.checkpoint, config: st })).rejects.toThrow(/use_scale_shift_norm/);
    const bad = churches.config.replace('ldm.models.diffusion.ddpm.LatentDiffusion', 'ldm.models.diffusion.ddpm.DDPM');
    await expect(LatentDiffusion.fromOriginal(engine, { checkpoint: churches.checkpoint, config: bad })).rejects.toThrow(OriginalConfigError);
    await expect(LatentDiffusion.fromOriginal(engine, { checkpoint: churches.checkpoint, config: bad })).rejects.toThrow(/ldm\.models\.diffusion\.ddpm\.DDPM/);
  });

  it('report', () => reportWorst('paper models'));
});

describe('first-stage zoo (models/first_stage_models) vs CompVis', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await getEngine();
  });
  for (const name of ['kl-f4', 'kl-f8', 'kl-f16', 'kl-f32', 'vq-f4', 'vq-f4-noattn', 'vq-f8', 'vq-f8-n256', 'vq-f16']) {
    it(name, async () => {
      const dir = join(FIXTURES, 'paper', 'first_stage', name);
      const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { tensors: ManifestEntry[] };
      const refs = readSafetensorsFile(join(dir, 'refs.safetensors'));
      const fs = await LatentDiffusion.firstStageFromOriginal(engine, { checkpoint: seededSafetensors(manifest.tensors), config: readFileSync(join(dir, 'config.yaml'), 'utf8') });
      try {
        const img = engine.tensor(refs.image.data as Float32Array, refs.image.shape);
        const h = fs instanceof VQModel ? fs.encode(img) : fs.encode(img).mean;
        expect(track(`${name} encode`, relL2(await h.read(), refs.encode.data))).toBeLessThan(1e-4);
        const dec = fs.decode(engine.tensor(refs.encode.data as Float32Array, refs.encode.shape));
        expect(track(`${name} decode`, relL2(await dec.read(), refs.decode.data))).toBeLessThan(1e-4);
      } finally {
        fs.dispose();
      }
    }, 120_000);
  }
  it('report', () => reportWorst('first stages'));
});

describe('CLI: generate --ckpt --config', () => {
  it('parses and refuses half-given pairs', async () => {
    const { parseGenerateArgs, UsageError } = await import('../src/cli/main.js');
    const a = parseGenerateArgs(['--ckpt', 'm.ckpt', '--config', 'c.yaml', '--class', '3', '--eta', '0.5']);
    expect([a.ckpt, a.config, a.classLabels, a.eta]).toEqual(['m.ckpt', 'c.yaml', [3], 0.5]);
    expect(() => parseGenerateArgs(['--ckpt', 'm.ckpt'])).toThrow(UsageError);
    expect(() => parseGenerateArgs(['--eta', '1'])).toThrow(UsageError);
  });

  it('runs a release pair from files (celeba256 shrunk) and writes the PNG', async () => {
    const { mkdtempSync, writeFileSync, existsSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { spawnSync } = await import('node:child_process');
    const dir = mkdtempSync(join(tmpdir(), 'ldm-ckpt-cli-'));
    try {
      const c = load('celeba256');
      writeFileSync(join(dir, 'model.safetensors'), c.checkpoint);
      writeFileSync(join(dir, 'config.yaml'), c.config);
      const root = join(FIXTURES, '..', '..');
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), 'generate', '--ckpt', join(dir, 'model.safetensors'), '--config', join(dir, 'config.yaml'), '--steps', '2', '--batch', '2', '--out', join(dir, 'x.png')], { cwd: root, encoding: 'utf8', timeout: 240_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(existsSync(join(dir, 'x-1.png')) && existsSync(join(dir, 'x-2.png'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});

describe('EMA weights (LitEma names)', () => {
  it('useEma loads model_ema.* instead of model.diffusion_model.*; default ignores them', async () => {
    const engine = await getEngine();
    const { config, meta, refs } = load('celeba256');
    const manifest = (JSON.parse(readFileSync(join(FIXTURES, 'paper', 'celeba256', 'manifest.json'), 'utf8')) as { tensors: ManifestEntry[] }).tensors;
    const { seededValues } = await import('./seeded.js');
    // EMA copies hold the live weights' values, the live names get other values: only useEma matches the reference
    const swapped = manifest.map((e) => {
      if (e.key.startsWith('model.diffusion_model.')) return { ...e, values: Array.from(seededValues(`x${e.key}`, e.shape)) };
      if (e.key.startsWith('model_ema.') && e.shape.length) {
        const live = manifest.find((m) => m.key.startsWith('model.diffusion_model.') && `model_ema.diffusion_model${m.key.slice('model.diffusion_model.'.length).replace(/\./g, '')}` === e.key)!;
        return { ...e, values: Array.from(seededValues(live.key, e.shape)) };
      }
      return e;
    });
    const checkpoint = seededSafetensors(swapped);
    for (const useEma of [true, false]) {
      const ldm = await LatentDiffusion.fromOriginal(engine, { checkpoint, config, useEma });
      try {
        const eps = ldm.applyModel(engine.tensor(refs.unet_x.data as Float32Array, refs.unet_x.shape), meta.unet_t, null);
        const err = relL2(await eps.read(), refs.unet_out.data);
        if (useEma) expect(err).toBeLessThan(1e-4);
        else expect(err).toBeGreaterThan(1e-2);
      } finally {
        ldm.dispose();
      }
    }
    const cin = load('cin256-v2'); // use_ema: False -> no copies
    await expect(LatentDiffusion.fromOriginal(engine, { checkpoint: cin.checkpoint, config: cin.config, useEma: true })).rejects.toThrow(/no EMA copy/);
  }, 120_000);
});
