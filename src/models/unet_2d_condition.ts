// UNet2DConditionModel: the Stable Diffusion denoiser, cross-attending to a conditioning sequence.
// Note diffusers' naming quirk: attention_head_dim here is the NUMBER of heads (unless
// num_attention_heads is set), so dim_head = channels / attention_head_dim.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr } from '../runtime/tensor.js';
import type { ParamLoader, TensorSource } from './nn.js';
import { transformerAttention } from './unet_blocks.js';
import { UNetCore } from './unet_core.js';
import { TimestepEmbedding } from './blocks.js';
import * as ops from '../kernels/index.js';
import { ConfigReader, type Config } from '../runtime/config.js';
import { Model, buildModel } from './model.js';
import type { IOOptions } from '../runtime/io.js';
import { timestepList, addedTimeIds, guidanceScaleEmbedding } from './unet_common.js';
import { loadFromSingleFile, type SingleFileSource } from '../loaders/single_file_keys.js';

const NAME = 'UNet2DConditionModel';

/** SDXL's added conditioning (addition_embed_type "text_time"), diffusers' added_cond_kwargs. */
export interface AddedCondKwargs {
  /** pooled text embeddings [B, P] (the second text encoder's text_embeds) */
  textEmbeds: Tensor;
  /** micro-conditioning ids per batch item, K of them ([B, K] tensor or B lists): original size (h, w),
   * crop top-left (y, x), target size (h, w); the refiner's 5: original size, crop, aesthetic score.
   * P + K * addition_time_embed_dim must equal projection_class_embeddings_input_dim. */
  timeIds: Tensor | readonly (readonly number[])[];
}

export interface UNet2DConditionForwardOptions {
  /** [B, L, cross_attention_dim] */
  encoderHiddenStates?: Tensor;
  classLabels?: readonly number[];
  /** required when the config has addition_embed_type "text_time" (SDXL) */
  addedCondKwargs?: AddedCondKwargs;
  /** [B, time_cond_proj_dim]: an LCM UNet's guidance-scale embedding (see guidanceEmbedding) */
  timestepCond?: Tensor;
}

/** addition_embed_type "text_time": add_time_proj (a sinusoid per time id) and add_embedding. */
interface TextTimeEmbedding {
  timeDim: number;
  inputDim: number;
  flipSinToCos: boolean;
  freqShift: number;
  embedding: TimestepEmbedding;
}

interface UNet2DConditionModelParts {
  inChannels: number;
  outChannels: number;
  crossAttentionDim: number;
  core: UNetCore;
  textTime: TextTimeEmbedding | null;
}

export class UNet2DConditionModel extends Model {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly crossAttentionDim: number;
  /** time_cond_proj_dim (LCM-distilled UNets), or null */
  readonly timeCondProjDim: number | null;
  private readonly core: UNetCore;
  private readonly textTime: TextTimeEmbedding | null;

  private constructor(engine: Engine, config: Config, L: ParamLoader, p: UNet2DConditionModelParts, timeCondProjDim: number | null) {
    super(engine, config, L);
    this.inChannels = p.inChannels;
    this.outChannels = p.outChannels;
    this.crossAttentionDim = p.crossAttentionDim;
    this.core = p.core;
    this.textTime = p.textTime;
    this.timeCondProjDim = timeCondProjDim;
  }

  /** addition_embed_type "text_time" (SDXL): forward needs addedCondKwargs */
  get hasTextTimeEmbedding(): boolean {
    return this.textTime !== null;
  }

