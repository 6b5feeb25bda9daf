// A tiny Stable Diffusion 2.x-shaped pipeline folder in diffusers layout (tokenizer padding with '!',
// gelu CLIPTextModel, linear-projection UNet with a head list and upcast_attention, v_prediction
// scheduler) with the seeded weights of test/fixtures/sd2 (made by tools/pyref/gen_sd2_pipeline.py).
import { readFileSync, mkdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from './fixture.js';
import { seededSafetensors, type ManifestEntry } from './seeded.js';

export interface Sd2Manifest {
  prompt: string;
  negative_prompt: string;
  height: number;
  width: number;
  steps: number;
  guidance_scale: number;
  configs: Record<string, Record<string, unknown>>;
  tokenizer_files: Record<string, unknown>;
  cases: Record<string, { scheduler: Record<string, unknown>; timesteps: number[] }>;
  tensors: Record<string, ManifestEntry[]>;
}

export const SD2_DIR = join(FIXTURES, 'sd2');

export function readSd2Manifest(): Sd2Manifest {
  return JSON.parse(readFileSync(join(SD2_DIR, 'manifest.json'), 'utf8')) as Sd2Manifest;
}

/** Writes the folder into `dir` (made if missing) with the scheduler of case `scheduler` ('ddim' | 'euler'). */
export function buildTinySd2Folder(dir: string, scheduler = 'ddim', m: Sd2Manifest = readSd2Manifest()): void {
  mkdirSync(dir, { recursive: true });
  const sched = m.cases[scheduler].scheduler;
  const classes: Record<string, [string, string]> = {
    scheduler: ['diffusers', String(sched._class_name)],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  };
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ _class_name: 'StableDiffusionPipeline', _diffusers_version: '0.31.0', ...classes, safety_checker: [null, null], feature_extractor: [null, null] }));
  for (const c of ['text_encoder', 'unet', 'vae']) {
    mkdirSync(join(dir, c), { recursive: true });
    writeFileSync(join(dir, c, 'config.json'), JSON.stringify(c === 'text_encoder' ? m.configs[c] : { _class_name: classes[c][1], ...m.configs[c] }));
    writeFileSync(join(dir, c, c === 'text_encoder' ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors'), seededSafetensors(m.tensors[c]));
  }
  mkdirSync(join(dir, 'scheduler'), { recursive: true });
  writeFileSync(join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify(sched));
  mkdirSync(join(dir, 'tokenizer'), { recursive: true });
  for (const f of ['vocab.json', 'merges.txt']) copyFileSync(join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14', f), join(dir, 'tokenizer', f));
  for (const [f, v] of Object.entries(m.tokenizer_files)) writeFileSync(join(dir, 'tokenizer', f), JSON.stringify(v));
}
