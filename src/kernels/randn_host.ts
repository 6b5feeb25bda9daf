// The randn stream on the CPU (see randn.wgsl.ts for the algorithm): the same u32s from Philox4x32-10,
// Box-Muller in float64, rounded to float32. Agrees with the GPU to a few ulp (the integer stream
// exactly), for tests and tools that need the noise without a device.
import { numel, shapeStr } from '../runtime/tensor.js';

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

function mulhi(a: number, b: number): number {
  const a0 = a & 0xffff, a1 = a >>> 16;
  const b0 = b & 0xffff, b1 = b >>> 16;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const mid = ((a0 * b0) >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  return (a1 * b1 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16)) >>> 0;
}

/** Philox4x32-10 of one counter under one key; writes 4 u32s into out. */
export function philox4x32(ctr: readonly number[], key: readonly [number, number], out: Uint32Array = new Uint32Array(4)): Uint32Array {
  let c0 = ctr[0] >>> 0, c1 = ctr[1] >>> 0, c2 = ctr[2] >>> 0, c3 = ctr[3] >>> 0;
  let k0 = key[0] >>> 0, k1 = key[1] >>> 0;
  for (let r = 0; r < 10; r++) {
    if (r > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const lo0 = Math.imul(M0, c0) >>> 0;
    const hi0 = mulhi(M0, c0);
    const lo1 = Math.imul(M1, c2) >>> 0;
    const hi1 = mulhi(M1, c2);
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
  return out;
}

/** Splits a seed (integer in [0, 2^53)) into the two Philox key words; throws naming `op` otherwise. */
export function seedKey(op: string, seed: number): [number, number] {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw new Error(`${op}: seed must be an integer in [0, 2^53), got ${String(seed)}`);
  }
  return [seed % 2 ** 32, Math.floor(seed / 2 ** 32)];
}

/** Checks a stream offset for n elements: integer, >= 0, offset + n within 2^53. */
export function checkOffset(op: string, offset: number, n: number): void {
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + n)) {
    throw new Error(`${op}: offset must be an integer in [0, 2^53 - size), got ${String(offset)}`);
  }
}

/** Standard normal float32 draws for `shape`, element e of the stream at e + offset. */
export function randnHost(shape: readonly number[], seed: number, opts: { offset?: number } = {}): Float32Array {
  const op = 'randnHost';
  for (const d of shape) if (!Number.isInteger(d) || d < 0) throw new Error(`${op}: invalid shape ${shapeStr(shape)}`);
  const key = seedKey(op, seed);
  const n = numel(shape);
  const offset = opts.offset ?? 0;
  checkOffset(op, offset, n);
  const out = new Float32Array(n);
  const x = new Uint32Array(4);
  const v = new Float64Array(4);
  let g = Math.floor(offset / 4);
  let l = offset % 4;
  for (let i = 0; i < n; g++, l = 0) {
    philox4x32([g % 2 ** 32, Math.floor(g / 2 ** 32), 0, 0], key, x);
    for (let p = 0; p < 2; p++) {
      const u = ((x[2 * p] >>> 8) + 1) / 2 ** 24;
      const r = Math.sqrt(-2 * Math.log(u));
      const th = (2 * Math.PI * (x[2 * p + 1] >>> 8)) / 2 ** 24;
      v[2 * p] = r * Math.cos(th);
      v[2 * p + 1] = r * Math.sin(th);
    }
    for (; l < 4 && i < n; l++) out[i++] = v[l];
  }
  return out;
}