  /**
   * The guidance-scale embedding an LCM UNet reads as timestepCond: [B, time_cond_proj_dim] for one
   * guidance scale per batch item (one number: broadcast to `batch`), in the model's dtype. As diffusers'
   * LatentConsistencyModelPipeline: w = guidance_scale - 1.
   */
  guidanceEmbedding(guidanceScale: number | readonly number[], batch = 1): Tensor {
    this.checkAlive('guidanceEmbedding');
    const op = `${NAME}.guidanceEmbedding`;
    if (this.timeCondProjDim === null) throw new Error(`${op}: this UNet has no time_cond_proj_dim (it is not LCM-distilled)`);
    if (!Number.isInteger(batch) || batch < 1) throw new Error(`${op}: batch must be a positive integer, got ${batch}`);
    const ws = typeof guidanceScale === 'number' ? Array(batch).fill(guidanceScale) : [...guidanceScale];
    return guidanceScaleEmbedding(this.engine, ws.map((g) => g - 1), this.timeCondProjDim, this.dtype === 'f16' ? 'f16' : 'f32');
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
      ['encoder_hid_dim', [null]],
      ['encoder_hid_dim_type', [null]],
      ['time_embedding_act_fn', [null]],
      ['timestep_post_act', [null]],
      ['center_input_sample', [false]],
      ['resnet_skip_time_act', [false]],
      ['resnet_out_scale_factor', [1]],
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
    // an int, one per block, or (asymmetrical UNets) per block one per layer; the up path then reads
    // reverse_transformer_layers_per_block (in up-block order), else the down list reversed
    const tlpb = c.perBlockPerLayer('transformer_layers_per_block', 1, n, (i) => lpb[i])!;
    const revTlpb = c.perBlockPerLayer('reverse_transformer_layers_per_block', null, n, (i) => lpb[n - 1 - i] + 1);
    if (!revTlpb && tlpb.some((x) => Array.isArray(x))) {
      throw c.fail('reverse_transformer_layers_per_block', null, "config key 'reverse_transformer_layers_per_block' is required when transformer_layers_per_block lists layers per block (as diffusers requires)");
    }
    const onlyCross = c.perBlockBool('only_cross_attention', false, n);
    const linearProj = c.bool('use_linear_projection', false);
    const upcastAttention = c.bool('upcast_attention', false);
    const additionType = c.oneOf('addition_embed_type', [null, 'text_time'], null);
    const timeCondProjDim = c.int('time_cond_proj_dim', null);
    const inCh = c.int('in_channels', 4);
    const outCh = c.int('out_channels', 4);
    const numClass = c.int('num_class_embeds', null);
    const tembDim = c.int('time_embedding_dim', null) ?? boc[0] * 4;
    const flipSinToCos = c.bool('flip_sin_to_cos', true);
    const freqShift = c.num('freq_shift', 0);
    const textTime =
      additionType === 'text_time'
        ? {
            timeDim: c.int('addition_time_embed_dim'),
            inputDim: c.int('projection_class_embeddings_input_dim'),
          }
        : null;
    const attnFor = (i: number, layers: number | readonly number[]) =>
      transformerAttention({ heads: headsList[i], crossDim: crossDims[i], layers, linearProjection: linearProj, groups, onlyCrossAttention: onlyCross[i], upcastAttention });
    const first = (x: number | number[]) => (typeof x === 'number' ? x : x[0]);
    const spec = {
      blockOutChannels: boc,
      layersPerBlock: lpb,
      inChannels: inCh,
      outChannels: outCh,
      tembDim,
      flipSinToCos,
      freqShift,
      timeCondProjDim,
      numClassEmbeds: numClass,
      groups,
      normOutGroups: groups,
      eps,
      downsamplePadding: c.int('downsample_padding', 1),
      downAttention: (i: number) => (downTypes[i] === 'CrossAttnDownBlock2D' ? attnFor(i, tlpb[i]) : null),
      // diffusers' mid block has one attention: the last block's count (its first entry when a list)
      midAttention: attnFor(n - 1, first(tlpb[n - 1])),
      // the per-block lists are reversed for the up path
      upAttention: (i: number) => (upTypes[i] === 'CrossAttnUpBlock2D' ? attnFor(n - 1 - i, revTlpb ? revTlpb[i] : tlpb[n - 1 - i]) : null),
      // a transformer level's feed-forward projects to 2 x 4 x channels (GEGLU), or writes only the
      // gated 4 x channels where the engine fuses the gate into the projection (ops.gegluFused)
      levelWidth: (i: number) => (downTypes[i] === 'CrossAttnDownBlock2D' || upTypes[n - 1 - i] === 'CrossAttnUpBlock2D' ? (ops.gegluFused(engine) ? 4 : 8) : 1),
    };
    return buildModel(
      engine,
      source,
      async (L): Promise<UNet2DConditionModelParts> => ({
        inChannels: inCh,
        outChannels: outCh,
        crossAttentionDim: crossDims[0],
        core: await UNetCore.load(L, spec),
        textTime: textTime && {
          ...textTime,
          flipSinToCos,
          freqShift,
          embedding: await TimestepEmbedding.load(L, 'add_embedding', textTime.inputDim, tembDim, { flipSinToCos, freqShift }),
        },
      }),
      (L, parts) => new UNet2DConditionModel(engine, config, L, parts, timeCondProjDim),
    );
  }

