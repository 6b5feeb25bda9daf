// UNet2DConditionModel: the Stable Diffusion denoiser, cross-attending to a conditioning sequence.
// Note diffusers' naming quirk: attention_head_dim here is the NUMBER of heads (unless
// num_attention_heads is set), so dim_head = channels / attention_head_dim.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr } from '../runtime/tensor.js';
import type { ParamLoader, TensorSource } from './nn.js';
import { transformerAttention } from './unet_blocks.js';
import { UNetCore } from './unet_core.js';
import { ConfigReader, type Config } from '../runtime/config.js';
import { Model, buildModel } from './model.js';
import type { IOOptions } from '../runtime/io.js';
import { timestepList } from './unet_common.js';
import { loadFromSingleFile, type SingleFileSource } from '../loaders/single_file_keys.js';

const NAME = 'UNet2DConditionModel';

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

  /** Throws a clear error when a forward of `batch` latents of h x w would exceed the device's limits. */
  checkFits(op: string, batch: number, h: number, w: number): void {
    this.core.checkFits(this.engine, op, batch, h, w);
  }


  /**
   * The unet of a Stable Diffusion 1.x single-file checkpoint (CompVis key names, model.diffusion_model.*),
   * built with the diffusers config given (single-file checkpoints carry none).
   */
  static fromSingleFile(engine: Engine, source: SingleFileSource, opts: { config: Config } & IOOptions): Promise<UNet2DConditionModel> {
    if (!opts?.config) return Promise.reject(new Error('UNet2DConditionModel.fromSingleFile: pass { config } (the diffusers config of the component)'));
    return loadFromSingleFile(UNet2DConditionModel.load, engine, source, 'unet', opts.config, opts);
  }

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<UNet2DConditionModel> {
    const c = new ConfigReader(NAME, config);
    const boc = c.intList('block_out_channels', [320, 640, 1280, 1280]);
    const n = boc.length;
    const downTypes = c.oneOfList('down_block_types', ['CrossAttnDownBlock2D', 'DownBlock2D'], ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'], n);
    const upTypes = c.oneOfList('up_block_types', ['CrossAttnUpBlock2D', 'UpBlock2D'], ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'], n);
    c.oneOf('mid_block_type', ['UNetMidBlock2DCrossAttn', null], 'UNetMidBlock2DCrossAttn');
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
    ] as [string, (string | number | boolean | null)[]][]) {
      c.oneOf(k, ok, ok[0]);
    }
    const lpb = c.perBlock('layers_per_block', 2, n);
    const groups = c.int('norm_num_groups', 32);
    const eps = c.num('norm_eps', 1e-5);
    const crossDims = c.perBlock('cross_attention_dim', 1280, n);
    const headsList = c.perBlock(c.has('num_attention_heads') ? 'num_attention_heads' : 'attention_head_dim', 8, n);
    const tlpb = c.perBlock('transformer_layers_per_block', 1, n);
    const onlyCross = c.perBlockBool('only_cross_attention', false, n);
    const linearProj = c.bool('use_linear_projection', false);
    const inCh = c.int('in_channels', 4);
    const outCh = c.int('out_channels', 4);
    const numClass = c.int('num_class_embeds', null);
    const tembDim = c.int('time_embedding_dim', null) ?? boc[0] * 4;
    const attnFor = (i: number) =>
      transformerAttention({ heads: headsList[i], crossDim: crossDims[i], layers: tlpb[i], linearProjection: linearProj, groups, onlyCrossAttention: onlyCross[i] });
    const spec = {
      blockOutChannels: boc,
      layersPerBlock: lpb,
      inChannels: inCh,
      outChannels: outCh,
      tembDim,
      flipSinToCos: c.bool('flip_sin_to_cos', true),
      freqShift: c.num('freq_shift', 0),
      numClassEmbeds: numClass,
      groups,
      normOutGroups: groups,
      eps,
      downsamplePadding: c.int('downsample_padding', 1),
      downAttention: (i: number) => (downTypes[i] === 'CrossAttnDownBlock2D' ? attnFor(i) : null),
      midAttention: attnFor(n - 1),
      // the per-block lists are reversed for the up path
      upAttention: (i: number) => (upTypes[i] === 'CrossAttnUpBlock2D' ? attnFor(n - 1 - i) : null),
      // a transformer level's feed-forward projects to 2 x 4 x channels (GEGLU)
      levelWidth: (i: number) => (downTypes[i] === 'CrossAttnDownBlock2D' || upTypes[n - 1 - i] === 'CrossAttnUpBlock2D' ? 8 : 1),
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
    this.checkFits(op, B, sample.shape[2], sample.shape[3]);
    return this.engine.scope(() => this.core.forward(sample, this.core.embed(op, ts, { classLabels: opts.classLabels }), ctx));
  }
}
