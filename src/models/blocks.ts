// The building blocks shared by the autoencoders and the UNets, with diffusers' names and maths:
// ResnetBlock2D, Downsample2D, Upsample2D, the spatial self-attention of VAE / UNet2DModel, the
// sinusoidal timestep embedding + MLP, and Transformer2DModel with BasicTransformerBlock.
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { Conv2d, GroupNorm, LayerNorm, Linear, ParamLoader, sequential, type Step } from './nn.js';

export interface ResnetBlockOptions {
  temb: number | null;
  groups: number;
  eps: number;
  groupsOut?: number;
  /** diffusers' resnet_time_scale_shift 'scale_shift' (CompVis use_scale_shift_norm): the time
   * embedding gives 2C values, h = norm2(h) * (1 + scale) + shift before the SiLU */
  scaleShift?: boolean;
  /** resample inside the block (CompVis resblock_updown, diffusers ResnetDownsample/Upsample): 2x2
   * average pool or nearest x2, applied to the residual branch after norm1 + SiLU and to the skip */
  resample?: 'down' | 'up';
}

export class ResnetBlock2D {
  private constructor(
    private norm1: GroupNorm,
    private conv1: Conv2d,
    private timeEmbProj: Linear | null,
    private norm2: GroupNorm,
    private conv2: Conv2d,
    private shortcut: Conv2d | null,
    private scaleShift: boolean,
    private resample: 'down' | 'up' | null,
    /** [C, 1, 2, 2] of 0.25 for the depthwise average pool (resample 'down') */
    private pool: Tensor | null,
  ) {}

  /**
   * h = conv1(silu(norm1(x))); h += time_emb_proj(silu(temb)); h = conv2(silu(norm2(h)));
   * out = shortcut(x) + h, with a 1x1 conv shortcut only when channels change.
   */
  static async load(L: ParamLoader, name: string, cin: number, cout: number, opts: ResnetBlockOptions): Promise<ResnetBlock2D> {
    const s = L.scope(`${name}.`);
    let pool: Tensor | null = null;
    if (opts.resample === 'down') {
      pool = L.engine.tensor(new Float32Array(cin * 4).fill(0.25), [cin, 1, 2, 2], L.dtype);
      L.params.push(pool); // freed with the model's parameters
    }
    return new ResnetBlock2D(
      await GroupNorm.load(s, 'norm1', cin, opts.groups, opts.eps),
      await Conv2d.load(s, 'conv1', cin, cout),
      opts.temb ? await Linear.load(s, 'time_emb_proj', opts.temb, opts.scaleShift ? 2 * cout : cout) : null,
      await GroupNorm.load(s, 'norm2', cout, opts.groupsOut ?? opts.groups, opts.eps),
      await Conv2d.load(s, 'conv2', cout, cout),
      cin !== cout || s.has('conv_shortcut.weight') ? await Conv2d.load(s, 'conv_shortcut', cin, cout, { kernel: 1 }) : null,
      opts.scaleShift ?? false,
      opts.resample ?? null,
      pool,
    );
  }

  private resampled(x: Tensor): Tensor {
    if (this.resample === 'up') return ops.upsampleNearest2x(x);
    return ops.conv2d(x, this.pool!, undefined, { stride: 2, padding: 0, groups: x.shape[1] });
  }

  /** `tembAct` is silu(temb), computed once per UNet call and shared by every block. */
  forward(x: Tensor, tembAct?: Tensor): Tensor {
    return x.engine.scope(() => {
      const t = this.timeEmbProj && tembAct ? this.timeEmbProj.forward(tembAct) : null; // [B, C] or [B, 2C]
      const B = t?.shape[0] ?? 0;
      const C = this.conv2.weight.shape[0];
      const col = (v: Tensor) => v.reshape([B, C, 1, 1]);
      const addTemb = (h: Tensor) => ops.add(h, col(t!));
      // scale_shift: norm2(h) * (1 + scale) + shift, scale = emb[:, :C], shift = emb[:, C:]
      const scaleShift = (h: Tensor) => ops.add(ops.mul(h, ops.scale(col(ops.slice(t!, 1, 0, C)), 1, 1)), col(ops.slice(t!, 1, C, 2 * C)));
      const inRest: Step[] = [this.norm1.thenSilu, ...(this.resample ? [(h: Tensor) => this.resampled(h)] : []), this.conv1];
      const skipIn = this.resample ? this.resampled(x) : x;
      const skip = this.shortcut ? this.shortcut.forward(skipIn) : skipIn;
      // the skip is added in conv2's epilogue (one dispatch less per block)
      const conv2 = (hh: Tensor) => this.conv2.forward(hh, skip);
      return this.scaleShift && t
        ? sequential(x, ...inRest, (hh) => this.norm2.forward(hh), scaleShift, ops.silu, conv2)
        : sequential(x, ...inRest, ...(t ? [addTemb] : []), this.norm2.thenSilu, conv2);
    });
  }
}

