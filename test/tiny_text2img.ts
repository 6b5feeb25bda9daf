// A tiny LDMTextToImagePipeline folder (the paper's text-to-image LDM in diffusers' layout) with the
// seeded weights of test/fixtures/paper/ldm_text2img (made by tools/pyref/gen_ldm_text2img.py).
import { readFileSync, mkdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from './fixture.js';
import { seededSafetensors, type ManifestEntry } from './seeded.js';

export interface Text2ImgManifest {
  prompt: string;
  steps: number;
  guidance_scale: number;
  configs: Record<string, Record<string, unknown>>;
  tensors: Record<string, ManifestEntry[]>;
}

export const TEXT2IMG_DIR = join(FIXTURES, 'paper', 'ldm_text2img');

export function readText2ImgManifest(): Text2ImgManifest {
  return JSON.parse(readFileSync(join(TEXT2IMG_DIR, 'manifest.json'), 'utf8')) as Text2ImgManifest;
}

/** Writes the folder into `dir` (made if missing). */
export function buildTinyText2ImgFolder(dir: string, m: Text2ImgManifest = readText2ImgManifest()): void {
  mkdirSync(dir, { recursive: true });
  const classes: Record<string, [string, string]> = {
    vqvae: ['diffusers', 'AutoencoderKL'],
    bert: ['latent_diffusion', 'LDMBertModel'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    scheduler: ['diffusers', 'DDIMScheduler'],
    tokenizer: ['transformers', 'BertTokenizer'],
  };
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ _class_name: 'LDMTextToImagePipeline', ...classes }));
  for (const c of ['vqvae', 'bert', 'unet']) {
    mkdirSync(join(dir, c));
    writeFileSync(join(dir, c, 'config.json'), JSON.stringify({ _class_name: classes[c][1], ...m.configs[c] }));
    writeFileSync(join(dir, c, c === 'bert' ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors'), seededSafetensors(m.tensors[c]));
  }
  mkdirSync(join(dir, 'scheduler'));
  writeFileSync(join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify({ _class_name: 'DDIMScheduler', ...m.configs.scheduler }));
  mkdirSync(join(dir, 'tokenizer'));
  copyFileSync(join(FIXTURES, 'tokenizers', 'bert-base-uncased', 'vocab.txt'), join(dir, 'tokenizer', 'vocab.txt'));
}
