// float64 references for matmul / linear.

/** erf to ~1e-15: Maclaurin series near 0, Lentz continued fraction for erfc in the tails. */
export function erf64(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
  let f = ax;
  const tiny = 1e-300;
  let C = f;
  let D = 0;
  for (let n = 1; n < 300; n++) {
    const an = n / 2;
    D = ax + an * D;
    D = D === 0 ? tiny : 1 / D;
    C = ax + an / C;
    if (C === 0) C = tiny;
    const delta = C * D;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export type RefActivation = 'none' | 'silu' | 'gelu' | 'quickGelu';

export function activate64(v: number, act: RefActivation): number {
  switch (act) {
    case 'none':
      return v;
    case 'silu':
      return v / (1 + Math.exp(-v));
    case 'gelu':
      return 0.5 * v * (1 + erf64(v / Math.SQRT2));
    case 'quickGelu':
      return v / (1 + Math.exp(-1.702 * v));
  }
}

const prod = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

/** a [..., M, K] (or [..., K, M] transposed) times b; batch dims equal or one side rank 2. */
export function refMatmul(
  a: ArrayLike<number>,
  aShape: readonly number[],
  b: ArrayLike<number>,
  bShape: readonly number[],
  transA = false,
  transB = false,
): { data: Float64Array; shape: number[] } {
  const [ar, ac] = aShape.slice(-2);
  const [br, bc] = bShape.slice(-2);
  const M = transA ? ac : ar;
  const K = transA ? ar : ac;
  const N = transB ? br : bc;
  if ((transB ? bc : br) !== K) throw new Error('refMatmul: K mismatch');
  const batchShape = aShape.length > 2 ? aShape.slice(0, -2) : bShape.slice(0, -2);
  const batch = prod(batchShape);
  const sa = aShape.length > 2 ? M * K : 0;
  const sb = bShape.length > 2 ? K * N : 0;
  const out = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const av = a[z * sa + (transA ? k * M + m : m * K + k)];
          const bv = b[z * sb + (transB ? n * K + k : k * N + n)];
          s += av * bv;
        }
        out[(z * M + m) * N + n] = s;
      }
    }
  }
  return { data: out, shape: [...batchShape, M, N] };
}

/** act(x w^T + bias) + residual with x [..., K], w [N, K]. */
export function refLinear(
  x: ArrayLike<number>,
  xShape: readonly number[],
  w: ArrayLike<number>,
  wShape: readonly number[],
  bias?: ArrayLike<number> | null,
  act: RefActivation = 'none',
  residual?: ArrayLike<number> | null,
): Float64Array {
  const K = xShape[xShape.length - 1];
  const M = prod(xShape) / Math.max(K, 1);
  const N = wShape[0];
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      s = activate64(s, act);
      if (residual) s += residual[m * N + n];
      out[m * N + n] = s;
    }
  }
  return out;
}
