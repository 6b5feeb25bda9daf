// UNet2DModel: the LDM denoiser without text conditioning (unconditional or class-conditional via
// num_class_embeds, the class embedding added to the time embedding). attention_head_dim here is
// channels per head (heads = C / attention_head_dim).
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import type { ParamLoader, TensorSource } from './nn.js';
import { spatialAttention } from './unet_blocks.js';
import { ConfigReader, type Config } from '../runtime/config.js';
import { Model, buildModel } from './model.js';
import { UNetCore } from './unet_core.js';
import { timestepList } from './unet_common.js';

interface UNet2DModelParts {
  inChannels: number;
  outChannels: number;
  centerInput: boolean;
  core: UNetCore;
}

export class UNet2DModel extends Model {
  readonly inChannels: number;
  readonly outChannels: number;
  private readonly centerInput: boolean;
  private readonly core: UNetCore;

  private constructor(engine: Engine, config: Config, L: ParamLoader, p: UNet2DModelParts) {
    super(engine, config, L);
    this.inChannels = p.inChannels;
    this.outChannels = p.outChannels;
    this.centerInput = p.centerInput;
    this.core = p.core;
  }

  get numClassEmbeds(): number | null {
    return this.core.numClassEmbeds;
  }

  /** Throws a clear error when a forward of `batch` latents of h x w would exceed the device's limits. */
  checkFits(op: string, batch: number, h: number, w: number): void {
    this.core.checkFits(this.engine, op, batch, h, w);
  }

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<UNet2DModel> {
    const c = new ConfigReader('UNet2DModel', config);
    const boc = c.intList('block_out_channels', [224, 448, 672, 896]);
    const downTypes = c.oneOfList('down_block_types', ['DownBlock2D', 'AttnDownBlock2D'], undefined, boc.length);
    const upTypes = c.oneOfList('up_block_types', ['UpBlock2D', 'AttnUpBlock2D'], undefined, boc.length);
    c.oneOf('time_embedding_type', ['positional'], 'positional');
    c.oneOf('act_fn', ['silu'], 'silu');
    const timeScaleShift = c.oneOf('resnet_time_scale_shift', ['default', 'scale_shift'], 'default');
    c.oneOf('class_embed_type', [null], null);
    const downsampleType = c.oneOf('downsample_type', ['conv', 'resnet'], 'conv');
    if (c.oneOf('upsample_type', ['conv', 'resnet'], 'conv') !== downsampleType) throw c.fail('upsample_type', c.raw('upsample_type'), `downsample_type and upsample_type must both be 'conv' or both 'resnet'`);
    const lpb = c.int('layers_per_block', 2);
    const groups = c.int('norm_num_groups', 32);
    const eps = c.num('norm_eps', 1e-5);
    // channels per head: one value, or (as CompVis num_heads UNets need) one per block, the mid block
    // taking the last
    const headDims = Array.isArray(c.raw('attention_head_dim')) ? c.intList('attention_head_dim', undefined, undefined, boc.length) : null;
    const headDim = headDims ? headDims[headDims.length - 1] : c.int('attention_head_dim', null);
    const attnGroups = c.int('attn_norm_num_groups', null) ?? groups;
    const inCh = c.int('in_channels', 3);
    const outCh = c.int('out_channels', 3);
    const numClass = c.int('num_class_embeds', null);
    const attnAt = (level: number) => spatialAttention(headDims ? headDims[level] : headDim, attnGroups, eps);
    const centerInput = c.bool('center_input_sample', false);
    const spec = {
      blockOutChannels: boc,
      layersPerBlock: boc.map(() => lpb),
      inChannels: inCh,
      outChannels: outCh,
      tembDim: boc[0] * 4,
      flipSinToCos: c.bool('flip_sin_to_cos', true),
      freqShift: c.num('freq_shift', 0),
      numClassEmbeds: numClass,
      groups,
      normOutGroups: c.int('norm_num_groups', null) ?? Math.min(boc[0] / 4, 32),
      eps,
      downsamplePadding: c.int('downsample_padding', 1),
      scaleShift: timeScaleShift === 'scale_shift',
      resnetSamplers: downsampleType === 'resnet',
      downAttention: (i: number) => (downTypes[i] === 'AttnDownBlock2D' ? attnAt(i) : null),
      midAttention: c.bool('add_attention', true) ? spatialAttention(headDim ?? boc[boc.length - 1], attnGroups, eps) : null,
      upAttention: (i: number) => (upTypes[i] === 'AttnUpBlock2D' ? attnAt(boc.length - 1 - i) : null),
    };
    return buildModel(
      engine,
      source,
      async (L): Promise<UNet2DModelParts> => ({ inChannels: inCh, outChannels: outCh, centerInput, core: await UNetCore.load(L, spec) }),
      (L, parts) => new UNet2DModel(engine, config, L, parts),
    );
  }

  /** The noise (or v / sample) prediction. timestep: one for the batch or one per item. */
  forward(sample: Tensor, timestep: number | readonly number[], opts: { classLabels?: readonly number[] } = {}): Tensor {
    const op = 'UNet2DModel.forward';
    this.checkInput('forward', sample, this.inChannels);
    const ts = timestepList(op, timestep, sample.shape[0]);
    this.checkFits(op, sample.shape[0], sample.shape[2], sample.shape[3]);
    if (opts.classLabels && !this.numClassEmbeds) throw new Error(`${op}: classLabels given but the model has no class embedding (num_class_embeds is null)`);
    return this.engine.scope(() => {
      const temb = this.core.embed(op, ts, { classLabels: opts.classLabels });
      return this.core.forward(this.centerInput ? ops.scale(sample, 2, -1) : sample, temb);
    });
  }
}
