// Sampler step: one elementwise dispatch computing x0 = clip(sum a_i in_i), out = sum b_i in_i + b_x0 x0
// and optionally x0 and an auxiliary combination (see scheduler_step.wgsl.ts).
// Cost per element: 2 flops per coefficient term (multiply + add), reads of every input and writes
// of every output: flops = n * 2 * (k + 2(k + 1)), bytes = n * elemBytes * (k + outputs).
import type { Tensor } from '../runtime/tensor.js';
import { shapeStr, DTYPE_BYTES } from '../runtime/tensor.js';
import { schedulerStepWgsl, addNoiseWgsl, SCHED_MAX_INPUTS } from './scheduler_step.wgsl.js';
import { engineOf, floatDtype, fail } from './check.js';
import { cachedSource, flatWorkgroups, type Cost } from './kit.js';
import type { KernelSource } from '../runtime/pipeline_cache.js';

export interface SchedulerStepArgs {
  /** 1..5 tensors of one shape and dtype (sample, model output, history, noise ...) */
  inputs: readonly Tensor[];
  /** coefficients of x0 over the inputs (one per input) */
  x0: readonly number[];
  /** coefficients of the first output over the inputs, then of x0 (inputs.length + 1 values) */
  out: readonly number[];
  /** coefficients of the third output, like `out` (needed when outputs is 3) */
  aux?: readonly number[];
  /** clamp x0 to [lo, hi] before it is used (clip_sample) */
  clip?: readonly [number, number];
  /** 1: out only, 2: out and x0, 3: out, x0 and aux (default 2) */
  outputs?: 1 | 2 | 3;
}

function source(nIn: number, nOut: number, vec4: boolean): KernelSource {
  return cachedSource(`scheduler_step_i${nIn}_o${nOut}${vec4 ? '_v4' : ''}`, () => schedulerStepWgsl(nIn, nOut, vec4));
}

function pack(op: string, vals: readonly number[], want: number, what: string, withX0: boolean): number[] {
  if (vals.length !== want) throw new Error(`${op}: ${what} needs ${want} coefficients, got ${vals.length}`);
  for (const v of vals) if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${op}: ${what} coefficients must be finite numbers, got [${vals.join(', ')}]`);
  const out = new Array(8).fill(0);
  const k = withX0 ? want - 1 : want;
  for (let i = 0; i < k; i++) out[i] = vals[i];
  if (withX0) out[SCHED_MAX_INPUTS] = vals[want - 1];
  return out;
}

/** Returns [out] or [out, x0] or [out, x0, aux], all new tensors of the inputs' shape. */
export function schedulerStep(args: SchedulerStepArgs): Tensor[] {
  const op = 'schedulerStep';
  const ins = args.inputs;
  if (!Array.isArray(ins) || ins.length < 1 || ins.length > SCHED_MAX_INPUTS) {
    throw new Error(`${op}: takes 1 to ${SCHED_MAX_INPUTS} input tensors, got ${Array.isArray(ins) ? ins.length : typeof ins}`);
  }
  const engine = engineOf(op, ...ins);
  const dtype = floatDtype(op, ...ins);
  const shape = ins[0].shape;
  for (const t of ins) if (shapeStr(t.shape) !== shapeStr(shape)) fail(op, 'inputs must have one shape', ins);
  const nOut = args.outputs ?? 2;
  if (nOut !== 1 && nOut !== 2 && nOut !== 3) throw new Error(`${op}: outputs must be 1, 2 or 3, got ${nOut}`);
  const k = ins.length;
  const a = pack(op, args.x0, k, 'x0', false);
  const b = pack(op, args.out, k + 1, 'out', true);
  const c = nOut === 3 ? pack(op, args.aux ?? [], k + 1, 'aux', true) : new Array(8).fill(0);
  let mode = 0;
  let lo = 0;
  let hi = 0;
  if (args.clip) {
    [lo, hi] = args.clip;
    if (!(lo <= hi)) throw new Error(`${op}: clip range [${lo}, ${hi}] is empty`);
    mode = 1;
  }
  const n = ins[0].size;
  const vec4 = n % 4 === 0;
  const nv = vec4 ? n / 4 : n;
  const outs: Tensor[] = [];
  for (let j = 0; j < nOut; j++) outs.push(engine.empty(shape, dtype, op));
  const bindings: Record<string, Tensor> = {};
  ins.forEach((t, i) => (bindings[`in${i}`] = t));
  outs.forEach((t, j) => (bindings[`out${j}`] = t));
  engine.dispatch(source(k, nOut, vec4), {
    bindings,
    uniforms: {
      n: nv, mode, lo, hi,
      a0: a.slice(0, 4), a1: a.slice(4, 8), b0: b.slice(0, 4), b1: b.slice(4, 8), c0: c.slice(0, 4), c1: c.slice(4, 8),
    },
    workgroups: flatWorkgroups(engine, nv),
    dtype,
  });
  return outs;
}

export function schedulerStepCost(args: { elements: number; inputs: number; outputs: 1 | 2 | 3; dtype?: 'f32' | 'f16' }): Cost {
  const k = args.inputs;
  const terms = k + (k + 1) + (args.outputs === 3 ? k + 1 : 0);
  return { flops: args.elements * 2 * terms, bytes: args.elements * DTYPE_BYTES[args.dtype ?? 'f32'] * (k + args.outputs) };
}

const addNoiseSrc: KernelSource = { name: 'add_noise', wgsl: addNoiseWgsl };

/** y[b] = signal[b] * x0[b] + noiseScale[b] * noise[b], one pair of scalars per batch item (axis 0). */
export function addNoise(x0: Tensor, noise: Tensor, signal: readonly number[], noiseScale: readonly number[]): Tensor {
  const op = 'addNoise';
  const engine = engineOf(op, x0, noise);
  const dtype = floatDtype(op, x0, noise);
  if (shapeStr(x0.shape) !== shapeStr(noise.shape)) fail(op, 'x0 and noise must have one shape', [x0, noise]);
  const B = x0.rank ? x0.shape[0] : 1;
  if (signal.length !== B || noiseScale.length !== B) {
    throw new Error(`${op}: need one coefficient pair per batch item (${B}), got ${signal.length} and ${noiseScale.length} (x0 ${shapeStr(x0.shape)})`);
  }
  const coefs = new Float32Array(2 * B);
  for (let b = 0; b < B; b++) {
    coefs[2 * b] = signal[b];
    coefs[2 * b + 1] = noiseScale[b];
  }
  const coef = engine.tensor(coefs, [B, 2]);
  const y = engine.empty(x0.shape, dtype, op);
  const n = x0.size;
  engine.dispatch(addNoiseSrc, {
    bindings: { x0, noise, coef, y },
    uniforms: { n, perItem: Math.max(1, n / B) },
    workgroups: flatWorkgroups(engine, n),
    dtype,
  });
  coef.dispose();
  return y;
}

export function addNoiseCost(args: { elements: number; dtype?: 'f32' | 'f16' }): Cost {
  return { flops: 3 * args.elements, bytes: 3 * args.elements * DTYPE_BYTES[args.dtype ?? 'f32'] };
}
