// UNet2DConditionModel: the Stable Diffusion denoiser, cross-attending to a conditioning sequence.
// Note diffusers' naming quirk: attention_head_dim here is the NUMBER of heads (unless
// num_attention_heads is set), so dim_head = channels / attention_head_dim.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr } from '../runtime/tensor.js';
import type { ParamLoader, TensorSource } from './nn.js';
import { transformerAttention } from './unet_blocks.js';
import { UNetCore } from './unet_core.js';
import { configBool, configList, configNumber, configOptionalNumber, perBlock, requireValues, type Config } from './config.js';
import { Model, buildModel } from './model.js';
import { loadFromSingleFile, type SingleFileSource } from '../loaders/single_file.js';
import type { IOOptions } from '../runtime/io.js';
import { timestepList } from './unet_common.js';

const NAME = 'UNet2DConditionModel';

function perBlockBool(config: Config, key: string, n: number): boolean[] {
  const v = config[key] ?? false;
  if (typeof v === 'boolean') return Array(n).fill(v);
  if (Array.isArray(v) && v.length === n && v.every((x) => typeof x === 'boolean')) return v as boolean[];
  throw new Error(`${NAME}: config key '${key}' must be a boolean or a list of ${n} booleans, got ${JSON.stringify(v)}`);
}

interface UNet2DConditionModelParts {
  inChannels: number;
  outChannels: number;
  crossAttentionDim: number;
  core: UNetCore;
}

export class UNet2DConditionModel extends Model {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly crossAttentionDim: number;
  private readonly core: UNetCore;

  private constructor(engine: Engine, config: Config, L: ParamLoader, p: UNet2DConditionModelParts) {
    super(engine, config, L);
    this.inChannels = p.inChannels;
    this.outChannels = p.outChannels;
    this.crossAttentionDim = p.crossAttentionDim;
    this.core = p.core;
  }

  get numClassEmbeds(): number | null {
    return this.core.numClassEmbeds;
  }

