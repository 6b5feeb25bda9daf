import type { Engine } from './engine.js';
import type { PooledBuffer } from './buffer_pool.js';
import type { Scope } from './scope.js';

import { DTYPE_BYTES, type DType } from './dtype.js';

export { DTYPE_BYTES, type DType };

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** A GPU tensor: NCHW, row-major, owning one pooled buffer until disposed. */
export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly engine: Engine;
  private buf: PooledBuffer | null;
  /** @internal the scope that disposes this tensor when it closes (null: the caller owns it) */
  owner: Scope | null = null;
  /** @internal lets scopes recognise tensors without importing this class */
  readonly isTensor = true;

  /** @internal use engine.tensor() / engine.empty() */
  constructor(engine: Engine, buf: PooledBuffer, shape: readonly number[], dtype: DType) {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new Error(`Tensor: invalid shape ${shapeStr(shape)}`);
    }
    this.engine = engine;
    this.buf = buf;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    const stack = engine.scopeStack;
    if (stack.length) stack[stack.length - 1].adopt(this);
  }

  get size(): number {
    return numel(this.shape);
  }
  get byteLength(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }
  get rank(): number {
    return this.shape.length;
  }
  get disposed(): boolean {
    return this.buf === null;
  }

  /** @internal the pooled buffer; throws when disposed. */
  pooled(op = 'Tensor'): PooledBuffer {
    if (!this.buf) throw new Error(`${op}: tensor ${shapeStr(this.shape)} ${this.dtype} was used after dispose()`);
    return this.buf;
  }
  /** @internal */
  get buffer(): GPUBuffer {
    return this.pooled().buffer;
  }

  /** Waits for pending GPU work and returns the values (f16 is widened to f32). */
  read(): Promise<Float32Array | Int32Array> {
    return this.engine.readTensor(this);
  }

  /** Like read(), typed for float tensors. */
  async readFloat(): Promise<Float32Array> {
    const r = await this.read();
    if (!(r instanceof Float32Array)) throw new Error(`readFloat: tensor is ${this.dtype}`);
    return r;
  }

  /** A view with another shape of the same size sharing this tensor's buffer (no copy). Both must
   * be disposed; the buffer returns to the pool when the last one is. */
  reshape(shape: readonly number[]): Tensor {
    const pb = this.pooled('reshape');
    if (numel(shape) !== this.size) {
      throw new Error(`reshape: cannot reshape ${shapeStr(this.shape)} to ${shapeStr(shape)}`);
    }
    pb.refs++;
    return new Tensor(this.engine, pb, shape, this.dtype);
  }

  /** @internal Takes over `other`'s buffer and dtype (other is left disposed), so every holder of
   * this object sees the new storage: how a model's weights are upcast in place. */
  adopt(other: Tensor): void {
    if (other.engine !== this.engine || numel(other.shape) !== this.size) throw new Error('Tensor.adopt: another engine or size');
    const buf = other.pooled('adopt');
    other.buf = null;
    this.dispose();
    this.buf = buf;
    (this as { dtype: DType }).dtype = other.dtype;
  }

  dispose(): void {
    if (!this.buf) return;
    this.engine.releaseBuffer(this.buf);
    this.buf = null;
  }
}
