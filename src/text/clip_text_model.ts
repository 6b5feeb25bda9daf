// CLIPTextModel (transformers' CLIP text transformer: SD 1.x's text encoder, SD 2.x's OpenCLIP-H as
// converted by diffusers, SDXL's text_encoder) and CLIPTextModelWithProjection (SDXL's text_encoder_2):
// token + position embeddings, pre-LayerNorm layers with causal self-attention and a quick_gelu / gelu
// MLP, final LayerNorm, the pooled row at the end-of-text token, and (with projection) text_embeds =
// text_projection(pooled), a Linear without bias. Weight names are transformers' (text_model.*,
// text_projection.weight), as in a diffusers text_encoder/ or text_encoder_2/ folder.
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { LayerNorm, Linear, ParamLoader, type TensorSource } from '../models/nn.js';
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
  /** text_projection output width (CLIPTextModelWithProjection only) */
  projectionDim: number;
}

// transformers' ACT2FN names we can run; others (gelu_new, gelu_pytorch_tanh, ...) are refused so a
// model never silently runs with the wrong nonlinearity.
const ACTS: Record<string, ClipTextShape['act']> = { quick_gelu: 'quickGelu', gelu: 'gelu' };

/** Sizes from a transformers CLIPTextConfig (defaults as transformers', i.e. CLIP ViT-B/32's text tower). */
export function clipTextShape(config: Config, name = NAME): ClipTextShape {
  const c = new ConfigReader(name, config);
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
    projectionDim: c.int('projection_dim', 512),
  };
  if (s.hidden % s.heads !== 0) throw new Error(`${name}: hidden_size ${s.hidden} does not split into ${s.heads} attention heads`);
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
   * (what the SD 1.x / 2.x pipelines use as prompt_embeds); the pooled output stays the full model's. 0 = off.
   */
  clipSkip?: number;
  /**
   * also return hidden_states[i] alone as `hiddenState` (Python indexing over the numLayers + 1 states:
   * 0 = embeddings, -1 = the last layer's output before final_layer_norm, -2 = the penultimate layer,
   * SDXL's prompt embeds; SDXL's clip_skip k is -(k + 2)). Only this state is kept, not all of them.
   */
  hiddenStateIndex?: number;
}

export interface ClipTextOutput {
  /** [B, T, H] after final_layer_norm (SD's prompt_embeds) */
  lastHiddenState: Tensor;
  /** [B, H]: the last_hidden_state row at each sequence's end-of-text token */
  poolerOutput: Tensor;
  /** numLayers + 1 tensors [B, T, H]: [0] = embeddings, [i] = after layer i (before final_layer_norm) */
  hiddenStates?: Tensor[];
  /** [B, T, H]: hidden_states[hiddenStateIndex], when asked for */
  hiddenState?: Tensor;
}

export type TokenIds = readonly ArrayLike<number>[];

interface ClipTextParts {
  shape: ClipTextShape;
  tokenEmbedding: Tensor;
  positionEmbedding: Tensor;
  layers: PreNormEncoderLayer[];
  finalLayerNorm: LayerNorm;
}

/** Loads the text_model.* part shared by both classes. */
async function loadTextModel(L: ParamLoader, s: ClipTextShape): Promise<ClipTextParts> {
  const T = L.scope('text_model.');
  const tokenEmbedding = await T.get('embeddings.token_embedding.weight', [s.vocabSize, s.hidden]);
  const positionEmbedding = await T.get('embeddings.position_embedding.weight', [s.maxPositions, s.hidden]);
  const layers: PreNormEncoderLayer[] = [];
  const shape = { hidden: s.hidden, inner: s.hidden, ffn: s.intermediate, heads: s.heads, eps: s.eps, qkvBias: true, act: s.act, causal: true };
  for (let i = 0; i < s.layers; i++) layers.push(await PreNormEncoderLayer.load(T.scope(`encoder.layers.${i}.`), CLIP_LAYER, shape));
  const finalLayerNorm = await LayerNorm.load(T, 'final_layer_norm', s.hidden, s.eps);
  return { shape: s, tokenEmbedding, positionEmbedding, layers, finalLayerNorm };
}

/** Checkpoints saved by transformers < 4.31 carry the arange position_ids buffer; it is implied. */
function skipPositionIds(source: TensorSource): void {
  const ws = source as { has(n: string): boolean; markUsed?: (...n: string[]) => void };
  if (ws.has('text_model.embeddings.position_ids')) ws.markUsed?.('text_model.embeddings.position_ids');
}

/** The CLIP text transformer both classes run (transformers' CLIPTextTransformer). */
abstract class ClipTextTransformer extends Model {
  readonly shape: ClipTextShape;
  private readonly tokenEmbedding: Tensor;
  private readonly positionEmbedding: Tensor;
  private readonly layers: PreNormEncoderLayer[];
  private readonly finalLayerNorm: LayerNorm;

