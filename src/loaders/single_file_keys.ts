// The key mapping of Stable Diffusion single-file checkpoints (CompVis / original LDM key names; SDXL's UNet added embedding too) mapped onto the
// diffusers modules: model.diffusion_model.* -> UNet2DConditionModel, first_stage_model.* ->
// AutoencoderKL, the text encoders (SD 1.x CLIP-L, SD 2.x OpenCLIP-H, SDXL's two; see below) -> CLIPTextModel /
// CLIPTextModelWithProjection. The mapping follows the block
// arithmetic of the original code, generalised to any layers_per_block and number of levels.
// It imports no model, so the models' own fromSingleFile statics (the public API) can use it
// without an import cycle; single_file.ts adds the one-call loader over all three.
import type { Engine } from '../runtime/engine.js';
import type { DType, Tensor } from '../runtime/tensor.js';
import { WeightSource, WeightError } from '../runtime/weights.js';
import type { IOOptions } from '../runtime/io.js';
import type { TensorSource } from '../models/nn.js';
import { ConfigReader, type Config } from '../runtime/config.js';

export type SingleFileSource = string | Uint8Array | ArrayBuffer | WeightSource;
export type SingleFileComponent = 'unet' | 'vae' | 'text_encoder' | 'text_encoder_2';

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
export function singleFileComponent(file: WeightSource, component: SingleFileComponent, config: Config): TensorSource {
  if (component === 'text_encoder' || component === 'text_encoder_2') return singleFileTextEncoder(file, component, config);
  const prefix = { unet: 'model.diffusion_model.', vae: 'first_stage_model.' }[component];
  const view = file.withPrefix(prefix);
  // Keys we cannot place keep a marked name so the loader reports them as unexpected.
  const mapped = view.renamed((k) => {
    const to = component === 'unet' ? mapUNetKey(k, config) : mapVaeKey(k, config);
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
  component: SingleFileComponent,
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


// ---------------------------------------------------------------- text encoders
// SD 1.x: cond_stage_model.transformer.* (transformers' names without 'text_model.').
// SD 2.x: cond_stage_model.model.* (OpenCLIP ViT-H: resblocks with a fused in_proj, ln_final,
//   text_projection); diffusers keeps 23 of the 24 blocks (the penultimate layer is SD 2's output) and
//   no projection, so blocks past num_hidden_layers, text_projection and logit_scale are skipped.
// SDXL: conditioner.embedders.0.transformer.* (CLIP-L, transformers' names) and
//   conditioner.embedders.1.model.* (OpenCLIP bigG with text_projection -> text_encoder_2);
//   the refiner has only the bigG, as conditioner.embedders.0.model.*.

/** Where a single-file checkpoint keeps a text encoder, and in which naming. */
export interface TextEncoderLayout {
  prefix: string;
  naming: 'transformers' | 'openclip';
}

const TEXT_LAYOUTS: Record<'text_encoder' | 'text_encoder_2', TextEncoderLayout[]> = {
  text_encoder: [
    { prefix: 'cond_stage_model.transformer.', naming: 'transformers' },
    { prefix: 'cond_stage_model.model.', naming: 'openclip' },
    { prefix: 'conditioner.embedders.0.transformer.', naming: 'transformers' },
  ],
  text_encoder_2: [
    { prefix: 'conditioner.embedders.1.model.', naming: 'openclip' },
    { prefix: 'conditioner.embedders.0.model.', naming: 'openclip' },
  ],
};

/** The layout of a text encoder in this file (by the first key prefix present), or null. */
export function detectTextEncoderLayout(file: WeightSource, component: 'text_encoder' | 'text_encoder_2'): TextEncoderLayout | null {
  const names = file.names();
  return TEXT_LAYOUTS[component].find((l) => names.some((n) => n.startsWith(l.prefix))) ?? null;
}

/** How one transformers tensor is made from an OpenCLIP one. */
interface OpenClipRecipe {
  from: string;
  /** rows [start, start + count) of a fused in_proj weight / bias */
  rows?: [number, number];
  /** the OpenCLIP text_projection [hidden, proj] used as x @ P -> Linear weight [proj, hidden] */
  transpose?: boolean;
}

const OPENCLIP_LAYER: [RegExp, string][] = [
  [/^ln_1\./, 'layer_norm1.'],
  [/^ln_2\./, 'layer_norm2.'],
  [/^attn\.out_proj\./, 'self_attn.out_proj.'],
  [/^mlp\.c_fc\./, 'mlp.fc1.'],
  [/^mlp\.c_proj\./, 'mlp.fc2.'],
];

/**
 * transformers name -> recipe for an OpenCLIP text tower (names without the prefix), and the OpenCLIP
 * names deliberately left out. `hidden` splits in_proj into q / k / v; `layers` = num_hidden_layers.
 */
export function mapOpenClipKeys(names: readonly string[], hidden: number, opts: { layers: number; dropExtraLayers: boolean; projection: boolean }): {
  recipes: Map<string, OpenClipRecipe>;
  skipped: string[];
} {
  const recipes = new Map<string, OpenClipRecipe>();
  const skipped: string[] = [];
  const put = (to: string, r: OpenClipRecipe) => recipes.set(to, r);
  for (const n of names) {
    let m: RegExpExecArray | null;
    if (n === 'token_embedding.weight') put('text_model.embeddings.token_embedding.weight', { from: n });
    else if (n === 'positional_embedding') put('text_model.embeddings.position_embedding.weight', { from: n });
    else if ((m = /^ln_final\.(weight|bias)$/.exec(n))) put(`text_model.final_layer_norm.${m[1]}`, { from: n });
    else if (n === 'text_projection') {
      if (opts.projection) put('text_projection.weight', { from: n, transpose: true });
      else skipped.push(n);
    } else if (n === 'logit_scale' || n === 'attn_mask') skipped.push(n);
    else if ((m = /^transformer\.resblocks\.(\d+)\.(.*)$/.exec(n))) {
      const i = Number(m[1]);
      const rest = m[2];
      if (i >= opts.layers && opts.dropExtraLayers) {
        skipped.push(n);
        continue;
      }
      const to = `text_model.encoder.layers.${i}.`;
      if ((m = /^attn\.in_proj_(weight|bias)$/.exec(rest))) {
        ['q', 'k', 'v'].forEach((p, j) => put(`${to}self_attn.${p}_proj.${m![1]}`, { from: n, rows: [j * hidden, hidden] }));
        continue;
      }
      const hit = OPENCLIP_LAYER.find(([re]) => re.test(rest));
      // unknown block tensors keep a marked name so the loader reports them as unexpected
      put(hit ? to + rest.replace(hit[0], hit[1]) : `unmapped:${n}`, { from: n });
    } else put(`unmapped:${n}`, { from: n });
  }
  return { recipes, skipped };
}

/** A converted text tower: TensorSource plus its names and shapes (what a LoRA merge plans with). */
export type OpenClipTextSource = TensorSource & { label: string; names(): string[]; shapeOf(name: string): number[] | undefined; unusedNames(): string[] };

/**
 * A TensorSource with transformers' names over an OpenCLIP text tower (view = the file's tensors
 * under the prefix): q / k / v are row blocks of the fused in_proj (read once for the three), the
 * projection is transposed on the host; everything else is a plain rename.
 */
function openClipTextSource(view: WeightSource, config: Config, projection: boolean, dropExtraLayers: boolean): OpenClipTextSource {
  const c = new ConfigReader(projection ? 'CLIPTextModelWithProjection' : 'CLIPTextModel', config);
  const hidden = c.int('hidden_size', 512);
  const layers = c.int('num_hidden_layers', 12);
  const { recipes, skipped } = mapOpenClipKeys(view.names(), hidden, { layers, dropExtraLayers, projection });
  view.markUsed(...skipped);
  const plainFrom = new Map<string, string>();
  for (const [to, r] of recipes) if (!r.rows && !r.transpose) plainFrom.set(r.from, to);
  const plain = view.renamed((k) => plainFrom.get(k) ?? null);
  let cached: { from: string; data: Float32Array } | null = null;
  const readOnce = async (from: string, shape: number[]): Promise<Float32Array> => {
    if (cached?.from !== from) cached = { from, data: await view.readF32(from, shape) };
    return cached.data;
  };
  const check = (name: string, from: string, shape: readonly number[], want: readonly number[]) => {
    const got = view.info(from)?.shape ?? [];
    if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
      throw new WeightError(view.label, `weight '${from}' (for '${name}' ${JSON.stringify(shape)}) has shape [${got.join(', ')}], expected [${want.join(', ')}]`, name);
    }
  };
  // names and shapes by transformers' names, so a LoRA (kohya lora_te_ / PEFT text_encoder_2.*)
  // is planned and merged on these names, after the key map (LoraMerger.wrap)
  const shapeOf = (name: string): number[] | undefined => {
    const r = recipes.get(name);
    const from = r && view.info(r.from)?.shape;
    if (!r || !from) return undefined;
    if (r.transpose) return [from[1], from[0]];
    if (r.rows) return [r.rows[1], ...from.slice(1)];
    return [...from];
  };
  return {
    label: view.label,
    names: () => [...recipes.keys()].filter((n) => !n.startsWith('unmapped:')),
    shapeOf,
    has: (name) => recipes.has(name),
    unusedNames: () => view.unusedNames(),
    async upload(engine, name, shape, opts) {
      const r = recipes.get(name);
      if (!r || (!r.rows && !r.transpose)) return plain.upload(engine, name, shape, opts);
      if (r.transpose) {
        const [out, inp] = shape;
        check(name, r.from, shape, [inp, out]);
        const src = await view.readF32(r.from, [inp, out]);
        const t = new Float32Array(out * inp);
        for (let i = 0; i < inp; i++) for (let o = 0; o < out; o++) t[o * inp + i] = src[i * out + o];
        return engine.tensor(t, shape, opts.dtype);
      }
      const [start, count] = r.rows!;
      const cols = shape.length === 2 ? shape[1] : 1;
      const fused = shape.length === 2 ? [3 * hidden, cols] : [3 * hidden];
      check(name, r.from, shape, fused);
      if (shape[0] !== count) throw new WeightError(view.label, `weight '${name}' expected with ${shape[0]} rows, the in_proj block has ${count}`, name);
      const data = await readOnce(r.from, fused);
      return engine.tensor(data.slice(start * cols, (start + count) * cols), shape, opts.dtype);
    },
  };
}

/**
 * A text encoder of a single-file checkpoint with transformers' names: SD 1.x / SDXL's CLIP-L
 * ('text_encoder'), SD 2.x's OpenCLIP-H ('text_encoder'), SDXL's OpenCLIP-bigG ('text_encoder_2').
 */
export function singleFileTextEncoder(file: WeightSource, component: 'text_encoder' | 'text_encoder_2', config: Config): TensorSource & { unusedNames(): string[] } {
  const layout = detectTextEncoderLayout(file, component);
  if (!layout) {
    const where = TEXT_LAYOUTS[component].map((l) => `'${l.prefix}*'`).join(', ');
    throw new Error(`${file.label}: no ${where} tensors: this is not a Stable Diffusion single-file checkpoint with a ${component}`);
  }
  const view = file.withPrefix(layout.prefix);
  if (layout.naming === 'openclip') return openClipTextSource(view, config, component === 'text_encoder_2', layout.prefix === 'cond_stage_model.model.');
  // transformers' names, with or without 'text_model.'; the position_ids buffer is implied
  return view.renamed((k) => (k.endsWith('position_ids') ? null : mapClipKey(k)));
}
