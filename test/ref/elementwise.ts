// float64 references for the elementwise and layout ops.

export function broadcastRef(
  a: ArrayLike<number>, as: readonly number[],
  b: ArrayLike<number>, bs: readonly number[],
  f: (u: number, v: number) => number,
): { data: Float64Array; shape: number[] } {
  const rank = Math.max(as.length, bs.length);
  const pa = [...new Array(rank - as.length).fill(1), ...as];
  const pb = [...new Array(rank - bs.length).fill(1), ...bs];
  const shape = pa.map((d, i) => (d === 1 ? pb[i] : d));
  const n = shape.reduce((s, d) => s * d, 1);
  const data = new Float64Array(n);
  const idx = new Array(rank).fill(0);
  for (let o = 0; o < n; o++) {
    let rem = o;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d] = rem % shape[d];
      rem = Math.floor(rem / shape[d]);
    }
    let ia = 0;
    let ib = 0;
    for (let d = 0; d < rank; d++) {
      ia = ia * pa[d] + (pa[d] === 1 ? 0 : idx[d]);
      ib = ib * pb[d] + (pb[d] === 1 ? 0 : idx[d]);
    }
    data[o] = f(a[ia], b[ib]);
  }
  return { data, shape };
}

/** erf to ~1e-15: Maclaurin series for |x| < 3, continued fraction for erfc beyond. */
export function erfRef(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let sum = 0;
    let term = x;
    for (let k = 0; k < 200; k++) {
      const t = term / (2 * k + 1);
      sum += t;
      term *= (-x * x) / (k + 1);
      if (Math.abs(t) < 1e-17) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = 0;
  for (let k = 80; k >= 1; k--) f = k / 2 / (ax + f);
  return Math.sign(x) * (1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f));
}

export const geluRef = (v: number): number => 0.5 * v * (1 + erfRef(v / Math.SQRT2));

export function gegluRef(x: ArrayLike<number>, d: number): Float64Array {
  const rows = x.length / (2 * d);
  const y = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < d; c++) y[r * d + c] = x[r * 2 * d + c] * geluRef(x[r * 2 * d + d + c]);
  }
  return y;
}

/** y = x @ w^T + b for x [rows, in], w [out, in] */
export function linearRef(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | null, din: number, dout: number): Float64Array {
  const rows = x.length / din;
  const y = new Float64Array(rows * dout);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < dout; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < din; i++) s += x[r * din + i] * w[o * din + i];
      y[r * dout + o] = s;
    }
  }
  return y;
}

export function concatRef(parts: { data: ArrayLike<number>; shape: readonly number[] }[], axis: number): Float64Array {
  const outer = parts[0].shape.slice(0, axis).reduce((s, d) => s * d, 1);
  const total = parts.reduce((s, p) => s + p.data.length, 0);
  const y = new Float64Array(total);
  let o = 0;
  for (let i = 0; i < outer; i++) {
    for (const p of parts) {
      const inner = p.data.length / outer;
      for (let r = 0; r < inner; r++) y[o++] = p.data[i * inner + r];
    }
  }
  return y;
}

export function sliceRef(x: ArrayLike<number>, shape: readonly number[], axis: number, start: number, end: number): Float64Array {
  const outer = shape.slice(0, axis).reduce((s, d) => s * d, 1);
  const post = shape.slice(axis + 1).reduce((s, d) => s * d, 1);
  const dim = shape[axis];
  const y = new Float64Array(outer * (end - start) * post);
  let o = 0;
  for (let i = 0; i < outer; i++) {
    for (let k = start; k < end; k++) for (let r = 0; r < post; r++) y[o++] = x[(i * dim + k) * post + r];
  }
  return y;
}

export function upsampleNearest2xRef(x: ArrayLike<number>, shape: readonly number[]): Float64Array {
  const [n, c, h, w] = shape;
  const y = new Float64Array(n * c * 4 * h * w);
  for (let nc = 0; nc < n * c; nc++) {
    for (let oy = 0; oy < 2 * h; oy++) {
      for (let ox = 0; ox < 2 * w; ox++) y[(nc * 2 * h + oy) * 2 * w + ox] = x[(nc * h + (oy >> 1)) * w + (ox >> 1)];
    }
  }
  return y;
}

/** [B, R, C] -> [B, C, R] */
export function transposeRef(x: ArrayLike<number>, b: number, rows: number, cols: number): Float64Array {
  const y = new Float64Array(b * rows * cols);
  for (let i = 0; i < b; i++) {
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) y[(i * cols + c) * rows + r] = x[(i * rows + r) * cols + c];
  }
  return y;
}