export class Downsample2D {
  private constructor(private conv: Conv2d) {}
  /** padding 1: UNets; padding 0: the VAE encoders, which pad one zero row/column bottom/right first. */
  static async load(L: ParamLoader, name: string, channels: number, padding: number): Promise<Downsample2D> {
    const pad: [number, number, number, number] = padding === 0 ? [0, 1, 0, 1] : [padding, padding, padding, padding];
    return new Downsample2D(await Conv2d.load(L, `${name}.conv`, channels, channels, { stride: 2, padding: pad }));
  }
  forward(x: Tensor): Tensor {
    return this.conv.forward(x);
  }
}

export class Upsample2D {
  private constructor(private conv: Conv2d) {}
  static async load(L: ParamLoader, name: string, channels: number): Promise<Upsample2D> {
    return new Upsample2D(await Conv2d.load(L, `${name}.conv`, channels, channels));
  }
  forward(x: Tensor): Tensor {
    return sequential(x, ops.upsampleNearest2x, this.conv);
  }
}

/** Self-attention over the pixels of a feature map with GroupNorm in front and a residual add
 * (VAE mid block, UNet2DModel attention blocks). q/k/v/out have biases. */
export class SpatialAttention {
  private constructor(
    private norm: GroupNorm,
    private q: Linear,
    private k: Linear,
    private v: Linear,
    private out: Linear,
    private heads: number,
  ) {}

  static async load(L: ParamLoader, name: string, channels: number, opts: { heads: number; groups: number; eps: number }): Promise<SpatialAttention> {
    const s = L.scope(`${name}.`);
    if (channels % opts.heads !== 0) throw new Error(`${name}: ${channels} channels do not split into ${opts.heads} heads`);
    return new SpatialAttention(
      await GroupNorm.load(s, 'group_norm', channels, opts.groups, opts.eps),
      await Linear.load(s, 'to_q', channels, channels),
      await Linear.load(s, 'to_k', channels, channels),
      await Linear.load(s, 'to_v', channels, channels),
      await Linear.load(s, 'to_out.0', channels, channels),
      opts.heads,
    );
  }

  /** x + to_out(attention(q, k, v)) over the tokens of norm(x) */
  forward(x: Tensor): Tensor {
    const [, , h, w] = x.shape;
    return x.engine.scope(() => {
      const tokens = sequential(x, this.norm, ops.nchwToTokens);
      const a = ops.attention(this.q.forward(tokens), this.k.forward(tokens), this.v.forward(tokens), { heads: this.heads });
      // to_out in image space as a 1x1 conv with x added in its epilogue: transpose + conv instead
      // of linear + transpose + add
      return sequential(a, (t) => ops.tokensToNchw(t, h, w), (t) => this.out.forwardNchw(t, x));
    });
  }
}

/** What linear_2 of a TimestepEmbedding may fuse: act(linear_2(h)) + residual. */
export interface TembEpilogue {
  activation?: ops.LinearActivation;
  residual?: Tensor;
}

/** Timesteps (sinusoidal) followed by TimestepEmbedding (linear_1 -> SiLU -> linear_2). */
export class TimestepEmbedding {
  private constructor(
    private linear1: Linear,
    private linear2: Linear,
    private dim: number,
    private flipSinToCos: boolean,
    private freqShift: number,
    private condProj: Linear | null,
  ) {}

