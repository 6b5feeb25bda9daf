// The paper's original release files (CompVis latent-diffusion: config.yaml + model.ckpt) mapped
// onto the engine's diffusers-named modules. The YAML's `target:` names and `params:` decide what is
// built; every option is either translated, or refused with an error naming the target and option
// (never silently ignored). Facts: ../shared/notes/paper-releases.md, checked against the code.

import { parse as parseYaml } from 'yaml';
import type { Engine } from '../runtime/engine.js';
import type { DType, Tensor } from '../runtime/tensor.js';
import { f32ToF16Bits } from '../runtime/half.js';
import type { WeightSource } from '../runtime/weights.js';
import type { TensorSource } from '../models/nn.js';
import type { Config } from '../runtime/config.js';
import { mapVaeKey, renameResnet } from './single_file_keys.js';

export class OriginalConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OriginalConfigError';
  }
}

export interface TargetConfig {
  target: string;
  params: Record<string, unknown>;
}

/** Parses a release config.yaml (text) and returns its `model:` node. */
export function parseReleaseConfig(text: string, label = 'config.yaml'): TargetConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new OriginalConfigError(`${label}: not valid YAML: ${(e as Error).message}`);
  }
  const model = (doc as { model?: unknown })?.model ?? doc;
  return asTarget(model, `${label}: model`);
}

function asTarget(node: unknown, where: string): TargetConfig {
  if (!node || typeof node !== 'object' || typeof (node as { target?: unknown }).target !== 'string') {
    throw new OriginalConfigError(`${where} must have a 'target:' class name`);
  }
  const params = (node as { params?: unknown }).params ?? {};
  if (typeof params !== 'object' || params === null) throw new OriginalConfigError(`${where}.params must be a mapping`);
  return { target: (node as { target: string }).target, params: params as Record<string, unknown> };
}

/** A sub-config (unet_config, first_stage_config, cond_stage_config): a target node or a string marker. */
export function subConfig(params: Record<string, unknown>, key: string, where: string): TargetConfig | string {
  const v = params[key];
  if (typeof v === 'string') return v;
  return asTarget(v, `${where}.${key}`);
}

export function num(p: Record<string, unknown>, key: string, def: number | undefined, where: string): number {
  const v = p[key] ?? def;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new OriginalConfigError(`${where}: '${key}' must be a number, got ${JSON.stringify(p[key])}`);
  return v;
}

function list(p: Record<string, unknown>, key: string, def: number[], where: string): number[] {
  const v = p[key] ?? def;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number')) throw new OriginalConfigError(`${where}: '${key}' must be a list of numbers`);
  return v as number[];
}

function refuse(where: string, option: string, value: unknown): never {
  throw new OriginalConfigError(`${where}: option ${option}: ${JSON.stringify(value)} is not supported by this engine yet`);
}

// ---------------------------------------------------------------- UNet (openaimodel.UNetModel)

export const UNET_TARGET = 'ldm.modules.diffusionmodules.openaimodel.UNetModel';

export interface UNetPlan {
  /** which engine module runs it */
  kind: 'UNet2DConditionModel' | 'UNet2DModel';
  config: Config;
  numResBlocks: number;
  attnLevels: boolean[];
  /** legacy AttentionBlock heads (UNet2DModel): q/k/v are packed per head in one Conv1d */
  attentionHeads: number[];
  midHeads: number;
}

