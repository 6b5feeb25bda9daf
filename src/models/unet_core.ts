// The skeleton both UNets share (diffusers' UNet2DModel and UNet2DConditionModel): the timestep
// embedding plus optional class embedding and added embeddings (SDXL's text_time: they enter in
// embed()), conv_in, the down blocks whose outputs are the skips, the mid block, the up blocks that
// consume them, and norm_out + SiLU + conv_out. The two models differ only in their config keys,
// their attention blocks and their input checks.
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { Conv2d, GroupNorm, ParamLoader, sequential } from './nn.js';
import { TimestepEmbedding } from './blocks.js';
import { DownBlock, MidBlock, UpBlock, type AttnFactory } from './unet_blocks.js';
import { checkClassLabels } from './unet_common.js';

export interface UNetCoreSpec {
  blockOutChannels: number[];
  /** resnets per down block (the up block at the same level has one more) */
  layersPerBlock: number[];
  inChannels: number;
  outChannels: number;
  tembDim: number;
  flipSinToCos: boolean;
  freqShift: number;
  /** time_cond_proj_dim: the time embedding's cond_proj input (LCM's guidance embedding), or null */
  timeCondProjDim?: number | null;
  numClassEmbeds: number | null;
  groups: number;
  normOutGroups: number;
  eps: number;
  downsamplePadding: number;
  /** resnet_time_scale_shift 'scale_shift' */
  scaleShift?: boolean;
  /** down/up samplers are resampling ResnetBlock2Ds (downsample_type / upsample_type 'resnet') */
  resnetSamplers?: boolean;
  /** attention of down block i / up block i (counted from the bottom, diffusers' order), or null */
  downAttention: (i: number) => AttnFactory | null;
  midAttention: AttnFactory | null;
  upAttention: (i: number) => AttnFactory | null;
  /** the widest activation at level i in channels per block channel (GEGLU's projection: 8) */
  levelWidth?: (i: number) => number;
}

interface UNetCoreParts {
  convIn: Conv2d;
  time: TimestepEmbedding;
  classEmbedding: Tensor | null;
  down: DownBlock[];
  mid: MidBlock;
  up: UpBlock[];
  normOut: GroupNorm;
  convOut: Conv2d;
}

export class UNetCore {
  private constructor(
    private readonly p: UNetCoreParts,
    readonly numClassEmbeds: number | null,
    /** elements per batch item and latent pixel of the widest activation at each level */
    private readonly widths: number[],
  ) {}

  /** Bytes of the largest activation of one forward: the up path's [h, skip] concatenations or a
   * level's widest layer, at that level's resolution. */
  largestActivationBytes(batch: number, h: number, w: number, bytesPerElement: number): number {
    let best = 0;
    this.widths.forEach((c, l) => {
      best = Math.max(best, c * Math.ceil(h / 2 ** l) * Math.ceil(w / 2 ** l));
    });
    return best * batch * bytesPerElement;
  }

  /** Throws a clear error, before anything is allocated, when a forward of this size cannot fit. */
  checkFits(engine: Engine, op: string, batch: number, h: number, w: number): void {
    const bytes = engine.f16 ? 2 : 4;
    const limit = engine.limits.maxStorageBufferBindingSize;
    const need = this.largestActivationBytes(batch, h, w, bytes);
    if (need <= limit) return;
    const perItem = this.largestActivationBytes(1, h, w, bytes);
    const fits = Math.floor(limit / perItem);
    throw new Error(
      `${op}: a batch of ${batch} at ${h}x${w} latents needs a ${(need / 2 ** 20).toFixed(0)} MiB activation, over this device's maxStorageBufferBindingSize (${(limit / 2 ** 20).toFixed(0)} MiB); ` +
        (fits >= 1 ? `at most ${fits} fit at this size (with classifier-free guidance each image counts twice)` : 'this size does not fit even for one image: use smaller latents'),
    );
  }

