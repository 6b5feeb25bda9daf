// Sinusoidal timestep embedding, diffusers' get_timestep_embedding:
//   half = floor(dim / 2), freqs[j] = exp(-ln(maxPeriod) * j / (half - downscaleFreqShift)),
//   arg = scale * t * freqs, emb = cat[sin(arg), cos(arg)] (flipSinToCos: cat[cos, sin]), odd dim zero padded.
// Cost: rows * dim outputs, ~30 flops each (range reduction + polynomial); bytes: the output plus the
// frequency table and timesteps.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr, type DType } from '../runtime/tensor.js';
import { timestepEmbeddingWgsl } from './timestep_embedding.wgsl.js';
import { describe } from './check.js';
import { flatWorkgroups, type Cost } from './kit.js';

const src = { name: 'timestepEmbedding', wgsl: timestepEmbeddingWgsl };
const OP = 'timestepEmbedding';

export interface TimestepEmbeddingOptions {
  flipSinToCos: boolean;
  downscaleFreqShift: number;
  /** rows when `timesteps` is a single value (number, or a tensor / array of length 1); default 1 */
  batch?: number;
  /** multiplies the argument (diffusers' `scale`, default 1) */
  scale?: number;
  /** diffusers' `max_period` (default 10000) */
  maxPeriod?: number;
  /** output dtype (default f32; f16 needs shader-f16) */
  dtype?: DType;
}

export function timestepEmbeddingCost(args: { batch: number; dim: number }): Cost {
  const n = args.batch * args.dim;
  return { flops: 30 * n, bytes: 4 * n + 4 * Math.floor(args.dim / 2) + 4 * args.batch };
}

/** The frequency table in float32, rounded step by step as torch computes it (f32 mul, div, exp). */
export function timestepFrequencies(dim: number, downscaleFreqShift: number, maxPeriod = 10000): Float32Array {
  const f = Math.fround;
  const half = Math.floor(dim / 2);
  const out = new Float32Array(half);
  const c = f(-Math.log(maxPeriod));
  const den = f(half - downscaleFreqShift);
  for (let j = 0; j < half; j++) out[j] = f(Math.exp(f(f(c * j) / den)));
  return out;
}

/**
 * Embeds timesteps into [rows, dim]. `timesteps`: one number (broadcast to `batch` rows), one per row,
 * or a rank-1 f32/i32 tensor of them. Fractional timesteps are fine.
 */
export function timestepEmbedding(
  engine: Engine,
  timesteps: number | readonly number[] | Tensor,
  dim: number,
  opts: TimestepEmbeddingOptions,
): Tensor {
  if (!engine || typeof engine.dispatch !== 'function') throw new Error(`${OP}: the first argument must be an Engine`);
  if (!Number.isInteger(dim) || dim < 2) throw new Error(`${OP}: dim must be an integer >= 2, got ${dim}`);
  const { flipSinToCos, downscaleFreqShift } = opts ?? ({} as TimestepEmbeddingOptions);
  if (typeof flipSinToCos !== 'boolean') throw new Error(`${OP}: flipSinToCos must be a boolean`);
  if (typeof downscaleFreqShift !== 'number' || !Number.isFinite(downscaleFreqShift)) {
    throw new Error(`${OP}: downscaleFreqShift must be a finite number, got ${downscaleFreqShift}`);
  }
  const half = Math.floor(dim / 2);
  if (half - downscaleFreqShift === 0) throw new Error(`${OP}: dim ${dim} with downscaleFreqShift ${downscaleFreqShift} divides by zero`);
  const scale = opts.scale ?? 1;
  const maxPeriod = opts.maxPeriod ?? 10000;
  if (!Number.isFinite(scale) || !(maxPeriod > 0)) throw new Error(`${OP}: bad scale ${scale} or maxPeriod ${maxPeriod}`);
  const dtype = opts.dtype ?? 'f32';
  if (dtype === 'i32') throw new Error(`${OP}: the output dtype must be f32 or f16`);
  const batch = opts.batch;
  if (batch !== undefined && (!Number.isInteger(batch) || batch < 1)) throw new Error(`${OP}: batch must be a positive integer, got ${batch}`);

  // Resolve where the timesteps live and how many rows there are.
  let count: number;
  let gpuTs: Tensor | null = null;
  let hostTs: number[] | null = null;
  if (timesteps instanceof Tensor) {
    engine.checkTensor(OP, timesteps);
    if (timesteps.rank > 1) throw new Error(`${OP}: timesteps must have rank 0 or 1, got ${shapeStr(timesteps.shape)}`);
    if (timesteps.dtype === 'f16') throw new Error(`${OP}: timesteps must be f32 or i32 (${describe([timesteps])})`);
    count = timesteps.size;
    gpuTs = timesteps;
  } else if (typeof timesteps === 'number') {
    count = 1;
    hostTs = [timesteps];
  } else if (Array.isArray(timesteps)) {
    count = timesteps.length;
    hostTs = [...timesteps];
  } else {
    throw new Error(`${OP}: timesteps must be a number, an array of numbers or a Tensor`);
  }
  if (hostTs && hostTs.some((t) => typeof t !== 'number' || !Number.isFinite(t))) {
    throw new Error(`${OP}: timesteps must be finite numbers, got [${hostTs.join(', ')}]`);
  }
  if (count === 0) throw new Error(`${OP}: no timesteps given`);
  let rows = count;
  if (batch !== undefined) {
    if (count !== 1 && count !== batch) throw new Error(`${OP}: ${count} timesteps for batch ${batch}`);
    rows = batch;
  }

  const freqs = timestepFrequencies(dim, downscaleFreqShift, maxPeriod);
  // One upload per call: the frequencies, followed by host timesteps when there are any.
  const tab = new Float32Array(half + (hostTs?.length ?? 0));
  tab.set(freqs);
  if (hostTs) tab.set(hostTs, half);
  const table = engine.tensor(tab, [tab.length]);
  const y = engine.empty([rows, dim], dtype, OP);
  try {
    const n = rows * dim;
    engine.dispatch(src, {
      bindings: { freqs: table, ts: gpuTs ?? table, y },
      uniforms: {
        n,
        dim,
        halfDim: half,
        tsStride: count === 1 ? 0 : 1,
        tsOffset: gpuTs ? 0 : half,
        tsI32: gpuTs?.dtype === 'i32' ? 1 : 0,
        flip: flipSinToCos ? 1 : 0,
        scale,
      },
      workgroups: flatWorkgroups(engine, n),
      dtype,
    });
  } catch (e) {
    y.dispose();
    throw e;
  } finally {
    table.dispose();
  }
  return y;
}