/** Translates UNetModel params into a diffusers UNet config, or refuses what is not supported. */
export function planUNet(t: TargetConfig): UNetPlan {
  const where = t.target;
  if (t.target !== UNET_TARGET) throw new OriginalConfigError(`unet_config target '${t.target}' is not supported (expected ${UNET_TARGET})`);
  const p = t.params;
  const st = p.use_spatial_transformer === true;
  // scale-shift norm and resampling ResBlocks run in UNet2DModel (lsun_churches, inpainting_big)
  for (const [k, ok] of [
    ...(st ? [['use_scale_shift_norm', false], ['resblock_updown', false]] : []),
    ['use_new_attention_order', false],
    ['dims', 2],
    ['conv_resample', true],
    ['n_embed', null],
  ] as [string, unknown][]) {
    if (p[k] !== undefined && p[k] !== ok) refuse(where, k, p[k]);
  }
  const mc = num(p, 'model_channels', undefined, where);
  const mult = list(p, 'channel_mult', [1, 2, 4, 8], where);
  const nrb = num(p, 'num_res_blocks', undefined, where);
  const ar = list(p, 'attention_resolutions', [], where);
  const numHeads = num(p, 'num_heads', -1, where);
  const headCh = num(p, 'num_head_channels', -1, where);
  const headsUp = num(p, 'num_heads_upsample', -1, where);
  if (headsUp !== -1 && headsUp !== numHeads) refuse(where, 'num_heads_upsample', headsUp);
  if (headCh === -1 && numHeads === -1) throw new OriginalConfigError(`${where}: either num_heads or num_head_channels must be set`);
  const boc = mult.map((m) => m * mc);
  const n = boc.length;
  const attnLevels = boc.map((_, i) => ar.includes(2 ** i));
  // with num_head_channels the head count follows the channels; with num_heads it is fixed
  const heads = boc.map((ch) => (headCh !== -1 ? ch / headCh : numHeads));
  const midHeads = headCh !== -1 ? boc[n - 1] / headCh : numHeads;
  for (const h of [...heads, midHeads]) if (!Number.isInteger(h) || h < 1) throw new OriginalConfigError(`${where}: channels ${boc.join(', ')} do not split into heads of ${headCh} channels`);
  const common: Config = {
    in_channels: num(p, 'in_channels', undefined, where),
    out_channels: num(p, 'out_channels', undefined, where),
    block_out_channels: boc,
    layers_per_block: nrb,
    norm_num_groups: 32,
    norm_eps: 1e-5,
    flip_sin_to_cos: true,
    freq_shift: 0,
    downsample_padding: 1,
    num_class_embeds: p.num_classes ?? null,
  };
  if (st) {
    const ctx = p.context_dim;
    if (typeof ctx !== 'number') throw new OriginalConfigError(`${where}: use_spatial_transformer needs context_dim`);
    return {
      kind: 'UNet2DConditionModel',
      config: {
        ...common,
        down_block_types: attnLevels.map((a) => (a ? 'CrossAttnDownBlock2D' : 'DownBlock2D')),
        up_block_types: [...attnLevels].reverse().map((a) => (a ? 'CrossAttnUpBlock2D' : 'UpBlock2D')),
        attention_head_dim: heads, // diffusers: the head COUNT per block for this class
        cross_attention_dim: ctx,
        transformer_layers_per_block: num(p, 'transformer_depth', 1, where),
      },
      numResBlocks: nrb,
      attnLevels,
      attentionHeads: heads,
      midHeads,
    };
  }
  // AttentionBlock UNets: UNet2DModel's attention_head_dim is channels per head, per block here
  // (num_heads fixes the count, so the width changes with the channels); the mid block's is the last
  const dims = boc.map((ch, i) => ch / heads[i]);
  if (boc[n - 1] / midHeads !== dims[n - 1]) throw new OriginalConfigError(`${where}: the middle block's heads do not match the last level's`);
  const updown = p.resblock_updown === true;
  return {
    kind: 'UNet2DModel',
    config: {
      ...common,
      down_block_types: attnLevels.map((a) => (a ? 'AttnDownBlock2D' : 'DownBlock2D')),
      up_block_types: [...attnLevels].reverse().map((a) => (a ? 'AttnUpBlock2D' : 'UpBlock2D')),
      attention_head_dim: dims,
      add_attention: true,
      resnet_time_scale_shift: p.use_scale_shift_norm === true ? 'scale_shift' : 'default',
      downsample_type: updown ? 'resnet' : 'conv',
      upsample_type: updown ? 'resnet' : 'conv',
    },
    numResBlocks: nrb,
    attnLevels,
    attentionHeads: heads,
    midHeads,
  };
}

