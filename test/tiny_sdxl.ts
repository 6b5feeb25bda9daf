// Tiny SDXL pipeline folders in diffusers layout with the seeded weights of test/fixtures/sdxl_pipeline
// (made by tools/pyref/gen_sdxl_pipeline.py): the base layout (two tokenizers and text encoders, a
// text_time UNet, VAE, Euler), the refiner layout (text_encoder_2 only, requires_aesthetics_score) and
// the base with an LCM UNet (time_cond_proj_dim) and LCMScheduler.
import { readFileSync, mkdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from './fixture.js';
import { seededSafetensors, seededValues, type ManifestEntry } from './seeded.js';
import { writeSafetensors } from '../src/runtime/safetensors.js';

export interface SdxlManifest {
  cases: Record<string, Record<string, unknown>>;
  configs: Record<string, Record<string, unknown>>;
  tensors: Record<string, ManifestEntry[]>;
  tokenizer_files: Record<string, Record<string, unknown>>;
  /** the base pipeline as an sgm single file: key, shape, the diffusers tensors it is made of (`component.key`, concatenated along dim 0), T = transposed */
  single_file: { key: string; shape: number[]; from: string[]; T?: boolean }[];
}

export const SDXL_DIR = join(FIXTURES, 'sdxl_pipeline');

export function readSdxlManifest(): SdxlManifest {
  return JSON.parse(readFileSync(join(SDXL_DIR, 'manifest.json'), 'utf8')) as SdxlManifest;
}

/** 'sd_lcm' / 'sd': a StableDiffusionPipeline folder (text_encoder + tokenizer) with an SD-shaped LCM UNet
 * (LCMScheduler) / ordinary UNet (Euler); 'refiner_norm': the refiner with a VAE whose config has
 * latents_mean / latents_std */
export type SdxlLayout = 'base' | 'refiner' | 'lcm' | 'sd_lcm' | 'sd' | 'refiner_norm';

/** Writes the folder of `layout` into `dir` (made if missing). */
export function buildTinySdxlFolder(dir: string, layout: SdxlLayout = 'base', m: SdxlManifest = readSdxlManifest()): void {
  mkdirSync(dir, { recursive: true });
  const refiner = layout === 'refiner' || layout === 'refiner_norm';
  const sd = layout === 'sd_lcm' || layout === 'sd';
  const lcm = layout === 'lcm' || layout === 'sd_lcm';
  const sched = lcm ? m.configs.scheduler_lcm : m.configs.scheduler;
  const schedClass = lcm ? 'LCMScheduler' : 'EulerDiscreteScheduler';
  const unetKey = layout === 'base' ? 'unet' : refiner ? 'unet_refiner' : `unet_${layout}`;
  const index = sd ? {
    _class_name: 'StableDiffusionPipeline',
    _diffusers_version: '0.31.0',
    scheduler: ['diffusers', schedClass],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
    safety_checker: [null, null],
    feature_extractor: [null, null],
  } : {
    _class_name: refiner ? 'StableDiffusionXLImg2ImgPipeline' : 'StableDiffusionXLPipeline',
    _diffusers_version: '0.31.0',
    force_zeros_for_empty_prompt: !refiner,
    ...(refiner ? { requires_aesthetics_score: true } : {}),
    scheduler: ['diffusers', schedClass],
    text_encoder: refiner ? [null, null] : ['transformers', 'CLIPTextModel'],
    text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
    tokenizer: refiner ? [null, null] : ['transformers', 'CLIPTokenizer'],
    tokenizer_2: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  };
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify(index));
  const parts: [string, string, string][] = [
    ['unet', unetKey, 'UNet2DConditionModel'],
    ['vae', layout === 'refiner_norm' ? 'vae_norm' : 'vae', 'AutoencoderKL'],
  ];
  if (!sd) parts.push(['text_encoder_2', 'text_encoder_2', 'CLIPTextModelWithProjection']);
  if (!refiner) parts.push(['text_encoder', 'text_encoder', 'CLIPTextModel']);
  for (const [sub, key, cls] of parts) {
    mkdirSync(join(dir, sub), { recursive: true });
    const text = sub.startsWith('text_encoder');
    writeFileSync(join(dir, sub, 'config.json'), JSON.stringify(text ? { architectures: [cls], ...m.configs[key] } : { _class_name: cls, ...m.configs[key] }));
    writeFileSync(join(dir, sub, text ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors'), seededSafetensors(m.tensors[key]));
  }
  mkdirSync(join(dir, 'scheduler'), { recursive: true });
  writeFileSync(join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify({ _class_name: schedClass, ...sched }));
  for (const tok of refiner ? ['tokenizer_2'] : sd ? ['tokenizer'] : ['tokenizer', 'tokenizer_2']) {
    mkdirSync(join(dir, tok), { recursive: true });
    for (const f of ['vocab.json', 'merges.txt']) copyFileSync(join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14', f), join(dir, tok, f));
    for (const [f, v] of Object.entries(m.tokenizer_files[tok] ?? {})) writeFileSync(join(dir, tok, f), JSON.stringify(v));
  }
}

/**
 * The tiny base pipeline as one SDXL single file (Stability's sgm keys, checked against diffusers'
 * converters by the generator), or the refiner's: its UNet under the same keys, the VAE, and the bigG
 * text encoder as conditioner.embedders.0.model.*.
 */
export function buildTinySdxlSingleFile(layout: 'base' | 'refiner' = 'base', m: SdxlManifest = readSdxlManifest()): Uint8Array {
  const shapes = new Map<string, number[]>();
  for (const [comp, list] of Object.entries(m.tensors)) for (const e of list) shapes.set(`${comp}.${e.key}`, e.shape);
  const out: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const e of m.single_file) {
    let key = e.key;
    let from = e.from;
    if (layout === 'refiner') {
      if (key.startsWith('conditioner.embedders.0.')) continue;
      key = key.replace('conditioner.embedders.1.', 'conditioner.embedders.0.');
      from = from.map((f) => f.replace(/^unet\./, 'unet_refiner.'));
    }
    const parts = from.map((f) => {
      const comp = f.slice(0, f.indexOf('.'));
      const shape = shapes.get(f)!;
      return { shape, data: seededValues(f.slice(comp.length + 1), shape) };
    });
    const rows = parts.reduce((a, p) => a + p.shape[0], 0);
    const cols = parts[0].data.length / parts[0].shape[0];
    let data = new Float32Array(rows * cols);
    let off = 0;
    for (const p of parts) {
      data.set(p.data, off);
      off += p.data.length;
    }
    if (e.T) {
      const t = new Float32Array(data.length);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = data[r * cols + c];
      data = t;
    }
    // the manifest has the file's shapes (the VAE's attention projections as [C, C, 1, 1] convs); the
    // refiner's UNet has the same sgm keys with its own shapes (UNet tensors keep their diffusers shapes)
    const shape = layout === 'refiner' && from[0].startsWith('unet_refiner.') ? shapes.get(from[0])! : e.shape;
    out[key] = { dtype: 'F32', shape, data };
  }
  return writeSafetensors(out);
}