  /** sample [B, in, h, w]; encoderHiddenStates [B, L, cross_attention_dim]; SDXL: addedCondKwargs; LCM: timestepCond. */
  forward(sample: Tensor, timestep: number | readonly number[], opts: UNet2DConditionForwardOptions = {}): Tensor {
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
    const cond = opts.timestepCond;
    if (cond !== undefined) {
      if (this.timeCondProjDim === null) throw new Error(`${op}: timestepCond was given but this UNet has no time_cond_proj_dim (only LCM-distilled UNets read it)`);
      this.checkVector(op, 'timestepCond', cond, B, this.timeCondProjDim, sample.dtype);
    }
    const tt = this.textTime;
    const added = opts.addedCondKwargs;
    if (tt && !added) throw new Error(`${op}: this UNet has addition_embed_type "text_time" (SDXL): pass addedCondKwargs { textEmbeds [B, P], timeIds [B, K] }`);
    if (!tt && added !== undefined) throw new Error(`${op}: addedCondKwargs was given but this UNet has no addition_embed_type "text_time"`);
    let ids: number[] | Tensor | null = null;
    let pooled = 0;
    if (tt && added) {
      const te = added.textEmbeds;
      if (!(te instanceof Tensor) || te.rank !== 2) throw new Error(`${op}: addedCondKwargs.textEmbeds must be a Tensor [${B}, P] (pooled text embeddings)`);
      pooled = te.shape[1];
      this.checkVector(op, 'addedCondKwargs.textEmbeds', te, B, pooled, sample.dtype);
      const k = (tt.inputDim - pooled) / tt.timeDim;
      if (!Number.isInteger(k) || k < 1) {
        throw new Error(`${op}: addedCondKwargs.textEmbeds has ${pooled} channels: projection_class_embeddings_input_dim ${tt.inputDim} leaves ${tt.inputDim - pooled} for time ids of ${tt.timeDim} each`);
      }
      ids = addedTimeIds(op, added.timeIds, B, k, this.engine);
    }
    this.checkFits(op, B, sample.shape[2], sample.shape[3]);
    return this.engine.scope(() => {
      const extra: Tensor[] = [];
      if (tt && added && ids) {
        // add_time_proj(time_ids.flatten()) -> [B, K * timeDim], after the pooled embeds -> add_embedding
        const n = ids instanceof Tensor ? ids.size : ids.length;
        const flat = ids instanceof Tensor ? (ids.dtype === 'f32' ? ids.reshape([n]) : ops.cast(ids, 'f32').reshape([n])) : ids;
        const sin = ops.timestepEmbedding(this.engine, flat, tt.timeDim, { flipSinToCos: tt.flipSinToCos, downscaleFreqShift: tt.freqShift, dtype: sample.dtype });
        const addEmbeds = ops.concat([added.textEmbeds, sin.reshape([B, n / B * tt.timeDim])], 1);
        extra.push(tt.embedding.project(addEmbeds));
      }
      return this.core.forward(sample, this.core.embed(op, ts, { classLabels: opts.classLabels, extra, timestepCond: cond }), ctx);
    });
  }

  private checkVector(op: string, what: string, t: Tensor, B: number, dim: number, dtype: string): void {
    if (!(t instanceof Tensor)) throw new Error(`${op}: ${what} must be a Tensor [${B}, ${dim}]`);
    if (t.engine !== this.engine) throw new Error(`${op}: ${what} belongs to another engine`);
    if (t.rank !== 2 || t.shape[0] !== B || t.shape[1] !== dim) throw new Error(`${op}: ${what} must be [${B}, ${dim}], got ${shapeStr(t.shape)}`);
    if (t.dtype !== dtype) throw new Error(`${op}: ${what} is ${t.dtype}, sample is ${dtype}`);
  }
}
