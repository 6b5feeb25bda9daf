// Classifier-free guidance on a model output holding [uncond; cond] along the batch:
// out[i] = u[i] + s * (c[i] - u[i]) with u the first half, c the second. One pass, no slicing copies.
import { flatMain } from './kit.wgsl.js';

export const guidanceWgsl = /* wgsl */ `
struct Params { half: u32, scale: f32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
${flatMain(
  'p.half',
  `  let u = f32(x[i]);
  let c = f32(x[i + p.half]);
  y[i] = T(u + p.scale * (c - u));`,
)}`;
