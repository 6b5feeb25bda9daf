// float64 CPU reference of the fused scheduler step and of batched add_noise.
export function schedulerStepRef(
  inputs: readonly ArrayLike<number>[],
  a: readonly number[],
  b: readonly number[],
  c: readonly number[] | null,
  clip: readonly [number, number] | null,
): { out: Float64Array; x0: Float64Array; aux: Float64Array | null } {
  const n = inputs[0].length;
  const k = inputs.length;
  const out = new Float64Array(n);
  const x0 = new Float64Array(n);
  const aux = c ? new Float64Array(n) : null;
  for (let i = 0; i < n; i++) {
    let v = 0;
    for (let j = 0; j < k; j++) v += a[j] * inputs[j][i];
    if (clip) v = Math.min(Math.max(v, clip[0]), clip[1]);
    x0[i] = v;
    let o = b[k] * v;
    for (let j = 0; j < k; j++) o += b[j] * inputs[j][i];
    out[i] = o;
    if (aux && c) {
      let q = c[k] * v;
      for (let j = 0; j < k; j++) q += c[j] * inputs[j][i];
      aux[i] = q;
    }
  }
  return { out, x0, aux };
}

export function addNoiseRef(x0: ArrayLike<number>, noise: ArrayLike<number>, signal: readonly number[], scale: readonly number[]): Float64Array {
  const B = signal.length;
  const per = x0.length / B;
  const y = new Float64Array(x0.length);
  for (let i = 0; i < x0.length; i++) {
    const bi = Math.floor(i / per);
    y[i] = signal[bi] * x0[i] + scale[bi] * noise[i];
  }
  return y;
}
