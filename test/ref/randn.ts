// Independent reference for ops.randn: Philox4x32-10 with BigInt arithmetic (no 16-bit tricks),
// Box-Muller in float64 from the same u32s.
const MASK = 0xffffffffn;

export function philoxRef(ctr: readonly number[], key: readonly number[]): number[] {
  let c = ctr.map((v) => BigInt(v >>> 0));
  let k = key.map((v) => BigInt(v >>> 0));
  for (let r = 0; r < 10; r++) {
    if (r > 0) k = [(k[0] + 0x9e3779b9n) & MASK, (k[1] + 0xbb67ae85n) & MASK];
    const p0 = 0xd2511f53n * c[0];
    const p1 = 0xcd9e8d57n * c[2];
    c = [(p1 >> 32n) ^ c[1] ^ k[0], p1 & MASK, (p0 >> 32n) ^ c[3] ^ k[1], p0 & MASK];
  }
  return c.map((v) => Number(v));
}

/** Element `index` of the stream for `seed` (index includes the offset). */
export function randnRef(seed: number, index: number): number {
  const g = BigInt(Math.floor(index / 4));
  const s = BigInt(seed);
  const x = philoxRef([Number(g & MASK), Number(g >> 32n), 0, 0], [Number(s & MASK), Number(s >> 32n)]);
  const lane = index % 4;
  const pair = lane >> 1;
  const u = ((x[2 * pair] >>> 8) + 1) / 2 ** 24;
  const theta = (2 * Math.PI * (x[2 * pair + 1] >>> 8)) / 2 ** 24;
  const r = Math.sqrt(-2 * Math.log(u));
  return lane & 1 ? r * Math.sin(theta) : r * Math.cos(theta);
}

export function randnRefArray(n: number, seed: number, offset = 0): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = randnRef(seed, offset + i);
  return out;
}
