// Batched matrix multiply and linear layers on the engine's one GEMM core (gemm.ts / gemm.wgsl.ts).
//
// Cost, for batch Z and an M x K by K x N product:
//   FLOPs = 2 Z M N K            (plus a few per output for bias / activation / residual)
//   bytes = elem * (|A| + |B| + Z M N [+ N bias] [+ Z M N residual])  (each operand read once from
//           DRAM in the ideal case; the kernel re-reads tiles from cache, which the bench ignores)
import type { Engine } from '../runtime/engine.js';
import type { KernelSource } from '../runtime/pipeline_cache.js';
import { DTYPE_BYTES, numel, shapeStr, type DType, type Tensor } from '../runtime/tensor.js';
import { engineOf, fail, floatDtype } from './check.js';
import { ACTIVATION_FLOPS, countCost, isActivation, isCpuAdapter, type Activation, type Cost } from './kit.js';
import { gemm, tileFits, GEMM_TILES, type GemmTileName } from './gemm.js';
import { geglu } from './elementwise.js';
import type { GemmDims } from './tune_cache.js';

export type { Activation };

export interface MatmulOptions {
  transposeA?: boolean;
  transposeB?: boolean;
}

export interface LinearOptions {
  activation?: Activation;
  /** added after the activation: y = act(x W^T + b) + residual; must have the output's shape */
  residual?: Tensor;
}

export { gemm, GEMM_TILES, type GemmArgs, type GemmTileName } from './gemm.js';

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

interface MatmulPlan extends GemmDims {
  outShape: number[];
}

function planMatmul(op: string, a: Tensor, b: Tensor, opts: MatmulOptions): MatmulPlan {
  if (a.rank < 2 || b.rank < 2) fail(op, 'both operands need rank >= 2', [a, b]);
  const tA = !!opts.transposeA;
  const tB = !!opts.transposeB;
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const M = tA ? ac : ar;
  const K = tA ? ar : ac;
  const Kb = tB ? bc : br;
  const N = tB ? br : bc;
  if (K !== Kb) {
    fail(op, `inner dimensions differ: ${K} vs ${Kb} (transposeA ${tA}, transposeB ${tB})`, [a, b]);
  }
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  if (batchA.length && batchB.length && !sameShape(batchA, batchB)) {
    fail(op, `batch dimensions ${shapeStr(batchA)} and ${shapeStr(batchB)} differ (they must match, or one operand must have rank 2)`, [a, b]);
  }
  const batchShape = batchA.length ? batchA : batchB;
  const batch = numel(batchShape);
  return {
    M,
    N,
    K,
    batch,
    strideA: batchA.length ? M * K : 0,
    strideB: batchB.length ? K * N : 0,
    outShape: [...batchShape, M, N],
  };
}

/**
 * Batched matrix product: a [..., M, K] times b [..., K, N] -> [..., M, N]. The batch dimensions
 * must be equal, or one operand may be a plain matrix (rank 2) shared by every batch item.
 * transposeA / transposeB swap the last two dimensions of that operand.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const op = 'matmul';
  const engine = engineOf(op, a, b);
  const dtype = floatDtype(op, a, b);
  const plan = planMatmul(op, a, b, opts);
  const out = engine.empty(plan.outShape, dtype, op);
  let { M, batch, strideA } = plan;
  // A batched A against one shared B is a single taller GEMM: fewer, fuller workgroups.
  if (plan.strideB === 0 && !opts.transposeA && batch > 1) {
    M *= batch;
    batch = 1;
    strideA = 0;
  }
  gemm(engine, {
    op,
    a,
    b,
    out,
    M,
    N: plan.N,
    K: plan.K,
    batch,
    strideA,
    strideB: plan.strideB,
    transA: !!opts.transposeA,
    transB: !!opts.transposeB,
    activation: 'none',
  });
  countCost(engine, op, () => matmulCost({ a: a.shape, b: b.shape, transposeA: opts.transposeA, transposeB: opts.transposeB, dtype }));
  return out;
}

/**
 * PyTorch's nn.Linear with a fused epilogue: x [..., in], w [out, in], b [out] ->
 * act(x w^T + b) (+ residual), shape [..., out].
 */
export function linear(x: Tensor, w: Tensor, b?: Tensor | null, opts: LinearOptions = {}): Tensor {
  const op = 'linear';
  const residual = opts.residual ?? undefined;
  const engine = engineOf(op, x, w, b, residual);
  const dtype = floatDtype(op, x, w, b, residual);
  const all = [x, w, ...(b ? [b] : []), ...(residual ? [residual] : [])];
  if (x.rank < 1) fail(op, 'x must have rank >= 1', all);
  if (w.rank !== 2) fail(op, `weight must have rank 2 [out, in], got ${shapeStr(w.shape)}`, all);
  const K = x.shape[x.rank - 1];
  const [N, Kw] = w.shape;
  if (K !== Kw) fail(op, `x has ${K} input features but weight expects ${Kw}`, all);
  if (b && (b.rank !== 1 || b.shape[0] !== N)) fail(op, `bias must have shape [${N}], got ${shapeStr(b.shape)}`, all);
  const activation = opts.activation ?? 'none';
  if (!isActivation(activation)) fail(op, `unknown activation '${String(activation)}' (none, silu, gelu, quickGelu)`, all);
  const outShape = [...x.shape.slice(0, -1), N];
  if (residual && !sameShape(residual.shape, outShape)) {
    fail(op, `residual must have the output shape ${shapeStr(outShape)}, got ${shapeStr(residual.shape)}`, all);
  }
  const out = engine.empty(outShape, dtype, op);
  gemm(engine, {
    op,
    a: x,
    b: w,
    out,
    bias: b ?? undefined,
    residual,
    M: numel(x.shape.slice(0, -1)),
    N,
    K,
    batch: 1,
    strideA: 0,
    strideB: 0,
    transA: false,
    transB: true,
    activation,
  });
  countCost(engine, op, () => linearCost({ x: x.shape, w: w.shape, bias: !!b, residual: !!residual, activation, dtype }));
  return out;
}

