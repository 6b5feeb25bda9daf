// One fused elementwise pass for a sampler step. With inputs in0..in{k-1} (sample, model output,
// history tensors, noise) and per-step scalar coefficients from the host:
//   x0   = clip(sum_i a_i * in_i)                  (predicted original sample)
//   out0 = sum_i b_i * in_i + b_x0 * x0            (prev sample)
//   out1 = x0                                      (optional)
//   out2 = sum_i c_i * in_i + c_x0 * x0            (optional; e.g. LMS's derivative for its history)
// The text is generated per (inputs, outputs, vec4) so no binding is unused: a step reads and writes
// exactly the tensors it needs, and at most 5 inputs + 3 outputs keeps within the 8 storage
// buffers per stage every WebGPU device has.
import { flatMain } from './kit.wgsl.js';

export const SCHED_MAX_INPUTS = 5;
export const SCHED_MAX_OUTPUTS = 3;

const LANE = ['x', 'y', 'z', 'w'];
/** coefficient k of a group stored as two vec4 (k = 0..7) */
function coef(group: string, k: number): string {
  return `p.${group}${k >> 2}.${LANE[k & 3]}`;
}

export function schedulerStepWgsl(nIn: number, nOut: number, vec4: boolean): string {
  const V = vec4 ? 'T4' : 'T';
  const F = vec4 ? 'vec4<f32>' : 'f32';
  const lines: string[] = [];
  lines.push(`struct Params { n: u32, mode: u32, lo: f32, hi: f32, a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, c0: vec4<f32>, c1: vec4<f32>, }`);
  for (let i = 0; i < nIn; i++) lines.push(`@group(0) @binding(${i}) var<storage, read> in${i}: array<${V}>;`);
  for (let j = 0; j < nOut; j++) lines.push(`@group(0) @binding(${nIn + j}) var<storage, read_write> out${j}: array<${V}>;`);
  lines.push(`@group(0) @binding(${nIn + nOut}) var<uniform> p: Params;`);
  const body: string[] = [];
  for (let k = 0; k < nIn; k++) body.push(`  let v${k} = ${F}(in${k}[i]);`);
  const sum = (group: string, withX0: boolean) => {
    const terms: string[] = [];
    for (let k = 0; k < nIn; k++) terms.push(`${coef(group, k)} * v${k}`);
    if (withX0) terms.push(`${coef(group, SCHED_MAX_INPUTS)} * x0`);
    return terms.join(' + ');
  };
  body.push(`  var x0 = ${sum('a', false)};`);
  // mode 1: clip_sample's clamp of the predicted x0 (it feeds the prev sample too, as in diffusers)
  body.push(`  if (p.mode == 1u) { x0 = clamp(x0, ${F}(p.lo), ${F}(p.hi)); }`);
  body.push(`  out0[i] = ${V}(${sum('b', true)});`);
  if (nOut >= 2) body.push(`  out1[i] = ${V}(x0);`);
  if (nOut >= 3) body.push(`  out2[i] = ${V}(${sum('c', true)});`);
  lines.push(flatMain('p.n', body.join('\n')));
  return lines.join('\n');
}

// add_noise with one (signal, noise) coefficient pair per batch item: y = cs[b] * x0 + cn[b] * noise.
export const addNoiseWgsl = /* wgsl */ `
struct Params { n: u32, perItem: u32, }
@group(0) @binding(0) var<storage, read> x0: array<T>;
@group(0) @binding(1) var<storage, read> noise: array<T>;
@group(0) @binding(2) var<storage, read> coef: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;
@group(0) @binding(4) var<uniform> p: Params;
${flatMain(
  'p.n',
  `  let b = i / p.perItem;
  y[i] = T(coef[2u * b] * f32(x0[i]) + coef[2u * b + 1u] * f32(noise[i]));`,
)}`;
