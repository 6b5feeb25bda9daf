// 2-D convolution as an implicit GEMM, per group g:
//   Y[co, col] = sum_k W[co, k] * X~[k, col],  co < Mg = Cout/groups,  k < Kg = Cin/groups*kH*kW,
//   col < Npix = N*Hout*Wout, where X~ (im2col) is never materialised: each B-tile element is gathered
//   from x with zero padding at load time. PyTorch's weight layout [Cout, Cin/g, kH, kW] makes k
//   contiguous in W, so the A tile is a plain strided copy.
//
// Tiling: a workgroup of WGX x WGY threads computes a BM x BN = (4*RG*WGY) x (4*WGX) output tile;
// each thread owns RG groups of 4 consecutive rows x 4 consecutive columns (16*RG f32 accumulators),
// reading RG vec4s of A and one vec4 of B from workgroup memory per k (RG=2: 32 FMAs per 3 loads).
// The thread that computes column group tx also loads it, so the per-column im2col decode
// (n, oy, ox -> offsets) is done once per thread for the whole K loop, and the per-k decode
// (ci, ky, kx) once per loaded row of 4. The next K tile is fetched into registers while the
// current one is multiplied, then stashed into workgroup memory.
//
// The text is generated per configuration (tile shape, 1x1 fast path, bias, residual, vector
// widths, split-K) so unused bindings do not exist and the loops over the 4 columns, the row groups
// and the staging registers are unrolled in the source.
import { flatMain } from './kit.wgsl.js';

export interface Conv2dKernelConfig {
  /** threads along the column (pixel) dimension; BN = 4 * wgx */
  wgx: number;
  /** threads along the row (output channel) dimension; BM = 4 * rg * wgy */
  wgy: number;
  /** row groups of 4 per thread (1 or 2): a thread computes 4*rg rows x 4 columns */
  rg: number;
  /** K tile depth; a multiple of wgy and of 4 */
  bk: number;
  /** 1x1 kernel, stride 1, no padding: X~[k, col] = x[n, g*Cin/g + k, pix], no decode, no bounds */
  pointwise: boolean;
  bias: boolean;
  residual: boolean;
  /** Kg % 4 == 0: weights read as vec4 (4 consecutive k of a row) */
  vecW: boolean;
  /** Hout*Wout % 4 == 0: a thread's 4 columns are contiguous in y (and residual), stored as one vec4 */
  vecY: boolean;
  /** pointwise with H*W % 4 == 0: a thread's 4 columns are contiguous in x, loaded as one vec4 */
  vecX: boolean;
  /** split-K: y is an f32 scratch [kSlices][N][Cout][Hout*Wout] of partial sums (no bias, no
   * residual); conv2dReduceWgsl adds the slices up */
  splitK: boolean;
}

const J = [0, 1, 2, 3];
const XYZW = ['x', 'y', 'z', 'w'];