/** The subgroup tile that runs linearGeglu fused on this engine, or null (then it runs unfused). */
export function gegluTile(engine: Engine, rows: number): GemmTileName | null {
  const pick: GemmTileName = rows <= 8 ? 'sg8' : 'sg16';
  return isCpuAdapter(engine) && tileFits(engine, GEMM_TILES[pick]) ? pick : null;
}

/** Whether linearGeglu runs fused on this engine (then the [..., 2D] projection is never allocated). */
export function gegluFused(engine: Engine): boolean {
  return gegluTile(engine, 16) !== null;
}

/**
 * diffusers' GEGLU feed-forward projection in one call: x [..., in], w [2D, in], b [2D] ->
 * [..., D] = h * gelu(g) with [h, g] = x w^T + b split in halves. On CPU adapters with 8-lane
 * subgroups this is one GEMM whose epilogue pairs column n with its gate column n + D (the
 * [..., 2D] projection is never stored); elsewhere it is linear() followed by ops.geglu.
 */
export function linearGeglu(x: Tensor, w: Tensor, b?: Tensor | null, opts: { tile?: GemmTileName | 'unfused' } = {}): Tensor {
  const op = 'linearGeglu';
  const engine = engineOf(op, x, w, b);
  const dtype = floatDtype(op, x, w, b);
  const all = [x, w, ...(b ? [b] : [])];
  if (x.rank < 1) fail(op, 'x must have rank >= 1', all);
  if (w.rank !== 2 || w.shape[0] % 2 !== 0) fail(op, `weight must have shape [2D, in], got ${shapeStr(w.shape)}`, all);
  const K = x.shape[x.rank - 1];
  const [N2, Kw] = w.shape;
  if (K !== Kw) fail(op, `x has ${K} input features but weight expects ${Kw}`, all);
  if (b && (b.rank !== 1 || b.shape[0] !== N2)) fail(op, `bias must have shape [${N2}], got ${shapeStr(b.shape)}`, all);
  const M = numel(x.shape.slice(0, -1));
  const tile = opts.tile === 'unfused' ? null : (opts.tile ?? gegluTile(engine, M));
  if (!tile) {
    const h = linear(x, w, b);
    try {
      return geglu(h);
    } finally {
      h.dispose();
    }
  }
  const out = engine.empty([...x.shape.slice(0, -1), N2 / 2], dtype, op);
  try {
    gemm(engine, { op, a: x, b: w, out, bias: b ?? undefined, M, N: N2 / 2, K, batch: 1, strideA: 0, strideB: 0, transA: false, transB: true, activation: 'none', geglu: true, tile });
    countCost(engine, op, () => linearGegluCost({ x: x.shape, w: w.shape, bias: !!b, dtype }));
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
}

/** FLOPs and ideal DRAM bytes of linearGeglu(x, w, b): the projection, the gate's GELU and product. */
export function linearGegluCost(args: { x: readonly number[]; w: readonly number[]; bias?: boolean; dtype?: DType }): Cost {
  const K = args.x[args.x.length - 1];
  const M = numel(args.x) / Math.max(K, 1);
  const N2 = args.w[0];
  const e = DTYPE_BYTES[args.dtype ?? 'f32'];
  const flops = 2 * M * N2 * K + M * N2 * (args.bias ? 1 : 0) + (M * N2 / 2) * (ACTIVATION_FLOPS.gelu + 1);
  return { flops, bytes: e * (numel(args.x) + numel(args.w) + (args.bias ? N2 : 0) + (M * N2) / 2) };
}

/** FLOPs and ideal DRAM bytes of matmul(a, b, opts) for the given shapes. */
export function matmulCost(args: { a: readonly number[]; b: readonly number[]; transposeA?: boolean; transposeB?: boolean; dtype?: DType }): Cost {
  const ta = args.transposeA ?? false;
  const tb = args.transposeB ?? false;
  const M = ta ? args.a[args.a.length - 1] : args.a[args.a.length - 2];
  const K = ta ? args.a[args.a.length - 2] : args.a[args.a.length - 1];
  const N = tb ? args.b[args.b.length - 2] : args.b[args.b.length - 1];
  const batch = Math.max(numel(args.a.slice(0, -2)), numel(args.b.slice(0, -2)));
  const e = DTYPE_BYTES[args.dtype ?? 'f32'];
  return { flops: 2 * batch * M * N * K, bytes: e * (numel(args.a) + numel(args.b) + batch * M * N) };
}

/** FLOPs and ideal DRAM bytes of linear(x, w, b?, opts). */
export function linearCost(args: { x: readonly number[]; w: readonly number[]; bias?: boolean; residual?: boolean; activation?: Activation; dtype?: DType }): Cost {
  const K = args.x[args.x.length - 1];
  const M = numel(args.x) / Math.max(K, 1);
  const N = args.w[0];
  const outs = M * N;
  const e = DTYPE_BYTES[args.dtype ?? 'f32'];
  const flops = 2 * outs * K + outs * ((args.bias ? 1 : 0) + (args.residual ? 1 : 0) + ACTIVATION_FLOPS[args.activation ?? 'none']);
  const bytes = e * (numel(args.x) + numel(args.w) + outs + (args.bias ? N : 0) + (args.residual ? outs : 0));
  return { flops, bytes };
}
