// Nearest codebook entry per latent pixel, by exact squared L2 distance sum_c (z_c - e_c)^2.
// Shaped like a tiled matmul (pixels x entries, reduced over channels) with the multiply-add
// replaced by a squared difference: a workgroup takes 64 pixels, walks the codebook 64 entries at a
// time, and stages both the pixel and the entry tiles, TC channels deep, in workgroup memory;
// each of the 16x16 threads keeps a 4x4 block of distances in registers (four vec4s). Pixels and
// entries are strided by 16 within the tile so shared-memory reads are broadcasts / consecutive.
// Per thread the entries are visited in increasing order and replaced only on a strict '<', and
// the cross-thread reduction breaks ties by index, so the first minimum wins, as torch.argmin.
export const vqLookupWgsl = /* wgsl */ `
struct Params {
  npix: u32,      // B * H * W
  hw: u32,        // H * W
  channels: u32,  // C
  entries: u32,   // K
  rowStride: u32, // workgroups per grid row (grid split over y)
}
@group(0) @binding(0) var<storage, read> z: array<T>;
@group(0) @binding(1) var<storage, read> codebook: array<T>;
@group(0) @binding(2) var<storage, read_write> quantized: array<T>;
@group(0) @binding(3) var<storage, read_write> indices: array<i32>;
@group(0) @binding(4) var<uniform> p: Params;

override TC: u32 = 4u;       // channels per staged chunk: 4, 8 or 16
const TP: u32 = 64u;         // pixels per workgroup
const TK: u32 = 64u;         // entries per tile
const BIG: f32 = 3.4028234663852886e38;

var<workgroup> zs: array<f32, 1024>;   // [TC][TP]
var<workgroup> es: array<f32, 1024>;   // [TC][TK]; reused for the reduction's distances
// The reduction keeps indices apart from floats: index bits read as f32 are denormals that a GPU may flush.
var<workgroup> ri: array<u32, 1024>;
var<workgroup> best: array<u32, 64>;

struct Best { d: f32, i: u32, }

// Entries kbase + 16 j in increasing order; strict '<' keeps the earlier of equal distances.
fn scan(b: Best, a: vec4<f32>, kbase: u32, K: u32) -> Best {
  var r = b;
  for (var j = 0u; j < 4u; j++) {
    let k = kbase + 16u * j;
    if (k < K && a[j] < r.d) { r = Best(a[j], k); }
  }
  return r;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let tile = wg.y * p.rowStride + wg.x;
  let pix0 = tile * TP;
  if (pix0 >= p.npix) { return; }  // uniform per workgroup
  let tx = lid.x;  // entry lane
  let ty = lid.y;  // pixel lane
  let C = p.channels;
  let K = p.entries;
  // This thread stages pixel zp (channels zc, zc + 4, ...) of each z chunk; NCHW puts consecutive
  // pixels of one channel next to each other, so the loads are coalesced.
  let zp = li % TP;
  let zc = li / TP;
  let zn = pix0 + zp;
  let pixOk = zn < p.npix;
  let zb = zn / p.hw;
  let zBase = zb * C * p.hw + (zn - zb * p.hw);

  var b0 = Best(BIG, 0u);
  var b1 = Best(BIG, 0u);
  var b2 = Best(BIG, 0u);
  var b3 = Best(BIG, 0u);

  for (var k0 = 0u; k0 < K; k0 += TK) {
    // acc<i>[j]: distance of pixel ty + 16 i to entry k0 + tx + 16 j
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var c0 = 0u; c0 < C; c0 += TC) {
      // Stage z[pix0 .. +TP][c0 .. +TC] and codebook[k0 .. +TK][c0 .. +TC], TC / 4 values each per
      // thread (a trip count the compiler can unroll). When one chunk holds every channel the z
      // tile never changes, so it is staged for the first entry tile only.
      let stageZ = k0 == 0u || C > TC;
      for (var r = 0u; r < TC / 4u; r++) {
        if (stageZ) {
          let c = zc + 4u * r;
          var v = 0.0;
          if (pixOk && c0 + c < C) { v = f32(z[zBase + (c0 + c) * p.hw]); }
          zs[c * TP + zp] = v;
        }
        let e = li + 256u * r;
        let kk = e / TC;
        let ce = e - kk * TC;
        var w = 0.0;
        if (k0 + kk < K && c0 + ce < C) { w = f32(codebook[(k0 + kk) * C + c0 + ce]); }
        es[ce * TK + kk] = w;
      }
      workgroupBarrier();
      // Padded channels hold zero on both sides and add nothing.
      for (var c = 0u; c < TC; c++) {
        let eo = c * TK + tx;
        let ev = vec4<f32>(es[eo], es[eo + 16u], es[eo + 32u], es[eo + 48u]);
        let zo = c * TP + ty;
        let d0 = zs[zo] - ev;
        let d1 = zs[zo + 16u] - ev;
        let d2 = zs[zo + 32u] - ev;
        let d3 = zs[zo + 48u] - ev;
        acc0 += d0 * d0;
        acc1 += d1 * d1;
        acc2 += d2 * d2;
        acc3 += d3 * d3;
      }
      workgroupBarrier();
    }
    let kb = k0 + tx;
    b0 = scan(b0, acc0, kb, K);
    b1 = scan(b1, acc1, kb, K);
    b2 = scan(b2, acc2, kb, K);
    b3 = scan(b3, acc3, kb, K);
  }

  // Reduce the 16 entry lanes of each pixel: es[lane * 64 + pixel] = distance, ri = its index.
  let ro = tx * TP + ty;
  es[ro] = b0.d;        ri[ro] = b0.i;
  es[ro + 16u] = b1.d;  ri[ro + 16u] = b1.i;
  es[ro + 32u] = b2.d;  ri[ro + 32u] = b2.i;
  es[ro + 48u] = b3.d;  ri[ro + 48u] = b3.i;
  workgroupBarrier();
  if (li < TP) {
    var d = es[li];
    var k = ri[li];
    for (var lane = 1u; lane < 16u; lane++) {
      let d2 = es[lane * TP + li];
      let k2 = ri[lane * TP + li];
      if (d2 < d || (d2 == d && k2 < k)) { d = d2; k = k2; }
    }
    best[li] = k;
    let n = pix0 + li;
    if (n < p.npix) { indices[n] = i32(k); }
  }
  workgroupBarrier();
  // Gather the chosen entries into NCHW with all 256 threads (coalesced along pixels).
  for (var e = li; e < C * TP; e += 256u) {
    let c = e / TP;
    let pp = e - c * TP;
    let n = pix0 + pp;
    if (n < p.npix) {
      let b = n / p.hw;
      let s = n - b * p.hw;
      quantized[(b * C + c) * p.hw + s] = codebook[best[pp] * C + c];
    }
  }
}
`;

