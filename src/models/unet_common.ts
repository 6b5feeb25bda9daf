// Argument checks shared by the UNets, and the host-side embeddings of their added conditioning.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr } from '../runtime/tensor.js';

/** One timestep per batch item from a number (broadcast) or a list. */
export function timestepList(op: string, timestep: number | readonly number[], batch: number): number[] {
  const ts = typeof timestep === 'number' ? Array(batch).fill(timestep) : [...timestep];
  if (ts.length !== batch) throw new Error(`${op}: ${ts.length} timesteps for a batch of ${batch}`);
  for (const t of ts) if (!Number.isFinite(t)) throw new Error(`${op}: timestep ${t} is not a finite number`);
  return ts;
}

export function checkClassLabels(op: string, labels: readonly number[] | undefined, batch: number, numClasses: number): number[] {
  if (!labels) throw new Error(`${op}: this model is class-conditional: pass classLabels (0..${numClasses - 1}, one per batch item)`);
  if (labels.length !== batch) throw new Error(`${op}: ${labels.length} class labels for a batch of ${batch}`);
  for (const c of labels) {
    if (!Number.isInteger(c) || c < 0 || c >= numClasses) throw new Error(`${op}: class label ${c} outside 0..${numClasses - 1}`);
  }
  return [...labels];
}

/**
 * SDXL's time ids as B * K numbers (row-major) or a [B, K] tensor: original size, crop top-left and
 * target size per image (K = 6; the refiner's K = 5 carries an aesthetic score instead of the target size).
 */
export function addedTimeIds(op: string, ids: unknown, batch: number, k: number, engine: Engine): number[] | Tensor {
  const what = `addedCondKwargs.timeIds must be ${batch} lists of ${k} numbers or a Tensor [${batch}, ${k}]`;
  if (ids instanceof Tensor) {
    if (ids.engine !== engine) throw new Error(`${op}: addedCondKwargs.timeIds belongs to another engine`);
    if (ids.rank !== 2 || ids.shape[0] !== batch || ids.shape[1] !== k) throw new Error(`${op}: ${what}, got a Tensor ${shapeStr(ids.shape)}`);
    if (ids.dtype !== 'f32' && ids.dtype !== 'f16') throw new Error(`${op}: addedCondKwargs.timeIds must be a float tensor, got ${ids.dtype}`);
    return ids;
  }
  if (!Array.isArray(ids) || ids.length !== batch) throw new Error(`${op}: ${what}`);
  const out: number[] = [];
  for (const row of ids as unknown[]) {
    if (!Array.isArray(row) || row.length !== k) throw new Error(`${op}: ${what}, got a row ${JSON.stringify(row)}`);
    for (const v of row) {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${op}: addedCondKwargs.timeIds has ${String(v)}, not a finite number`);
      out.push(v);
    }
  }
  return out;
}

/**
 * diffusers' LatentConsistencyModelPipeline.get_guidance_scale_embedding: for each w (= guidance scale - 1),
 * w * 1000 times freqs[j] = exp(-j * ln(10000) / (half - 1)), [sin | cos] (sin first), odd dim zero-padded.
 * Computed on the host rounding each step to float32 in torch's order (the arguments reach ~1e4 radians,
 * where a one-ulp change of a frequency moves the sine by ~1e-4), then uploaded: [ws.length, dim].
 */
export function guidanceScaleEmbedding(engine: Engine, ws: readonly number[], dim: number, dtype: 'f32' | 'f16' = 'f32'): Tensor {
  const op = 'guidanceScaleEmbedding';
  if (!Number.isInteger(dim) || dim < 2) throw new Error(`${op}: dim must be an integer >= 2, got ${dim}`);
  if (!ws.length) throw new Error(`${op}: no guidance scales`);
  for (const w of ws) if (typeof w !== 'number' || !Number.isFinite(w)) throw new Error(`${op}: guidance scale ${String(w)} is not a finite number`);
  const f = Math.fround;
  const half = Math.floor(dim / 2);
  const step = f(f(Math.log(10000)) / (half - 1));
  const out = new Float32Array(ws.length * dim);
  ws.forEach((w, b) => {
    const w1000 = f(f(w) * 1000);
    for (let j = 0; j < half; j++) {
      const arg = f(w1000 * f(Math.exp(f(j * -step))));
      out[b * dim + j] = Math.sin(arg);
      out[b * dim + half + j] = Math.cos(arg);
    }
  });
  return engine.tensor(out, [ws.length, dim], dtype);
}
