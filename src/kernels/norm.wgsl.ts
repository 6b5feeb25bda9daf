// Normalisation kernels (GroupNorm, LayerNorm). A "row" is one contiguous run of `len` elements that
// shares one mean/variance: a (sample, group) block of GroupNorm, or one last-dim vector of LayerNorm.
// Statistics are two-pass in f32 (mean first, then the sum of squared deviations from it), so large
// offsets do not cancel the way E[x^2] - E[x]^2 does. The channel of element i of row r is
// (r % groups) * cpg + i / spatial; LayerNorm uses groups = 1, spatial = 1 so that it is simply i.

const params = /* wgsl */ `
struct Params { rows: u32, len: u32, groups: u32, cpg: u32, spatial: u32, chunks: u32, eps: f32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> gamma: array<T>;
@group(0) @binding(2) var<storage, read> beta: array<T>;
`;

// Each thread keeps up to K of its values in registers, so the common case reads x from memory once.
const common = /* wgsl */ `
override AFFINE: u32 = 1u;
override SILU: u32 = 0u;
const K: u32 = 16u;
var<workgroup> red: array<f32, 256>;

fn finish(v: f32, ch: u32) -> f32 {
  var o = v;
  if (AFFINE != 0u) { o = o * f32(gamma[ch]) + f32(beta[ch]); }
  if (SILU != 0u) { o = o / (1.0 + exp(-o)); }
  return o;
}
`;

/** One row per TPR threads (256 / TPR rows per workgroup); any length (values past K * TPR are re-read). */
export const normRowsWgsl = /* wgsl */ `
${params}
@group(0) @binding(3) var<storage, read_write> y: array<T>;
@group(0) @binding(4) var<uniform> p: Params;
override TPR: u32 = 256u;
${common}

// Sum over the TPR threads of one row (segments of red[]); every thread gets the result.
fn rowSum(v: f32, lid: u32, lt: u32) -> f32 {
  red[lid] = v;
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
  let L = select(0u, p.len, row < p.rows);
  let base = row * p.len;
  var vals: array<f32, K>;
  var s = 0.0;
  for (var k = 0u; k < K; k++) {
    let i = lt + k * TPR;
    if (i < L) { let v = f32(x[base + i]); vals[k] = v; s += v; }
  }
  for (var i = lt + K * TPR; i < L; i += TPR) { s += f32(x[base + i]); }
  let n = f32(p.len);
  let mean = rowSum(s, lid, lt) / n;
  var q = 0.0;
  for (var k = 0u; k < K; k++) {
    let i = lt + k * TPR;
    if (i < L) { let d = vals[k] - mean; q += d * d; }
  }
  for (var i = lt + K * TPR; i < L; i += TPR) { let d = f32(x[base + i]) - mean; q += d * d; }
  let rstd = 1.0 / sqrt(rowSum(q, lid, lt) / n + p.eps);
  let c0 = (row % p.groups) * p.cpg;
  for (var k = 0u; k < K; k++) {
    let i = lt + k * TPR;
    if (i < L) { y[base + i] = T(finish((vals[k] - mean) * rstd, c0 + i / p.spatial)); }
  }
  for (var i = lt + K * TPR; i < L; i += TPR) {
    y[base + i] = T(finish((f32(x[base + i]) - mean) * rstd, c0 + i / p.spatial));
  }
}
`;

const wgSum = /* wgsl */ `
fn wgSum(v: f32, lid: u32) -> f32 {
  red[lid] = v;
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

/** Long rows, pass 1: each workgroup reduces one chunk of 256*K elements of a row to (mean, M2). */
export const normStatsWgsl = /* wgsl */ `
${params}
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
${common}
${wgSum}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let wg = wid.y * nwg.x + wid.x;
  if (wg >= p.rows * p.chunks) { return; }
  let row = wg / p.chunks;
  let j = wg % p.chunks;
  let start = j * 256u * K;
  let cnt = min(256u * K, p.len - start);
  let base = row * p.len + start;
  var vals: array<f32, K>;
  var s = 0.0;
  for (var k = 0u; k < K; k++) {
    let i = lid + k * 256u;
    if (i < cnt) { let v = f32(x[base + i]); vals[k] = v; s += v; }
  }
  let mean = wgSum(s, lid) / f32(cnt);
  var q = 0.0;
  for (var k = 0u; k < K; k++) {
    let i = lid + k * 256u;
    if (i < cnt) { let d = vals[k] - mean; q += d * d; }
  }
  let m2 = wgSum(q, lid);
  if (lid == 0u) {
    stats[2u * wg] = mean;
    stats[2u * wg + 1u] = m2;
  }
}
`;

/** Long rows, pass 2: combine the chunk statistics of the row exactly (overall mean first, then
 * M2 = sum(M2_j + n_j (mean_j - mean)^2)), then normalise this workgroup's chunk. */
export const normApplyWgsl = /* wgsl */ `
${params}
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;
@group(0) @binding(5) var<uniform> p: Params;
${common}
${wgSum}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let wg = wid.y * nwg.x + wid.x;
  if (wg >= p.rows * p.chunks) { return; }
  let row = wg / p.chunks;
  let j = wg % p.chunks;
  let CH = 256u * K;
  let n = f32(p.len);
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
  let base = row * p.len + start;
  let c0 = (row % p.groups) * p.cpg;
  for (var k = 0u; k < K; k++) {
    let i = lid + k * 256u;
    if (i < cnt) { y[base + i] = T(finish((f32(x[base + i]) - mean) * rstd, c0 + (start + i) / p.spatial)); }
  }
}
`;
