// CLIPTextModel (transformers' CLIP text transformer, Stable Diffusion 1.x's text encoder): token +
// position embeddings, pre-LayerNorm layers with causal self-attention and a quick_gelu / gelu MLP,
// final LayerNorm, and the pooled row at the end-of-text token. Weight names are transformers'
// (text_model.*), as in a diffusers text_encoder/ folder.
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { LayerNorm, ParamLoader, type TensorSource } from '../models/nn.js';
import { PreNormEncoderLayer, type EncoderLayerNames } from './encoder_layer.js';
import { ConfigReader, type Config } from '../runtime/config.js';
import { Model, buildModel } from '../models/model.js';
import type { IOOptions } from '../runtime/io.js';
import { loadFromSingleFile, type SingleFileSource } from '../loaders/single_file_keys.js';

const NAME = 'CLIPTextModel';

export interface ClipTextShape {
  vocabSize: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  maxPositions: number;
  act: 'quickGelu' | 'gelu';
  eps: number;
  eosTokenId: number;
}

// transformers' ACT2FN names we can run; others (gelu_new, gelu_pytorch_tanh, ...) are refused so a
// model never silently runs with the wrong nonlinearity.
const ACTS: Record<string, ClipTextShape['act']> = { quick_gelu: 'quickGelu', gelu: 'gelu' };

/** Sizes from a transformers CLIPTextConfig (defaults as transformers', i.e. CLIP ViT-B/32's text tower). */
export function clipTextShape(config: Config): ClipTextShape {
  const c = new ConfigReader(NAME, config);
  const act = c.oneOf('hidden_act', Object.keys(ACTS), 'quick_gelu');
  const s: ClipTextShape = {
    vocabSize: c.int('vocab_size', 49408),
    hidden: c.int('hidden_size', 512),
    intermediate: c.int('intermediate_size', 2048),
    layers: c.int('num_hidden_layers', 12),
    heads: c.int('num_attention_heads', 8),
    maxPositions: c.int('max_position_embeddings', 77),
    act: ACTS[act],
    eps: c.num('layer_norm_eps', 1e-5),
    eosTokenId: c.int('eos_token_id', 49407),
  };
  if (s.hidden % s.heads !== 0) throw new Error(`${NAME}: hidden_size ${s.hidden} does not split into ${s.heads} attention heads`);
  return s;
}

// transformers' CLIPEncoderLayer parameter names
const CLIP_LAYER: EncoderLayerNames = {
  ln1: 'layer_norm1', q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj',
  out: 'self_attn.out_proj', ln2: 'layer_norm2', fc1: 'mlp.fc1', fc2: 'mlp.fc2',
};

export interface ClipTextForwardOptions {
  /** also return every layer's residual stream (transformers' hidden_states) */
  outputHiddenStates?: boolean;
  /**
   * diffusers' clip_skip = k: lastHiddenState becomes final_layer_norm(hidden_states[-(k+1)])
   * (what the pipeline uses as prompt_embeds); poolerOutput stays the full model's. 0 = off.
   */
  clipSkip?: number;
}

export interface ClipTextOutput {
  /** [B, T, H] after final_layer_norm (SD's prompt_embeds) */
  lastHiddenState: Tensor;
  /** [B, H]: the last_hidden_state row at each sequence's end-of-text token */
  poolerOutput: Tensor;
  /** numLayers + 1 tensors [B, T, H]: [0] = embeddings, [i] = after layer i (before final_layer_norm) */
  hiddenStates?: Tensor[];
}

export type TokenIds = readonly ArrayLike<number>[];

interface CLIPTextModelParts {
  shape: ClipTextShape;
  tokenEmbedding: Tensor;
  positionEmbedding: Tensor;
  layers: PreNormEncoderLayer[];
  finalLayerNorm: LayerNorm;
}

export class CLIPTextModel extends Model {
  readonly shape: ClipTextShape;
  private readonly tokenEmbedding: Tensor;
  private readonly positionEmbedding: Tensor;
  private readonly layers: PreNormEncoderLayer[];
  private readonly finalLayerNorm: LayerNorm;

  private constructor(engine: Engine, config: Config, L: ParamLoader, p: CLIPTextModelParts) {
    super(engine, config, L);
    this.shape = p.shape;
    this.tokenEmbedding = p.tokenEmbedding;
    this.positionEmbedding = p.positionEmbedding;
    this.layers = p.layers;
    this.finalLayerNorm = p.finalLayerNorm;
  }

  static readonly componentName = NAME;