  static async load(L: ParamLoader, s: UNetCoreSpec): Promise<UNetCore> {
    const boc = s.blockOutChannels;
    const n = boc.length;
    const r = { temb: s.tembDim, groups: s.groups, eps: s.eps, scaleShift: s.scaleShift, resnetSamplers: s.resnetSamplers };
    const down: DownBlock[] = [];
    let ch = boc[0];
    for (let i = 0; i < n; i++) {
      down.push(await DownBlock.load(L, `down_blocks.${i}`, ch, boc[i], s.layersPerBlock[i], r, s.downAttention(i), i < n - 1 ? { padding: s.downsamplePadding } : null));
      ch = boc[i];
    }
    const mid = await MidBlock.load(L, 'mid_block', ch, r, s.midAttention);
    const rev = [...boc].reverse();
    const up: UpBlock[] = [];
    let prev = rev[0];
    for (let i = 0; i < n; i++) {
      const skipIn = rev[Math.min(i + 1, n - 1)];
      up.push(await UpBlock.load(L, `up_blocks.${i}`, prev, rev[i], skipIn, s.layersPerBlock[n - 1 - i] + 1, r, s.upAttention(i), i < n - 1));
      prev = rev[i];
    }
    const parts: UNetCoreParts = {
      convIn: await Conv2d.load(L, 'conv_in', s.inChannels, boc[0]),
      time: await TimestepEmbedding.load(L, 'time_embedding', boc[0], s.tembDim, { flipSinToCos: s.flipSinToCos, freqShift: s.freqShift, condProjDim: s.timeCondProjDim }),
      classEmbedding: s.numClassEmbeds ? await L.get('class_embedding.weight', [s.numClassEmbeds, s.tembDim]) : null,
      down,
      mid,
      up,
      normOut: await GroupNorm.load(L, 'conv_norm_out', boc[0], s.normOutGroups, s.eps),
      convOut: await Conv2d.load(L, 'conv_out', boc[0], s.outChannels),
    };
    // an up block's resnet inputs at level l: [from below, c], [c, c] and [c, the level above's skip]
    const widths = boc.map((c, l) => Math.max(c + boc[Math.min(l + 1, n - 1)], 2 * c, c + boc[Math.max(l - 1, 0)], c * (s.levelWidth?.(l) ?? 1)));
    return new UNetCore(parts, s.numClassEmbeds, widths);
  }

  /** silu(time_embedding(t, timestepCond) + class_embedding(labels) + extra...), [B, temb]: what every
   * resnet reads. extra: added embeddings (SDXL's add_embedding); timestepCond: LCM's guidance embedding. */
  embed(op: string, timesteps: number[], opts: { classLabels?: readonly number[]; extra?: Tensor[]; timestepCond?: Tensor } = {}): Tensor {
    const { time, classEmbedding } = this.p;
    const terms = [...(classEmbedding ? [ops.embedding(classEmbedding, checkClassLabels(op, opts.classLabels, timesteps.length, this.numClassEmbeds!))] : []), ...(opts.extra ?? [])];
    // linear_2's epilogue applies the SiLU when nothing is added, else adds the first term
    if (!terms.length) return time.forward(timesteps, opts.timestepCond, { activation: 'silu' });
    let emb = time.forward(timesteps, opts.timestepCond, { residual: terms[0] });
    for (const e of terms.slice(1)) emb = ops.add(emb, e);
    return ops.silu(emb);
  }

  /** conv_in -> down (each output a skip) -> mid -> up (consuming the skips) -> norm_out, SiLU -> conv_out */
  forward(x: Tensor, tembAct: Tensor, context?: Tensor): Tensor {
    const { convIn, down, mid, up, normOut, convOut } = this.p;
    return x.engine.scope(() => {
      let h = convIn.forward(x);
      const skips: Tensor[] = [h];
      for (const d of down) h = d.forward(h, tembAct, skips, context);
      return sequential(
        h,
        (t) => mid.forward(t, tembAct, context),
        ...up.flatMap((u) => u.steps(tembAct, skips, context)),
        normOut.thenSilu,
        convOut,
      );
    });
  }
}