  /** condProjDim: diffusers' cond_proj_dim (an LCM UNet's time_cond_proj_dim): a bias-free linear from
   * the condition to `dim`, added to the sinusoid before linear_1. */
  static async load(L: ParamLoader, name: string, dim: number, embedDim: number, opts: { flipSinToCos: boolean; freqShift: number; condProjDim?: number | null }): Promise<TimestepEmbedding> {
    return new TimestepEmbedding(
      await Linear.load(L, `${name}.linear_1`, dim, embedDim),
      await Linear.load(L, `${name}.linear_2`, embedDim, embedDim),
      dim,
      opts.flipSinToCos,
      opts.freqShift,
      opts.condProjDim ? await Linear.load(L, `${name}.cond_proj`, opts.condProjDim, dim, false) : null,
    );
  }

  /** timesteps: one per batch item; condition [B, cond_proj_dim] when the embedding has a cond_proj */
  /** `epilogue`: an activation and/or a term added in linear_2's epilogue (the UNet's SiLU or class embedding) */
  forward(timesteps: number[], condition?: Tensor, epilogue: TembEpilogue = {}): Tensor {
    const engine = this.linear1.weight.engine;
    return engine.scope(() => {
      let proj = ops.timestepEmbedding(engine, timesteps, this.dim, { flipSinToCos: this.flipSinToCos, downscaleFreqShift: this.freqShift });
      if (this.linear1.weight.dtype === 'f16') proj = ops.cast(proj, 'f16');
      return this.project(proj, condition, epilogue);
    });
  }

  /** linear_2(silu(linear_1(x + cond_proj(condition)))) of an embedding input x [B, dim] that is already made
   * (SDXL's add_embedding reads pooled text embeds and time-id sinusoids). */
  project(x: Tensor, condition?: Tensor, epilogue: TembEpilogue = {}): Tensor {
    return x.engine.scope(() => {
      const h = condition && this.condProj ? ops.add(x, this.condProj.forward(condition)) : x;
      return this.linear2.forward(this.linear1.forward(h, 'silu'), epilogue.activation, epilogue.residual);
    });
  }
}

/** diffusers Attention as used in transformer blocks: q has no bias, k/v may read a context of another width. */
export class CrossAttention {
  private constructor(
    private q: Linear,
    private k: Linear,
    private v: Linear,
    private out: Linear,
    private heads: number,
    private upcast: boolean,
  ) {}

  /** upcast: diffusers' upcast_attention (Q K^T and the softmax in f32 under f16; see ops.attention) */
  static async load(L: ParamLoader, name: string, queryDim: number, contextDim: number, heads: number, dimHead: number, opts: { qkvBias?: boolean; upcast?: boolean } = {}): Promise<CrossAttention> {
    const s = L.scope(`${name}.`);
    const inner = heads * dimHead;
    const bias = opts.qkvBias ?? false;
    return new CrossAttention(
      await Linear.load(s, 'to_q', queryDim, inner, bias),
      await Linear.load(s, 'to_k', contextDim, inner, bias),
      await Linear.load(s, 'to_v', contextDim, inner, bias),
      await Linear.load(s, 'to_out.0', inner, queryDim),
      heads,
      opts.upcast ?? false,
    );
  }

  /** `residual` is added in to_out's epilogue. */
  forward(x: Tensor, context?: Tensor, opts: { causal?: boolean; residual?: Tensor } = {}): Tensor {
    const c = context ?? x;
    return x.engine.scope(() => {
      const a = ops.attention(this.q.forward(x), this.k.forward(c), this.v.forward(c), { heads: this.heads, causal: opts.causal, upcast: this.upcast });
      return this.out.forward(a, undefined, opts.residual);
    });
  }
}

export class FeedForwardGEGLU {
  private constructor(private proj: Linear, private out: Linear) {}
  static async load(L: ParamLoader, name: string, dim: number, inner: number): Promise<FeedForwardGEGLU> {
    return new FeedForwardGEGLU(await Linear.load(L, `${name}.net.0.proj`, dim, inner * 2), await Linear.load(L, `${name}.net.2`, inner, dim));
  }
  /** `residual` is added in net.2's epilogue. */
  forward(x: Tensor, residual?: Tensor): Tensor {
    // proj and the GEGLU gate in one GEMM where the engine can (ops.linearGeglu)
    return sequential(x, (h) => ops.linearGeglu(h, this.proj.weight, this.proj.bias), (t) => this.out.forward(t, undefined, residual));
  }
}