  /** Loads the unet part of a Stable Diffusion 1.x single-file checkpoint (CompVis key names). */
  static fromSingleFile(engine: Engine, source: SingleFileSource, opts: { config: Config } & IOOptions): Promise<UNet2DConditionModel> {
    if (!opts?.config) throw new Error('UNet2DConditionModel.fromSingleFile: pass { config } (the diffusers config of the component)');
    return loadFromSingleFile((e, c, s) => UNet2DConditionModel.load(e, c, s), engine, source, 'unet', opts.config, opts);
  }

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<UNet2DConditionModel> {
    const boc = configList(config, 'block_out_channels', [320, 640, 1280, 1280], NAME);
    const n = boc.length;
    const downTypes = configList<string>(config, 'down_block_types', ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'], NAME);
    const upTypes = configList<string>(config, 'up_block_types', ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'], NAME);
    if (downTypes.length !== n || upTypes.length !== n) throw new Error(`${NAME}: down_block_types and up_block_types need one entry per block_out_channels (${n})`);
    downTypes.forEach((t, i) => requireValues(NAME, `down_block_types[${i}]`, t, ['CrossAttnDownBlock2D', 'DownBlock2D']));
    upTypes.forEach((t, i) => requireValues(NAME, `up_block_types[${i}]`, t, ['CrossAttnUpBlock2D', 'UpBlock2D']));
    requireValues(NAME, 'mid_block_type', config.mid_block_type ?? 'UNetMidBlock2DCrossAttn', ['UNetMidBlock2DCrossAttn', null]);
    for (const [k, ok] of [
      ['act_fn', ['silu']],
      ['time_embedding_type', ['positional']],
      ['resnet_time_scale_shift', ['default']],
      ['class_embed_type', [null]],
      ['addition_embed_type', [null]],
      ['encoder_hid_dim', [null]],
      ['time_cond_proj_dim', [null]],
      ['dual_cross_attention', [false]],
      ['attention_type', ['default']],
      ['class_embeddings_concat', [false]],
      ['cross_attention_norm', [null]],
      ['conv_in_kernel', [3]],
      ['conv_out_kernel', [3]],
      ['mid_block_scale_factor', [1]],
    ] as [string, unknown[]][]) {
      if (k in config) requireValues(NAME, k, config[k], ok);
    }
    const lpb = perBlock(config, 'layers_per_block', 2, n, NAME);
    const groups = configNumber(config, 'norm_num_groups', 32, NAME);
    const eps = configNumber(config, 'norm_eps', 1e-5, NAME);
    const crossDims = perBlock(config, 'cross_attention_dim', 1280, n, NAME);
    const headsList = perBlock(config, config.num_attention_heads != null ? 'num_attention_heads' : 'attention_head_dim', 8, n, NAME);
    const tlpb = perBlock(config, 'transformer_layers_per_block', 1, n, NAME);
    const onlyCross = perBlockBool(config, 'only_cross_attention', n);
    const linearProj = configBool(config, 'use_linear_projection', false, NAME);
    const inCh = configNumber(config, 'in_channels', 4, NAME);
    const outCh = configNumber(config, 'out_channels', 4, NAME);
    const numClass = configOptionalNumber(config, 'num_class_embeds', NAME);
    const tembDim = configOptionalNumber(config, 'time_embedding_dim', NAME) ?? boc[0] * 4;
    const attnFor = (i: number) =>
      transformerAttention({ heads: headsList[i], crossDim: crossDims[i], layers: tlpb[i], linearProjection: linearProj, groups, onlyCrossAttention: onlyCross[i] });
    const spec = {
      blockOutChannels: boc,
      layersPerBlock: lpb,
      inChannels: inCh,
      outChannels: outCh,
      tembDim,
      flipSinToCos: configBool(config, 'flip_sin_to_cos', true, NAME),
      freqShift: configNumber(config, 'freq_shift', 0, NAME),
      numClassEmbeds: numClass,
      groups,
      normOutGroups: groups,
      eps,
      downsamplePadding: configNumber(config, 'downsample_padding', 1, NAME),
      downAttention: (i: number) => (downTypes[i] === 'CrossAttnDownBlock2D' ? attnFor(i) : null),
      midAttention: attnFor(n - 1),
      // the per-block lists are reversed for the up path
      upAttention: (i: number) => (upTypes[i] === 'CrossAttnUpBlock2D' ? attnFor(n - 1 - i) : null),
    };
    return buildModel(
      engine,
      source,
      async (L): Promise<UNet2DConditionModelParts> => ({ inChannels: inCh, outChannels: outCh, crossAttentionDim: crossDims[0], core: await UNetCore.load(L, spec) }),
      (L, parts) => new UNet2DConditionModel(engine, config, L, parts),
    );
  }

  /** sample [B, in, h, w]; encoderHiddenStates [B, L, cross_attention_dim]. */
  forward(sample: Tensor, timestep: number | readonly number[], opts: { encoderHiddenStates?: Tensor; classLabels?: readonly number[] } = {}): Tensor {
    const op = `${NAME}.forward`;
    this.checkInput('forward', sample, this.inChannels);
    const B = sample.shape[0];
    const ctx = opts.encoderHiddenStates;
    if (!(ctx instanceof Tensor)) throw new Error(`${op}: encoderHiddenStates (a Tensor [B, L, ${this.crossAttentionDim}]) is required`);
    if (ctx.engine !== this.engine) throw new Error(`${op}: encoderHiddenStates belongs to another engine`);
    if (ctx.rank !== 3 || ctx.shape[0] !== B || ctx.shape[2] !== this.crossAttentionDim) {
      throw new Error(`${op}: encoderHiddenStates must be [${B}, L, ${this.crossAttentionDim}], got ${shapeStr(ctx.shape)}`);
    }
    if (ctx.dtype !== sample.dtype) throw new Error(`${op}: encoderHiddenStates is ${ctx.dtype}, sample is ${sample.dtype}`);
    const ts = timestepList(op, timestep, B);
    return this.engine.scope(() => this.core.forward(sample, this.core.embed(op, ts, { classLabels: opts.classLabels }), ctx));
  }
}
