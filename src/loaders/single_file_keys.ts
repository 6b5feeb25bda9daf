// The key mapping of Stable Diffusion 1.x (and SDXL: the UNet's added embedding) single-file checkpoints (CompVis / original LDM key names) mapped onto the
// diffusers modules: model.diffusion_model.* -> UNet2DConditionModel, first_stage_model.* ->
// AutoencoderKL, cond_stage_model.transformer.* -> CLIPTextModel. The mapping follows the block
// arithmetic of the original code, generalised to any layers_per_block and number of levels.
// It imports no model, so the models' own fromSingleFile statics (the public API) can use it
// without an import cycle; single_file.ts adds the one-call loader over all three.
import type { Engine } from '../runtime/engine.js';
import type { DType, Tensor } from '../runtime/tensor.js';
import { WeightSource } from '../runtime/weights.js';
import type { IOOptions } from '../runtime/io.js';
import type { TensorSource } from '../models/nn.js';
import { ConfigReader, type Config } from '../runtime/config.js';

export type SingleFileSource = string | Uint8Array | ArrayBuffer | WeightSource;

export async function openSingleFile(source: SingleFileSource, opts: IOOptions = {}): Promise<WeightSource> {
  if (source instanceof WeightSource) return source;
  if (typeof source !== 'string') return WeightSource.fromBytes(source, 'single-file checkpoint');
  return WeightSource.open(source, opts);
}

const RESNET: [RegExp, string][] = [
  [/^in_layers\.0\./, 'norm1.'],
  [/^in_layers\.2\./, 'conv1.'],
  [/^emb_layers\.1\./, 'time_emb_proj.'],
  [/^out_layers\.0\./, 'norm2.'],
  [/^out_layers\.3\./, 'conv2.'],
  [/^skip_connection\./, 'conv_shortcut.'],
];

/** A CompVis ResBlock key tail (in_layers.0. ...) -> diffusers ResnetBlock2D names (norm1. ...). */
export function renameResnet(rest: string): string {
  for (const [re, to] of RESNET) if (re.test(rest)) return rest.replace(re, to);
  return rest;
}

