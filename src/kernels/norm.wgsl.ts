// Normalisation kernels (GroupNorm, LayerNorm). A "row" is one contiguous run of `len` elements that
// shares one mean/variance: a (sample, group) block of GroupNorm, or one last-dim vector of LayerNorm.
// Statistics are two-pass in f32 (mean first, then the sum of squared deviations from it), so large
// offsets do not cancel the way E[x^2] - E[x]^2 does. The channel of element i of row r is
// (r % groups) * cpg + i / spatial; LayerNorm uses groups = 1, spatial = 1 so that it is simply i.
//
// Each kernel comes in a scalar form (V = 1) and a vec4 form (V = 4: x and y read and written as
// T4), used when len is a multiple of 4 and four neighbours share a channel (spatial % 4 == 0) or
// are four consecutive channels (spatial == 1). Every thread keeps up to K vectors in registers
// (K * V = 16 values), so the common case reads x from memory once.
import { activationExpr } from './kit.wgsl.js';

/** Values one thread caches; a split-path chunk is 256 threads x this many values. */
export const NORM_VALUES_PER_THREAD = 16;

type V = 1 | 4;

function head(v: V, withStats: 'none' | 'write' | 'read'): string {
  const E = v === 1 ? 'T' : 'T4';
  const stats =
    withStats === 'write'
      ? `@group(0) @binding(3) var<storage, read_write> stats: array<f32>;\n@group(0) @binding(4) var<uniform> p: Params;`
      : withStats === 'read'
        ? `@group(0) @binding(3) var<storage, read> stats: array<f32>;\n@group(0) @binding(4) var<storage, read_write> y: array<${E}>;\n@group(0) @binding(5) var<uniform> p: Params;`
        : `@group(0) @binding(3) var<storage, read_write> y: array<${E}>;\n@group(0) @binding(4) var<uniform> p: Params;`;
  const F = v === 1 ? 'f32' : 'vec4<f32>';
  // finish(): affine per channel, then SiLU. For V = 4, `i` is the row index of the first lane.
  const finish =
    v === 1
      ? /* wgsl */ `
fn finish(val: f32, c0: u32, i: u32) -> f32 {
  var o = val;
  if (AFFINE != 0u) { let c = c0 + i / p.spatial; o = o * f32(gamma[c]) + f32(beta[c]); }
  if (SILU != 0u) { o = ${activationExpr('silu', 'o')}; }
  return o;
}`
      : /* wgsl */ `
fn finish(val: vec4<f32>, c0: u32, i: u32) -> vec4<f32> {
  var o = val;
  if (AFFINE != 0u) {
    if (p.spatial == 1u) {
      let c = c0 + i;
      let g = vec4<f32>(f32(gamma[c]), f32(gamma[c + 1u]), f32(gamma[c + 2u]), f32(gamma[c + 3u]));
      let b = vec4<f32>(f32(beta[c]), f32(beta[c + 1u]), f32(beta[c + 2u]), f32(beta[c + 3u]));
      o = o * g + b;
    } else {
      let c = c0 + i / p.spatial;
      o = o * f32(gamma[c]) + f32(beta[c]);
    }
  }
  if (SILU != 0u) { o = ${activationExpr('silu', 'o')}; }
  return o;
}`;
  return /* wgsl */ `
struct Params { rows: u32, len: u32, groups: u32, cpg: u32, spatial: u32, chunks: u32, eps: f32, }
@group(0) @binding(0) var<storage, read> x: array<${E}>;
@group(0) @binding(1) var<storage, read> gamma: array<T>;
@group(0) @binding(2) var<storage, read> beta: array<T>;
${stats}
override AFFINE: u32 = 1u;
override SILU: u32 = 0u;
const K: u32 = ${NORM_VALUES_PER_THREAD / v}u;
const V: u32 = ${v}u;
var<workgroup> red: array<f32, 256>;
fn load(i: u32) -> ${F} { return ${F}(x[i]); }
fn total(a: ${F}) -> f32 { return ${v === 1 ? 'a' : 'dot(a, vec4<f32>(1.0))'}; }
fn sq(a: ${F}) -> f32 { return ${v === 1 ? 'a * a' : 'dot(a, a)'}; }
${finish}
`;
}

