// Elementwise kernels. All index a flat output through the kit's flatMain (one thread per index).
// Math runs in f32 whatever the storage type T.
import { activationExpr, erfWgsl, flatMain } from './kit.wgsl.js';

/** Index helper for the up-to-8-D broadcast descriptors: dimension 0 is the innermost. */
const dims = /* wgsl */ `
fn at(lo: vec4<u32>, hi: vec4<u32>, d: u32) -> u32 {
  if (d < 4u) { return lo[d]; }
  return hi[d - 4u];
}
`;

const binaryHead = /* wgsl */ `
struct Params { n: u32, rank: u32, shape0: vec4<u32>, shape1: vec4<u32>, sa0: vec4<u32>, sa1: vec4<u32>, sb0: vec4<u32>, sb1: vec4<u32>, }
override OP: u32 = 0u;
${dims}

// Where do the operands of output element o live (after the launcher merged dimensions)?
fn offsets(o: u32) -> vec2<u32> {
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
  return vec2<u32>(ia, ib);
}
`;

/**
 * Binary op with broadcasting, one output per thread. The launcher coalesces dimensions, so the
 * common cases (same shape, per-channel bias) reach here as rank 1 to 3.
 */
export const binaryWgsl = /* wgsl */ `
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<uniform> p: Params;
${binaryHead}

fn apply(u: f32, v: f32) -> f32 {
  switch OP {
    case 0u: { return u + v; }
    case 1u: { return u - v; }
    default: { return u * v; }
  }
}

${flatMain(
  'p.n',
  `  let ab = offsets(i);
  y[i] = T(apply(f32(a[ab.x]), f32(b[ab.y])));`,
)}`;

/**
 * Four outputs per thread with vector loads and stores, when the innermost (merged) dimension is a
 * multiple of 4 and each operand is contiguous along it (read as T4) or constant along it (one
 * scalar, splatted). aVec / bVec choose which.
 */
export function binaryVec4Wgsl(aVec: boolean, bVec: boolean): string {
  const load = (name: string, vec: boolean, idx: string) => (vec ? `vec4<f32>(${name}[${idx} / 4u])` : `vec4<f32>(f32(${name}[${idx}]))`);
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> a: array<${aVec ? 'T4' : 'T'}>;
@group(0) @binding(1) var<storage, read> b: array<${bVec ? 'T4' : 'T'}>;
@group(0) @binding(2) var<storage, read_write> y: array<T4>;
@group(0) @binding(3) var<uniform> p: Params;
${binaryHead}

fn apply(u: vec4<f32>, v: vec4<f32>) -> vec4<f32> {
  switch OP {
    case 0u: { return u + v; }
    case 1u: { return u - v; }
    default: { return u * v; }
  }
}

${flatMain(
  '(p.n + 3u) / 4u',
  `  let ab = offsets(i * 4u);
  y[i] = T4(apply(${load('a', aVec, 'ab.x')}, ${load('b', bVec, 'ab.y')}));`,
)}`;
}

/** GEGLU: x [rows, 2D] -> y [rows, D] = x[:, :D] * gelu_erf(x[:, D:]), V outputs per thread
 * (V = 4 reads and writes T4 when D % 4 == 0; d counts vectors). */
function geglu(v: 1 | 4): string {
  const E = v === 1 ? 'T' : 'T4';
  const F = v === 1 ? 'f32' : 'vec4<f32>';
  return /* wgsl */ `
struct Params { n: u32, d: u32, }
@group(0) @binding(0) var<storage, read> x: array<${E}>;
@group(0) @binding(1) var<storage, read_write> y: array<${E}>;
@group(0) @binding(2) var<uniform> p: Params;
${erfWgsl(F)}

${flatMain(
  'p.n',
  `  let row = i / p.d;
  let col = i - row * p.d;
  let h = ${F}(x[2u * row * p.d + col]);
  let g = ${F}(x[(2u * row + 1u) * p.d + col]);
  y[i] = ${E}(h * (${activationExpr('gelu', 'g')}));`,
)}`;
}
export const gegluWgsl = geglu(1);
export const gegluVec4Wgsl = geglu(4);

/** clamp(x, lo, hi) */
export const clampWgsl = /* wgsl */ `
struct Params { n: u32, lo: f32, hi: f32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;

${flatMain(
  'p.n',
  `  y[i] = T(min(max(f32(x[i]), p.lo), p.hi));`,
)}`;

const castBody = /* wgsl */ `
struct Params { n: u32, }
${flatMain(
  'p.n',
  `  y[i] = OUT(x[i]);`,
)}`;

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
