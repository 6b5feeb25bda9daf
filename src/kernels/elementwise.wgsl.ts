// Elementwise kernels. All index a flat output; workgroups are spread over x and y (grid1d), so the
// linear workgroup index is wid.y * nwg.x + wid.x. Math runs in f32 whatever the storage type T.

/** Index helper for the up-to-8-D broadcast descriptors: dimension 0 is the innermost. */
const dims = /* wgsl */ `
fn at(lo: vec4<u32>, hi: vec4<u32>, d: u32) -> u32 {
  if (d < 4u) { return lo[d]; }
  return hi[d - 4u];
}
`;

/**
 * Binary op with broadcasting. The launcher coalesces dimensions, so the common cases (same shape,
 * per-channel bias) reach here as rank 1 to 3. Each thread makes VEC consecutive outputs of the
 * innermost dimension (VEC = 4 when its size allows), so the index arithmetic is paid once per 4.
 */
export const binaryWgsl = /* wgsl */ `
struct Params { n: u32, rank: u32, shape0: vec4<u32>, shape1: vec4<u32>, sa0: vec4<u32>, sa1: vec4<u32>, sb0: vec4<u32>, sb1: vec4<u32>, }
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<uniform> p: Params;
override OP: u32 = 0u;
override VEC: u32 = 1u;
${dims}

fn apply(u: f32, v: f32) -> f32 {
  switch OP {
    case 0u: { return u + v; }
    case 1u: { return u - v; }
    default: { return u * v; }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let o = ((wid.y * nwg.x + wid.x) * 256u + lid) * VEC;
  if (o >= p.n) { return; }
  var rem = o;
  var ia = 0u;
  var ib = 0u;
  for (var d = 0u; d < p.rank; d++) {
    let size = at(p.shape0, p.shape1, d);
    let c = rem % size;
    rem = rem / size;
    ia += c * at(p.sa0, p.sa1, d);
    ib += c * at(p.sb0, p.sb1, d);
  }
  // With VEC > 1 the innermost stride of each operand is 0 (broadcast) or 1 (contiguous).
  let da = p.sa0.x;
  let db = p.sb0.x;
  for (var k = 0u; k < VEC; k++) {
    y[o + k] = T(apply(f32(a[ia + k * da]), f32(b[ib + k * db])));
  }
}
`;

const erf = /* wgsl */ `
fn erf_approx(v: f32) -> f32 {
  // Abramowitz-Stegun 7.1.26: ~1.5e-7 absolute, below f32 GELU's own rounding noise.
  let s = sign(v);
  let a = abs(v);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return s * (1.0 - poly * exp(-a * a));
}
`;

/** GEGLU: x [rows, 2D] -> y [rows, D] = x[:, :D] * gelu_erf(x[:, D:]). */
export const gegluWgsl = /* wgsl */ `
struct Params { n: u32, d: u32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
${erf}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  let row = i / p.d;
  let col = i - row * p.d;
  let h = f32(x[2u * row * p.d + col]);
  let g = f32(x[(2u * row + 1u) * p.d + col]);
  y[i] = T(h * 0.5 * g * (1.0 + erf_approx(g * 0.70710678118654752)));
}
`;

/** clamp(x, lo, hi) */
export const clampWgsl = /* wgsl */ `
struct Params { n: u32, lo: f32, hi: f32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  y[i] = T(min(max(f32(x[i]), p.lo), p.hi));
}
`;

const castBody = /* wgsl */ `
struct Params { n: u32, }
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  y[i] = OUT(x[i]);
}
`;

/** f32 -> T (compiled with T = f16) */
export const castToWgsl = /* wgsl */ `
alias OUT = T;
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
${castBody}
`;

/** T -> f32 (compiled with T = f16) */
export const castFromWgsl = /* wgsl */ `
alias OUT = f32;
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${castBody}
`;