  protected constructor(engine: Engine, config: Config, L: ParamLoader, p: ClipTextParts) {
    super(engine, config, L);
    this.shape = p.shape;
    this.tokenEmbedding = p.tokenEmbedding;
    this.positionEmbedding = p.positionEmbedding;
    this.layers = p.layers;
    this.finalLayerNorm = p.finalLayerNorm;
  }

  protected get opName(): string {
    return this.constructor.name;
  }

  /** Checks ids and returns them flattened with the batch size and sequence length. */
  private checkIds(inputIds: TokenIds, method: string): { flat: Int32Array; B: number; T: number } {
    const op = `${this.opName}.${method}`;
    this.checkAlive(method);
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

  /** hidden_states index (Python style, negative from the end) -> 0..numLayers, or a clear error. */
  private stateIndex(i: number, method: string): number {
    const n = this.layers.length;
    if (!Number.isInteger(i) || i < -(n + 1) || i > n) {
      throw new Error(`${this.opName}.${method}: hidden state index must be an integer in [${-(n + 1)}, ${n}] (there are ${n + 1} hidden states), got ${i}`);
    }
    return i < 0 ? n + 1 + i : i;
  }

  /** The position the pooled output reads in each sequence, as transformers 4.45 decides it. */
  poolIndices(inputIds: TokenIds): number[] {
    const eos = this.shape.eosTokenId;
    return inputIds.map((row) => {
      let best = 0;
      if (eos === 2) {
        // legacy configs (before transformers PR #24773; SD 1.x / 2.x / SDXL's text encoders): EOS
        // assumed to be the largest id, so argmax(ids), the first of equal maxima as torch's argmax
        for (let t = 1; t < row.length; t++) if (row[t] > row[best]) best = t;
        return best;
      }
      // the first eos_token_id; no EOS in the row: transformers' argmax over an all-false mask gives 0
      for (let t = 0; t < row.length; t++) if (row[t] === eos) return t;
      return 0;
    });
  }

  /**
   * Runs the embeddings and the first `upTo` layers in the caller's scope. Returns the states whose
   * indices are in `keep` (all of them when keepAll); every other intermediate is freed as soon as the
   * next layer has read it, so asking for one state holds two at a time, not numLayers + 1.
   */
  private runLayers(flat: Int32Array, B: number, T: number, upTo: number, keep: Set<number>, keepAll: boolean): Map<number, Tensor> {
    const engine = this.engine;
    const ids = engine.tensor(flat, [B, T]);
    const positions = Array.from({ length: T }, (_, t) => t);
    // position embeddings [T, H] broadcast over the batch
    let h = ops.add(ops.embedding(this.tokenEmbedding, ids), ops.embedding(this.positionEmbedding, positions));
    ids.dispose();
    const kept = new Map<number, Tensor>();
    for (let i = 0; ; i++) {
      if (keepAll || keep.has(i) || i === upTo) kept.set(i, h);
      if (i === upTo) return kept;
      const next = this.layers[i].forward(h);
      if (!kept.has(i)) h.dispose();
      h = next;
    }
  }

  /** Shared by both forwards: the transformer's outputs, the pooled rows before any projection. */
  protected run(inputIds: TokenIds, opts: ClipTextForwardOptions, method = 'forward'): ClipTextOutput {
    const { flat, B, T } = this.checkIds(inputIds, method);
    const n = this.layers.length;
    const skip = opts.clipSkip ?? 0;
    if (!Number.isInteger(skip) || skip < 0 || skip >= n) {
      throw new Error(`${this.opName}.${method}: clipSkip must be an integer in [0, ${n - 1}], got ${skip}`);
    }
    const picked = opts.hiddenStateIndex === undefined ? undefined : this.stateIndex(opts.hiddenStateIndex, method);
    const H = this.shape.hidden;
    const engine = this.engine;
    return engine.scope(() => {
      const keep = new Set<number>([n - skip]);
      if (picked !== undefined) keep.add(picked);
      const states = this.runLayers(flat, B, T, n, keep, !!opts.outputHiddenStates);
      const last = this.finalLayerNorm.forward(states.get(n)!);
      // pooler: one row per sequence of the [B*T, H] view, at the position transformers picks
      const rows = this.poolIndices(inputIds).map((t, b) => b * T + t);
      const poolerOutput = ops.embedding(last.reshape([B * T, H]), rows);
      // clip skip: the final LayerNorm applied to hidden_states[-(skip + 1)]
      const lastHiddenState = skip ? this.finalLayerNorm.forward(states.get(n - skip)!) : last;
      const out: ClipTextOutput = { lastHiddenState, poolerOutput };
      if (opts.outputHiddenStates) out.hiddenStates = Array.from({ length: n + 1 }, (_, i) => states.get(i)!);
      if (picked !== undefined) out.hiddenState = states.get(picked)!;
      return out;
    });
  }

  /**
   * hidden_states[index] alone ([B, T, H], before final_layer_norm; Python indexing, -2 = the
   * penultimate layer, SDXL's prompt embeds), running only the layers up to it: the layers after it,
   * the final LayerNorm and the pooled output are not computed.
   */
  hiddenState(inputIds: TokenIds, index: number): Tensor {
    const { flat, B, T } = this.checkIds(inputIds, 'hiddenState');
    const i = this.stateIndex(index, 'hiddenState');
    return this.engine.scope(() => this.runLayers(flat, B, T, i, new Set(), false).get(i)!);
  }
}

export class CLIPTextModel extends ClipTextTransformer {
  static readonly componentName = NAME;

