import type { Tensor } from '../runtime/tensor.js';
import type { DType } from '../runtime/dtype.js';
import { softmaxWgsl } from './softmax.wgsl.js';
import { engineOf, fail, floatDtype, grid1d } from './check.js';
import { countCost, type Cost } from './kit.js';

const src = { name: 'softmax', wgsl: softmaxWgsl };

export interface SoftmaxOptions {
  /** multiplies x before the softmax (default 1) */
  scale?: number;
  /** x is [..., Lq, Lk] scores: keep key j of query i only for j <= i (masked entries become 0) */
  causal?: boolean;
}

/** softmax(scale * x) over the last axis, max and sum in f32. */
export function softmax(x: Tensor, opts: SoftmaxOptions = {}): Tensor {
  const op = 'softmax';
  const engine = engineOf(op, x);
  const dtype = floatDtype(op, x);
  if (x.rank < 1) fail(op, 'needs at least one axis', [x]);
  const scale = opts.scale ?? 1;
  if (!Number.isFinite(scale)) fail(op, `scale must be a finite number, got ${scale}`, [x]);
  const len = x.shape[x.rank - 1];
  const causal = opts.causal ?? false;
  if (causal && x.rank < 2) fail(op, 'causal needs [..., Lq, Lk] scores', [x]);
  const lq = causal ? x.shape[x.rank - 2] : 1;
  const y = engine.empty(x.shape, dtype, op);
  const rows = len === 0 ? 0 : x.size / len;
  if (rows === 0) return y;
  const [gx, gy] = grid1d(engine, rows);
  engine.dispatch(src, {
    bindings: { x, y },
    uniforms: { rows, len, lq, causal: causal ? 1 : 0, gx, scale },
    workgroups: [gx, gy],
  });
  countCost(engine, op, () => softmaxCost({ shape: x.shape, dtype }));
  return y;
}

export function softmaxCost(args: { shape: readonly number[]; dtype?: DType }): Cost {
  const n = args.shape.reduce((a, b) => a * b, 1);
  const el = args.dtype === 'f16' ? 2 : 4;
  return { flops: 5 * n, bytes: 2 * n * el };
}
