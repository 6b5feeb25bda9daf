// GroupNorm and LayerNorm (+ optional fused SiLU), statistics in f32.
// Cost per element: ~8 FLOPs (sum, deviation, square-add, normalise, affine) + 4 for SiLU.
// Bytes: read x once and write y once (groups longer than CHUNK elements read x twice), plus
// gamma and beta.
import type { Tensor } from '../runtime/tensor.js';
import { DTYPE_BYTES, numel, shapeStr, type DType } from '../runtime/tensor.js';
import { engineOf, fail, floatDtype, grid1d } from './check.js';
import { ACTIVATION_FLOPS, countCost, isCpuAdapter, type Cost } from './kit.js';
import {
  NORM_VALUES_PER_THREAD, normApplyVec4Wgsl, normApplyWgsl, normRowsVec4Wgsl, normRowsWgsl, normStatsVec4Wgsl, normStatsWgsl,
} from './norm.wgsl.js';

const SRC = {
  1: {
    rows: { name: 'norm_rows', wgsl: normRowsWgsl },
    stats: { name: 'norm_stats', wgsl: normStatsWgsl },
    apply: { name: 'norm_apply', wgsl: normApplyWgsl },
  },
  4: {
    rows: { name: 'norm_rows_vec4', wgsl: normRowsVec4Wgsl },
    stats: { name: 'norm_stats_vec4', wgsl: normStatsVec4Wgsl },
    apply: { name: 'norm_apply_vec4', wgsl: normApplyVec4Wgsl },
  },
};

/** Elements one workgroup handles in the split path (256 threads x the values each caches). */
const CHUNK = 256 * NORM_VALUES_PER_THREAD;

export interface GroupNormOptions {
  groups: number;
  eps?: number;
  silu?: boolean;
  /** @internal spread long groups over several workgroups (two passes); default: not on CPU adapters */
  split?: boolean;
}

export interface LayerNormOptions {
  eps?: number;
}

interface RowsArgs {
  op: string;
  x: Tensor;
  gamma: Tensor | null;
  beta: Tensor | null;
  rows: number;
  len: number;
  groups: number;
  cpg: number;
  spatial: number;
  eps: number;
  silu: boolean;
  /** allow splitting rows longer than CHUNK over several workgroups (GroupNorm) */
  split: boolean;
}

function normRows(a: RowsArgs): Tensor {
  const { op, x, rows, len } = a;
  const engine = x.engine;
  const y = engine.empty(x.shape, x.dtype, op);
  if (rows === 0 || len === 0) return y;
  // Non-affine kernels still need something bound at gamma/beta; x is never read there.
  const gamma = a.gamma ?? x;
  const beta = a.beta ?? x;
  const constants = { AFFINE: a.gamma ? 1 : 0, SILU: a.silu ? 1 : 0 };
  const uniforms = { rows, len, groups: a.groups, cpg: a.cpg, spatial: a.spatial, chunks: 1, eps: a.eps };
  // vec4 loads/stores when rows split into 4-vectors that lie in one channel or span 4 channels
  const v = len % 4 === 0 && (a.spatial === 1 || a.spatial % 4 === 0) ? 4 : 1;
  const src = SRC[v];
  if (a.split && len > CHUNK) {
    // Few long rows would leave most of the GPU idle with one workgroup per row: spread each row
    // over ceil(len / CHUNK) workgroups and combine their partial statistics.
    const chunks = Math.ceil(len / CHUNK);
    const stats = engine.empty([rows * chunks * 2], 'f32', op);
    const [gx, gy] = grid1d(engine, rows * chunks);
    const u = { ...uniforms, chunks };
    engine.dispatch(src.stats, { bindings: { x, gamma, beta, stats }, uniforms: u, workgroups: [gx, gy], constants, dtype: x.dtype });
    engine.dispatch(src.apply, { bindings: { x, gamma, beta, stats, y }, uniforms: u, workgroups: [gx, gy], constants, dtype: x.dtype });
    stats.dispose();
    return y;
  }
  // Threads per row: about 4 scalars or 2 vec4s per thread, at most 256; short rows share a
  // workgroup (tiny GroupNorm groups get a thread each rather than idling most of a warp).
  let tpr = 1;
  while (tpr < 256 && tpr * (v === 4 ? 8 : 4) < len) tpr *= 2;
  const [gx, gy] = grid1d(engine, Math.ceil(rows / (256 / tpr)));
  engine.dispatch(src.rows, {
    bindings: { x, gamma, beta, y },
    uniforms,
    workgroups: [gx, gy],
    constants: { ...constants, TPR: tpr },
    dtype: x.dtype,
  });
  return y;
}

