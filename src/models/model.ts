// What every model shares: its parameters (disposed together, returning their bytes to the pool),
// the report of unexpected weights, input checks, and loading from a diffusers component folder,
// a URL, or a config plus safetensors bytes in memory.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr, type DType } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { ParamLoader, type TensorSource } from './nn.js';
import type { Config } from '../runtime/config.js';
import { loadComponentFolder, sourceFromBytes, type LoadOptions } from '../runtime/weights.js';

export interface Loadable<T> {
  load(engine: Engine, config: Config, source: TensorSource): Promise<T>;
}

export abstract class Model {
  /** weights present in the file that no layer used (reported, not fatal) */
  unexpectedWeights: string[] = [];
  private disposed = false;

  protected constructor(
    readonly engine: Engine,
    readonly config: Config,
    protected loader: ParamLoader,
  ) {}

  /** Loads from a diffusers component folder (config.json + diffusion_pytorch_model[.fp16].safetensors),
   * a local path in Node or a base URL. */
  static fromPretrained<T>(this: Loadable<T>, engine: Engine, pathOrUrl: string, opts?: LoadOptions): Promise<T> {
    return fromPretrained(this, engine, pathOrUrl, opts);
  }

  /** Loads from a parsed config.json and safetensors bytes held in memory. */
  static fromConfig<T>(this: Loadable<T>, engine: Engine, config: Config, bytes: Uint8Array | ArrayBuffer): Promise<T> {
    return fromConfig(this, engine, config, bytes);
  }

  /** Storage dtype of the weights and of the activations the model takes and returns. */
  get dtype(): DType {
    return this.loader.dtype;
  }

  /**
   * Converts the weights to f32 in place (one tensor at a time, so there is never a second copy of
   * the model) and runs in f32 from then on: diffusers' upcast_vae, for an f16 VAE that overflowed.
   */
  upcast(): void {
    if (this.disposed) throw new Error(`${this.constructor.name}.upcast: the model was disposed`);
    if (this.loader.dtype === 'f32') return;
    for (const p of this.loader.params) if (p.dtype === 'f16') p.adopt(ops.cast(p, 'f32'));
    this.loader.dtype = 'f32';
  }

  /** Bytes of GPU memory held by the parameters. */
  get parameterBytes(): number {
    return this.loader.bytes();
  }

  /** Names of the parameters as the checkpoint names them (diffusers' names). */
  parameterNames(): string[] {
    return [...this.loader.named.keys()];
  }

  /** The parameter loaded under `name`, or undefined (e.g. to merge a LoRA into it in place). */
  parameter(name: string): Tensor | undefined {
    this.checkAlive('parameter');
    return this.loader.named.get(name);
  }

  get parameterCount(): number {
    return this.loader.params.reduce((s, t) => s + t.size, 0);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const t of this.loader.params) t.dispose();
  }

  /** Throws when the model was disposed. */
  protected checkAlive(op: string): void {
    if (this.disposed) throw new Error(`${this.constructor.name}.${op}: the model was disposed`);
  }

  protected checkInput(op: string, x: Tensor, channels: number, rank = 4): void {
    const name = `${this.constructor.name}.${op}`;
    this.checkAlive(op);
    if (!(x instanceof Tensor)) throw new Error(`${name}: expected a Tensor`);
    if (x.engine !== this.engine) throw new Error(`${name}: the input belongs to another engine`);
    if (x.rank !== rank || x.shape[1] !== channels) {
      throw new Error(`${name}: expected input [B, ${channels}, H, W], got ${shapeStr(x.shape)}`);
    }
    const want = this.dtype;
    if (x.dtype !== want) throw new Error(`${name}: expected ${want} input (the model runs in ${want}), got ${x.dtype}`);
  }
}

/**
 * Builds a model through its typed constructor: `load` uploads the layers through a ParamLoader
 * (checking every shape), `make` calls the model's private constructor with them. On failure every
 * parameter uploaded so far is freed; weights of the file that no layer used are reported.
 */
export async function buildModel<P, M extends Model>(
  engine: Engine,
  source: TensorSource,
  load: (L: ParamLoader) => Promise<P>,
  make: (L: ParamLoader, parts: P) => M,
  /** storage dtype of the weights (default: f16 on an f16 engine, else f32) */
  dtype?: DType,
): Promise<M> {
  const L = new ParamLoader(engine, source, '', dtype);
  let m: M;
  try {
    m = make(L, await load(L));
  } catch (e) {
    for (const t of L.params) t.dispose();
    throw e;
  }
  const unused = (source as { unusedNames?: () => string[] }).unusedNames?.() ?? [];
  m.unexpectedWeights = unused;
  if (unused.length) {
    console.warn(`${m.constructor.name}: ${unused.length} unexpected weight(s) ignored: ${unused.slice(0, 8).join(', ')}${unused.length > 8 ? ', ...' : ''}`);
  }
  return m;
}

/** Loads `cls` from a diffusers component folder (local path in Node) or base URL. */
export async function fromPretrained<T>(cls: Loadable<T>, engine: Engine, pathOrUrl: string, opts: LoadOptions = {}): Promise<T> {
  const { config, weights } = await loadComponentFolder(pathOrUrl, opts);
  try {
    return await cls.load(engine, config, opts.transformWeights ? opts.transformWeights(weights, config) : weights);
  } finally {
    await weights.close?.();
  }
}

/** Loads `cls` from a parsed config.json and the bytes of its safetensors file. */
export async function fromConfig<T>(cls: Loadable<T>, engine: Engine, config: Config, bytes: Uint8Array | ArrayBuffer, label = 'weights'): Promise<T> {
  return cls.load(engine, config, sourceFromBytes(bytes, label));
}
