// The pre-LayerNorm transformer encoder layer shared by the text encoders (CLIP's CLIPEncoderLayer,
// diffusers' LDMBert layer): x + out(attn(ln1(x))), then + fc2(act(fc1(ln2(.)))). The encoders differ
// only in parameter names, bias on q/k/v, the MLP nonlinearity and a causal mask, so those are the
// options; the residual adds ride in the GEMM epilogues.
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { LayerNorm, Linear, ParamLoader } from '../models/nn.js';

/** Parameter names of one layer, relative to the layer's scope. */
export interface EncoderLayerNames {
  ln1: string;
  q: string;
  k: string;
  v: string;
  out: string;
  ln2: string;
  fc1: string;
  fc2: string;
}

export interface EncoderLayerShape {
  /** residual width */
  hidden: number;
  /** heads x head_dim (CLIP: = hidden; LDMBert: 8 x 64 whatever d_model is) */
  inner: number;
  ffn: number;
  heads: number;
  eps: number;
  qkvBias: boolean;
  act: 'gelu' | 'quickGelu';
  /** CLIP's causal self-attention; LDMBert attends everywhere */
  causal: boolean;
}

export class PreNormEncoderLayer {
  private constructor(
    private ln1: LayerNorm,
    private q: Linear,
    private k: Linear,
    private v: Linear,
    private out: Linear,
    private ln2: LayerNorm,
    private fc1: Linear,
    private fc2: Linear,
    private s: EncoderLayerShape,
  ) {}

  static async load(L: ParamLoader, n: EncoderLayerNames, s: EncoderLayerShape): Promise<PreNormEncoderLayer> {
    const { hidden: H, inner: I } = s;
    return new PreNormEncoderLayer(
      await LayerNorm.load(L, n.ln1, H, s.eps),
      await Linear.load(L, n.q, H, I, s.qkvBias),
      await Linear.load(L, n.k, H, I, s.qkvBias),
      await Linear.load(L, n.v, H, I, s.qkvBias),
      await Linear.load(L, n.out, I, H),
      await LayerNorm.load(L, n.ln2, H, s.eps),
      await Linear.load(L, n.fc1, H, s.ffn),
      await Linear.load(L, n.fc2, s.ffn, H),
      s,
    );
  }

  /** x stays alive; returns the layer's output. */
  forward(x: Tensor): Tensor {
    return x.engine.scope(() => {
      const n1 = this.ln1.forward(x);
      // ops.attention's default scale is head_dim^-0.5, as both encoders use (CLIP and diffusers
      // scale q, x_transformer the scores: the same maths)
      const a = ops.attention(this.q.forward(n1), this.k.forward(n1), this.v.forward(n1), { heads: this.s.heads, causal: this.s.causal });
      const h = ops.linear(a, this.out.weight, this.out.bias, { residual: x });
      const m = this.fc1.forward(this.ln2.forward(h), this.s.act);
      return ops.linear(m, this.fc2.weight, this.fc2.bias, { residual: h });
    });
  }
}
