// Tiny SDXL pipeline folders in diffusers layout with the seeded weights of test/fixtures/sdxl_pipeline
// (made by tools/pyref/gen_sdxl_pipeline.py): the base layout (two tokenizers and text encoders, a
// text_time UNet, VAE, Euler), the refiner layout (text_encoder_2 only, requires_aesthetics_score) and
// the base with an LCM UNet (time_cond_proj_dim) and LCMScheduler.
import { readFileSync, mkdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from './fixture.js';
import { seededSafetensors, type ManifestEntry } from './seeded.js';

export interface SdxlManifest {
  cases: Record<string, Record<string, unknown>>;
  configs: Record<string, Record<string, unknown>>;
  tensors: Record<string, ManifestEntry[]>;
  tokenizer_files: Record<string, Record<string, unknown>>;
}

export const SDXL_DIR = join(FIXTURES, 'sdxl_pipeline');

export function readSdxlManifest(): SdxlManifest {
  return JSON.parse(readFileSync(join(SDXL_DIR, 'manifest.json'), 'utf8')) as SdxlManifest;
}

/** 'sd_lcm': a StableDiffusionPipeline folder (text_encoder + tokenizer) with an SD-shaped LCM UNet */
export type SdxlLayout = 'base' | 'refiner' | 'lcm' | 'sd_lcm';

/** Writes the folder of `layout` into `dir` (made if missing). */
export function buildTinySdxlFolder(dir: string, layout: SdxlLayout = 'base', m: SdxlManifest = readSdxlManifest()): void {
  mkdirSync(dir, { recursive: true });
  const refiner = layout === 'refiner';
  const sd = layout === 'sd_lcm';
  const lcm = layout === 'lcm' || sd;
  const sched = lcm ? m.configs.scheduler_lcm : m.configs.scheduler;
  const schedClass = lcm ? 'LCMScheduler' : 'EulerDiscreteScheduler';
  const unetKey = layout === 'base' ? 'unet' : `unet_${layout}`;
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
    ['vae', 'vae', 'AutoencoderKL'],
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
