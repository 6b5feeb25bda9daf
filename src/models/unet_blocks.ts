// The down, mid and up blocks of both UNets. A block is resnets interleaved with an optional
// attention per resnet (spatial self-attention for UNet2DModel, Transformer2DModel for
// UNet2DConditionModel) plus an optional down/up sampler. Up blocks concatenate skips [h, skip].
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { ParamLoader, sequential, type Step } from './nn.js';
import { Downsample2D, ResnetBlock2D, SpatialAttention, Transformer2DModel, Upsample2D } from './blocks.js';

export interface Attn {
  forward(x: Tensor, context?: Tensor): Tensor;
}

/** j: the attention's index within its block */
export type AttnFactory = (L: ParamLoader, name: string, channels: number, j: number) => Promise<Attn>;

export interface ResnetOpts {
  temb: number;
  groups: number;
  eps: number;
  /** resnet_time_scale_shift 'scale_shift' */
  scaleShift?: boolean;
  /** samplers are ResnetBlock2Ds that resample (CompVis resblock_updown; diffusers 'resnet' sampler types) */
  resnetSamplers?: boolean;
}

/** A down/up sampler slot: a conv sampler, or a resampling ResnetBlock2D that also reads temb. */
type Sampler = { forward(x: Tensor, temb?: Tensor): Tensor };

export class DownBlock {
  private constructor(private resnets: ResnetBlock2D[], private attns: Attn[] | null, private down: Sampler | null) {}

  static async load(L: ParamLoader, name: string, cin: number, cout: number, layers: number, r: ResnetOpts, attn: AttnFactory | null, downsample: { padding: number } | null): Promise<DownBlock> {
    const resnets: ResnetBlock2D[] = [];
    const attns: Attn[] = [];
    for (let j = 0; j < layers; j++) {
      resnets.push(await ResnetBlock2D.load(L, `${name}.resnets.${j}`, j === 0 ? cin : cout, cout, r));
      if (attn) attns.push(await attn(L, `${name}.attentions.${j}`, cout, j));
    }
    const down = !downsample
      ? null
      : r.resnetSamplers
        ? await ResnetBlock2D.load(L, `${name}.downsamplers.0`, cout, cout, { ...r, resample: 'down' })
        : await Downsample2D.load(L, `${name}.downsamplers.0`, cout, downsample.padding);
    return new DownBlock(resnets, attn ? attns : null, down);
  }

  /** Appends every output to `skips`; returns the block's output. Does not dispose x (it is a skip). */
  forward(x: Tensor, temb: Tensor, skips: Tensor[], context?: Tensor): Tensor {
    let h = x;
    this.resnets.forEach((r, j) => {
      h = sequential(h, (t) => r.forward(t, temb), ...(this.attns ? [(t: Tensor) => this.attns![j].forward(t, context)] : []));
      skips.push(h);
    });
    if (this.down) skips.push((h = this.down.forward(h, temb)));
    return h;
  }
}

export class MidBlock {
  private constructor(private r0: ResnetBlock2D, private attn: Attn | null, private r1: ResnetBlock2D) {}
  static async load(L: ParamLoader, name: string, ch: number, r: ResnetOpts, attn: AttnFactory | null): Promise<MidBlock> {
    return new MidBlock(
      await ResnetBlock2D.load(L, `${name}.resnets.0`, ch, ch, r),
      attn ? await attn(L, `${name}.attentions.0`, ch, 0) : null,
      await ResnetBlock2D.load(L, `${name}.resnets.1`, ch, ch, r),
    );
  }
  forward(x: Tensor, temb: Tensor, context?: Tensor): Tensor {
    const steps: Step[] = [(t) => this.r0.forward(t, temb)];
    if (this.attn) steps.push((t) => this.attn!.forward(t, context));
    steps.push((t) => this.r1.forward(t, temb));
    return sequential(x, ...steps);
  }
}

export class UpBlock {
  private constructor(private resnets: ResnetBlock2D[], private attns: Attn[] | null, private up: Sampler | null) {}

  /** prev: channels coming from below; cout: this block's channels; skipIn: channels of the block's last skip */
  static async load(L: ParamLoader, name: string, prev: number, cout: number, skipIn: number, layers: number, r: ResnetOpts, attn: AttnFactory | null, upsample: boolean): Promise<UpBlock> {
    const resnets: ResnetBlock2D[] = [];
    const attns: Attn[] = [];
    for (let j = 0; j < layers; j++) {
      const resSkip = j === layers - 1 ? skipIn : cout;
      const resIn = j === 0 ? prev : cout;
      resnets.push(await ResnetBlock2D.load(L, `${name}.resnets.${j}`, resIn + resSkip, cout, r));
      if (attn) attns.push(await attn(L, `${name}.attentions.${j}`, cout, j));
    }
    const up = !upsample
      ? null
      : r.resnetSamplers
        ? await ResnetBlock2D.load(L, `${name}.upsamplers.0`, cout, cout, { ...r, resample: 'up' })
        : await Upsample2D.load(L, `${name}.upsamplers.0`, cout);
    return new UpBlock(resnets, attn ? attns : null, up);
  }

  /** Pops its skips from the end of `skips`; each is freed once used (a skip is read once). */
  forward(x: Tensor, temb: Tensor, skips: Tensor[], context?: Tensor): Tensor {
    return sequential(x, ...this.steps(temb, skips, context));
  }

  /** The block as a list of steps for sequential(): per resnet [h, skip] -> resnet -> attention. */
  steps(temb: Tensor, skips: Tensor[], context?: Tensor): Step[] {
    const catSkip = (h: Tensor) => {
      const skip = skips.pop();
      if (!skip) throw new Error('UNet: skip connections ran out (down/up block configuration mismatch)');
      const cat = ops.concat([h, skip], 1);
      skip.dispose();
      return cat;
    };
    return this.resnets.flatMap((r, j): Step[] => [
      catSkip,
      (h) => r.forward(h, temb),
      ...(this.attns ? [(h: Tensor) => this.attns![j].forward(h, context)] : []),
    ]).concat(this.up ? [(h: Tensor) => this.up!.forward(h, temb)] : []);
  }
}

export function spatialAttention(headDim: number | null, groups: number, eps: number): AttnFactory {
  return (L, name, ch) => SpatialAttention.load(L, name, ch, { heads: headDim ? Math.floor(ch / headDim) : 1, groups, eps });
}

/** layers: transformer blocks per Transformer2DModel, one number for all of a block's attentions or a list
 * with one per attention (diffusers' per-layer transformer_layers_per_block lists). */
export function transformerAttention(opts: {
  heads: number;
  crossDim: number;
  layers: number | readonly number[];
  linearProjection: boolean;
  groups: number;
  onlyCrossAttention: boolean;
  upcastAttention?: boolean;
}): AttnFactory {
  return (L, name, ch, j) => {
    if (ch % opts.heads !== 0) throw new Error(`${name}: ${ch} channels do not split into ${opts.heads} heads`);
    const layers = typeof opts.layers === 'number' ? opts.layers : opts.layers[j];
    if (layers === undefined) throw new Error(`${name}: no transformer_layers_per_block entry for attention ${j}`);
    return Transformer2DModel.load(L, name, ch, {
      heads: opts.heads,
      dimHead: ch / opts.heads,
      crossDim: opts.crossDim,
      layers,
      linearProjection: opts.linearProjection,
      groups: opts.groups,
      onlyCrossAttention: opts.onlyCrossAttention,
      upcastAttention: opts.upcastAttention,
    });
  };
}
