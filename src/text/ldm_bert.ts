// LDMBertModel: the text encoder of the paper's text-to-image LDM (LDM-KL-8-G), as diffusers ports
// it (pipeline_latent_diffusion.py), and the same network in CompVis' own names (BERTEmbedder =
// x_transformer TransformerWrapper + Encoder, mapped by ldmBertKeyFromCompVis). Token + learned
// absolute position embeddings, pre-LayerNorm layers (self-attention with `heads` x `head_dim`
// whatever d_model is, q/k/v without bias; exact-GELU MLP), final LayerNorm. No attention mask is
// used anywhere in the paper's code: padding tokens attend and are attended.
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { LayerNorm, ParamLoader, sequential, type TensorSource } from '../models/nn.js';
import { PreNormEncoderLayer, type EncoderLayerNames } from './encoder_layer.js';
import { ConfigReader, type Config } from '../runtime/config.js';
import { Model, buildModel } from '../models/model.js';

const NAME = 'LDMBertModel';

export interface LDMBertShape {
  vocabSize: number;
  maxPositions: number;
  dModel: number;
  layers: number;
  heads: number;
  headDim: number;
  ffn: number;
}

/** Sizes from diffusers' LDMBertConfig (defaults: the 1.4B model's 1280-wide, 32-layer encoder). */
export function ldmBertShape(config: Config): LDMBertShape {
  const c = new ConfigReader(NAME, config);
  c.oneOf('activation_function', ['gelu'], 'gelu');
  c.oneOf('scale_embedding', [false], false);
  const s: LDMBertShape = {
    vocabSize: c.int('vocab_size', 30522),
    maxPositions: c.int('max_position_embeddings', 77),
    dModel: c.int('d_model', 1280),
    layers: c.int('encoder_layers', 32),
    heads: c.int('encoder_attention_heads', 8),
    headDim: c.int('head_dim', 64),
    ffn: c.int('encoder_ffn_dim', 5120),
  };
  return s;
}

/** CompVis BERTEmbedder key (without 'cond_stage_model.transformer.') -> LDMBertModel key, or null. */
export function ldmBertKeyFromCompVis(key: string): string | null {
  let m: RegExpExecArray | null;
  if (key === 'token_emb.weight') return 'model.embed_tokens.weight';
  if (key === 'pos_emb.emb.weight') return 'model.embed_positions.weight';
  if ((m = /^norm\.(weight|bias)$/.exec(key))) return `model.layer_norm.${m[1]}`;
  if ((m = /^to_logits\.(weight|bias)$/.exec(key))) return `to_logits.${m[1]}`;
  if ((m = /^attn_layers\.layers\.(\d+)\.(0|1)\.(.+)$/.exec(key))) {
    const j = Number(m[1]);
    const k = j >> 1;
    const rest = m[3];
    if (j % 2 === 0) {
      if (m[2] === '0') return `model.layers.${k}.self_attn_layer_norm.${rest}`;
      const a = /^to_(q|k|v|out)\.(weight|bias)$/.exec(rest);
      return a ? `model.layers.${k}.self_attn.${a[1] === 'out' ? 'out_proj' : `${a[1]}_proj`}.${a[2]}` : null;
    }
    if (m[2] === '0') return `model.layers.${k}.final_layer_norm.${rest}`;
    const f = /^net\.(0\.0|2)\.(weight|bias)$/.exec(rest);
    return f ? `model.layers.${k}.${f[1] === '2' ? 'fc2' : 'fc1'}.${f[2]}` : null;
  }
  return null;
}

// diffusers' LDMBertEncoderLayer parameter names
const LDMBERT_LAYER: EncoderLayerNames = {
  ln1: 'self_attn_layer_norm', q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj',
  out: 'self_attn.out_proj', ln2: 'final_layer_norm', fc1: 'fc1', fc2: 'fc2',
};

interface LDMBertModelParts {
  shape: LDMBertShape;
  tokens: Tensor;
  positions: Tensor;
  layers: PreNormEncoderLayer[];
  norm: LayerNorm;
}