const resnet = renameResnet;

/** A mapped name: a direct key, or one of q/k/v cut out of a legacy per-head packed qkv Conv1d. */
export type MappedKey = string | { qkv: string; part: 0 | 1 | 2; heads: number };

function attention(base: string, rest: string, heads: number, legacy: boolean): [string, MappedKey] | null {
  if (!legacy) return [`${base}.${rest}`, ''];
  let m: RegExpExecArray | null;
  if ((m = /^norm\.(weight|bias)$/.exec(rest))) return [`${base}.group_norm.${m[1]}`, ''];
  if ((m = /^proj_out\.(weight|bias)$/.exec(rest))) return [`${base}.to_out.0.${m[1]}`, ''];
  if ((m = /^qkv\.(weight|bias)$/.exec(rest))) return [`${base}.to_q.${m[1]}`, { qkv: '', part: 0, heads }];
  return null;
}

/**
 * CompVis UNet keys (without 'model.diffusion_model.') -> diffusers names. Legacy AttentionBlock
 * qkv weights map to three names each; the result lists every diffusers name with where it comes from.
 */
export function mapOriginalUNetKeys(keys: readonly string[], plan: UNetPlan): Map<string, MappedKey> {
  const n = plan.config.block_out_channels as number[];
  const L = n.length;
  const nrb = plan.numResBlocks;
  const legacy = plan.kind === 'UNet2DModel';
  const updown = plan.config.downsample_type === 'resnet';
  const out = new Map<string, MappedKey>();
  const put = (to: string, from: MappedKey) => out.set(to, from);
  const putAttn = (base: string, rest: string, heads: number, key: string) => {
    const r = attention(base, rest, heads, legacy);
    if (!r) return false;
    const [to, spec] = r;
    if (typeof spec === 'object') {
      const w = to.endsWith('weight') ? 'weight' : 'bias';
      (['to_q', 'to_k', 'to_v'] as const).forEach((nm, part) => put(`${base}.${nm}.${w}`, { qkv: key, part: part as 0 | 1 | 2, heads }));
    } else put(to, key);
    return true;
  };
  for (const key of keys) {
    let m: RegExpExecArray | null;
    let ok = true;
    if ((m = /^time_embed\.(0|2)\.(.*)$/.exec(key))) put(`time_embedding.linear_${m[1] === '0' ? 1 : 2}.${m[2]}`, key);
    else if ((m = /^label_emb\.(.*)$/.exec(key))) put(`class_embedding.${m[1]}`, key);
    else if ((m = /^out\.(0|2)\.(.*)$/.exec(key))) put(`${m[1] === '0' ? 'conv_norm_out' : 'conv_out'}.${m[2]}`, key);
    else if ((m = /^input_blocks\.0\.0\.(.*)$/.exec(key))) put(`conv_in.${m[1]}`, key);
    else if ((m = /^middle_block\.(\d)\.(.*)$/.exec(key))) {
      if (m[1] === '1') ok = putAttn('mid_block.attentions.0', m[2], plan.midHeads, key);
      else put(`mid_block.resnets.${m[1] === '0' ? 0 : 1}.${resnet(m[2])}`, key);
    } else if ((m = /^input_blocks\.(\d+)\.(\d+)\.(.*)$/.exec(key))) {
      const k = Number(m[1]) - 1;
      const level = Math.floor(k / (nrb + 1));
      const j = k % (nrb + 1);
      if (level >= L) ok = false;
      else if (j === nrb) {
        if (level < L - 1 && m[2] === '0' && m[3].startsWith('op.')) put(`down_blocks.${level}.downsamplers.0.conv.${m[3].slice(3)}`, key);
        else if (level < L - 1 && m[2] === '0' && updown) put(`down_blocks.${level}.downsamplers.0.${resnet(m[3])}`, key); // a ResBlock(down)
        else ok = false;
      } else if (m[2] === '0') put(`down_blocks.${level}.resnets.${j}.${resnet(m[3])}`, key);
      else if (m[2] === '1' && plan.attnLevels[level]) ok = putAttn(`down_blocks.${level}.attentions.${j}`, m[3], plan.attentionHeads[level], key);
      else ok = false;
    } else if ((m = /^output_blocks\.(\d+)\.(\d+)\.(.*)$/.exec(key))) {
      const k = Number(m[1]);
      const i = Math.floor(k / (nrb + 1)); // up block index: level L - 1 - i
      const j = k % (nrb + 1);
      const level = L - 1 - i;
      const sub = Number(m[2]);
      const hasAttn = plan.attnLevels[level];
      if (i >= L) ok = false;
      else if (sub === 0) put(`up_blocks.${i}.resnets.${j}.${resnet(m[3])}`, key);
      else if (sub === 1 && hasAttn) ok = putAttn(`up_blocks.${i}.attentions.${j}`, m[3], plan.attentionHeads[level], key);
      else if (j === nrb && level > 0 && sub === (hasAttn ? 2 : 1) && m[3].startsWith('conv.') && !updown) put(`up_blocks.${i}.upsamplers.0.${m[3]}`, key);
      else if (j === nrb && level > 0 && sub === (hasAttn ? 2 : 1) && updown) put(`up_blocks.${i}.upsamplers.0.${resnet(m[3])}`, key); // a ResBlock(up)
      else ok = false;
    } else ok = false;
    if (!ok) put(`unmapped:${key}`, key);
  }
  return out;
}

