// Elementwise ops: add / sub / mul with NumPy broadcasting, GEGLU, clamp and f32 <-> f16 casts.
// Cost: binary ops 1 FLOP per output, reading a and b (broadcast operands once) and writing the
// output; GEGLU ~20 FLOPs per output (erf polynomial + exp), reads 2 and writes 1 value per output;
// clamp 2 FLOPs, cast 0, each reading and writing one value per element.
// Binary ops and GEGLU use vec4 loads/stores when the innermost dimension is a multiple of 4.
import type { Tensor } from '../runtime/tensor.js';
import type { KernelSource } from '../runtime/pipeline_cache.js';
import { DTYPE_BYTES, numel, shapeStr, type DType } from '../runtime/tensor.js';
import { engineOf, fail, floatDtype } from './check.js';
import { ACTIVATION_FLOPS, cachedSource, countCost, flatWorkgroups, type Cost } from './kit.js';
import { binaryWgsl, binaryVec4Wgsl, castFromWgsl, castToWgsl, clampWgsl, gegluVec4Wgsl, gegluWgsl } from './elementwise.wgsl.js';

const binarySrc = { name: 'binary', wgsl: binaryWgsl };
function vec4Src(aVec: boolean, bVec: boolean): KernelSource {
  return cachedSource(`binary_vec4_${aVec ? 'v' : 's'}${bVec ? 'v' : 's'}`, () => binaryVec4Wgsl(aVec, bVec));
}
const gegluSrc = { name: 'geglu', wgsl: gegluWgsl };
const gegluVec4Src = { name: 'geglu_vec4', wgsl: gegluVec4Wgsl };
const clampSrc = { name: 'clamp', wgsl: clampWgsl };
const castToSrc = { name: 'cast_f32_to_f16', wgsl: castToWgsl };
const castFromSrc = { name: 'cast_f16_to_f32', wgsl: castFromWgsl };

const MAX_DIMS = 8;
const BINARY_OPS = { add: 0, sub: 1, mul: 2 } as const;

/** The broadcast result shape of two shapes (trailing alignment), or null if incompatible. */
export function broadcastShape(a: readonly number[], b: readonly number[]): number[] | null {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) return null;
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Contiguous strides of `shape` read as broadcast into `out` (0 where it is broadcast). */
function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const strides = new Array<number>(out.length).fill(0);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const j = out.length - shape.length + i;
    strides[j] = shape[i] === 1 && out[j] !== 1 ? 0 : s;
    s *= shape[i];
  }
  return strides;
}

/**
 * Drops size-1 dimensions and merges neighbours that both operands traverse contiguously (or both
 * skip), innermost first. [N,C,H,W] + [C,1,1] becomes sizes [HW, C, N] with b strides [0, 1, 0].
 */
function coalesce(out: readonly number[], sa: number[], sb: number[]): { sizes: number[]; sa: number[]; sb: number[] } {
  const sizes: number[] = [];
  const ra: number[] = [];
  const rb: number[] = [];
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] === 1) continue;
    const k = sizes.length - 1;
    if (k >= 0 && sa[i] === ra[k] * sizes[k] && sb[i] === rb[k] * sizes[k]) {
      sizes[k] *= out[i];
    } else {
      sizes.push(out[i]);
      ra.push(sa[i]);
      rb.push(sb[i]);
    }
  }
  if (!sizes.length) return { sizes: [1], sa: [0], sb: [0] };
  return { sizes, sa: ra, sb: rb };
}

const vec4s = (v: number[], pad: number): [number[], number[]] => {
  const p = [...v, ...new Array<number>(MAX_DIMS - v.length).fill(pad)];
  return [p.slice(0, 4), p.slice(4, 8)];
};

function binary(op: keyof typeof BINARY_OPS, a: Tensor, b: Tensor): Tensor {
  const engine = engineOf(op, a, b);
  const dtype = floatDtype(op, a, b);
  const out = broadcastShape(a.shape, b.shape);
  if (!out) fail(op, `shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} cannot be broadcast together`, [a, b]);
  const y = engine.empty(out, dtype, op);
  const n = numel(out);
  if (n === 0) return y;
  const c = coalesce(out, broadcastStrides(a.shape, out), broadcastStrides(b.shape, out));
  if (c.sizes.length > MAX_DIMS) fail(op, `broadcast needs ${c.sizes.length} dimensions after merging; at most ${MAX_DIMS} are supported`, [a, b]);
  const [shape0, shape1] = vec4s(c.sizes, 1);
  const [sa0, sa1] = vec4s(c.sa, 0);
  const [sb0, sb1] = vec4s(c.sb, 0);
  const uniforms = { n, rank: c.sizes.length, shape0, shape1, sa0, sa1, sb0, sb1 };
  const constants = { OP: BINARY_OPS[op] };
  // Four outputs per thread (vector loads/stores) when they share the innermost dimension and each
  // operand is either contiguous or constant along it; operands constant everywhere stay scalar.
  if (c.sizes[0] % 4 === 0 && c.sa[0] <= 1 && c.sb[0] <= 1 && (c.sa[0] === 1 || c.sb[0] === 1)) {
    const src = vec4Src(c.sa[0] === 1, c.sb[0] === 1);
    engine.dispatch(src, { bindings: { a, b, y }, uniforms, workgroups: flatWorkgroups(engine, n / 4), constants });
  } else {
    engine.dispatch(binarySrc, { bindings: { a, b, y }, uniforms, workgroups: flatWorkgroups(engine, n), constants });
  }
  countCost(engine, op, () => binaryCost({ a: a.shape, b: b.shape, dtype }));
  return y;
}