function checkAffine(op: string, x: Tensor, gamma: Tensor | null | undefined, beta: Tensor | null | undefined, c: number): void {
  if (!gamma !== !beta) fail(op, 'gamma and beta must both be given or both be null', [x, ...(gamma ? [gamma] : []), ...(beta ? [beta] : [])]);
  for (const [name, t] of [['gamma', gamma], ['beta', beta]] as const) {
    if (t && (t.rank !== 1 || t.shape[0] !== c)) fail(op, `${name} must have shape [${c}], got ${shapeStr(t.shape)}`, [x, t]);
  }
}

function checkEps(op: string, eps: number): void {
  if (!Number.isFinite(eps) || eps < 0) throw new Error(`${op}: eps must be a finite number >= 0, got ${eps}`);
}

/** torch.nn.GroupNorm over x [N, C, ...spatial] (biased variance per sample and group), then SiLU if asked. */
export function groupNorm(x: Tensor, gamma: Tensor | null, beta: Tensor | null, opts: GroupNormOptions): Tensor {
  const op = opts?.silu ? 'groupNorm+silu' : 'groupNorm';
  engineOf(op, x, gamma, beta);
  floatDtype(op, x, gamma, beta);
  if (x.rank < 2) fail(op, 'input must be [N, C, ...spatial] (rank >= 2)', [x]);
  const [n, c] = x.shape;
  const groups = opts?.groups;
  if (!Number.isInteger(groups) || groups < 1 || c % groups !== 0) {
    fail(op, `groups (${groups}) must be a positive integer dividing the channel count ${c}`, [x]);
  }
  checkAffine(op, x, gamma, beta, c);
  const eps = opts.eps ?? 1e-5;
  checkEps(op, eps);
  const spatial = numel(x.shape.slice(2));
  const cpg = c / groups;
  countCost(x.engine, op, () => groupNormCost({ shape: x.shape, groups, dtype: x.dtype, silu: !!opts.silu, affine: !!gamma }));
  return normRows({ op, x, gamma, beta, rows: n * groups, len: cpg * spatial, groups, cpg, spatial, eps, silu: !!opts.silu, split: opts.split ?? !isCpuAdapter(x.engine) });
}

/** torch.nn.LayerNorm over the last dimension (biased variance). */
export function layerNorm(x: Tensor, gamma: Tensor | null, beta: Tensor | null, opts: LayerNormOptions = {}): Tensor {
  const op = 'layerNorm';
  engineOf(op, x, gamma, beta);
  floatDtype(op, x, gamma, beta);
  if (x.rank < 1) fail(op, 'input must have rank >= 1', [x]);
  const d = x.shape[x.rank - 1];
  checkAffine(op, x, gamma, beta, d);
  const eps = opts.eps ?? 1e-5;
  checkEps(op, eps);
  const rows = d === 0 ? 0 : x.size / d;
  countCost(x.engine, op, () => layerNormCost({ shape: x.shape, dtype: x.dtype, affine: !!gamma }));
  return normRows({ op, x, gamma, beta, rows, len: d, groups: 1, cpg: 0, spatial: 1, eps, silu: false, split: false });
}

/** FLOPs and bytes moved by groupNorm on a tensor of this shape. */
export function groupNormCost(args: { shape: readonly number[]; groups: number; dtype?: DType; silu?: boolean; affine?: boolean }): Cost {
  const e = numel(args.shape);
  const b = DTYPE_BYTES[args.dtype ?? 'f32'];
  const c = args.shape[1] ?? 1;
  const len = e / Math.max(1, (args.shape[0] ?? 1) * args.groups);
  const reads = len > CHUNK ? 2 : 1;
  return {
    flops: e * (8 + (args.silu ? ACTIVATION_FLOPS.silu : 0)),
    bytes: e * b * (reads + 1) + (args.affine === false ? 0 : 2 * c * b),
  };
}

/** FLOPs and bytes moved by layerNorm on a tensor of this shape. */
export function layerNormCost(args: { shape: readonly number[]; dtype?: DType; affine?: boolean }): Cost {
  const e = numel(args.shape);
  const b = DTYPE_BYTES[args.dtype ?? 'f32'];
  const d = args.shape[args.shape.length - 1] ?? 1;
  return { flops: e * 8, bytes: 2 * e * b + (args.affine === false ? 0 : 2 * d * b) };
}
