// float64 reference for vector quantisation: exact squared distances, first minimum on ties.
export function vqLookupRef(
  z: ArrayLike<number>,
  zShape: readonly number[],
  codebook: ArrayLike<number>,
  K: number,
): { quantized: Float64Array; indices: Int32Array; dist: (pixel: number, k: number) => number } {
  const [B, C, H, W] = zShape;
  const hw = H * W;
  const dist = (n: number, k: number): number => {
    const b = Math.floor(n / hw);
    const s = n % hw;
    let d = 0;
    for (let c = 0; c < C; c++) {
      const v = z[(b * C + c) * hw + s] - codebook[k * C + c];
      d += v * v;
    }
    return d;
  };
  const indices = new Int32Array(B * hw);
  const quantized = new Float64Array(B * C * hw);
  for (let n = 0; n < B * hw; n++) {
    let best = Infinity;
    let bi = 0;
    for (let k = 0; k < K; k++) {
      const d = dist(n, k);
      if (d < best) {
        best = d;
        bi = k;
      }
    }
    indices[n] = bi;
    const b = Math.floor(n / hw);
    const s = n % hw;
    for (let c = 0; c < C; c++) quantized[(b * C + c) * hw + s] = codebook[bi * C + c];
  }
  return { quantized, indices, dist };
}