/** a + b with NumPy/PyTorch broadcasting */
export const add = (a: Tensor, b: Tensor): Tensor => binary('add', a, b);
/** a - b with NumPy/PyTorch broadcasting */
export const sub = (a: Tensor, b: Tensor): Tensor => binary('sub', a, b);
/** a * b with NumPy/PyTorch broadcasting */
export const mul = (a: Tensor, b: Tensor): Tensor => binary('mul', a, b);

/** diffusers' GEGLU after its projection: x [..., 2D] -> x[..., :D] * gelu_erf(x[..., D:]) */
export function geglu(x: Tensor): Tensor {
  const op = 'geglu';
  const engine = engineOf(op, x);
  const dtype = floatDtype(op, x);
  const last = x.shape[x.rank - 1];
  if (x.rank < 1 || last % 2 !== 0) fail(op, 'the last dimension must be even (hidden and gate halves)', [x]);
  const d = last / 2;
  const y = engine.empty([...x.shape.slice(0, -1), d], dtype, op);
  if (y.size === 0) return y;
  const v = d % 4 === 0 ? 4 : 1; // whole vec4s per half-row
  engine.dispatch(v === 4 ? gegluVec4Src : gegluSrc, { bindings: { x, y }, uniforms: { n: y.size / v, d: d / v }, workgroups: flatWorkgroups(engine, y.size / v) });
  countCost(engine, op, () => gegluCost({ shape: x.shape, dtype }));
  return y;
}

/** min(max(x, lo), hi) */
export function clamp(x: Tensor, lo: number, hi: number): Tensor {
  const op = 'clamp';
  const engine = engineOf(op, x);
  const dtype = floatDtype(op, x);
  if (Number.isNaN(lo) || Number.isNaN(hi) || lo > hi) throw new Error(`clamp: need lo <= hi, got lo=${lo}, hi=${hi}`);
  const y = engine.empty(x.shape, dtype, op);
  if (y.size === 0) return y;
  // The uniform is f32: +-Infinity passes through as such, meaning "no bound".
  engine.dispatch(clampSrc, { bindings: { x, y }, uniforms: { n: y.size, lo, hi }, workgroups: flatWorkgroups(engine, y.size) });
  return y;
}

/** A copy of x stored as `dtype` (f32 <-> f16; f16 needs the shader-f16 feature). Same dtype: a copy. */
export function cast(x: Tensor, dtype: DType): Tensor {
  const op = 'cast';
  const engine = engineOf(op, x);
  if (x.dtype === 'i32' || dtype === 'i32') fail(op, `only f32 <-> f16 casts are supported, not ${x.dtype} -> ${dtype}`, [x]);
  if (dtype !== 'f32' && dtype !== 'f16') throw new Error(`cast: unknown dtype ${String(dtype)}`);
  if ((x.dtype === 'f16' || dtype === 'f16') && !engine.hasShaderF16) {
    fail(op, `${x.dtype} -> ${dtype} needs the shader-f16 feature, which this adapter lacks`, [x]);
  }
  const y = engine.empty(x.shape, dtype, op);
  if (y.size === 0) return y;
  if (x.dtype === dtype) {
    engine.copy(x, 0, y, 0, Math.ceil(x.byteLength / 4) * 4);
    return y;
  }
  engine.dispatch(dtype === 'f16' ? castToSrc : castFromSrc, { bindings: { x, y }, uniforms: { n: y.size }, workgroups: flatWorkgroups(engine, y.size), dtype: 'f16' });
  return y;
}

/** Cost of add/sub/mul between tensors of these shapes. */
export function binaryCost(args: { a: readonly number[]; b: readonly number[]; dtype?: DType }): Cost {
  const out = broadcastShape(args.a, args.b) ?? [];
  const bpe = DTYPE_BYTES[args.dtype ?? 'f32'];
  const n = numel(out);
  return { flops: n, bytes: (numel(args.a) + numel(args.b) + n) * bpe };
}
export const addCost = binaryCost;
export const mulCost = binaryCost;

/** Cost of geglu on x [..., 2D]. */
export function gegluCost(args: { shape: readonly number[]; dtype?: DType }): Cost {
  const n = numel(args.shape) / 2;
  return { flops: ACTIVATION_FLOPS.gelu * n, bytes: 3 * n * DTYPE_BYTES[args.dtype ?? 'f32'] };
}

export function clampCost(args: { shape: readonly number[]; dtype?: DType }): Cost {
  const n = numel(args.shape);
  return { flops: 2 * n, bytes: 2 * n * DTYPE_BYTES[args.dtype ?? 'f32'] };
}

export function castCost(args: { shape: readonly number[]; from: DType; to: DType }): Cost {
  const n = numel(args.shape);
  return { flops: 0, bytes: n * (DTYPE_BYTES[args.from] + DTYPE_BYTES[args.to]) };
}
