// The one reader of diffusers / transformers config.json values (models, text encoders, schedulers,
// checkpoint mappings): keys exactly as those libraries write them, their defaults given at the call
// site, and a typed ConfigError naming the component, the key and the value for anything else.
//
// Numbers that size host or GPU memory are bounded here, by key (LIMITS), so an absurd or hostile
// config fails before anything is allocated. Numbers must be JSON numbers: "8" is an error. Unknown
// keys are ignored, as diffusers does.

export type Config = Record<string, unknown>;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly component: string,
    readonly key: string,
    readonly value: unknown,
    message: string,
  ) {
    super(`${component}: ${message}`);
  }
}

export interface Bounds {
  min?: number;
  max?: number;
}

const CHANNELS: Bounds = { min: 1, max: 32768 };
const LAYERS: Bounds = { min: 1, max: 256 };
const HEADS: Bounds = { min: 1, max: 4096 };
const TOKEN_ID: Bounds = { min: 0, max: 10_000_000 };

/**
 * Bounds of integer keys that size memory (tensor shapes, tables, loops). Far above any released
 * model (SDXL: 1280 channels, CLIP-G: 32 layers, 49408 tokens), far below what would exhaust memory.
 * An explicit bounds argument overrides these.
 */
export const LIMITS: Readonly<Record<string, Bounds>> = {
  in_channels: CHANNELS,
  out_channels: CHANNELS,
  latent_channels: CHANNELS,
  block_out_channels: CHANNELS,
  encoder_block_out_channels: CHANNELS,
  decoder_block_out_channels: CHANNELS,
  cross_attention_dim: CHANNELS,
  time_embedding_dim: CHANNELS,
  vq_embed_dim: CHANNELS,
  hidden_size: CHANNELS,
  intermediate_size: { min: 1, max: 131072 },
  projection_dim: CHANNELS,
  d_model: CHANNELS,
  encoder_ffn_dim: { min: 1, max: 131072 },
  layers_per_block: { min: 1, max: 64 },
  transformer_layers_per_block: { min: 1, max: 64 },
  num_encoder_blocks: { min: 0, max: 64 },
  num_decoder_blocks: { min: 0, max: 64 },
  num_hidden_layers: LAYERS,
  encoder_layers: LAYERS,
  attention_head_dim: HEADS,
  num_attention_heads: HEADS,
  encoder_attention_heads: HEADS,
  head_dim: HEADS,
  norm_num_groups: { min: 1, max: 4096 },
  attn_norm_num_groups: { min: 1, max: 4096 },
  sample_size: { min: 1, max: 16384 },
  num_train_timesteps: { min: 1, max: 100_000 },
  vocab_size: { min: 1, max: 1_000_000 },
  max_position_embeddings: { min: 1, max: 65536 },
  num_vq_embeddings: { min: 1, max: 1 << 20 },
  num_class_embeds: { min: 1, max: 1_000_000 },
  downsample_padding: { min: 0, max: 16 },
  eos_token_id: TOKEN_ID,
  bos_token_id: TOKEN_ID,
  pad_token_id: TOKEN_ID,
  steps_offset: { min: 0, max: 100_000 },
  original_inference_steps: { min: 1, max: 100_000 },
  addition_time_embed_dim: CHANNELS,
  projection_class_embeddings_input_dim: { min: 1, max: 1 << 20 },
  time_cond_proj_dim: CHANNELS,
};

type Primitive = string | number | boolean | null;

const show = (v: unknown): string => (v === undefined ? 'nothing' : JSON.stringify(v) ?? String(v));

/** Reads typed values of one component's config; `out` records every value read (with defaults). */
export class ConfigReader {
  readonly out: Config = {};
  readonly config: Config;