/** CompVis UNet key (without 'model.diffusion_model.') -> diffusers key, or null when unknown. */
export function mapUNetKey(key: string, config: Config): string | null {
  const c = new ConfigReader('UNet2DConditionModel', config);
  const n = c.intList('block_out_channels', [320, 640, 1280, 1280]).length;
  const lpb = c.perBlock('layers_per_block', 2, n);
  const upTypes = c.oneOfList('up_block_types', ['CrossAttnUpBlock2D', 'UpBlock2D'], ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'], n);
  let m: RegExpExecArray | null;
  if ((m = /^time_embed\.(0|2)\.(.*)$/.exec(key))) return `time_embedding.linear_${m[1] === '0' ? 1 : 2}.${m[2]}`;
  const added = mapUNetAddedKey(key, config);
  if (added) return added;
  if ((m = /^label_emb\.0\.(.*)$/.exec(key))) return `class_embedding.${m[1]}`;
  if ((m = /^out\.(0|2)\.(.*)$/.exec(key))) return `${m[1] === '0' ? 'conv_norm_out' : 'conv_out'}.${m[2]}`;
  if ((m = /^input_blocks\.0\.0\.(.*)$/.exec(key))) return `conv_in.${m[1]}`;
  if ((m = /^middle_block\.(\d+)\.(.*)$/.exec(key))) {
    const i = Number(m[1]);
    if (i === 1) return `mid_block.attentions.0.${m[2]}`;
    return `mid_block.resnets.${i === 0 ? 0 : 1}.${renameResnet(m[2])}`;
  }
  if ((m = /^input_blocks\.(\d+)\.(\d+)\.(.*)$/.exec(key))) {
    // input block k (>= 1) walks level by level: lpb[i] resnets (each maybe with attention), then a downsampler
    let k = Number(m[1]) - 1;
    const sub = Number(m[2]);
    for (let i = 0; i < n; i++) {
      if (k < lpb[i]) return sub === 0 ? `down_blocks.${i}.resnets.${k}.${renameResnet(m[3])}` : `down_blocks.${i}.attentions.${k}.${m[3]}`;
      k -= lpb[i];
      if (i < n - 1) {
        if (k === 0) return m[3].startsWith('op.') ? `down_blocks.${i}.downsamplers.0.conv.${m[3].slice(3)}` : null;
        k -= 1;
      }
    }
    return null;
  }
  if ((m = /^output_blocks\.(\d+)\.(\d+)\.(.*)$/.exec(key))) {
    let k = Number(m[1]);
    const sub = Number(m[2]);
    for (let i = 0; i < n; i++) {
      const layers = lpb[n - 1 - i] + 1;
      if (k < layers) {
        const hasAttn = upTypes[i] === 'CrossAttnUpBlock2D';
        if (sub === 0) return `up_blocks.${i}.resnets.${k}.${renameResnet(m[3])}`;
        if (sub === 1 && hasAttn) return `up_blocks.${i}.attentions.${k}.${m[3]}`;
        // the upsampler sits after the resnet (and attention) of the block's last layer
        if (k === layers - 1 && m[3].startsWith('conv.')) return `up_blocks.${i}.upsamplers.0.${m[3]}`;
        return null;
      }
      k -= layers;
    }
    return null;
  }
  return null;
}

/**
 * SDXL single files (Stability's sgm layout, same block numbering as CompVis): the added-embedding MLP
 * label_emb.0.0 / label_emb.0.2 is diffusers' add_embedding.linear_1 / linear_2 when the config has
 * addition_embed_type "text_time". Null for any other key.
 */
export function mapUNetAddedKey(key: string, config: Config): string | null {
  if (config.addition_embed_type !== 'text_time') return null;
  const m = /^label_emb\.0\.(0|2)\.(weight|bias)$/.exec(key);
  return m ? `add_embedding.linear_${m[1] === '0' ? 1 : 2}.${m[2]}` : null;
}

/** CompVis VAE key (without 'first_stage_model.') -> diffusers key, or null. */
export function mapVaeKey(key: string, config: Config): string | null {
  const n = new ConfigReader('AutoencoderKL', config).intList('block_out_channels', [128, 256, 512, 512]).length;
  const res = (s: string) => s.replace(/^nin_shortcut\./, 'conv_shortcut.');
  const attn = (s: string) =>
    s.replace(/^norm\./, 'group_norm.').replace(/^q\./, 'to_q.').replace(/^k\./, 'to_k.').replace(/^v\./, 'to_v.').replace(/^proj_out\./, 'to_out.0.');
  let m: RegExpExecArray | null;
  if ((m = /^(quant_conv|post_quant_conv)\.(.*)$/.exec(key))) return key;
  if ((m = /^(encoder|decoder)\.(conv_in|conv_out)\.(.*)$/.exec(key))) return key;
  if ((m = /^(encoder|decoder)\.norm_out\.(.*)$/.exec(key))) return `${m[1]}.conv_norm_out.${m[2]}`;
  if ((m = /^(encoder|decoder)\.mid\.block_(1|2)\.(.*)$/.exec(key))) return `${m[1]}.mid_block.resnets.${Number(m[2]) - 1}.${res(m[3])}`;
  if ((m = /^(encoder|decoder)\.mid\.attn_1\.(.*)$/.exec(key))) return `${m[1]}.mid_block.attentions.0.${attn(m[2])}`;
  if ((m = /^encoder\.down\.(\d+)\.block\.(\d+)\.(.*)$/.exec(key))) return `encoder.down_blocks.${m[1]}.resnets.${m[2]}.${res(m[3])}`;
  if ((m = /^encoder\.down\.(\d+)\.downsample\.conv\.(.*)$/.exec(key))) return `encoder.down_blocks.${m[1]}.downsamplers.0.conv.${m[2]}`;
  if ((m = /^decoder\.up\.(\d+)\.block\.(\d+)\.(.*)$/.exec(key))) return `decoder.up_blocks.${n - 1 - Number(m[1])}.resnets.${m[2]}.${res(m[3])}`;
  if ((m = /^decoder\.up\.(\d+)\.upsample\.conv\.(.*)$/.exec(key))) return `decoder.up_blocks.${n - 1 - Number(m[1])}.upsamplers.0.conv.${m[2]}`;
  return null;
}

/** CLIP text encoder: 'cond_stage_model.transformer.' + transformers' names (position_ids dropped). */
export function mapClipKey(key: string): string | null {
  return key.startsWith('text_model.') ? key : `text_model.${key}`;
}

/**
 * A TensorSource over one component of a single-file checkpoint, with diffusers names.
 * The VAE's attention projections are stored as [C, C, 1, 1] convs: those load as [C, C].
 */
export function singleFileComponent(file: WeightSource, component: 'unet' | 'vae' | 'text_encoder', config: Config): WeightSource & TensorSource {
  const prefix = { unet: 'model.diffusion_model.', vae: 'first_stage_model.', text_encoder: 'cond_stage_model.transformer.' }[component];
  const view = file.withPrefix(prefix);
  // Keys we cannot place keep a marked name so the loader reports them as unexpected.
  const mapped = view.renamed((k) => {
    if (k.endsWith('position_ids')) return null;
    const to = component === 'unet' ? mapUNetKey(k, config) : component === 'vae' ? mapVaeKey(k, config) : mapClipKey(k);
    return to ?? `unmapped:${prefix}${k}`;
  });
  if (!mapped.names().length) {
    throw new Error(`${file.label}: no '${prefix}*' tensors: this is not a Stable Diffusion single-file checkpoint with a ${component}`);
  }
  if (component !== 'vae') return mapped;
  const upload = mapped.upload.bind(mapped);
  return Object.assign(mapped, {
    upload: (engine: Engine, name: string, shape: readonly number[], opts: { dtype?: DType; allowReshape?: boolean } = {}): Promise<Tensor> =>
      upload(engine, name, shape, { ...opts, allowReshape: opts.allowReshape || /attentions\.0\.to_(q|k|v|out\.0)\.weight$/.test(name) }),
  });
}

/** Loads one component of a single-file checkpoint with `load` (a model class's static load). */
export async function loadFromSingleFile<T>(
  load: (engine: Engine, config: Config, source: TensorSource) => Promise<T>,
  engine: Engine,
  source: SingleFileSource,
  component: 'unet' | 'vae' | 'text_encoder',
  config: Config,
  opts: IOOptions = {},
): Promise<T> {
  const file = await openSingleFile(source, opts);
  try {
    return await load(engine, config, singleFileComponent(file, component, config));
  } finally {
    if (!(source instanceof WeightSource)) await file.close();
  }
}