export class BasicTransformerBlock {
  private constructor(
    private norm1: LayerNorm,
    private attn1: CrossAttention,
    private norm2: LayerNorm | null,
    private attn2: CrossAttention | null,
    private norm3: LayerNorm,
    private ff: FeedForwardGEGLU,
  ) {}

  static async load(L: ParamLoader, name: string, dim: number, heads: number, dimHead: number, crossDim: number | null, opts: { onlyCrossAttention?: boolean; upcastAttention?: boolean } = {}): Promise<BasicTransformerBlock> {
    const s = L.scope(`${name}.`);
    return new BasicTransformerBlock(
      await LayerNorm.load(s, 'norm1', dim, 1e-5),
      await CrossAttention.load(s, 'attn1', dim, opts.onlyCrossAttention && crossDim ? crossDim : dim, heads, dimHead, { upcast: opts.upcastAttention }),
      crossDim ? await LayerNorm.load(s, 'norm2', dim, 1e-5) : null,
      crossDim ? await CrossAttention.load(s, 'attn2', dim, crossDim, heads, dimHead, { upcast: opts.upcastAttention }) : null,
      await LayerNorm.load(s, 'norm3', dim, 1e-5),
      await FeedForwardGEGLU.load(s, 'ff', dim, dim * 4),
    );
  }

  /** h += attn1(norm1 h); h += attn2(norm2 h, context); h += ff(norm3 h), each residual added in the
   * epilogue of the branch's last linear (to_out / net.2) */
  forward(h: Tensor, context?: Tensor): Tensor {
    return sequential(
      h,
      (x) => this.attn1.forward(this.norm1.forward(x), undefined, { residual: x }),
      ...(this.attn2 && this.norm2 ? [(x: Tensor) => this.attn2!.forward(this.norm2!.forward(x), context, { residual: x })] : []),
      (x) => this.ff.forward(this.norm3.forward(x), x),
    );
  }
}

/** Transformer2DModel: GroupNorm -> proj_in (1x1 conv or linear) -> tokens -> blocks -> proj_out -> + input. */
export class Transformer2DModel {
  private constructor(
    private norm: GroupNorm,
    private projIn: Conv2d | Linear,
    private blocks: BasicTransformerBlock[],
    private projOut: Conv2d | Linear,
  ) {}

  static async load(
    L: ParamLoader,
    name: string,
    channels: number,
    opts: { heads: number; dimHead: number; crossDim: number | null; layers: number; linearProjection: boolean; groups?: number; onlyCrossAttention?: boolean; upcastAttention?: boolean },
  ): Promise<Transformer2DModel> {
    const s = L.scope(`${name}.`);
    const inner = opts.heads * opts.dimHead;
    const blocks: BasicTransformerBlock[] = [];
    for (let i = 0; i < opts.layers; i++) {
      blocks.push(await BasicTransformerBlock.load(s, `transformer_blocks.${i}`, inner, opts.heads, opts.dimHead, opts.crossDim, { onlyCrossAttention: opts.onlyCrossAttention, upcastAttention: opts.upcastAttention }));
    }
    const proj = (n: string, a: number, b: number) => (opts.linearProjection ? Linear.load(s, n, a, b) : Conv2d.load(s, n, a, b, { kernel: 1 }));
    return new Transformer2DModel(await GroupNorm.load(s, 'norm', channels, opts.groups ?? 32, 1e-6), await proj('proj_in', channels, inner), blocks, await proj('proj_out', inner, channels));
  }

  forward(x: Tensor, context?: Tensor): Tensor {
    const [, , hgt, wid] = x.shape;
    const toTokens = ops.nchwToTokens;
    const toImage = (t: Tensor) => ops.tokensToNchw(t, hgt, wid);
    const conv = this.projIn instanceof Conv2d;
    return sequential(
      x,
      this.norm,
      ...(conv ? [this.projIn, toTokens] : [toTokens, this.projIn]),
      ...this.blocks.map((b) => (t: Tensor) => b.forward(t, context)),
      // the input is added in proj_out's epilogue (a linear proj_out runs as a 1x1 conv for that)
      toImage,
      (t) => (this.projOut instanceof Conv2d ? this.projOut.forward(t, x) : this.projOut.forwardNchw(t, x)),
    );
  }
}
