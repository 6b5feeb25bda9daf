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

/** Threads of the rescaling kernel's workgroup (one workgroup per batch item). */
export const RESCALE_WG = 256;

// Guidance with rescaling (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps Are
// Flawed", sec. 3.4; diffusers' rescale_noise_cfg): g = u + s (c - u), then per batch item
// g' = g * (r * std(c) / std(g) + 1 - r), the std over all of the item's C*H*W values with Bessel's
// correction (torch's default). One workgroup per item: the sums, then the squared deviations from
// the means (two passes in f32: large means do not cancel), then the write; g is recomputed each
// pass rather than stored.
export const guidanceRescaleWgsl = /* wgsl */ `
struct Params { n: u32, batch: u32, scale: f32, rescale: f32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> red: array<vec2<f32>, ${RESCALE_WG}>;

fn pair(b: u32, j: u32) -> vec2<f32> {
  let u = f32(x[b * p.n + j]);
  let c = f32(x[(p.batch + b) * p.n + j]);
  return vec2<f32>(c, u + p.scale * (c - u));
}

// the sum of every thread's v (all threads must call it)
fn reduce(lid: u32, v: vec2<f32>) -> vec2<f32> {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${RESCALE_WG / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(${RESCALE_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wid.x;
  var sum = vec2<f32>(0.0);
  for (var j = lid; j < p.n; j = j + ${RESCALE_WG}u) { sum = sum + pair(b, j); }
  let mean = reduce(lid, sum) / f32(p.n);
  var sq = vec2<f32>(0.0);
  for (var j = lid; j < p.n; j = j + ${RESCALE_WG}u) { let d = pair(b, j) - mean; sq = sq + d * d; }
  let sd = sqrt(reduce(lid, sq) / f32(p.n - 1u));
  let factor = p.rescale * (sd.x / sd.y) + (1.0 - p.rescale);
  for (var j = lid; j < p.n; j = j + ${RESCALE_WG}u) { y[b * p.n + j] = T(pair(b, j).y * factor); }
}
`;