// ---------------------------------------------------------------- first stage

export const VQ_TARGET = 'ldm.models.autoencoder.VQModelInterface';
export const KL_TARGET = 'ldm.models.autoencoder.AutoencoderKL';

export interface FirstStagePlan {
  kind: 'VQModel' | 'AutoencoderKL';
  config: Config;
}

export function planFirstStage(t: TargetConfig): FirstStagePlan {
  const where = t.target;
  if (t.target !== VQ_TARGET && t.target !== KL_TARGET && t.target !== 'ldm.models.autoencoder.VQModel') {
    throw new OriginalConfigError(`first_stage_config target '${t.target}' is not supported (expected ${VQ_TARGET} or ${KL_TARGET})`);
  }
  const dd = t.params.ddconfig as Record<string, unknown> | undefined;
  if (!dd || typeof dd !== 'object') throw new OriginalConfigError(`${where}: params.ddconfig is missing`);
  const ch = num(dd, 'ch', undefined, where);
  const mult = list(dd, 'ch_mult', [1, 2, 4, 8], where);
  const res = num(dd, 'resolution', undefined, where);
  const attnRes = list(dd, 'attn_resolutions', [], where);
  const attnType = (dd.attn_type as string | undefined) ?? 'vanilla';
  if (attnType !== 'vanilla' && attnType !== 'none') refuse(where, 'ddconfig.attn_type', attnType);
  // attn_resolutions are image resolutions: level i runs at resolution / 2^i
  const perLevel = mult.map((_, i) => attnType !== 'none' && attnRes.includes(res / 2 ** i));
  if (dd.give_pre_end || dd.tanh_out) refuse(where, 'ddconfig.give_pre_end/tanh_out', true);
  const z = num(dd, 'z_channels', undefined, where);
  const embed = num(t.params, 'embed_dim', undefined, where);
  const common: Config = {
    in_channels: num(dd, 'in_channels', 3, where),
    out_channels: num(dd, 'out_ch', 3, where),
    latent_channels: z,
    block_out_channels: mult.map((m) => m * ch),
    layers_per_block: num(dd, 'num_res_blocks', undefined, where),
    norm_num_groups: 32,
    mid_block_add_attention: attnType !== 'none',
    down_block_types: perLevel.map((a) => (a ? 'AttnDownEncoderBlock2D' : 'DownEncoderBlock2D')),
    up_block_types: [...perLevel].reverse().map((a) => (a ? 'AttnUpDecoderBlock2D' : 'UpDecoderBlock2D')),
  };
  if (t.target === KL_TARGET) {
    if (embed !== z) refuse(where, 'embed_dim different from z_channels', embed);
    if (dd.double_z === false) refuse(where, 'ddconfig.double_z', false);
    return { kind: 'AutoencoderKL', config: { ...common, scaling_factor: 1 } };
  }
  return { kind: 'VQModel', config: { ...common, vq_embed_dim: embed, num_vq_embeddings: num(t.params, 'n_embed', undefined, where), scaling_factor: 1 } };
}

