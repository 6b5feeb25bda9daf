// UNet2DModel: the LDM denoiser without text conditioning (unconditional or class-conditional via
// num_class_embeds, the class embedding added to the time embedding). attention_head_dim here is
// channels per head (heads = C / attention_head_dim).
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import type { ParamLoader, TensorSource } from './nn.js';
import { spatialAttention } from './unet_blocks.js';
import { configBool, configList, configNumber, configOptionalNumber, requireValues, type Config } from './config.js';
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

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<UNet2DModel> {
    const name = 'UNet2DModel';
    const boc = configList(config, 'block_out_channels', [224, 448, 672, 896], name);
    const downTypes = configList<string>(config, 'down_block_types', undefined, name);
    const upTypes = configList<string>(config, 'up_block_types', undefined, name);
    if (downTypes.length !== boc.length || upTypes.length !== boc.length) throw new Error(`${name}: down_block_types and up_block_types need one entry per block_out_channels`);
    downTypes.forEach((t, i) => requireValues(name, `down_block_types[${i}]`, t, ['DownBlock2D', 'AttnDownBlock2D']));
    upTypes.forEach((t, i) => requireValues(name, `up_block_types[${i}]`, t, ['UpBlock2D', 'AttnUpBlock2D']));
    requireValues(name, 'time_embedding_type', config.time_embedding_type ?? 'positional', ['positional']);
    requireValues(name, 'act_fn', config.act_fn ?? 'silu', ['silu']);
    requireValues(name, 'resnet_time_scale_shift', config.resnet_time_scale_shift ?? 'default', ['default', 'scale_shift']);
    requireValues(name, 'class_embed_type', config.class_embed_type ?? null, [null]);
    requireValues(name, 'downsample_type', config.downsample_type ?? 'conv', ['conv', 'resnet']);
    requireValues(name, 'upsample_type', config.upsample_type ?? 'conv', ['conv', 'resnet']);
    if ((config.downsample_type ?? 'conv') !== (config.upsample_type ?? 'conv')) throw new Error(`${name}: downsample_type and upsample_type must both be 'conv' or both 'resnet'`);
    const lpb = configNumber(config, 'layers_per_block', 2, name);
    const groups = configNumber(config, 'norm_num_groups', 32, name);
    const eps = configNumber(config, 'norm_eps', 1e-5, name);
    // channels per head: one value, or (as CompVis num_heads UNets need) one per block, the mid block
    // taking the last
    const headDims = Array.isArray(config.attention_head_dim) ? configList(config, 'attention_head_dim', [1], name) : null;
    if (headDims && headDims.length !== boc.length) throw new Error(`${name}: attention_head_dim as a list needs one entry per block_out_channels`);
    const headDim = headDims ? headDims[headDims.length - 1] : configOptionalNumber(config, 'attention_head_dim', name);
    const attnGroups = configOptionalNumber(config, 'attn_norm_num_groups', name) ?? groups;
    const inCh = configNumber(config, 'in_channels', 3, name);
    const outCh = configNumber(config, 'out_channels', 3, name);
    const numClass = configOptionalNumber(config, 'num_class_embeds', name);
    const attnAt = (level: number) => spatialAttention(headDims ? headDims[level] : headDim, attnGroups, eps);
    const centerInput = configBool(config, 'center_input_sample', false, name);
    const spec = {
      blockOutChannels: boc,
      layersPerBlock: boc.map(() => lpb),
      inChannels: inCh,
      outChannels: outCh,
      tembDim: boc[0] * 4,
      flipSinToCos: configBool(config, 'flip_sin_to_cos', true, name),
      freqShift: configNumber(config, 'freq_shift', 0, name),
      numClassEmbeds: numClass,
      groups,
      normOutGroups: configOptionalNumber(config, 'norm_num_groups', name) ?? Math.min(boc[0] / 4, 32),
      eps,
      downsamplePadding: configNumber(config, 'downsample_padding', 1, name),
      scaleShift: config.resnet_time_scale_shift === 'scale_shift',
      resnetSamplers: config.downsample_type === 'resnet',
      downAttention: (i: number) => (downTypes[i] === 'AttnDownBlock2D' ? attnAt(i) : null),
      midAttention: configBool(config, 'add_attention', true, name) ? spatialAttention(headDim ?? boc[boc.length - 1], attnGroups, eps) : null,
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
    if (opts.classLabels && !this.numClassEmbeds) throw new Error(`${op}: classLabels given but the model has no class embedding (num_class_embeds is null)`);
    return this.engine.scope(() => {
      const temb = this.core.embed(op, ts, { classLabels: opts.classLabels });
      return this.core.forward(this.centerInput ? ops.scale(sample, 2, -1) : sample, temb);
    });
  }
}