export function conv2dWgsl(c: Conv2dKernelConfig): string {
  const { wgx, wgy, bk, rg } = c;
  const bm = 4 * rg * wgy;
  const R = Array.from({ length: rg }, (_, r) => r);
  // accumulator (r, i): row (r * wgy + ty) * 4 + i of the tile
  const bn = 4 * wgx;
  const nt = wgx * wgy;
  if (bk % wgy !== 0 || bk % 4 !== 0) throw new Error(`conv2d: bad tile config ${JSON.stringify(c)}`);
  const aGroups = (bm * bk) / 4; // groups of 4 consecutive k of one weight row

  const colSetup = c.pointwise
    ? J.map(
        (j) => `
  let c${j} = col0 + ${j}u;
  let ok${j} = c${j} < p.npix;
  let n${j} = c${j} / p.hwOut;
  let pix${j} = c${j} - n${j} * p.hwOut;
  let xb${j} = n${j} * p.inImg + gIn + pix${j};
  let yb${j} = n${j} * p.outImg + pix${j};`,
      ).join('')
    : J.map(
        (j) => `
  let c${j} = col0 + ${j}u;
  let ok${j} = c${j} < p.npix;
  let n${j} = c${j} / p.hwOut;
  let pix${j} = c${j} - n${j} * p.hwOut;
  let oy${j} = pix${j} / p.wOut;
  let ox${j} = pix${j} - oy${j} * p.wOut;
  let xb${j} = i32(n${j} * p.inImg + gIn);
  // an out-of-range column gets a row far outside the image, so the bounds test alone rejects it
  let iy${j} = select(-1073741824, i32(oy${j} * p.sh) - p.pt, ok${j});
  let ix${j} = i32(ox${j} * p.sw) - p.pl;
  let yb${j} = n${j} * p.outImg + pix${j};`,
      ).join('');

  if (c.vecX && !c.pointwise) throw new Error('conv2d: vecX needs the pointwise path');
  const bLoad = c.vecX
    ? `
      if (ok0) { v = vec4<f32>(x[(xb0 + k * p.hw) / 4u]); }`
    : c.pointwise
    ? `
      let koff = k * p.hw;
${J.map((j) => `      if (ok${j}) { v.${XYZW[j]} = f32(x[xb${j} + koff]); }`).join('\n')}`
    : `
      let ci = k / p.khw;
      let r = k - ci * p.khw;
      let ky = r / p.kw;
      let kx = r - ky * p.kw;
      let coff = i32(ci * p.hw);
      let dy = i32(ky * p.dh);
      let dx = i32(kx * p.dw);
${J.map(
  (j) => `      {
        let iy = iy${j} + dy;
        let ix = ix${j} + dx;
        if (u32(iy) < p.h && u32(ix) < p.w) { v.${XYZW[j]} = f32(x[u32(xb${j} + coff + iy * i32(p.w) + ix)]); }
      }`,
).join('\n')}`;

  // Register staging: each thread fetches its share of the next A and B tiles into registers
  // (aPer vec4s of 4 consecutive k of one weight row, bPer vec4s of 4 columns of one k), then stashes
  // them into workgroup memory after the barrier.
  const aPer = Math.ceil(aGroups / nt);
  const aRagged = aGroups % nt !== 0;
  const bPer = bk / wgy;
  const S = Array.from({ length: aPer }, (_, i) => i);
  const P = Array.from({ length: bPer }, (_, i) => i);
  const fetchDecl = [...S.map((s) => `  var ra${s} = vec4<f32>(0.0);`), ...P.map((q) => `  var rb${q} = vec4<f32>(0.0);`)].join('\n');
  const fetch = (tExpr: string): string => `
    let k0 = (${tExpr}) * ${bk}u;${S.map(
      (s) => `
    {
      let i = tid + ${s * nt}u;
      let mm = i / ${bk / 4}u;
      let kq = (i % ${bk / 4}u) * 4u;
      let m = m0 + mm;
      let wb = (wRow0 + m) * p.kG + k0 + kq;
      var v = vec4<f32>(0.0);
      if (${aRagged ? `i < ${aGroups}u && ` : ''}m < p.mG) {
${
  c.vecW
    ? `        if (k0 + kq < p.kG) { v = vec4<f32>(weight[wb / 4u]); }`
    : J.map((j) => `        if (k0 + kq + ${j}u < p.kG) { v.${XYZW[j]} = f32(weight[wb + ${j}u]); }`).join('\n')
}
      }
      ra${s} = v;
    }`,
    ).join('')}${P.map(
      (q) => `
    {
      let k = k0 + ty + ${q * wgy}u;
      var v = vec4<f32>(0.0);
      if (k < p.kG) {${bLoad}
      }
      rb${q} = v;
    }`,
    ).join('')}`;
  const stash = [
    ...S.map(
      (s) => `    {
      let i = tid + ${s * nt}u;
      ${aRagged ? `if (i < ${aGroups}u) ` : ''}{
        let mm = i / ${bk / 4}u;
        let kq = (i % ${bk / 4}u) * 4u;
${J.map((j) => `        As[(kq + ${j}u) * ${bm / 4}u + mm / 4u][mm % 4u] = ra${s}.${XYZW[j]};`).join('\n')}
      }
    }`,
    ),
    ...P.map((q) => `    Bs[(ty + ${q * wgy}u) * ${wgx}u + tx] = rb${q};`),
  ].join('\n');

  const bindings = [
    `@group(0) @binding(0) var<storage, read> x: array<${c.vecX ? 'T4' : 'T'}>;`,
    `@group(0) @binding(1) var<storage, read> weight: array<${c.vecW ? 'T4' : 'T'}>;`,
    `@group(0) @binding(2) var<storage, read_write> y: array<${c.vecY ? 'T4' : 'T'}>;`,
    `@group(0) @binding(3) var<uniform> p: Params;`,
  ];
  if (c.splitK) {
    if (c.bias || c.residual) throw new Error('conv2d: split-K partials take no bias or residual');
    bindings[2] = `@group(0) @binding(2) var<storage, read_write> y: array<${c.vecY ? 'vec4<f32>' : 'f32'}>;`;
  }
  const outT = c.splitK ? 'f32' : 'T';
  const outT4 = c.splitK ? 'vec4<f32>' : 'T4';
  if (c.bias) bindings.push(`@group(0) @binding(4) var<storage, read> bias: array<T>;`);
  if (c.residual) bindings.push(`@group(0) @binding(5) var<storage, read> residual: array<${c.vecY ? 'T4' : 'T'}>;`);

  const store = R.flatMap((r) => J.map((i) => [r, i])).map(
    ([r, i]) => `
  {
    let m = m0 + (${r * wgy}u + ty) * 4u + ${i}u;
    if (m < p.mG) {
      let co = g * p.mG + m;
      let rowOff = co * p.hwOut;
      let b = ${c.bias ? 'f32(bias[co])' : '0.0'};
${c.vecY ? `      if (ok0) {
        let o = (yb0 + rowOff) / 4u;
        y[o + sliceOff] = ${outT4}(acc${r}_${i} + b${c.residual ? ' + vec4<f32>(residual[o])' : ''});
      }` : J.map(
  (j) => `      if (ok${j}) {
        let o = yb${j} + rowOff;
        y[o + sliceOff] = ${outT}(acc${r}_${i}.${XYZW[j]} + b${c.residual ? ' + f32(residual[o])' : ''});
      }`,
).join('\n')}
    }
  }`,
  ).join('');

  return /* wgsl */ `
struct Params {
  h: u32, w: u32, hw: u32, inImg: u32,
  cinG: u32, mG: u32, kG: u32, npix: u32,
  hwOut: u32, wOut: u32, outImg: u32, groups: u32,
  kw: u32, khw: u32, sh: u32, sw: u32,
  dh: u32, dw: u32, pt: i32, pl: i32,
  tilesX: u32, nSplits: u32, tilesPerSlice: u32, sliceStride: u32,
}
${bindings.join('\n')}

// A tile: [BK][BM] as vec4 over 4 consecutive rows; B tile: [BK][BN] as vec4 over 4 consecutive columns.
var<workgroup> As: array<vec4<f32>, ${(bk * bm) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${(bk * bn) / 4}>;

@compute @workgroup_size(${wgx}, ${wgy})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tx = lid.x;
  let ty = lid.y;
  let tid = ty * ${wgx}u + tx;
  let g = wid.z % p.groups;
  // wid.z = (kSlice * nSplits + nSplit) * groups + g; nSplit extends x past the per-dimension limit
  let zr = wid.z / p.groups;
  let nTile = wid.x + (zr % p.nSplits) * p.tilesX;
  let kSlice = zr / p.nSplits;
  let m0 = wid.y * ${bm}u;
  let col0 = nTile * ${bn}u + tx * 4u;
  let gIn = g * p.cinG * p.hw;
  let wRow0 = g * p.mG;
${colSetup}

${R.flatMap((r) => J.map((i) => `  var acc${r}_${i} = vec4<f32>(0.0);`)).join('\n')}

  let tStart = kSlice * p.tilesPerSlice;
  let tEnd = min((p.kG + ${bk - 1}u) / ${bk}u, tStart + p.tilesPerSlice);
${fetchDecl}
  if (tStart < tEnd) {${fetch('tStart')}
  }
  for (var t = tStart; t < tEnd; t++) {
${stash}
    workgroupBarrier();
    // the next tile's global loads are in flight while this one is multiplied
    if (t + 1u < tEnd) {${fetch('t + 1u')}
    }
    for (var kk = 0u; kk < ${bk}u; kk++) {
      let b = Bs[kk * ${wgx}u + tx];
${R.map(
  (r) => `      let a${r} = As[kk * ${bm / 4}u + ${r * wgy}u + ty];
${J.map((i) => `      acc${r}_${i} += a${r}.${XYZW[i]} * b;`).join('\n')}`,
).join('\n')}
    }
    workgroupBarrier();
  }
  let sliceOff = kSlice * p.sliceStride;
${store}
}
`;
}

/** Sums the split-K partial slices, adds bias and residual, and converts to the storage type. */
export function conv2dReduceWgsl(bias: boolean, residual: boolean): string {
  return /* wgsl */ `
struct Params { total: u32, slices: u32, hwOut: u32, cout: u32, }
@group(0) @binding(0) var<storage, read> part: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
${bias ? '@group(0) @binding(3) var<storage, read> bias: array<T>;' : ''}
${residual ? '@group(0) @binding(4) var<storage, read> residual: array<T>;' : ''}
${flatMain(
  'p.total',
  `  var s = 0.0;
  for (var k = 0u; k < p.slices; k++) { s += part[k * p.total + i]; }
${bias ? '  s += f32(bias[(i / p.hwOut) % p.cout]);' : ''}
${residual ? '  s += f32(residual[i]);' : ''}
  y[i] = T(s);`,
)}`;
}