export class LDMBertModel extends Model {
  readonly shape: LDMBertShape;
  private readonly tokens: Tensor;
  private readonly positions: Tensor;
  private readonly layers: PreNormEncoderLayer[];
  private readonly norm: LayerNorm;

  private constructor(engine: Engine, config: Config, L: ParamLoader, p: LDMBertModelParts) {
    super(engine, config, L);
    this.shape = p.shape;
    this.tokens = p.tokens;
    this.positions = p.positions;
    this.layers = p.layers;
    this.norm = p.norm;
  }

  static readonly componentName = NAME;

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<LDMBertModel> {
    const s = ldmBertShape(config);
    // to_logits (the pretraining head) is in the files but unused by the text encoder
    const ws = source as { markUsed?: (...n: string[]) => void };
    ws.markUsed?.('to_logits.weight', 'to_logits.bias');
    return buildModel(
      engine,
      source,
      async (L): Promise<LDMBertModelParts> => {
        const M = L.scope('model.');
        const tokens = await M.get('embed_tokens.weight', [s.vocabSize, s.dModel]);
        const positions = await M.get('embed_positions.weight', [s.maxPositions, s.dModel]);
        const layers: PreNormEncoderLayer[] = [];
        const shape = { hidden: s.dModel, inner: s.heads * s.headDim, ffn: s.ffn, heads: s.heads, eps: 1e-5, qkvBias: false, act: 'gelu', causal: false } as const;
        for (let i = 0; i < s.layers; i++) layers.push(await PreNormEncoderLayer.load(M.scope(`layers.${i}.`), LDMBERT_LAYER, shape));
        const norm = await LayerNorm.load(M, 'layer_norm', s.dModel, 1e-5);
        return { shape: s, tokens, positions, layers, norm };
      },
      (L, parts) => new LDMBertModel(engine, config, L, parts),
    );
  }

  /** inputIds: B sequences of equal length <= max_position_embeddings -> { lastHiddenState [B, T, d_model] }. */
  forward(inputIds: readonly ArrayLike<number>[]): { lastHiddenState: Tensor } {
    const op = `${NAME}.forward`;
    this.checkAlive('forward');
    if (!Array.isArray(inputIds) || inputIds.length === 0) throw new Error(`${op}: inputIds must be a non-empty array of token id sequences`);
    const B = inputIds.length;
    const T = inputIds[0]?.length ?? 0;
    if (T < 1 || T > this.shape.maxPositions) throw new Error(`${op}: sequence length ${T} must be in [1, ${this.shape.maxPositions}]`);
    const flat = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const row = inputIds[b];
      if (!row || row.length !== T) throw new Error(`${op}: all sequences must have ${T} ids; inputIds[${b}] has ${row?.length}`);
      for (let t = 0; t < T; t++) {
        const id = row[t];
        if (!Number.isInteger(id) || id < 0 || id >= this.shape.vocabSize) throw new Error(`${op}: token id ${id} at inputIds[${b}][${t}] is outside the vocabulary of ${this.shape.vocabSize}`);
        flat[b * T + t] = id;
      }
    }
    return this.engine.scope(() => {
      const ids = this.engine.tensor(flat, [B, T]);
      const x = ops.add(ops.embedding(this.tokens, ids), ops.embedding(this.positions, Array.from({ length: T }, (_, t) => t)));
      return { lastHiddenState: sequential(x, ...this.layers, this.norm) };
    });
  }
}

/** LDMBertModel config for a CompVis BERTEmbedder(n_embed, n_layer, vocab_size, max_seq_len). */
export function ldmBertConfigFromCompVis(params: { n_embed: number; n_layer: number; vocab_size?: number; max_seq_len?: number }): Config {
  return {
    d_model: params.n_embed,
    encoder_layers: params.n_layer,
    vocab_size: params.vocab_size ?? 30522,
    max_position_embeddings: params.max_seq_len ?? 77,
    encoder_attention_heads: 8, // x_transformer Attention defaults: 8 heads x 64
    head_dim: 64,
    encoder_ffn_dim: params.n_embed * 4,
  };
}
