// ops.conv2d: NCHW convolution with PyTorch's weight layout, as an implicit GEMM on the engine's one
// GEMM core (gemm.ts): the weights are A [Cout/groups, Cin/groups*kH*kW], B is the im2col of x,
// gathered with zero padding by the core's im2col loader and never materialised, one batch item
// per group; bias (per output channel) and the residual are fused into the epilogue. Deep,
// low-resolution layers split K to fill the GPU (plus a small reduction pass).
//
// Cost (what the bench divides by time): with Kg = Cin/groups * kH * kW,
//   flops = 2 * N * Cout * Hout * Wout * Kg  (+ N*Cout*Hout*Wout for the bias, + the same for a residual)
//   bytes = (|x| + |w| + |bias| + |y| + |residual|) * bytes per element  (each tensor moved once; the
//           re-reads of x and w across tiles hit caches and are not counted)
import type { Tensor } from '../runtime/tensor.js';
import { DTYPE_BYTES, shapeStr, type DType } from '../runtime/tensor.js';
import { gemm, type GemmArgs, type GemmTileName } from './gemm.js';
import { engineOf, fail, floatDtype, rankIs } from './check.js';
import { countCost, type Cost } from './kit.js';

export interface Conv2dOptions {
  /** a number or [sh, sw] (default 1) */
  stride?: number | readonly [number, number];
  /** a number, [ph, pw], or [top, bottom, left, right] (default 0) */
  padding?: number | readonly [number, number] | readonly [number, number, number, number];
  /** a number or [dh, dw] (default 1) */
  dilation?: number | readonly [number, number];
  /** Cin and Cout must both be divisible by it (default 1; groups = Cin = Cout is depthwise) */
  groups?: number;
  /** a tensor of the output's shape added to the result (fused ResNet skip connection) */
  residual?: Tensor;
  /** @internal number of K slices (1 = no split-K); chosen from the problem shape when absent */
  splitK?: number;
  /** @internal force a GEMM tile (tests); otherwise the tuned or heuristic choice */
  tile?: GemmTileName;
}

interface Geometry {
  n: number;
  cin: number;
  h: number;
  w: number;
  cout: number;
  kh: number;
  kw: number;
  groups: number;
  sh: number;
  sw: number;
  dh: number;
  dw: number;
  pt: number;
  pb: number;
  pl: number;
  pr: number;
  hOut: number;
  wOut: number;
}

function pair(op: string, name: string, v: number | readonly number[] | undefined, dflt: number, min: number): [number, number] {
  const a = v === undefined ? [dflt, dflt] : typeof v === 'number' ? [v, v] : [...v];
  if (a.length !== 2 || !a.every((e) => Number.isInteger(e) && e >= min)) {
    throw new Error(`${op}: ${name} must be an integer >= ${min} or a pair of them, got ${JSON.stringify(v)}`);
  }
  return a as [number, number];
}

function padding4(op: string, v: Conv2dOptions['padding']): [number, number, number, number] {
  let a: number[];
  if (v === undefined) a = [0, 0, 0, 0];
  else if (typeof v === 'number') a = [v, v, v, v];
  else if (v.length === 2) a = [v[0], v[0], v[1], v[1]];
  else a = [...v];
  if (a.length !== 4 || !a.every((e) => Number.isInteger(e) && e >= 0)) {
    throw new Error(`${op}: padding must be an integer >= 0, [ph, pw] or [top, bottom, left, right], got ${JSON.stringify(v)}`);
  }
  return a as [number, number, number, number];
}

/** Validates the shapes and options (no tensors needed) and derives the output size. */
function geometry(op: string, xShape: readonly number[], wShape: readonly number[], opts: Conv2dOptions): Geometry {
  if (xShape.length !== 4) throw new Error(`${op}: input must have rank 4 (NCHW), got ${shapeStr(xShape)}`);
  if (wShape.length !== 4) throw new Error(`${op}: weight must have rank 4 [Cout, Cin/groups, kH, kW], got ${shapeStr(wShape)}`);
  const [n, cin, h, w] = xShape;
  const [cout, cinG, kh, kw] = wShape;
  const groups = opts.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1) throw new Error(`${op}: groups must be a positive integer, got ${groups}`);
  if (cin % groups !== 0 || cout % groups !== 0) {
    throw new Error(`${op}: groups=${groups} must divide Cin=${cin} and Cout=${cout} (input ${shapeStr(xShape)}, weight ${shapeStr(wShape)})`);
  }
  if (cinG * groups !== cin) {
    throw new Error(`${op}: weight ${shapeStr(wShape)} expects Cin/groups=${cinG}, but input ${shapeStr(xShape)} has Cin=${cin} with groups=${groups}`);
  }
  if (kh < 1 || kw < 1 || cout < 1) throw new Error(`${op}: empty weight ${shapeStr(wShape)}`);
  const [sh, sw] = pair(op, 'stride', opts.stride, 1, 1);
  const [dh, dw] = pair(op, 'dilation', opts.dilation, 1, 1);
  const [pt, pb, pl, pr] = padding4(op, opts.padding);
  const hOut = Math.floor((h + pt + pb - dh * (kh - 1) - 1) / sh) + 1;
  const wOut = Math.floor((w + pl + pr - dw * (kw - 1) - 1) / sw) + 1;
  if (!(hOut >= 1 && wOut >= 1) || n < 1) {
    throw new Error(
      `${op}: the output would be empty (input ${shapeStr(xShape)}, weight ${shapeStr(wShape)}, padding [${pt}, ${pb}, ${pl}, ${pr}], stride [${sh}, ${sw}], dilation [${dh}, ${dw}] give ${hOut}x${wOut})`,
    );
  }
  return { n, cin, h, w, cout, kh, kw, groups, sh, sw, dh, dw, pt, pb, pl, pr, hOut, wOut };
}

