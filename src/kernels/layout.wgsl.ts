// Data-movement kernels: strided block copies (concat, slice), nearest upsampling, batched transpose.
import { flatMain } from './kit.wgsl.js';

/**
 * dst[dstOff + o * dstStride + r] = src[srcOff + o * srcStride + r] for o < outer, r < inner.
 * concat writes each input into its column band of the output; slice reads a band of the input.
 */
export const blockCopyWgsl = /* wgsl */ `
struct Params { n: u32, inner: u32, srcStride: u32, srcOff: u32, dstStride: u32, dstOff: u32, }
@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read_write> dst: array<T>;
@group(0) @binding(2) var<uniform> p: Params;

${flatMain(
  'p.n',
  `  let o = i / p.inner;
  let r = i - o * p.inner;
  dst[p.dstOff + o * p.dstStride + r] = src[p.srcOff + o * p.srcStride + r];`,
)}`;

/** y[nc, oy, ox] = x[nc, oy / 2, ox / 2]; one thread per pair of horizontally adjacent outputs. */
export const upsampleNearest2xWgsl = /* wgsl */ `
struct Params { n: u32, h: u32, w: u32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;

${flatMain(
  'p.n',
  `  // i enumerates (nc, oy, ix): each input element read once per output row it feeds.
  let ix = i % p.w;
  let t = i / p.w;
  let oy = t % (2u * p.h);
  let nc = t / (2u * p.h);
  let v = x[(nc * p.h + oy / 2u) * p.w + ix];
  let o = t * 2u * p.w + 2u * ix;
  y[o] = v;
  y[o + 1u] = v;`,
)}`;

/** Batched transpose [B, R, C] -> [B, C, R] through a 32x32 workgroup tile (coalesced both ways). */
export const transposeWgsl = /* wgsl */ `
struct Params { rows: u32, cols: u32, tilesX: u32, tiles: u32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> tile: array<T, 1056>; // 32 x 33: the padding column avoids bank conflicts

@compute @workgroup_size(32, 8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) l: vec3<u32>) {
  // x and y enumerate the tiles of one matrix (split for the per-dimension limit), z the batch.
  let t = wid.y * nwg.x + wid.x;
  if (t >= p.tiles) { return; }
  let c0 = (t % p.tilesX) * 32u;
  let r0 = (t / p.tilesX) * 32u;
  let base = wid.z * p.rows * p.cols;
  for (var k = 0u; k < 32u; k += 8u) {
    let r = r0 + l.y + k;
    let c = c0 + l.x;
    if (r < p.rows && c < p.cols) { tile[(l.y + k) * 33u + l.x] = x[base + r * p.cols + c]; }
  }
  workgroupBarrier();
  for (var k = 0u; k < 32u; k += 8u) {
    let c = c0 + l.y + k;
    let r = r0 + l.x;
    if (r < p.rows && c < p.cols) { y[base + c * p.rows + r] = tile[l.x * 33u + l.y + k]; }
  }
}
`;
