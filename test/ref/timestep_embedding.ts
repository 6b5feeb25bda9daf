// float64 reference for diffusers' get_timestep_embedding. The frequency table and the argument
// t * freq are rounded to float32 as torch does; sin/cos of that float32 argument are in float64.
const f = Math.fround;

export function timestepEmbeddingRef(
  timesteps: readonly number[],
  dim: number,
  o: { flipSinToCos: boolean; downscaleFreqShift: number; scale?: number; maxPeriod?: number },
): Float64Array {
  const half = Math.floor(dim / 2);
  const scale = o.scale ?? 1;
  const freqs: number[] = [];
  for (let j = 0; j < half; j++) {
    const expo = f(f(f(-Math.log(o.maxPeriod ?? 10000)) * j) / f(half - o.downscaleFreqShift));
    freqs.push(f(Math.exp(expo)));
  }
  const out = new Float64Array(timesteps.length * dim);
  timesteps.forEach((t, b) => {
    for (let j = 0; j < half; j++) {
      const x = f(f(f(t) * freqs[j]) * f(scale));
      const s = Math.sin(x);
      const c = Math.cos(x);
      out[b * dim + j] = o.flipSinToCos ? c : s;
      out[b * dim + half + j] = o.flipSinToCos ? s : c;
    }
  });
  return out;
}
