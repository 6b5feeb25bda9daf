// A tiny Stable Diffusion 1.x pipeline folder in diffusers layout, built from the fixtures: the
// real CLIP tokenizer, the tiny CLIP text encoder (width 32) and the tiny UNet/VAE of the txt2img
// fixture (cross_attention_dim 32). Loaded through the same loaders as a real model.
import { readFileSync, mkdtempSync, mkdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { loadCase, FIXTURES } from './fixture.js';

type Cfg = Record<string, Record<string, unknown>>;

export function buildTinySdFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tiny-sd-'));
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
  return dir;
}