  /**
   * The text_encoder of a Stable Diffusion single-file checkpoint, built with the transformers config given
   * (single-file checkpoints carry none): SD 1.x (cond_stage_model.transformer.*), SD 2.x's OpenCLIP
   * (cond_stage_model.model.*: the fused in_proj split into q/k/v, blocks past num_hidden_layers skipped)
   * or SDXL's first encoder (conditioner.embedders.0.transformer.*), told apart by their keys.
   */
  static fromSingleFile(engine: Engine, source: SingleFileSource, opts: { config: Config } & IOOptions): Promise<CLIPTextModel> {
    if (!opts?.config) return Promise.reject(new Error('CLIPTextModel.fromSingleFile: pass { config } (the diffusers config of the component)'));
    return loadFromSingleFile(CLIPTextModel.load, engine, source, 'text_encoder', opts.config, opts);
  }

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<CLIPTextModel> {
    const s = clipTextShape(config);
    skipPositionIds(source);
    return buildModel(
      engine,
      source,
      (L) => loadTextModel(L, s),
      (L, parts) => new CLIPTextModel(engine, config, L, parts),
    );
  }

  forward(inputIds: TokenIds, opts: ClipTextForwardOptions = {}): ClipTextOutput {
    return this.run(inputIds, opts);
  }
}

const NAME_PROJ = 'CLIPTextModelWithProjection';

export interface ClipTextWithProjectionOutput {
  /** [B, projection_dim]: text_projection(pooled output), SDXL's pooled prompt embeds */
  textEmbeds: Tensor;
  /** [B, T, H] after final_layer_norm (or clip-skipped, as CLIPTextModel's) */
  lastHiddenState: Tensor;
  /** numLayers + 1 tensors [B, T, H], when outputHiddenStates */
  hiddenStates?: Tensor[];
  /** [B, T, H]: hidden_states[hiddenStateIndex], when asked for */
  hiddenState?: Tensor;
}

/** transformers' CLIPTextModelWithProjection: CLIPTextModel plus text_projection (no bias) on the pooled row. */
export class CLIPTextModelWithProjection extends ClipTextTransformer {
  static readonly componentName = NAME_PROJ;
  private readonly textProjection: Linear;

  private constructor(engine: Engine, config: Config, L: ParamLoader, p: ClipTextParts & { textProjection: Linear }) {
    super(engine, config, L, p);
    this.textProjection = p.textProjection;
  }

  /**
   * SDXL's text_encoder_2 from a single-file checkpoint (OpenCLIP-bigG names, conditioner.embedders.1.model.*,
   * or the refiner's conditioner.embedders.0.model.*; text_projection [hidden, proj] transposed), built
   * with the transformers config given.
   */
  static fromSingleFile(engine: Engine, source: SingleFileSource, opts: { config: Config } & IOOptions): Promise<CLIPTextModelWithProjection> {
    if (!opts?.config) return Promise.reject(new Error('CLIPTextModelWithProjection.fromSingleFile: pass { config } (the transformers config of text_encoder_2)'));
    return loadFromSingleFile(CLIPTextModelWithProjection.load, engine, source, 'text_encoder_2', opts.config, opts);
  }

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<CLIPTextModelWithProjection> {
    const s = clipTextShape(config, NAME_PROJ);
    skipPositionIds(source);
    return buildModel(
      engine,
      source,
      async (L) => ({ ...(await loadTextModel(L, s)), textProjection: await Linear.load(L, 'text_projection', s.hidden, s.projectionDim, false) }),
      (L, parts) => new CLIPTextModelWithProjection(engine, config, L, parts),
    );
  }

  forward(inputIds: TokenIds, opts: ClipTextForwardOptions = {}): ClipTextWithProjectionOutput {
    return this.engine.scope(() => {
      const { poolerOutput, ...rest } = this.run(inputIds, opts);
      return { textEmbeds: this.textProjection.forward(poolerOutput), ...rest };
    });
  }
}