/** Output shape of conv2d for these input/weight shapes and options (throws on invalid ones). */
export function conv2dOutputShape(xShape: readonly number[], wShape: readonly number[], opts: Conv2dOptions = {}): [number, number, number, number] {
  const g = geometry('conv2d', xShape, wShape, opts);
  return [g.n, g.cout, g.hOut, g.wOut];
}

export interface Conv2dCostArgs extends Omit<Conv2dOptions, 'residual'> {
  x: readonly number[];
  w: readonly number[];
  bias?: boolean;
  residual?: boolean;
  dtype?: DType;
}

export function conv2dCost(a: Conv2dCostArgs): Cost {
  const g = geometry('conv2dCost', a.x, a.w, { stride: a.stride, padding: a.padding, dilation: a.dilation, groups: a.groups });
  const outs = g.n * g.cout * g.hOut * g.wOut;
  const kG = (g.cin / g.groups) * g.kh * g.kw;
  const flops = 2 * outs * kG + (a.bias ? outs : 0) + (a.residual ? outs : 0);
  const elems = g.n * g.cin * g.h * g.w + g.cout * kG + (a.bias ? g.cout : 0) + outs * (a.residual ? 2 : 1);
  return { flops, bytes: elems * DTYPE_BYTES[a.dtype ?? 'f32'] };
}

/**
 * y = conv2d(x, w) + b (+ residual). x [N, Cin, H, W], w [Cout, Cin/groups, kH, kW], b [Cout].
 * Output [N, Cout, Hout, Wout] with Hout = floor((H + pt + pb - dh*(kH-1) - 1) / sh) + 1.
 */
export function conv2d(x: Tensor, w: Tensor, b?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  const op = 'conv2d';
  const bias = b ?? undefined;
  const res = opts.residual;
  const all = [x, w, ...(bias ? [bias] : []), ...(res ? [res] : [])];
  const engine = engineOf(op, ...all);
  const dtype = floatDtype(op, ...all);
  rankIs(op, x, 4, 'input');
  rankIs(op, w, 4, 'weight');
  const g = geometry(op, x.shape, w.shape, opts);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== g.cout)) fail(op, `bias must have shape [${g.cout}]`, all);
  const outShape = [g.n, g.cout, g.hOut, g.wOut];
  if (res && shapeStr(res.shape) !== shapeStr(outShape)) fail(op, `residual must have the output shape ${shapeStr(outShape)}`, all);

  const cinG = g.cin / g.groups;
  const mG = g.cout / g.groups;
  const kG = cinG * g.kh * g.kw;
  const hwOut = g.hOut * g.wOut;
  const npix = g.n * hwOut;
  const pointwise = g.kh === 1 && g.kw === 1 && g.sh === 1 && g.sw === 1 && g.pt + g.pb + g.pl + g.pr === 0;
  const y = engine.empty(outShape, dtype, op);
  // Per group: Y[co, col] = W[co, k] X~[k, col] with the im2col X~ gathered by the GEMM's B loader.
  const args: GemmArgs = {
    op,
    a: w,
    b: x,
    out: y,
    bias,
    biasAxis: 'm',
    residual: res,
    M: mG,
    N: npix,
    K: kG,
    batch: g.groups,
    strideA: mG * kG,
    strideB: 0,
    transA: false,
    transB: false,
    activation: 'none',
    tile: opts.tile,
    splitK: opts.splitK ?? 'auto',
    im2col: {
      pointwise,
      h: g.h,
      w: g.w,
      cinG,
      inImg: g.cin * g.h * g.w,
      hwOut,
      wOut: g.wOut,
      outImg: g.cout * hwOut,
      kw: g.kw,
      khw: g.kh * g.kw,
      sh: g.sh,
      sw: g.sw,
      dh: g.dh,
      dw: g.dw,
      pt: g.pt,
      pl: g.pl,
    },
  };
  try {
    gemm(engine, args);
  } catch (e) {
    y.dispose();
    throw e;
  }
  countCost(engine, op, () => conv2dCost({ x: x.shape, w: w.shape, ...opts, bias: !!bias, residual: !!res, dtype } as Conv2dCostArgs));
  return y;
}
