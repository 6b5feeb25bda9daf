// float64 multi-head attention reference: q [B, Lq, C], k/v [B, Lk, C], heads split C head-major.
export function attentionRef(
  q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>,
  B: number, Lq: number, Lk: number, C: number, heads: number,
  opts: { scale?: number; causal?: boolean } = {},
): Float64Array {
  const D = C / heads;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * Lq * C);
  const s = new Float64Array(Lk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < Lq; i++) {
        const qo = (b * Lq + i) * C + h * D;
        let mx = -Infinity;
        const n = opts.causal ? Math.min(Lk, i + 1) : Lk;
        for (let j = 0; j < n; j++) {
          const ko = (b * Lk + j) * C + h * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qo + d] * k[ko + d];
          s[j] = dot * scale;
          if (s[j] > mx) mx = s[j];
        }
        let sum = 0;
        for (let j = 0; j < n; j++) {
          s[j] = Math.exp(s[j] - mx);
          sum += s[j];
        }
        for (let j = 0; j < n; j++) {
          const w = s[j] / sum;
          const vo = (b * Lk + j) * C + h * D;
          for (let d = 0; d < D; d++) out[qo + d] += w * v[vo + d];
        }
      }
    }
  }
  return out;
}

/** [B, H, N, D] -> [B, N, H * D] */
export function headsToChannels(x: ArrayLike<number>, B: number, H: number, N: number, D: number): Float32Array {
  const out = new Float32Array(B * H * N * D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let n = 0; n < N; n++)
        for (let d = 0; d < D; d++) out[((b * N + n) * H + h) * D + d] = x[((b * H + h) * N + n) * D + d];
  return out;
}