  constructor(
    readonly component: string,
    config: unknown,
  ) {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new ConfigError(component, '', config, `the config must be a JSON object, got ${Array.isArray(config) ? 'an array' : show(config)}`);
    }
    this.config = config as Config;
  }

  /** The value of key, null when absent (diffusers treats a JSON null like a missing key). */
  raw(key: string): unknown {
    const v = Object.prototype.hasOwnProperty.call(this.config, key) ? this.config[key] : undefined;
    return v === undefined ? null : v;
  }

  has(key: string): boolean {
    return this.raw(key) !== null;
  }

  fail(key: string, value: unknown, message: string): ConfigError {
    return new ConfigError(this.component, key, value, message);
  }

  private required(key: string, what: string): never {
    throw this.fail(key, undefined, `config key '${key}' is required (${what})`);
  }

  private checkBounds(key: string, v: number, bounds: Bounds | undefined, what: string): void {
    const b = bounds ?? LIMITS[key.replace(/\[\d+\]$/, '')];
    if (!b) return;
    const lo = b.min ?? -Infinity;
    const hi = b.max ?? Infinity;
    if (v < lo || v > hi) throw this.fail(key, v, `config key '${key}' must be ${what} in [${lo}, ${hi}], got ${v}`);
  }

  private toNumber(key: string, v: unknown, bounds: Bounds | undefined): number {
    let r: number;
    if (typeof v === 'number' && !Number.isNaN(v)) r = v;
    // Python's json writes float('inf') as Infinity, which is not JSON; diffusers' configs spell it as a string.
    else if (v === 'Infinity' || v === '-Infinity') r = v === 'Infinity' ? Infinity : -Infinity;
    else throw this.fail(key, v, `config key '${key}' must be a number, got ${show(v)}`);
    this.checkBounds(key, r, bounds, 'a number');
    return r;
  }

  private toInt(key: string, v: unknown, bounds: Bounds | undefined): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw this.fail(key, v, `config key '${key}' must be an integer, got ${show(v)}`);
    this.checkBounds(key, v, bounds, 'an integer');
    return v;
  }

  /** A number (def when absent; required when def is undefined). */
  num(key: string, def?: number, bounds?: Bounds): number;
  num(key: string, def: number | null, bounds?: Bounds): number | null;
  num(key: string, def?: number | null, bounds?: Bounds): number | null {
    const v = this.raw(key);
    if (v === null && def === undefined) this.required(key, 'a number');
    const r = v === null ? def! : this.toNumber(key, v, bounds);
    this.out[key] = r;
    return r;
  }

  /** An integer (def when absent; required when def is undefined). Memory-sizing keys are bounded. */
  int(key: string, def?: number, bounds?: Bounds): number;
  int(key: string, def: number | null, bounds?: Bounds): number | null;
  int(key: string, def?: number | null, bounds?: Bounds): number | null {
    const v = this.raw(key);
    if (v === null && def === undefined) this.required(key, 'an integer');
    const r = v === null ? def! : this.toInt(key, v, bounds);
    this.out[key] = r;
    return r;
  }

  /** A finite number > 0 (scaling_factor: 0 would divide the latents by zero). */
  positive(key: string, def?: number): number {
    const r = this.num(key, def);
    if (!(r > 0 && Number.isFinite(r))) throw this.fail(key, r, `config key '${key}' must be a number > 0 (finite), got ${show(this.raw(key))}`);
    return r;
  }

  /** sample_size: an integer (square) or [height, width], as diffusers allows; bounded by LIMITS. */
  sampleSize(def: number): [number, number] {
    const v = this.raw('sample_size') ?? def;
    const max = LIMITS.sample_size.max!;
    const ok = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 1 && x <= max;
    const hw = ok(v) ? [v, v] : Array.isArray(v) && v.length === 2 && v.every(ok) ? v : null;
    if (!hw) throw this.fail('sample_size', v, `config key 'sample_size' must be a positive integer or a list [height, width] of them (each at most ${max}), got ${show(v)}`);
    this.out.sample_size = v;
    return [hw[0], hw[1]];
  }


  bool(key: string, def?: boolean): boolean {
    const v = this.raw(key);
    if (v === null && def === undefined) this.required(key, 'true or false');
    const r = v === null ? def : v;
    if (typeof r !== 'boolean') throw this.fail(key, v, `config key '${key}' must be true or false, got ${show(v)}`);
    this.out[key] = r;
    return r;
  }

  str(key: string, def?: string): string {
    const v = this.raw(key);
    if (v === null && def === undefined) this.required(key, 'a string');
    const r = v === null ? def : v;
    if (typeof r !== 'string') throw this.fail(key, v, `config key '${key}' must be a string, got ${show(v)}`);
    this.out[key] = r;
    return r;
  }

  /** One of the allowed values (absent or null: def); aliases map other spellings onto allowed ones. */
  oneOf<T extends Primitive>(key: string, allowed: readonly T[], def: T, aliases: Record<string, T> = {}): T {
    const v = this.raw(key);
    let r = v === null ? def : v;
    if (typeof r === 'string' && Object.prototype.hasOwnProperty.call(aliases, r)) r = aliases[r];
    if (!allowed.includes(r as T)) throw this.unsupported(key, v, allowed);
    this.out[key] = r;
    return r as T;
  }

  /** The error for a value outside `allowed` (for checks that depend on other keys). */
  unsupported(key: string, v: unknown, allowed: readonly unknown[]): ConfigError {
    return this.fail(key, v, `unsupported value ${show(v)} for config key '${key}' (supported: ${allowed.map(show).join(', ')})`);
  }

  /** A boolean option this engine does not implement when true. */
  refuseTrue(key: string, why: string): void {
    if (this.bool(key, false)) throw this.fail(key, true, `config key '${key}' = true is not supported (${why})`);
  }

  private list(key: string, def: readonly unknown[] | undefined, what: string, length?: number): unknown[] {
    const v = this.raw(key);
    if (v === null && def === undefined) this.required(key, `a list of ${what}`);
    const r = v === null ? def! : v;
    const n = length === undefined ? 'a non-empty list' : `a list of ${length}`;
    if (!Array.isArray(r) || !r.length || (length !== undefined && r.length !== length)) throw this.fail(key, v, `config key '${key}' must be ${n} ${what}, got ${show(v)}`);
    return r;
  }

  /** A non-empty list of integers, each within bounds (or LIMITS[key]). */
  intList(key: string, def?: readonly number[], bounds?: Bounds, length?: number): number[] {
    const r = this.list(key, def, 'integers', length).map((x, i) => this.toInt(`${key}[${i}]`, x, bounds));
    this.out[key] = r;
    return r;
  }

  /** A non-empty list whose items are each one of allowed. */
  oneOfList<T extends Primitive>(key: string, allowed: readonly T[], def?: readonly T[], length?: number): T[] {
    const r = this.list(key, def, 'values', length).map((x, i) => {
      if (!allowed.includes(x as T)) throw this.unsupported(`${key}[${i}]`, x, allowed);
      return x as T;
    });
    this.out[key] = r;
    return r;
  }

  /** A list of numbers, or null when absent (trained_betas). */
  numArray(key: string): number[] | null {
    const v = this.raw(key);
    if (v === null) {
      this.out[key] = null;
      return null;
    }
    if (!Array.isArray(v)) throw this.fail(key, v, `config key '${key}' must be a list of numbers, got ${show(v)}`);
    const r = v.map((x, i) => this.toNumber(`${key}[${i}]`, x, undefined));
    this.out[key] = r;
    return r;
  }

  /** An int-or-list key (attention_head_dim, transformer_layers_per_block...) expanded to one per block. */
  perBlock(key: string, def: number | readonly number[], blocks: number, bounds?: Bounds): number[] {
    const v = this.raw(key) ?? def;
    const r = typeof v === 'number' ? Array<unknown>(blocks).fill(v) : v;
    if (!Array.isArray(r) || r.length !== blocks) throw this.fail(key, v, `config key '${key}' must be an integer or a list of ${blocks} integers, got ${show(v)}`);
    const out = r.map((x, i) => this.toInt(`${key}[${i}]`, x, bounds));
    this.out[key] = out;
    return out;
  }

  /**
   * transformer_layers_per_block and its reverse_ list: an integer, one per block, or per block a list with
   * one integer per layer of that block (`layers(i)` of them; diffusers' asymmetrical UNets). Null when the
   * key is absent and def is null.
   */
  perBlockPerLayer(key: string, def: number | null, blocks: number, layers: (i: number) => number, bounds?: Bounds): (number | number[])[] | null {
    const v = this.raw(key) ?? def;
    if (v === null) return null;
    if (typeof v === 'number') return this.perBlock(key, v, blocks, bounds);
    if (!Array.isArray(v) || v.length !== blocks) {
      throw this.fail(key, v, `config key '${key}' must be an integer or a list of ${blocks} entries (each an integer or a list with one per layer), got ${show(v)}`);
    }
    const b = bounds ?? LIMITS[key] ?? LIMITS.transformer_layers_per_block;
    const out = v.map((x: unknown, i) => {
      if (!Array.isArray(x)) return this.toInt(`${key}[${i}]`, x, b);
      if (x.length !== layers(i)) throw this.fail(key, v, `config key '${key}[${i}]' must list ${layers(i)} integers (one per layer of block ${i}), got ${show(x)}`);
      return x.map((y: unknown, j) => this.toInt(`${key}[${i}][${j}]`, y, b));
    });
    this.out[key] = out;
    return out;
  }

  /** A bool-or-list key (only_cross_attention) expanded to one per block. */
  perBlockBool(key: string, def: boolean, blocks: number): boolean[] {
    const v = this.raw(key) ?? def;
    const r = typeof v === 'boolean' ? Array<boolean>(blocks).fill(v) : v;
    if (!Array.isArray(r) || r.length !== blocks || !r.every((x) => typeof x === 'boolean')) {
      throw this.fail(key, v, `config key '${key}' must be true, false or a list of ${blocks} of them, got ${show(v)}`);
    }
    this.out[key] = r;
    return r as boolean[];
  }
}
