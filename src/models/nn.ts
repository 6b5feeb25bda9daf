// Layers with diffusers' parameter names, composed only of the engine's ops. Each layer loads its
// parameters through a ParamLoader, which checks every shape against what the config implies.
import type { Engine } from '../runtime/engine.js';
import type { Tensor, DType } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';

/** Where parameters come from (a safetensors file, a folder, in-memory bytes, random init...). */
export interface TensorSource {
  has(name: string): boolean;
  /** Reads one tensor, checks its shape (Error naming the tensor, expected and actual shape) and uploads it. */
  upload(engine: Engine, name: string, shape: readonly number[], opts: { dtype: DType; allowReshape?: boolean }): Promise<Tensor>;
}

export class ParamLoader {
  readonly params: Tensor[] = [];
  /** the same tensors by their full checkpoint names (for merging LoRAs into a loaded model) */
  readonly named = new Map<string, Tensor>();
  /** storage dtype of the parameters (and of the model's activations) */
  dtype: DType;
  constructor(
    readonly engine: Engine,
    private source: TensorSource,
    /** prefix prepended to every name, e.g. 'model.diffusion_model.' after key mapping, or '' */
    private prefix = '',
    /** default: f16 when the engine runs in f16, else f32 */
    dtype?: DType,
  ) {
    this.dtype = dtype ?? (engine.f16 ? 'f16' : 'f32');
  }

  async get(name: string, shape: readonly number[]): Promise<Tensor> {
    const t = await this.source.upload(this.engine, this.prefix + name, shape, { dtype: this.dtype });
    this.params.push(t);
    this.named.set(this.prefix + name, t);
    return t;
  }

  has(name: string): boolean {
    return this.source.has(this.prefix + name);
  }

  async maybe(name: string, shape: readonly number[]): Promise<Tensor | null> {
    return this.has(name) ? this.get(name, shape) : null;
  }

  /** Sub-loader sharing the parameter list. */
  scope(prefix: string): ParamLoader {
    const child = Object.create(ParamLoader.prototype) as ParamLoader;
    Object.assign(child, { engine: this.engine, source: this.source, prefix: this.prefix + prefix, params: this.params, named: this.named, dtype: this.dtype });
    return child;
  }

  bytes(): number {
    return this.params.reduce((s, t) => s + t.byteLength, 0);
  }
}

export interface Conv2dConfig {
  kernel?: number;
  stride?: number;
  padding?: number | [number, number, number, number];
  bias?: boolean;
}

export class Conv2d {
  private constructor(
    readonly weight: Tensor,
    readonly bias: Tensor | null,
    readonly stride: number,
    readonly padding: number | [number, number, number, number],
  ) {}

  static async load(L: ParamLoader, name: string, cin: number, cout: number, cfg: Conv2dConfig = {}): Promise<Conv2d> {
    const k = cfg.kernel ?? 3;
    const w = await L.get(`${name}.weight`, [cout, cin, k, k]);
    const b = cfg.bias === false ? null : await L.get(`${name}.bias`, [cout]);
    return new Conv2d(w, b, cfg.stride ?? 1, cfg.padding ?? (k - 1) / 2);
  }

  /** `residual` (the output's shape) is added in the GEMM's epilogue: no separate add dispatch. */
  forward(x: Tensor, residual?: Tensor): Tensor {
    return ops.conv2d(x, this.weight, this.bias ?? undefined, { stride: this.stride, padding: this.padding, residual });
  }
}

export class Linear {
  private constructor(readonly weight: Tensor, readonly bias: Tensor | null) {}

  static async load(L: ParamLoader, name: string, fin: number, fout: number, bias = true): Promise<Linear> {
    const w = await L.get(`${name}.weight`, [fout, fin]);
    const b = bias ? await L.get(`${name}.bias`, [fout]) : null;
    return new Linear(w, b);
  }

  /** act(x W^T + b) + residual, all in the GEMM's epilogue. */
  forward(x: Tensor, activation?: ops.LinearActivation, residual?: Tensor): Tensor {
    return ops.linear(x, this.weight, this.bias ?? undefined, activation || residual ? { activation, residual } : undefined);
  }

  /** The same product as a 1x1 conv2d on an NCHW map (the weight viewed as [out, in, 1, 1]), so a
   * token-space projection can run in image space and take an NCHW residual in its epilogue. */
  forwardNchw(x: Tensor, residual?: Tensor): Tensor {
    const [fout, fin] = this.weight.shape;
    return ops.conv2d(x, this.weight.reshape([fout, fin, 1, 1]), this.bias ?? undefined, { residual });
  }
}

export class GroupNorm {
  private constructor(readonly gamma: Tensor, readonly beta: Tensor, readonly groups: number, readonly eps: number) {}

  static async load(L: ParamLoader, name: string, channels: number, groups: number, eps: number): Promise<GroupNorm> {
    if (channels % groups !== 0) throw new Error(`${name}: ${channels} channels are not divisible into ${groups} groups`);
    return new GroupNorm(await L.get(`${name}.weight`, [channels]), await L.get(`${name}.bias`, [channels]), groups, eps);
  }

  forward(x: Tensor, silu = false): Tensor {
    return ops.groupNorm(x, this.gamma, this.beta, { groups: this.groups, eps: this.eps, silu });
  }

  /** GroupNorm followed by SiLU (one fused kernel) as a step of sequential(). */
  get thenSilu(): Step {
    return (x) => this.forward(x, true);
  }
}

export class LayerNorm {
  private constructor(readonly gamma: Tensor, readonly beta: Tensor, readonly eps: number) {}

  static async load(L: ParamLoader, name: string, dim: number, eps: number): Promise<LayerNorm> {
    return new LayerNorm(await L.get(`${name}.weight`, [dim]), await L.get(`${name}.bias`, [dim]), eps);
  }

  forward(x: Tensor): Tensor {
    return ops.layerNorm(x, this.gamma, this.beta, { eps: this.eps });
  }
}

/** A layer step: a module's forward or a function of one tensor. */
export type Step = ((x: Tensor) => Tensor) | { forward(x: Tensor): Tensor };

/**
 * PyTorch's nn.Sequential: applies the steps in order. Each step runs in its own scope (what it makes
 * besides its output is freed when it returns) and each intermediate is freed as soon as the next
 * step has consumed it, so a long chain holds two activations at a time, not all of them. x itself
 * is the caller's and stays alive.
 */
export function sequential(x: Tensor, ...steps: Step[]): Tensor {
  let h = x;
  for (const step of steps) {
    const prev = h;
    let ok = false;
    try {
      h = x.engine.scope(() => (typeof step === 'function' ? step(prev) : step.forward(prev)));
      ok = true;
    } finally {
      // an intermediate dies once the next step has consumed it, or when that step failed
      if (prev !== x && (!ok || prev !== h)) prev.dispose();
    }
  }
  return h;
}
