// Pure schedule math shared by the schedulers: beta schedules, alphas_cumprod, timestep spacings,
// sigma tables and their interpolation, on the host in float64 with float32 rounding (Math.fround)
// wherever diffusers holds a value in a float32 tensor, so timesteps and coefficients agree with
// diffusers' fp32 results to a few ulps. No tensors, no engine, no config parsing: see base.ts.

export const f32 = Math.fround;

export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';
export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';

/** torch.linspace(start, end, steps, dtype=float32) as PyTorch's AVX2 CPU kernel evaluates it, so
 * that betas (and hence alphas_cumprod) agree bit for bit with diffusers' fp32 tables: a float32
 * step; each 8-lane vector starts at a fused multiply-add `start + step*i` (or `end - step*(n-1-i)`
 * in the second half) and its lanes add `j*step` in float32; the tail after the last 16-element
 * block is scalar. (Checked against the fixtures' alphas_cumprod: 0 of 1000 entries differ.) */
export function linspaceF32(start: number, end: number, steps: number): Float64Array {
  const out = new Float64Array(steps);
  if (steps === 1) {
    out[0] = f32(start);
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  // the product of two float32 values is exact in float64, so this is a single rounding like fma
  const at = (i: number) => (i < half ? f32(s + step * i) : f32(e - step * (steps - i - 1)));
  const vecEnd = Math.floor(steps / 16) * 16;
  let i = 0;
  for (; i < vecEnd; i += 8) {
    const base = at(i);
    for (let j = 0; j < 8; j++) out[i + j] = f32(base + f32(j * step));
  }
  for (; i < steps; i++) out[i] = at(i);
  return out;
}

function alphaBarCos(t: number): number {
  return Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
}

export interface BetaConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  trainedBetas: number[] | null;
  rescaleBetasZeroSnr: boolean;
}

/** betas (float32 values) as diffusers builds them. */
export function makeBetas(cls: string, b: BetaConfig): Float64Array {
  const T = b.numTrainTimesteps;
  if (T < 1) throw new Error(`${cls}: num_train_timesteps must be >= 1, got ${T}`);
  let betas: Float64Array;
  if (b.trainedBetas) {
    if (b.trainedBetas.length !== T) {
      throw new Error(`${cls}: trained_betas has ${b.trainedBetas.length} values, num_train_timesteps is ${T}`);
    }
    betas = Float64Array.from(b.trainedBetas, f32);
  } else if (b.betaSchedule === 'linear') {
    betas = linspaceF32(b.betaStart, b.betaEnd, T);
  } else if (b.betaSchedule === 'scaled_linear') {
    betas = linspaceF32(Math.sqrt(b.betaStart), Math.sqrt(b.betaEnd), T).map((v) => f32(v * v));
  } else {
    betas = new Float64Array(T);
    for (let i = 0; i < T; i++) betas[i] = f32(Math.min(1 - alphaBarCos((i + 1) / T) / alphaBarCos(i / T), 0.999));
  }
  if (b.rescaleBetasZeroSnr) betas = rescaleZeroTerminalSnr(betas);
  return betas;
}

/** Lin et al. 2023, Algorithm 1: shift and scale sqrt(alphas_cumprod) so the last timestep has zero SNR. */
function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const n = betas.length;
  const sq = new Float64Array(n);
  let p = 1;
  for (let i = 0; i < n; i++) {
    p *= 1 - betas[i];
    sq[i] = Math.sqrt(p);
  }
  const first = sq[0];
  const last = sq[n - 1];
  for (let i = 0; i < n; i++) sq[i] = ((sq[i] - last) * first) / (first - last);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const ab = sq[i] * sq[i];
    const prev = i === 0 ? 1 : sq[i - 1] * sq[i - 1];
    out[i] = f32(1 - (i === 0 ? ab : ab / prev));
  }
  return out;
}

/** alphas_cumprod as torch.cumprod of float32 (1 - beta) on CPU: the running product is kept in
 * double and each entry rounded to float32. */
export function alphasCumprod(betas: Float64Array): Float64Array {
  const out = new Float64Array(betas.length);
  let p = 1;
  for (let i = 0; i < betas.length; i++) {
    p *= f32(1 - betas[i]);
    out[i] = f32(p);
  }
  return out;
}

/** integer timesteps for DDPM/DDIM-style spacing (descending) */
export function discreteTimesteps(cls: string, spacing: TimestepSpacing, T: number, n: number, stepsOffset: number): number[] {
  checkSteps(cls, n, T);
  const ts: number[] = [];
  if (spacing === 'leading') {
    const ratio = Math.floor(T / n);
    for (let i = n - 1; i >= 0; i--) ts.push(i * ratio + stepsOffset);
  } else if (spacing === 'trailing') {
    for (const v of arangeDown(T, T / n)) ts.push(roundHalfEven(v) - 1);
  } else {
    for (let i = n - 1; i >= 0; i--) ts.push(roundHalfEven(linspaceF64(0, T - 1, n, i)));
  }
  return ts;
}