  /**
   * The text_encoder of a Stable Diffusion 1.x single-file checkpoint (CompVis key names, cond_stage_model.transformer.*),
   * built with the diffusers config given (single-file checkpoints carry none).
   */
  static fromSingleFile(engine: Engine, source: SingleFileSource, opts: { config: Config } & IOOptions): Promise<CLIPTextModel> {
    if (!opts?.config) return Promise.reject(new Error('CLIPTextModel.fromSingleFile: pass { config } (the diffusers config of the component)'));
    return loadFromSingleFile(CLIPTextModel.load, engine, source, 'text_encoder', opts.config, opts);
  }

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<CLIPTextModel> {
    const s = clipTextShape(config);
    // Checkpoints saved by transformers < 4.31 carry the arange position_ids buffer; it is implied.
    const ws = source as { has(n: string): boolean; markUsed?: (...n: string[]) => void };
    if (ws.has('text_model.embeddings.position_ids')) ws.markUsed?.('text_model.embeddings.position_ids');
    return buildModel(
      engine,
      source,
      async (L): Promise<CLIPTextModelParts> => {
        const T = L.scope('text_model.');
        const tokenEmbedding = await T.get('embeddings.token_embedding.weight', [s.vocabSize, s.hidden]);
        const positionEmbedding = await T.get('embeddings.position_embedding.weight', [s.maxPositions, s.hidden]);
        const layers: PreNormEncoderLayer[] = [];
        const shape = { hidden: s.hidden, inner: s.hidden, ffn: s.intermediate, heads: s.heads, eps: s.eps, qkvBias: true, act: s.act, causal: true };
        for (let i = 0; i < s.layers; i++) layers.push(await PreNormEncoderLayer.load(T.scope(`encoder.layers.${i}.`), CLIP_LAYER, shape));
        const finalLayerNorm = await LayerNorm.load(T, 'final_layer_norm', s.hidden, s.eps);
        return { shape: s, tokenEmbedding, positionEmbedding, layers, finalLayerNorm };
      },
      (L, parts) => new CLIPTextModel(engine, config, L, parts),
    );
  }

  /** Checks ids and returns them flattened with the batch size and sequence length. */
  private checkIds(inputIds: TokenIds): { flat: Int32Array; B: number; T: number } {
    const op = `${NAME}.forward`;
    this.checkAlive('forward');
    if (!Array.isArray(inputIds) || inputIds.length === 0) throw new Error(`${op}: inputIds must be a non-empty array of token id sequences`);
    const B = inputIds.length;
    const T = inputIds[0]?.length;
    if (typeof T !== 'number' || T === 0) throw new Error(`${op}: inputIds[0] must be a non-empty sequence of token ids`);
    if (T > this.shape.maxPositions) {
      throw new Error(`${op}: sequence length ${T} exceeds max_position_embeddings ${this.shape.maxPositions} (truncate the prompt, as the tokenizer does)`);
    }
    const flat = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const row = inputIds[b];
      if (!row || row.length !== T) throw new Error(`${op}: all sequences must have the same length: inputIds[0] has ${T} ids, inputIds[${b}] has ${row?.length}`);
      for (let t = 0; t < T; t++) {
        const id = row[t];
        if (!Number.isInteger(id) || id < 0 || id >= this.shape.vocabSize) {
          throw new Error(`${op}: token id ${id} at inputIds[${b}][${t}] is outside the vocabulary of ${this.shape.vocabSize}`);
        }
        flat[b * T + t] = id;
      }
    }
    return { flat, B, T };
  }

  /** The position pooler_output reads in each sequence, as transformers decides it. */
  poolIndices(inputIds: TokenIds): number[] {
    const eos = this.shape.eosTokenId;
    return inputIds.map((row) => {
      let best = 0;
      if (eos === 2) {
        // legacy configs (SD 1.x's text_encoder): EOS assumed to be the largest id in the vocabulary
        for (let t = 1; t < row.length; t++) if (row[t] > row[best]) best = t;
        return best;
      }
      // no EOS in the row: transformers' argmax over an all-false mask gives 0
      for (let t = 0; t < row.length; t++) if (row[t] === eos) return t;
      return 0;
    });
  }

  forward(inputIds: TokenIds, opts: ClipTextForwardOptions = {}): ClipTextOutput {
    const { flat, B, T } = this.checkIds(inputIds);
    const skip = opts.clipSkip ?? 0;
    if (!Number.isInteger(skip) || skip < 0 || skip >= this.shape.layers) {
      throw new Error(`${NAME}.forward: clipSkip must be an integer in [0, ${this.shape.layers - 1}], got ${skip}`);
    }
    const H = this.shape.hidden;
    const engine = this.engine;
    return engine.scope(() => {
      const ids = engine.tensor(flat, [B, T]);
      const positions = Array.from({ length: T }, (_, t) => t);
      // position embeddings [T, H] broadcast over the batch
      const hidden = [ops.add(ops.embedding(this.tokenEmbedding, ids), ops.embedding(this.positionEmbedding, positions))];
      for (const layer of this.layers) hidden.push(layer.forward(hidden[hidden.length - 1]));
      const last = this.finalLayerNorm.forward(hidden[this.layers.length]);
      // pooler: one row per sequence of the [B*T, H] view, at the position transformers picks
      const rows = this.poolIndices(inputIds).map((t, b) => b * T + t);
      const poolerOutput = ops.embedding(last.reshape([B * T, H]), rows);
      // clip skip: the final LayerNorm applied to hidden_states[-(skip + 1)]
      const lastHiddenState = skip ? this.finalLayerNorm.forward(hidden[this.layers.length - skip]) : last;
      return opts.outputHiddenStates ? { lastHiddenState, poolerOutput, hiddenStates: hidden } : { lastHiddenState, poolerOutput };
    });
  }
}