/** CompVis first-stage keys (without 'first_stage_model.') -> diffusers names. */
export function mapOriginalFirstStageKeys(keys: readonly string[], plan: FirstStagePlan): Map<string, MappedKey> {
  const out = new Map<string, MappedKey>();
  for (const key of keys) {
    if (key.startsWith('loss.')) continue; // training losses (discriminator, LPIPS) are not the model
    const L = (plan.config.block_out_channels as number[]).length;
    const m = /^(encoder\.down|decoder\.up)\.(\d+)\.attn\.(\d+)\.(norm|q|k|v|proj_out)\.(weight|bias)$/.exec(key);
    let to: string | null;
    if (m) {
      // per-level attention (vq-f8, vq-f16, kl-f16, kl-f32): decoder levels are reversed in diffusers
      const enc = m[1] === 'encoder.down';
      const block = enc ? Number(m[2]) : L - 1 - Number(m[2]);
      const name = { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0' }[m[4]];
      to = `${enc ? 'encoder.down_blocks' : 'decoder.up_blocks'}.${block}.attentions.${m[3]}.${name}.${m[5]}`;
    } else to = key === 'quantize.embedding.weight' ? key : mapVaeKey(key, plan.config);
    out.set(to ?? `unmapped:${key}`, key);
  }
  return out;
}

// ---------------------------------------------------------------- a TensorSource over mapped keys

/**
 * A TensorSource with diffusers names over a view of the original checkpoint. 1x1 convs stored as
 * [C, C, 1(, 1)] load as linears; legacy packed qkv is cut per head into to_q/to_k/to_v.
 */
export function mappedSource(view: WeightSource, map: Map<string, MappedKey>): TensorSource & { unusedNames(): string[] } {
  const consumed = new Set<string>();
  return {
    has: (name) => map.has(name),
    upload: async (engine: Engine, name: string, shape: readonly number[], opts: { dtype: DType; allowReshape?: boolean }): Promise<Tensor> => {
      const from = map.get(name);
      if (from === undefined) throw new Error(`${view.label}: missing weight '${name}' (no original key maps to it)`);
      if (typeof from === 'string') {
        consumed.add(from);
        return view.upload(engine, from, shape, { dtype: opts.dtype, allowReshape: true });
      }
      consumed.add(from.qkv);
      const info = view.info(from.qkv)!;
      const all = await view.readF32(from.qkv);
      const rows = info.shape[0] / 3;
      const cols = all.length / info.shape[0];
      const d = rows / from.heads;
      if (!Number.isInteger(d) || rows * cols !== shape.reduce((a, b) => a * b, 1)) {
        throw new Error(`${view.label}: packed qkv '${from.qkv}' ${JSON.stringify(info.shape)} does not give ${name} ${JSON.stringify(shape)} with ${from.heads} heads`);
      }
      // layout [head0: q k v, head1: q k v, ...], d rows each
      const part = new Float32Array(rows * cols);
      for (let h = 0; h < from.heads; h++) {
        const src = (h * 3 * d + from.part * d) * cols;
        part.set(all.subarray(src, src + d * cols), h * d * cols);
      }
      const t = engine.empty(shape, opts.dtype, `upload ${name}`, true);
      try {
        engine.writeTensor(t, opts.dtype === 'f16' ? f32ToF16Bits(part) : part);
      } catch (e) {
        t.dispose();
        throw e;
      }
      return t;
    },
    unusedNames: () => [...new Set([...map.values()].map((v) => (typeof v === 'string' ? v : v.qkv)))].filter((k) => !consumed.has(k)).sort(),
  };
}
