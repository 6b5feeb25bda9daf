// A tiny Stable Diffusion 2.x-shaped pipeline folder in diffusers layout (tokenizer padding with '!',
// gelu CLIPTextModel, linear-projection UNet with a head list and upcast_attention, v_prediction
// scheduler) with the seeded weights of test/fixtures/sd2 (made by tools/pyref/gen_sd2_pipeline.py).
import { readFileSync, mkdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from './fixture.js';
import { seededSafetensors, seededValues, type ManifestEntry } from './seeded.js';
import { writeSafetensors } from '../src/runtime/safetensors.js';

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
  /** SD-Turbo-shaped runs: the folder's scheduler (sd-turbo's Euler, trailing), run as `sampler`
   * with guidance off for each step count of `runs` (-> its timesteps) */
  turbo: { scheduler: Record<string, unknown>; sampler: string; guidance_scale: number; runs: Record<string, number[]> };
  tensors: Record<string, ManifestEntry[]>;
}

export const SD2_DIR = join(FIXTURES, 'sd2');

export function readSd2Manifest(): Sd2Manifest {
  return JSON.parse(readFileSync(join(SD2_DIR, 'manifest.json'), 'utf8')) as Sd2Manifest;
}

/** Writes the folder into `dir` (made if missing) with the scheduler of case `scheduler` ('ddim' | 'euler' | 'turbo'). */
export function buildTinySd2Folder(dir: string, scheduler = 'ddim', m: Sd2Manifest = readSd2Manifest()): void {
  mkdirSync(dir, { recursive: true });
  const sched = scheduler === 'turbo' ? m.turbo.scheduler : m.cases[scheduler].scheduler;
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

export type Sd2SingleFileLayout = Record<string, { shape: number[]; from: [string, string][] }>;

/** Original key -> shape and the diffusers tensors it is made of (tools/pyref/gen_sd2_single_file.py). */
export function readSd2SingleFileLayout(): Sd2SingleFileLayout {
  return (JSON.parse(readFileSync(join(SD2_DIR, 'single_file_map.json'), 'utf8')) as { layout: Sd2SingleFileLayout }).layout;
}

/** The tiny SD 2.x pipeline as a single-file checkpoint: each original tensor made of the seeded
 * diffusers tensors the layout names; `extraTextBlock` adds one OpenCLIP block past num_hidden_layers,
 * as real SD 2.x files hold all 24 blocks of which the text encoder keeps 23. */
export function buildSd2SingleFile(m: Sd2Manifest = readSd2Manifest(), extraTextBlock = true): Uint8Array {
  const layout = readSd2SingleFileLayout();
  const shapes: Record<string, Record<string, number[]>> = {};
  for (const [c, list] of Object.entries(m.tensors)) shapes[c] = Object.fromEntries(list.map((e) => [e.key, e.shape]));
  const t: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [k, e] of Object.entries(layout)) {
    const data = new Float32Array(e.shape.reduce((a, b) => a * b, 1));
    let off = 0;
    for (const [c, d] of e.from) {
      const v = seededValues(d, shapes[c][d]);
      data.set(v, off);
      off += v.length;
    }
    if (!e.from.length) data.set(seededValues(k, e.shape)); // text_projection, logit_scale: not used by diffusers
    t[k] = { dtype: 'F32', shape: e.shape, data };
  }
  if (extraTextBlock) {
    const L = Number(m.configs.text_encoder.num_hidden_layers);
    for (const [k, e] of Object.entries(layout)) {
      const hit = /^cond_stage_model\.model\.transformer\.resblocks\.0\.(.*)$/.exec(k);
      if (hit) t[`cond_stage_model.model.transformer.resblocks.${L}.${hit[1]}`] = { dtype: 'F32', shape: e.shape, data: seededValues(`extra.${k}`, e.shape) };
    }
  }
  return writeSafetensors(t);
}
