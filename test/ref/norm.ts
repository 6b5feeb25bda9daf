// float64 references for GroupNorm / LayerNorm (two-pass mean and biased variance, as torch).

export function groupNormRef(
  x: ArrayLike<number>,
  shape: readonly number[],
  groups: number,
  gamma: ArrayLike<number> | null,
  beta: ArrayLike<number> | null,
  eps: number,
  silu = false,
): Float64Array {
  const [n, c] = shape;
  let spatial = 1;
  for (const d of shape.slice(2)) spatial *= d;
  const cpg = c / groups;
  const len = cpg * spatial;
  const y = new Float64Array(n * c * spatial);
  for (let r = 0; r < n * groups; r++) {
    const base = r * len;
    let s = 0;
    for (let i = 0; i < len; i++) s += x[base + i];
    const mean = s / len;
    let q = 0;
    for (let i = 0; i < len; i++) q += (x[base + i] - mean) ** 2;
    const rstd = 1 / Math.sqrt(q / len + eps);
    const g = r % groups;
    for (let i = 0; i < len; i++) {
      const ch = g * cpg + Math.floor(i / spatial);
      let v = (x[base + i] - mean) * rstd;
      if (gamma && beta) v = v * gamma[ch] + beta[ch];
      if (silu) v = v / (1 + Math.exp(-v));
      y[base + i] = v;
    }
  }
  return y;
}

export function layerNormRef(
  x: ArrayLike<number>,
  shape: readonly number[],
  gamma: ArrayLike<number> | null,
  beta: ArrayLike<number> | null,
  eps: number,
): Float64Array {
  const d = shape[shape.length - 1];
  const rows = x.length / d;
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    const base = r * d;
    let s = 0;
    for (let i = 0; i < d; i++) s += x[base + i];
    const mean = s / d;
    let q = 0;
    for (let i = 0; i < d; i++) q += (x[base + i] - mean) ** 2;
    const rstd = 1 / Math.sqrt(q / d + eps);
    for (let i = 0; i < d; i++) {
      let v = (x[base + i] - mean) * rstd;
      if (gamma && beta) v = v * gamma[i] + beta[i];
      y[base + i] = v;
    }
  }
  return y;
}