function rows(v: V): string {
  const E = v === 1 ? 'T' : 'T4';
  const F = v === 1 ? 'f32' : 'vec4<f32>';
  return /* wgsl */ `
${head(v, 'none')}
override TPR: u32 = 256u;

// Sum over the TPR threads of one row (segments of red[]); every thread gets the result.
fn rowSum(val: f32, lid: u32, lt: u32) -> f32 {
  red[lid] = val;
  workgroupBarrier();
  var s = TPR / 2u;
  loop {
    if (s == 0u) { break; }
    if (lt < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
    s = s / 2u;
  }
  let r = red[lid - lt];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let wg = wid.y * nwg.x + wid.x;
  let row = wg * (256u / TPR) + lid / TPR;
  let lt = lid % TPR;
  // L and base count vectors of V elements
  let L = select(0u, p.len / V, row < p.rows);
  let base = row * (p.len / V);
  var vals: array<${F}, K>;
  var s = 0.0;
  for (var k = 0u; k < K; k++) {
    let i = lt + k * TPR;
    if (i < L) { let a = load(base + i); vals[k] = a; s += total(a); }
  }
  for (var i = lt + K * TPR; i < L; i += TPR) { s += total(load(base + i)); }
  let n = f32(p.len);
  let mean = rowSum(s, lid, lt) / n;
  var q = 0.0;
  for (var k = 0u; k < K; k++) {
    let i = lt + k * TPR;
    if (i < L) { q += sq(vals[k] - mean); }
  }
  for (var i = lt + K * TPR; i < L; i += TPR) { q += sq(load(base + i) - mean); }
  let rstd = 1.0 / sqrt(rowSum(q, lid, lt) / n + p.eps);
  let c0 = (row % p.groups) * p.cpg;
  for (var k = 0u; k < K; k++) {
    let i = lt + k * TPR;
    if (i < L) { y[base + i] = ${E}(finish((vals[k] - mean) * rstd, c0, i * V)); }
  }
  for (var i = lt + K * TPR; i < L; i += TPR) {
    y[base + i] = ${E}(finish((load(base + i) - mean) * rstd, c0, i * V));
  }
}
`;
}

const wgSum = /* wgsl */ `
fn wgSum(val: f32, lid: u32) -> f32 {
  red[lid] = val;
  workgroupBarrier();
  var s = 128u;
  loop {
    if (s == 0u) { break; }
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
    s = s / 2u;
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
`;

/** The entry of both long-row passes: workgroup wg handles chunk j (of CH elements) of one row. */
const chunkMain = /* wgsl */ `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let wg = wid.y * nwg.x + wid.x;
  if (wg >= p.rows * p.chunks) { return; }
  let row = wg / p.chunks;
  let j = wg % p.chunks;
  let CH = 256u * K * V;`;

/** Long rows, pass 1: each workgroup reduces one chunk of 256*K*V elements of a row to (mean, M2). */
function stats(v: V): string {
  const F = v === 1 ? 'f32' : 'vec4<f32>';
  return /* wgsl */ `
${head(v, 'write')}
${wgSum}

${chunkMain}  let start = j * CH;
  let cnt = min(CH, p.len - start);
  let base = (row * p.len + start) / V;
  var vals: array<${F}, K>;
  var s = 0.0;
  for (var k = 0u; k < K; k++) {
    let i = lid + k * 256u;
    if (i * V < cnt) { let a = load(base + i); vals[k] = a; s += total(a); }
  }
  let mean = wgSum(s, lid) / f32(cnt);
  var q = 0.0;
  for (var k = 0u; k < K; k++) {
    let i = lid + k * 256u;
    if (i * V < cnt) { q += sq(vals[k] - mean); }
  }
  let m2 = wgSum(q, lid);
  if (lid == 0u) {
    stats[2u * wg] = mean;
    stats[2u * wg + 1u] = m2;
  }
}
`;
}

/** Long rows, pass 2: combine the chunk statistics of the row exactly (overall mean first, then
 * M2 = sum(M2_j + n_j (mean_j - mean)^2)), then normalise this workgroup's chunk. */
function apply(v: V): string {
  const E = v === 1 ? 'T' : 'T4';
  return /* wgsl */ `
${head(v, 'read')}
${wgSum}

${chunkMain}  let n = f32(p.len);
  var s = 0.0;
  for (var c = lid; c < p.chunks; c += 256u) {
    s += f32(min(CH, p.len - c * CH)) * stats[2u * (row * p.chunks + c)];
  }
  let mean = wgSum(s, lid) / n;
  var q = 0.0;
  for (var c = lid; c < p.chunks; c += 256u) {
    let d = stats[2u * (row * p.chunks + c)] - mean;
    q += stats[2u * (row * p.chunks + c) + 1u] + f32(min(CH, p.len - c * CH)) * d * d;
  }
  let rstd = 1.0 / sqrt(wgSum(q, lid) / n + p.eps);
  let start = j * CH;
  let cnt = min(CH, p.len - start);
  let base = (row * p.len + start) / V;
  let c0 = (row % p.groups) * p.cpg;
  for (var k = 0u; k < K; k++) {
    let i = lid + k * 256u;
    if (i * V < cnt) { y[base + i] = ${E}(finish((load(base + i) - mean) * rstd, c0, start + i * V)); }
  }
}
`;
}

/** One row per TPR threads (256 / TPR rows per workgroup); any length (values past K * TPR are re-read). */
export const normRowsWgsl = rows(1);
export const normRowsVec4Wgsl = rows(4);
export const normStatsWgsl = stats(1);
export const normStatsVec4Wgsl = stats(4);
export const normApplyWgsl = apply(1);
export const normApplyVec4Wgsl = apply(4);
