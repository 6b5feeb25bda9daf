// CLIP text encoder at real sizes without a checkpoint: weights are drawn on the GPU, so the SD 1.5
// shape (12 layers, 768 wide, 49408-token vocabulary: ~123M parameters) can be benchmarked on any
// machine without downloading or uploading half a gigabyte.
import { ops, type Engine, type Tensor, type DType } from '../src/index.js';
import { CLIPTextModel } from '../src/text/clip_text_model.js';
import type { TensorSource } from '../src/models/nn.js';

export interface RandomClipTextShape {
  layers: number;
  hidden: number;
  heads: number;
  intermediate: number;
  vocab: number;
  /** default 77 */
  positions?: number;
  /** default 'quick_gelu' (SD 1.x) */
  hiddenAct?: 'quick_gelu' | 'gelu';
}

/** SD 1.x's CLIP ViT-L/14 text tower. */
export const SD15_TEXT_ENCODER: RandomClipTextShape = { layers: 12, hidden: 768, heads: 12, intermediate: 3072, vocab: 49408 };

/** FNV-1a of the name: every tensor gets its own reproducible stream. */
function nameSeed(name: string, seed: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return (h + seed * 2 ** 32) % 2 ** 53;
}

/** Any requested weight, N(0, 0.02^2) (LayerNorm gains 1 + N(0, 0.02^2) so activations keep their scale). */
export function randomTensorSource(seed = 0): TensorSource {
  return {
    has: (name) => !name.endsWith('position_ids'),
    async upload(engine: Engine, name: string, shape: readonly number[], opts: { dtype: DType }): Promise<Tensor> {
      const r = ops.randn(engine, shape, nameSeed(name, seed), { dtype: opts.dtype });
      const isGain = /layer_norm\d*\.weight$/.test(name);
      const t = ops.scale(r, 0.02, isGain ? 1 : 0);
      r.dispose();
      return t;
    },
  };
}

export function randomClipTextModel(engine: Engine, shape: RandomClipTextShape = SD15_TEXT_ENCODER, seed = 0): Promise<CLIPTextModel> {
  const config = {
    vocab_size: shape.vocab,
    hidden_size: shape.hidden,
    intermediate_size: shape.intermediate,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    max_position_embeddings: shape.positions ?? 77,
    hidden_act: shape.hiddenAct ?? 'quick_gelu',
    layer_norm_eps: 1e-5,
    eos_token_id: 2,
  };
  return CLIPTextModel.load(engine, config, randomTensorSource(seed));
}

/**
 * FLOPs of one forward over B sequences of T tokens (multiply-add = 2): per layer the four H x H
 * projections and the two MLP GEMMs over B*T rows, plus causal attention (about half of the
 * T x T scores, QK^T and PV). Embeddings, norms and activations are negligible next to these.
 */
export function clipTextForwardFlops(shape: RandomClipTextShape, B: number, T: number): number {
  const rows = B * T;
  const gemm = 2 * rows * (4 * shape.hidden * shape.hidden + 2 * shape.hidden * shape.intermediate);
  const pairs = (T * (T + 1)) / 2;
  const attn = 2 * 2 * B * pairs * shape.hidden;
  return shape.layers * (gemm + attn);
}