// The second half of the lookup on the GEMM core: the GEMM has written s[b, k, p] = z_p . e_k
// (f32, NCHW like a 1x1 conv with the codebook as its weight); this picks, per pixel p, the k
// minimising |e_k|^2 - 2 s (the squared distance less the pixel's own |z_p|^2, which is the same
// for every k), and gathers that entry. A workgroup of 64 pixels computes the entry norms of each
// 256-entry chunk once into workgroup memory; each thread then scans the chunk in increasing k
// with a strict '<', so the first of tied entries wins, as torch.argmin.
export const vqArgminWgsl = /* wgsl */ `
struct Params {
  npix: u32,      // B * H * W
  hw: u32,        // H * W
  channels: u32,  // C
  entries: u32,   // K
  rowStride: u32, // workgroups per grid row
}
@group(0) @binding(0) var<storage, read> s: array<f32>;
@group(0) @binding(1) var<storage, read> codebook: array<T>;
@group(0) @binding(2) var<storage, read_write> quantized: array<T>;
@group(0) @binding(3) var<storage, read_write> indices: array<i32>;
@group(0) @binding(4) var<uniform> p: Params;

const TP: u32 = 64u;   // pixels per workgroup (one per thread)
const NK: u32 = 256u;  // entries per staged chunk of norms
const BIG: f32 = 3.4028234663852886e38;
var<workgroup> norms: array<f32, NK>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let pix0 = (wg.y * p.rowStride + wg.x) * TP;
  if (pix0 >= p.npix) { return; }  // uniform per workgroup
  let C = p.channels;
  let K = p.entries;
  let n = pix0 + li;
  let ok = n < p.npix;
  let b = n / p.hw;
  let px = n - b * p.hw;
  // s[b][k][px]: consecutive threads read consecutive pixels of one entry's plane
  let sBase = b * K * p.hw + px;
  var bestD = BIG;
  var bestK = 0u;
  for (var k0 = 0u; k0 < K; k0 += NK) {
    for (var j = li; j < NK; j += TP) {
      var acc = 0.0;
      if (k0 + j < K) {
        let e0 = (k0 + j) * C;
        for (var c = 0u; c < C; c++) { let v = f32(codebook[e0 + c]); acc += v * v; }
      }
      norms[j] = acc;
    }
    workgroupBarrier();
    if (ok) {
      let kEnd = min(NK, K - k0);
      for (var j = 0u; j < kEnd; j++) {
        let d = norms[j] - 2.0 * s[sBase + (k0 + j) * p.hw];
        if (d < bestD) { bestD = d; bestK = k0 + j; }
      }
    }
    workgroupBarrier();
  }
  if (!ok) { return; }
  indices[n] = i32(bestK);
  let qBase = b * C * p.hw + px;
  for (var c = 0u; c < C; c++) { quantized[qBase + c * p.hw] = codebook[bestK * C + c]; }
}
`;
