// Layout ops: concat, slice, nearest 2x upsampling, NCHW <-> token transposes. No arithmetic
// (0 FLOPs); bytes = every element read once and written once (upsampling writes 4 per read).
import type { Tensor } from '../runtime/tensor.js';
import { DTYPE_BYTES, numel, type DType } from '../runtime/tensor.js';
import type { Engine } from '../runtime/engine.js';
import { engineOf, fail, floatDtype, grid1d, rankIs } from './check.js';
import { flatWorkgroups, type Cost } from './kit.js';
import { blockCopyWgsl, transposeWgsl, upsampleNearest2xWgsl } from './layout.wgsl.js';

const copySrc = { name: 'block_copy', wgsl: blockCopyWgsl };
const upSrc = { name: 'upsample_nearest2x', wgsl: upsampleNearest2xWgsl };
const transposeSrc = { name: 'transpose', wgsl: transposeWgsl };

function normAxis(op: string, axis: number, rank: number, ts: Tensor[]): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) fail(op, `axis ${axis} is out of range for rank ${rank}`, ts);
  return axis < 0 ? axis + rank : axis;
}

function blockCopy(engine: Engine, src: Tensor, dst: Tensor, outer: number, inner: number, srcStride: number, srcOff: number, dstStride: number, dstOff: number): void {
  const n = outer * inner;
  if (n === 0) return;
  engine.dispatch(copySrc, { bindings: { src, dst }, uniforms: { n, inner, srcStride, srcOff, dstStride, dstOff }, workgroups: flatWorkgroups(engine, n) });
}

/** torch.cat(tensors, axis): all dims but `axis` must agree. */
export function concat(tensors: readonly Tensor[], axis: number): Tensor {
  const op = 'concat';
  if (!Array.isArray(tensors) || tensors.length < 2) throw new Error(`concat: needs at least 2 tensors, got ${Array.isArray(tensors) ? tensors.length : typeof tensors}`);
  const ts = [...tensors];
  const engine = engineOf(op, ...ts);
  const dtype = floatDtype(op, ...ts);
  const rank = ts[0].rank;
  const ax = normAxis(op, axis, rank, ts);
  for (const t of ts) {
    if (t.rank !== rank || t.shape.some((d: number, i: number) => i !== ax && d !== ts[0].shape[i])) {
      fail(op, `shapes must match except along axis ${ax}`, ts);
    }
  }
  const outShape = [...ts[0].shape];
  outShape[ax] = ts.reduce((s, t) => s + t.shape[ax], 0);
  const y = engine.empty(outShape, dtype, op);
  const outer = numel(outShape.slice(0, ax));
  const post = numel(outShape.slice(ax + 1));
  const outInner = outShape[ax] * post;
  let off = 0;
  for (const t of ts) {
    const inner = t.shape[ax] * post;
    blockCopy(engine, t, y, outer, inner, inner, 0, outInner, off);
    off += inner;
  }
  return y;
}

/** x[..., start:end, ...] along `axis`, as a new tensor. Negative axis counts from the end. */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const op = 'slice';
  const engine = engineOf(op, x);
  const dtype = floatDtype(op, x);
  const ax = normAxis(op, axis, x.rank, [x]);
  const dim = x.shape[ax];
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > dim || start > end) {
    fail(op, `range [${start}, ${end}) is not within [0, ${dim}] along axis ${ax}`, [x]);
  }
  const outShape = [...x.shape];
  outShape[ax] = end - start;
  const y = engine.empty(outShape, dtype, op);
  const outer = numel(x.shape.slice(0, ax));
  const post = numel(x.shape.slice(ax + 1));
  const inner = (end - start) * post;
  blockCopy(engine, x, y, outer, inner, dim * post, start * post, inner, 0);
  return y;
}

/** F.interpolate(x, scale_factor=2, mode='nearest') for x [N, C, H, W]. */
export function upsampleNearest2x(x: Tensor): Tensor {
  const op = 'upsampleNearest2x';
  const engine = engineOf(op, x);
  const dtype = floatDtype(op, x);
  rankIs(op, x, 4, 'input [N, C, H, W]');
  const [n, c, h, w] = x.shape;
  const y = engine.empty([n, c, 2 * h, 2 * w], dtype, op);
  const threads = n * c * 2 * h * w;
  if (threads === 0) return y;
  engine.dispatch(upSrc, { bindings: { x, y }, uniforms: { n: threads, h, w }, workgroups: flatWorkgroups(engine, threads) });
  return y;
}

/** [B, R, C] -> [B, C, R] */
function transpose(op: string, engine: Engine, x: Tensor, b: number, rows: number, cols: number, outShape: number[]): Tensor {
  const y = engine.empty(outShape, x.dtype, op);
  if (y.size === 0) return y;
  const tilesX = Math.ceil(cols / 32);
  const tiles = tilesX * Math.ceil(rows / 32);
  const [gx, gy] = grid1d(engine, tiles);
  engine.dispatch(transposeSrc, { bindings: { x, y }, uniforms: { rows, cols, tilesX, tiles }, workgroups: [gx, gy, b] });
  return y;
}

/** [B, C, H, W] -> [B, H*W, C] (the token layout of attention and transformer blocks) */
export function nchwToTokens(x: Tensor): Tensor {
  const op = 'nchwToTokens';
  const engine = engineOf(op, x);
  floatDtype(op, x);
  rankIs(op, x, 4, 'input [B, C, H, W]');
  const [b, c, h, w] = x.shape;
  return transpose(op, engine, x, b, c, h * w, [b, h * w, c]);
}

/** [B, H*W, C] -> [B, C, H, W], the inverse of nchwToTokens */
export function tokensToNchw(x: Tensor, h: number, w: number): Tensor {
  const op = 'tokensToNchw';
  const engine = engineOf(op, x);
  floatDtype(op, x);
  rankIs(op, x, 3, 'input [B, H*W, C]');
  const [b, l, c] = x.shape;
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 0 || w < 0 || h * w !== l) fail(op, `h * w = ${h} * ${w} does not equal the token count ${l}`, [x]);
  return transpose(op, engine, x, b, l, c, [b, c, h, w]);
}

const bytesOf = (n: number, dtype?: DType) => n * DTYPE_BYTES[dtype ?? 'f32'];

/** Cost of concat of tensors with these shapes. */
export function concatCost(args: { shapes: readonly (readonly number[])[]; dtype?: DType }): Cost {
  const n = args.shapes.reduce((s, sh) => s + numel(sh), 0);
  return { flops: 0, bytes: bytesOf(2 * n, args.dtype) };
}

/** Cost of slice producing a tensor of shape `out`. */
export function sliceCost(args: { out: readonly number[]; dtype?: DType }): Cost {
  return { flops: 0, bytes: bytesOf(2 * numel(args.out), args.dtype) };
}

/** Cost of upsampleNearest2x on an input of this shape. */
export function upsampleNearest2xCost(args: { shape: readonly number[]; dtype?: DType }): Cost {
  return { flops: 0, bytes: bytesOf(5 * numel(args.shape), args.dtype) };
}

/** Cost of nchwToTokens / tokensToNchw on a tensor of this shape. */
export function transposeCost(args: { shape: readonly number[]; dtype?: DType }): Cost {
  return { flops: 0, bytes: bytesOf(2 * numel(args.shape), args.dtype) };
}
export const nchwToTokensCost = transposeCost;
export const tokensToNchwCost = transposeCost;