export function checkSteps(cls: string, n: number, T: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`${cls}.setTimesteps: number of steps must be a positive integer, got ${n}`);
  if (n > T) throw new Error(`${cls}.setTimesteps: ${n} steps exceed num_train_timesteps ${T}`);
}

/** numpy.linspace(a, b, n)[i] in float64 (numpy's formula: a + i * step, last point exact). */
export function linspaceF64(a: number, b: number, n: number, i: number): number {
  if (n === 1) return a;
  if (i === n - 1) return b;
  const step = (b - a) / (n - 1);
  return a + i * step;
}

/** numpy.arange(start, 0, -step): ceil(start / step) values start - i * step */
export function arangeDown(start: number, step: number): number[] {
  const count = Math.max(0, Math.ceil((0 - start) / -step));
  return Array.from({ length: count }, (_, i) => start + i * -step);
}

/** numpy round: half to even */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  if (Math.abs(v % 1) === 0.5 && r % 2 !== 0) return r - 1;
  return r;
}

/** train sigmas sqrt((1 - acp) / acp) in float32, ascending in t */
export function trainSigmas(acp: Float64Array): Float64Array {
  return acp.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/** numpy.interp(x, arange(len(fp)), fp) in float64 */
export function interpIndex(x: number, fp: Float64Array): number {
  const n = fp.length;
  if (x <= 0) return fp[0];
  if (x >= n - 1) return fp[n - 1];
  const j = Math.floor(x);
  const slope = fp[j + 1] - fp[j];
  return slope * (x - j) + fp[j];
}

/** float timesteps for the sigma schedulers (Euler, Euler-a, LMS), float32 values, descending */
export function sigmaTimesteps(cls: string, spacing: TimestepSpacing, T: number, n: number, stepsOffset: number): number[] {
  checkSteps(cls, n, T);
  const ts: number[] = [];
  if (spacing === 'linspace') {
    for (let i = n - 1; i >= 0; i--) ts.push(f32(linspaceF64(0, T - 1, n, i)));
  } else if (spacing === 'leading') {
    const ratio = Math.floor(T / n);
    for (let i = n - 1; i >= 0; i--) ts.push(f32(i * ratio + stepsOffset));
  } else {
    for (const v of arangeDown(T, T / n)) ts.push(f32(roundHalfEven(v) - 1));
  }
  return ts;
}

/** Karras et al. (2022) schedule between sigmaMax and sigmaMin, rho = 7 */
export function karrasSigmas(sigmaMax: number, sigmaMin: number, n: number): number[] {
  const rho = 7;
  const lo = sigmaMin ** (1 / rho);
  const hi = sigmaMax ** (1 / rho);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const ramp = linspaceF64(0, 1, n, i);
    out.push((hi + ramp * (lo - hi)) ** rho);
  }
  return out;
}

/** diffusers' _sigma_to_t: piecewise-linear inverse of log sigma over the train schedule */
export function sigmaToT(sigma: number, logSigmas: Float64Array): number {
  const ls = Math.log(Math.max(sigma, 1e-10));
  const n = logSigmas.length;
  // last index whose log sigma is <= ls (0 if none), kept below n - 1
  let low = 0;
  for (let i = 0; i < n; i++) if (ls - logSigmas[i] >= 0) low = i;
  low = Math.min(low, n - 2);
  const high = low + 1;
  const lo = logSigmas[low];
  const hi = logSigmas[high];
  let w = (lo - ls) / (lo - hi);
  w = Math.min(Math.max(w, 0), 1);
  return (1 - w) * low + w * high;
}

/** diffusers' index_for_timestep: the second match when a timestep repeats (so a restart after
 * img2img's first step does not skip a sigma) */
export function indexForTimestep(cls: string, timesteps: readonly number[], t: number, fallbackLast = false): number {
  const hits: number[] = [];
  for (let i = 0; i < timesteps.length; i++) if (timesteps[i] === t) hits.push(i);
  if (!hits.length) {
    if (fallbackLast) return timesteps.length - 1;
    throw new Error(`${cls}: timestep ${t} is not in the schedule [${timesteps.join(', ')}]`);
  }
  return hits.length > 1 ? hits[1] : hits[0];
}

/** x0 and epsilon as linear combinations of (sample, model output) for the alpha-parameterised
 * schedulers (DDPM, DDIM); a = alphas_cumprod[t] as float32. */
export function alphaPredictions(pred: PredictionType, a: number): { x0: [number, number]; eps: [number, number] } {
  const b = f32(1 - a);
  const sa = f32(Math.sqrt(a));
  const sb = f32(Math.sqrt(b));
  if (pred === 'epsilon') return { x0: [1 / sa, -sb / sa], eps: [0, 1] };
  if (pred === 'sample') return { x0: [0, 1], eps: [1 / sb, -sa / sb] };
  return { x0: [sa, -sb], eps: [sb, sa] };
}
