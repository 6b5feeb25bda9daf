// The one tiled GEMM of the engine: C[z] = epilogue(op(A[z]) op(B[z])), generated per variant.
// matmul, linear and conv2d (as an implicit GEMM) all run on it; they differ only in how B is
// loaded (a stored matrix, or the im2col of an NCHW image gathered at load time, as TF.js's
// conv2d_mm supplies only its own loaders to a shared matmul) and in the epilogue (bias per row or
// per column, activation, residual, row-major or NCHW store, or f32 partial sums for split-K).
//
// Why generated text rather than one module with override constants: the binding element type
// (T vs T4) changes with the vector width we may use, and the optional bias/residual bindings must
// be absent from the module when the launcher has nothing to bind there. Everything else that
// matters for speed (tile sizes, register block, the unrolled FMA body) is also baked in so the
// downstream compiler sees constant indices and keeps the accumulators in registers.
//
// Layout of the work: a workgroup of WG_X x WG_Y threads owns a BM x BN tile of C
// (BM = 4 * RM * WG_Y, BN = 4 * RN * WG_X). Each thread owns RM x RN blocks of 4x4 outputs, strided
// by the workgroup size so that neighbouring threads read neighbouring vec4s of the shared tiles.
// Per K step the workgroup stages a BM x BK slice of A and a BK x BN slice of B in workgroup memory,
// both k-major (As[k][m], Bs[k][n]) so the inner loop reads one vec4 of A rows and one vec4 of B
// columns per 16 FMAs. Global loads go along whichever dimension is contiguous in memory
// (k for A unless transposed, n for B unless transposed), as vec4 when that dimension is a
// multiple of 4, else as guarded scalars; out-of-range elements load as zero so partial tiles need
// no special inner loop. Thread slot l always loads the same (row, column) offset inside the tile,
// so per-column work (the im2col pixel decode) is done once before the K loop. The next K step's
// global loads are issued into registers right after the current tile is in shared memory, so
// their latency overlaps the FMA loop.
//
// The grid: x = column tiles, y = row tiles, z = slice * batch + item (batch items or conv groups;
// slices only with split-K); off{X,Y,Z} let the launcher split a grid over several dispatches.
import { activationWgsl, flatMain, type Activation } from './kit.wgsl.js';

export interface GemmTile {
  /** threads along n and m */
  wgX: number;
  wgY: number;
  /** 4x4 register blocks per thread along m and n */
  rm: number;
  rn: number;
  /** depth of one shared-memory stage (4 for subgroup tiles: one vec4 of k per step) */
  bk: number;
  /** the subgroup-broadcast form for CPU adapters (see gemmSubgroupBody): no workgroup memory, wgY = 1 */
  subgroup?: boolean;
}

/** B as a stored matrix [K, N] (or [N, K] transposed). */
export interface MatrixB {
  kind: 'matrix';
  trans: boolean;
  /** vec4 loads along the contiguous dimension */
  vec: boolean;
}

/** B as the im2col of x [Nimg, Cin, H, W]: B[k, col] with k = (ci, ky, kx), col = (img, oy, ox). */
export interface Im2colB {
  kind: 'im2col';
  /** 1x1 kernel, stride 1, no padding: B[k, col] = x[img, ci, pix], no decode and no bounds */
  pointwise: boolean;
  /** pointwise with H*W % 4 == 0: 4 columns are contiguous in x, loaded as one vec4 */
  vec: boolean;
  /** kernel width and kH*kW, baked into the subgroup body so its per-k decode divides by constants */
  kw?: number;
  khw?: number;
}

export interface GemmVariant {
  tile: GemmTile;
  transA: boolean;
  vecA: boolean;
  b: MatrixB | Im2colB;
  /** vec4 stores (and residual loads): 4 columns of a row are contiguous in C */
  vecC: boolean;
  /** bias per output row (conv channels) or per column (linear features) */
  bias: 'none' | 'm' | 'n';
  residual: boolean;
  act: Activation;
  /** row-major [z][M][N], or NCHW with m = channel within the group and n = (img, pixel) */
  out: 'matrix' | 'nchw';
  /** write f32 partial sums of K slice z / batch (no epilogue; gemmReduceWgsl finishes) */
  splitK: boolean;
  /** GEGLU (subgroup tiles): B is [2N, K]; C[m, n] = (AB[m, n] + bias[n]) * gelu(AB[m, n + N] + bias[n + N]) */
  geglu?: boolean;
}

export function gemmKey(v: GemmVariant): string {
  const t = v.tile;
  const b = v.b.kind === 'matrix' ? `${v.b.trans ? 'tB' : 'nB'}${+v.b.vec}` : `${v.b.pointwise ? 'pw' : 'i2c'}${+v.b.vec}${v.b.khw ? `k${v.b.kw}x${v.b.khw}` : ''}`;
  return [
    `gemm_${t.wgX}x${t.wgY}_r${t.rm}x${t.rn}_k${t.bk}${t.subgroup ? 'sg' : ''}`,
    `${v.transA ? 'tA' : 'nA'}${+v.vecA}`,
    b,
    `c${+v.vecC}${v.out === 'nchw' ? 'nchw' : ''}`,
    v.bias === 'none' ? '' : `b${v.bias}`,
    v.residual ? 'r' : '',
    v.act === 'none' ? '' : v.act,
    v.splitK ? 'splitK' : '',
    v.geglu ? 'geglu' : '',
  ]
    .filter((s) => s)
    .join('_');
}

/** Tile extent in rows (m) and columns (n). */
export function tileDims(t: GemmTile): { BM: number; BN: number } {
  return { BM: 4 * t.rm * t.wgY, BN: 4 * t.rn * t.wgX };
}

/** Shared-memory bytes a tile needs at most (f32 staging, padded rows). */
export function gemmSharedBytes(t: GemmTile): number {
  return t.subgroup ? 0 : 16 * t.bk * (t.rm * t.wgY + 1 + t.rn * t.wgX + 1);
}

/** Whether the tile's loads split evenly over its threads (the generator's one constraint). */
export function tileValid(t: GemmTile): boolean {
  // subgroup tiles: rows come in groups of 8 (one per lane of an 8-wide subgroup), k in steps of 4
  if (t.subgroup) return t.wgY === 1 && t.rm % 2 === 0 && t.bk === 4 && t.wgX >= 8;
  const { BM, BN } = tileDims(t);
  const threads = t.wgX * t.wgY;
  return t.bk % 4 === 0 && ((BM * t.bk) / 4) % threads === 0 && ((BN * t.bk) / 4) % threads === 0;
}

/** The uniform block every variant shares (the launcher fills the fields it does not use with 0). */
export const GEMM_PARAMS = `struct Params {
  M: u32, N: u32, K: u32, batch: u32,
  // 0 when that operand is one matrix shared by every item of the batch
  strideA: u32, strideB: u32, strideC: u32, kTilesPerSlice: u32,
  offX: u32, offY: u32, offZ: u32, partStride: u32,
  // im2col geometry (conv2d)
  h: u32, w: u32, hw: u32, inImg: u32,
  cinG: u32, hwOut: u32, wOut: u32, outImg: u32,
  kw: u32, khw: u32, sh: u32, sw: u32,
  dh: u32, dw: u32, pt: i32, pl: i32,
}`;

const comps = ['x', 'y', 'z', 'w'];

export function gemmWgsl(v: GemmVariant): string {
  const { wgX, wgY, rm, rn, bk } = v.tile;
  const threads = wgX * wgY;
  const { BM, BN } = tileDims(v.tile);
  const transB = v.b.kind === 'matrix' && v.b.trans;
  // k-row pitch of the shared tiles, in vec4s. When the operand's global rows run along k, each
  // thread scatters one vec4 down four k rows; one vec4 of padding per row moves those rows onto
  // different banks (conflict-free for the large tile, halved conflicts for the others).
  const BM4 = BM / 4 + (v.transA ? 0 : 1);
  const BN4 = BN / 4 + (transB ? 1 : 0);
  if (!tileValid(v.tile)) throw new Error(`gemm: tile ${BM}x${BN}x${bk} does not split evenly over ${threads} threads`);
  if (v.splitK && (v.bias !== 'none' || v.residual || v.act !== 'none')) throw new Error('gemm: split-K partials take no epilogue');
  const elt = (vec: boolean) => (vec ? 'T4' : 'T');
  const outElt = (vec: boolean) => (v.splitK ? (vec ? 'vec4<f32>' : 'f32') : elt(vec));
  const L: string[] = [];
  L.push(GEMM_PARAMS);
  L.push(`@group(0) @binding(0) var<storage, read> lhs: array<${elt(v.vecA)}>;`);
  L.push(`@group(0) @binding(1) var<storage, read> rhs: array<${elt(v.b.vec)}>;`);
  if (v.bias !== 'none') L.push(`@group(0) @binding(2) var<storage, read> addBias: array<${v.bias === 'n' ? elt(v.vecC) : 'T'}>;`);
  if (v.residual) L.push(`@group(0) @binding(3) var<storage, read> addRes: array<${elt(v.vecC)}>;`);
  L.push(`@group(0) @binding(4) var<storage, read_write> dst: array<${outElt(v.vecC)}>;`);
  L.push(`@group(0) @binding(5) var<uniform> p: Params;`);
  L.push(activationWgsl(v.geglu ? 'gelu' : v.act, 'vec4<f32>'));
  if (v.geglu && (!v.tile.subgroup || v.splitK || v.residual || v.act !== 'none' || v.out !== 'matrix')) throw new Error('gemm: the GEGLU epilogue needs a subgroup tile, a matrix output and no other epilogue');
  if (v.tile.subgroup) {
    L.unshift('enable subgroups;');
    L.push(...gemmSubgroupBody(v), ...(v.geglu ? gegluEpilogue(v) : epilogue(v, rm, rn, wgX, wgY)), '}');
    return L.join('\n') + '\n';
  }
  L.push(`var<workgroup> As: array<vec4<f32>, ${bk * BM4}>;`);
  L.push(`var<workgroup> Bs: array<vec4<f32>, ${bk * BN4}>;`);

  // One matrix operand's staging. The operand is a row-major matrix with S rows (the strided
  // dimension) and C columns (contiguous); `kContig` says whether its contiguous dimension is k. A
  // tile covers Es x Ec of it; slot l handles the same (s, c) offset inside every tile, so those
  // are computed once, and each K step only moves the tile origin.
  interface Operand {
    id: 'A' | 'B';
    buf: 'lhs' | 'rhs';
    shared: 'As' | 'Bs';
    outer4: number;
    kContig: boolean;
    vec: boolean;
    S: string;
    C: string;
    Ec: number;
    Es: number;
    base: string;
    /** tile origin (s0, c0) for a k offset expression */
    origin: (k0: string) => [string, string];
  }
  const matrixLoader = (o: Operand): string => {
    const body: string[] = [`fn load${o.id}(gs: u32, gc: u32, rows: u32) -> vec4<f32> {`, `  var v = vec4<f32>(0.0);`];
    if (o.vec) {
      body.push(`  if (gs < rows && gc < ${o.C}) { v = vec4<f32>(${o.buf}[(gs * ${o.C} + gc) / 4u]); }`);
    } else {
      body.push(`  if (gs < rows) {`, `    let row = gs * ${o.C} + gc;`);
      for (let q = 0; q < 4; q++) body.push(`    if (gc + ${q}u < ${o.C}) { v.${comps[q]} = f32(${o.buf}[row + ${q}u]); }`);
      body.push(`  }`);
    }
    body.push(`  return v;`, `}`);
    return body.join('\n');
  };
  const slots = (o: Operand) => (o.Ec * o.Es) / 4 / threads;
  const setup = (o: Operand): string[] => {
    const out: string[] = [];
    for (let l = 0; l < slots(o); l++) {
      out.push(`  let s${o.id}${l} = (lid + ${l * threads}u) / ${o.Ec / 4}u;`);
      out.push(`  let c${o.id}${l} = ((lid + ${l * threads}u) % ${o.Ec / 4}u) * 4u;`);
    }
    return out;
  };
  // Batch offsets fold into the row index: rows of consecutive batch items are consecutive.
  const fetchMatrix = (o: Operand, k0: string, decl: boolean): string[] => {
    const [s0, c0] = o.origin(k0);
    const out: string[] = [];
    for (let l = 0; l < slots(o); l++) {
      out.push(`  ${decl ? 'var ' : ''}p${o.id}${l} = load${o.id}(${o.base} + ${s0} + s${o.id}${l}, ${c0} + c${o.id}${l}, ${o.S});`);
    }
    return out;
  };
  const store = (o: Operand): string[] => {
    const out: string[] = [];
    for (let l = 0; l < slots(o); l++) {
      const s = `s${o.id}${l}`;
      const c = `c${o.id}${l}`;
      if (o.kContig) {
        // s is the m (or n) index, c..c+3 are k: scatter into four k rows of the k-major tile.
        for (let q = 0; q < 4; q++) out.push(`    ${o.shared}[(${c} + ${q}u) * ${o.outer4}u + ${s} / 4u][${s} % 4u] = p${o.id}${l}.${comps[q]};`);
      } else {
        out.push(`    ${o.shared}[${s} * ${o.outer4}u + ${c} / 4u] = p${o.id}${l};`);
      }
    }
    return out;
  };
  // A: [M, K] (k contiguous) or transposed [K, M] (m contiguous); rows of item z start at z * rowsPerA.
  const opA: Operand = v.transA
    ? { id: 'A', buf: 'lhs', shared: 'As', outer4: BM4, kContig: false, vec: v.vecA, S: 'rowsA', C: 'p.M', Ec: BM, Es: bk, base: 'rowA0', origin: (k0) => [k0, 'tileM'] }
    : { id: 'A', buf: 'lhs', shared: 'As', outer4: BM4, kContig: true, vec: v.vecA, S: 'rowsA', C: 'p.K', Ec: bk, Es: BM, base: 'rowA0', origin: (k0) => ['tileM', k0] };
  // B: [K, N] (n contiguous) or transposed [N, K] (k contiguous); the im2col B is k-major like [K, N].
  const opB: Operand = transB
    ? { id: 'B', buf: 'rhs', shared: 'Bs', outer4: BN4, kContig: true, vec: v.b.vec, S: 'rowsB', C: 'p.K', Ec: bk, Es: BN, base: 'rowB0', origin: (k0) => ['tileN', k0] }
    : { id: 'B', buf: 'rhs', shared: 'Bs', outer4: BN4, kContig: false, vec: v.b.vec, S: 'rowsB', C: 'p.N', Ec: BN, Es: bk, base: 'rowB0', origin: (k0) => [k0, 'tileN'] };

  // The im2col loader: slot l's four columns are fixed for the whole K loop, so their image,
  // output pixel and input window origin are decoded once here; each K step decodes its k row
  // (channel, ky, kx) once per four loads.
  const im2colSetup = (b: Im2colB): string[] => {
    const out: string[] = [`  let gIn = item * p.cinG * p.hw;`];
    for (let l = 0; l < slots(opB); l++) {
      for (let j = 0; j < (b.vec ? 1 : 4); j++) {
        const t = `${l}_${j}`;
        out.push(`  let col${t} = tileN + cB${l} + ${j}u;`);
        out.push(`  let ok${t} = col${t} < p.N;`);
        out.push(`  let img${t} = col${t} / p.hwOut;`);
        out.push(`  let pix${t} = col${t} - img${t} * p.hwOut;`);
        if (b.pointwise) {
          out.push(`  let xb${t} = img${t} * p.inImg + gIn + pix${t};`);
        } else {
          out.push(`  let oy${t} = pix${t} / p.wOut;`);
          out.push(`  let xb${t} = i32(img${t} * p.inImg + gIn);`);
          // an out-of-range column gets a row far outside the image, so the bounds test alone rejects it
          out.push(`  let iy${t} = select(-1073741824, i32(oy${t} * p.sh) - p.pt, ok${t});`);
          out.push(`  let ix${t} = i32((pix${t} - oy${t} * p.wOut) * p.sw) - p.pl;`);
        }
      }
    }
    return out;
  };
  const fetchIm2col = (b: Im2colB, k0: string, decl: boolean): string[] => {
    const out: string[] = [];
    for (let l = 0; l < slots(opB); l++) {
      out.push(`  ${decl ? 'var ' : ''}pB${l} = vec4<f32>(0.0);`);
      out.push(`  {`, `    let k = ${k0} + sB${l};`, `    if (k < p.K) {`);
      if (b.vec) {
        out.push(`      if (ok${l}_0) { pB${l} = vec4<f32>(rhs[(xb${l}_0 + k * p.hw) / 4u]); }`);
      } else if (b.pointwise) {
        out.push(`      let koff = k * p.hw;`);
        for (let j = 0; j < 4; j++) out.push(`      if (ok${l}_${j}) { pB${l}.${comps[j]} = f32(rhs[xb${l}_${j} + koff]); }`);
      } else {
        out.push(
          `      let ci = k / p.khw;`,
          `      let r = k - ci * p.khw;`,
          `      let ky = r / p.kw;`,
          `      let coff = i32(ci * p.hw);`,
          `      let dy = i32(ky * p.dh);`,
          `      let dx = i32((r - ky * p.kw) * p.dw);`,
        );
        for (let j = 0; j < 4; j++) {
          const t = `${l}_${j}`;
          out.push(
            `      {`,
            `        let iy = iy${t} + dy;`,
            `        let ix = ix${t} + dx;`,
            `        if (u32(iy) < p.h && u32(ix) < p.w) { pB${l}.${comps[j]} = f32(rhs[u32(xb${t} + coff + iy * i32(p.w) + ix)]); }`,
            `      }`,
          );
        }
      }
      out.push(`    }`, `  }`);
    }
    return out;
  };
  const fetchB = (k0: string, decl: boolean) => (v.b.kind === 'matrix' ? fetchMatrix(opB, k0, decl) : fetchIm2col(v.b, k0, decl));

  L.push(matrixLoader(opA));
  if (v.b.kind === 'matrix') L.push(matrixLoader(opB));

  L.push(`@compute @workgroup_size(${wgX}, ${wgY}, 1)`);
  L.push(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`);
  L.push(`  let tx = lid3.x;`);
  L.push(`  let ty = lid3.y;`);
  L.push(`  let z = wid.z + p.offZ;`);
  L.push(`  let item = z % p.batch;`);
  L.push(`  let slice = z / p.batch;`);
  L.push(`  let tileN = (wid.x + p.offX) * ${BN}u;`);
  L.push(`  let tileM = (wid.y + p.offY) * ${BM}u;`);
  // Bounds are checked against the end of this batch item's rows, so a partial tile never reads
  // into the next item.
  L.push(`  let rowsPerA = ${v.transA ? 'p.K' : 'p.M'};`);
  L.push(`  let rowA0 = select(0u, item * rowsPerA, p.strideA != 0u);`);
  L.push(`  let rowsA = rowA0 + rowsPerA;`);
  if (v.b.kind === 'matrix') {
    L.push(`  let rowsPerB = ${transB ? 'p.N' : 'p.K'};`);
    L.push(`  let rowB0 = select(0u, item * rowsPerB, p.strideB != 0u);`);
    L.push(`  let rowsB = rowB0 + rowsPerB;`);
  }
  for (let i = 0; i < rm; i++) for (let r = 0; r < 4; r++) for (let j = 0; j < rn; j++) L.push(`  var acc_${i}_${r}_${j} = vec4<f32>(0.0);`);
  L.push(...setup(opA), ...setup(opB));
  if (v.b.kind === 'im2col') L.push(...im2colSetup(v.b));
  // K steps [tStart, tEnd) of this slice (all of them without split-K). Slices start on tile
  // boundaries, so the loads' k < K test is the only bound needed.
  L.push(`  let tStart = slice * p.kTilesPerSlice;`);
  L.push(`  let tEnd = min((p.K + ${bk - 1}u) / ${bk}u, tStart + p.kTilesPerSlice);`);
  L.push(...fetchMatrix(opA, 'tStart * ' + bk + 'u', true), ...fetchB(`tStart * ${bk}u`, true));
  L.push(`  for (var kt = tStart; kt < tEnd; kt++) {`);
  L.push(...store(opA), ...store(opB));
  L.push(`  workgroupBarrier();`);
  // Issue the next tile's global loads now so they are in flight during the FMAs below.
  L.push(`  if (kt + 1u < tEnd) {`);
  L.push(`    let k1 = (kt + 1u) * ${bk}u;`);
  L.push(...fetchMatrix(opA, 'k1', false).map((x) => '  ' + x), ...fetchB('k1', false).map((x) => '  ' + x));
  L.push(`  }`);
  L.push(`  for (var k = 0u; k < ${bk}u; k++) {`);
  for (let i = 0; i < rm; i++) L.push(`    let a${i} = As[k * ${BM4}u + ty + ${i * wgY}u];`);
  for (let j = 0; j < rn; j++) L.push(`    let b${j} = Bs[k * ${BN4}u + tx + ${j * wgX}u];`);
  for (let i = 0; i < rm; i++)
    for (let r = 0; r < 4; r++)
      for (let j = 0; j < rn; j++) L.push(`    acc_${i}_${r}_${j} = fma(vec4<f32>(a${i}.${comps[r]}), b${j}, acc_${i}_${r}_${j});`);
  L.push(`  }`);
  L.push(`  workgroupBarrier();`);
  L.push(`  }`);
  L.push(...epilogue(v, rm, rn, wgX, wgY));
  L.push(`}`);
  return L.join('\n') + '\n';
}

// The subgroup-broadcast body, for CPU adapters (lavapipe: llvmpipe runs 8 invocations as the 8
// lanes of one 256-bit SIMD register, a subgroup). There every load whose address differs per lane
// is 8 scalar loads, and a write to a loop-carried variable is a masked blend, while a broadcast
// from a constant lane is one shuffle. So each lane loads as little as possible and reuses it
// most: all lanes of the workgroup share the same BM = 8 * (rm / 2) rows; in each step of 4 k,
// lane l loads one vec4 of A (row m0 + 8h + l, 4 k) and one vec4 of B per k (its 4 columns), and
// subgroupBroadcast(a, i) hands row m0 + 8h + i to every lane: 16 FMAs per lane per loaded vec4 of
// A or B, no workgroup memory and no barriers. It needs subgroups of at least 8 lanes (lanes 8 and
// up load rows that are never broadcast). Rows, columns and k past the edges load as zero from
// clamped addresses, so partial tiles take the same path.
function gemmSubgroupBody(v: GemmVariant): string[] {
  const { wgX, rm, rn } = v.tile;
  const groups = rm / 2; // 8-row groups
  const BN = 4 * rn * wgX;
  const transB = v.b.kind === 'matrix' && v.b.trans;
  // GEGLU: blocks rn..2rn-1 accumulate the gate columns (B rows n + N) of blocks 0..rn-1
  const nb = v.geglu ? 2 * rn : rn;
  if (v.geglu && !transB) throw new Error('gemm: the GEGLU epilogue takes B as [2N, K] (a linear weight)');
  const L: string[] = [];
  L.push(`@compute @workgroup_size(${wgX}, 1, 1)`);
  L.push(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32) {`);
  L.push(`  let tx = lid;`, `  let ty = 0u;`);
  L.push(`  let z = wid.z + p.offZ;`, `  let item = z % p.batch;`, `  let slice = z / p.batch;`);
  L.push(`  let tileN = (wid.x + p.offX) * ${BN}u;`, `  let tileM = (wid.y + p.offY) * ${4 * rm}u;`);
  L.push(`  let rowA0 = select(0u, item * ${v.transA ? 'p.K' : 'p.M'}, p.strideA != 0u);`);
  if (v.b.kind === 'matrix') L.push(`  let rowB0 = select(0u, item * ${transB ? (v.geglu ? '2u * p.N' : 'p.N') : 'p.K'}, p.strideB != 0u);`);
  for (let i = 0; i < rm; i++) for (let r = 0; r < 4; r++) for (let j = 0; j < nb; j++) L.push(`  var acc_${i}_${r}_${j} = vec4<f32>(0.0);`);
  // this lane's A rows (clamped into the item) and B columns (first of 4, per block j)
  for (let h = 0; h < groups; h++) L.push(`  let mA${h} = min(tileM + ${8 * h}u + lane, p.M - 1u);`);
  for (let j = 0; j < rn; j++) L.push(`  let nB${j} = tileN + (tx + ${j * wgX}u) * 4u;`);
  if (v.b.kind === 'im2col') {
    const b = v.b;
    L.push(`  let gIn = item * p.cinG * p.hw;`);
    for (let j = 0; j < rn; j++)
      for (let c = 0; c < (b.vec ? 1 : 4); c++) {
        const t = `${j}_${c}`;
        L.push(`  let col${t} = min(nB${j} + ${c}u, p.N - 1u);`);
        L.push(`  let img${t} = col${t} / p.hwOut;`, `  let pix${t} = col${t} - img${t} * p.hwOut;`);
        if (b.pointwise) L.push(`  let xb${t} = img${t} * p.inImg + gIn + pix${t};`);
        else {
          L.push(`  let oy${t} = pix${t} / p.wOut;`, `  let xb${t} = i32(img${t} * p.inImg + gIn);`);
          L.push(`  let iy${t} = i32(oy${t} * p.sh) - p.pt;`, `  let ix${t} = i32((pix${t} - oy${t} * p.wOut) * p.sw) - p.pl;`);
          if (tapMask(b)) {
            // which of the kernel's taps fall inside the image for this column (none past N), and
            // the column's window origin: per k a lane then only adds the k row's offset
            L.push(`  var taps${t} = 0u;`);
            L.push(`  for (var tp = 0u; tp < ${b.khw}u; tp++) {`);
            L.push(`    let ty_ = iy${t} + i32((tp / ${b.kw}u) * p.dh);`, `    let tx_ = ix${t} + i32((tp % ${b.kw}u) * p.dw);`);
            L.push(`    if (u32(ty_) < p.h && u32(tx_) < p.w) { taps${t} |= 1u << tp; }`, `  }`);
            L.push(`  taps${t} = select(0u, taps${t}, nB${j} + ${c}u < p.N);`);
            L.push(`  let org${t} = xb${t} + iy${t} * i32(p.w) + ix${t};`);
          }
        }
      }
  }
  L.push(`  let kBeg = slice * p.kTilesPerSlice * 4u;`);
  L.push(`  let kEnd = min(p.K, kBeg + p.kTilesPerSlice * 4u);`);
  L.push(`  for (var k = kBeg; k < kEnd; k += 4u) {`);
  // A: one vec4 over k = k..k+3 per 8-row group (zero past K)
  for (let h = 0; h < groups; h++) {
    if (!v.transA && v.vecA) L.push(`    let av${h} = vec4<f32>(lhs[((rowA0 + mA${h}) * p.K + k) / 4u]);`);
    else {
      L.push(`    var av${h} = vec4<f32>(0.0);`);
      for (let q = 0; q < 4; q++) {
        const idx = v.transA ? `(rowA0 + kq) * p.M + mA${h}` : `(rowA0 + mA${h}) * p.K + kq`;
        // lhs is bound as vec4s whenever its rows are a multiple of 4 (transposed: M % 4 == 0)
        const ld = v.vecA ? `lhs[i / 4u][i % 4u]` : `lhs[i]`;
        L.push(`    { let kq = min(k + ${q}u, p.K - 1u); let i = ${idx}; av${h}.${comps[q]} = select(0.0, f32(${ld}), k + ${q}u < p.K); }`);
      }
    }
  }
  // B: b{q}_{j} = the 4 columns of block j at k + q (zero past K or N)
  for (let jj = 0; jj < nb; jj++) {
    const j = jj % rn;
    const n = `nB${j}`;
    const gate = jj >= rn ? ' + p.N' : '';
    if (v.b.kind === 'matrix' && !transB) {
      for (let q = 0; q < 4; q++) {
        L.push(`    var b${q}_${j} = vec4<f32>(0.0);`);
        L.push(`    if (k + ${q}u < p.K) {`, `      let row = (rowB0 + k + ${q}u) * p.N;`);
        if (v.b.vec) L.push(`      b${q}_${j} = select(vec4<f32>(0.0), vec4<f32>(rhs[(row + min(${n}, p.N - 4u)) / 4u]), ${n} < p.N);`);
        else for (let c = 0; c < 4; c++) L.push(`      b${q}_${j}.${comps[c]} = select(0.0, f32(rhs[row + min(${n} + ${c}u, p.N - 1u)]), ${n} + ${c}u < p.N);`);
        L.push(`    }`);
      }
    } else if (v.b.kind === 'matrix') {
      // B stored [N, K]: each column's 4 k are contiguous; transpose into the per-k vectors
      for (let q = 0; q < 4; q++) L.push(`    var b${q}_${jj} = vec4<f32>(0.0);`);
      for (let c = 0; c < 4; c++) {
        L.push(`    {`, `      let ok = ${n} + ${c}u < p.N;`, `      let row = (rowB0 + min(${n} + ${c}u, p.N - 1u)${gate}) * p.K;`);
        if (v.b.vec) {
          L.push(`      let t = select(vec4<f32>(0.0), vec4<f32>(rhs[(row + k) / 4u]), ok);`);
          for (let q = 0; q < 4; q++) L.push(`      b${q}_${jj}.${comps[c]} = t.${comps[q]};`);
        } else {
          for (let q = 0; q < 4; q++) L.push(`      b${q}_${jj}.${comps[c]} = select(0.0, f32(rhs[row + min(k + ${q}u, p.K - 1u)]), ok && k + ${q}u < p.K);`);
        }
        L.push(`    }`);
      }
    } else {
      const b = v.b;
      for (let q = 0; q < 4; q++) {
        L.push(`    var b${q}_${j} = vec4<f32>(0.0);`);
        L.push(`    if (k + ${q}u < p.K) {`, `      let kq = k + ${q}u;`);
        if (b.vec) L.push(`      b${q}_${j} = select(vec4<f32>(0.0), vec4<f32>(rhs[(xb${j}_0 + kq * p.hw) / 4u]), ${n} < p.N);`);
        else if (b.pointwise) {
          L.push(`      let koff = kq * p.hw;`);
          for (let c = 0; c < 4; c++) L.push(`      b${q}_${j}.${comps[c]} = select(0.0, f32(rhs[xb${j}_${c} + koff]), ${n} + ${c}u < p.N);`);
        } else {
          // the k row's (channel, ky, kx) is the same for every lane; with the kernel size baked in
          // the divisions are by constants (multiply and shift)
          const khw = b.khw ? `${b.khw}u` : 'p.khw';
          const kw = b.kw ? `${b.kw}u` : 'p.kw';
          L.push(`      let ci = kq / ${khw};`, `      let r = kq - ci * ${khw};`, `      let ky = r / ${kw};`);
          L.push(`      let coff = i32(ci * p.hw);`, `      let dy = i32(ky * p.dh);`, `      let dx = i32((r - ky * ${kw}) * p.dw);`);
          if (tapMask(b)) {
            L.push(`      let koff = coff + dy * i32(p.w) + dx;`);
            for (let c = 0; c < 4; c++) {
              const t = `${j}_${c}`;
              L.push(`      { let inside = ((taps${t} >> r) & 1u) != 0u; b${q}_${j}.${comps[c]} = select(0.0, f32(rhs[u32(select(0, org${t} + koff, inside))]), inside); }`);
            }
          } else for (let c = 0; c < 4; c++) {
            const t = `${j}_${c}`;
            L.push(`      {`, `        let iy = iy${t} + dy;`, `        let ix = ix${t} + dx;`);
            L.push(`        let inside = u32(iy) < p.h && u32(ix) < p.w && ${n} + ${c}u < p.N;`);
            L.push(`        let at = select(0, xb${t} + coff + iy * i32(p.w) + ix, inside);`);
            L.push(`        b${q}_${j}.${comps[c]} = select(0.0, f32(rhs[u32(at)]), inside);`, `      }`);
          }
        }
        L.push(`    }`);
      }
    }
  }
  // 16 FMAs per broadcast row and block: acc row 8h + i = (block (8h + i) / 4, component (8h + i) % 4)
  for (let h = 0; h < groups; h++)
    for (let i = 0; i < 8; i++) {
      const row = 8 * h + i;
      L.push(`    { let a = subgroupBroadcast(av${h}, ${i}u);`);
      for (let j = 0; j < nb; j++) {
        const acc = `acc_${row >> 2}_${row & 3}_${j}`;
        let e = acc;
        for (let q = 0; q < 4; q++) e = `fma(vec4<f32>(a.${comps[q]}), b${q}_${j}, ${e})`;
        L.push(`      ${acc} = ${e};`);
      }
      L.push(`    }`);
    }
  L.push(`  }`);
  return L;
}

/** The subgroup body's per-column tap mask (one bit per kernel tap) needs the kernel size baked in and <= 32 taps. */
function tapMask(b: Im2colB): boolean {
  return !b.pointwise && !!b.khw && !!b.kw && b.khw <= 32;
}

// GEGLU's epilogue (diffusers' GEGLU after its projection): value block j and gate block j + rn
// of the same columns meet in one thread, so y = (h + b[n]) * gelu(g + b[n + N]) is stored
// directly and the [M, 2N] projection is never written.
function gegluEpilogue(v: GemmVariant): string[] {
  const { wgX, rm, rn } = v.tile;
  const L: string[] = [`  let baseC = item * p.strideC;`];
  for (let j = 0; j < rn; j++) L.push(`  let n${j} = tileN + (tx + ${j * wgX}u) * 4u;`);
  for (let j = 0; j < rn; j++) {
    // the bias pair of these 4 columns (zero past N)
    L.push(`  var bh${j} = vec4<f32>(0.0);`, `  var bg${j} = vec4<f32>(0.0);`);
    if (v.bias === 'n') {
      if (v.vecC) L.push(`  if (n${j} < p.N) { bh${j} = vec4<f32>(addBias[n${j} / 4u]); bg${j} = vec4<f32>(addBias[(n${j} + p.N) / 4u]); }`);
      else for (let q = 0; q < 4; q++) L.push(`  if (n${j} + ${q}u < p.N) { bh${j}.${comps[q]} = f32(addBias[n${j} + ${q}u]); bg${j}.${comps[q]} = f32(addBias[n${j} + ${q}u + p.N]); }`);
    }
  }
  for (let i = 0; i < rm; i++)
    for (let r = 0; r < 4; r++) {
      L.push(`  {`, `    let m = tileM + ${i * 4 + r}u;`, `    if (m < p.M) {`);
      for (let j = 0; j < rn; j++) {
        L.push(`      let y${j} = (acc_${i}_${r}_${j} + bh${j}) * act(acc_${i}_${r}_${j + rn} + bg${j});`);
        L.push(`      let o${j} = baseC + m * p.N + n${j};`);
        if (v.vecC) L.push(`      if (n${j} < p.N) { dst[o${j} / 4u] = T4(y${j}); }`);
        else for (let q = 0; q < 4; q++) L.push(`      if (n${j} + ${q}u < p.N) { dst[o${j} + ${q}u] = T(y${j}.${comps[q]}); }`);
      }
      L.push(`    }`, `  }`);
    }
  return L;
}

// Epilogue: bias, activation, residual, store (or the raw partial sum under split-K). `o` is the
// element offset of the block's first column; under vecC the 4 columns follow it contiguously.
function epilogue(v: GemmVariant, rm: number, rn: number, wgX: number, wgY: number): string[] {
  const L: string[] = [];
  const nchw = v.out === 'nchw';
  const T4 = v.splitK ? 'vec4<f32>' : 'T4';
  const T = v.splitK ? 'f32' : 'T';
  L.push(`  let baseC = item * p.strideC;`);
  L.push(`  let part = slice * p.partStride;`);
  for (let j = 0; j < rn; j++) {
    L.push(`  let n${j} = tileN + (tx + ${j * wgX}u) * 4u;`);
    if (nchw) {
      // each of the 4 columns may lie in another image (and need not be contiguous) unless vecC
      for (let q = 0; q < (v.vecC ? 1 : 4); q++) {
        L.push(`  let outImg${j}_${q} = (n${j} + ${q}u) / p.hwOut;`);
        L.push(`  let outCol${j}_${q} = outImg${j}_${q} * p.outImg + (n${j} + ${q}u - outImg${j}_${q} * p.hwOut);`);
      }
    }
  }
  for (let i = 0; i < rm; i++) {
    for (let r = 0; r < 4; r++) {
      L.push(`  {`);
      L.push(`    let m = tileM + (ty + ${i * wgY}u) * 4u + ${r}u;`);
      L.push(`    if (m < p.M) {`);
      if (nchw) L.push(`      let row = (item * p.M + m) * p.hwOut;`);
      if (v.bias === 'm') L.push(`      let bm = f32(addBias[${nchw ? 'item * p.M + m' : 'm'}]);`);
      for (let j = 0; j < rn; j++) {
        const n = `n${j}`;
        const off = (q: number) => (nchw ? `row + outCol${j}_${q}` : `baseC + m * p.N + ${n} + ${q}u`);
        L.push(`      {`);
        L.push(`        var y = acc_${i}_${r}_${j};`);
        if (v.bias === 'm') L.push(`        y += vec4<f32>(bm);`);
        if (v.vecC) {
          L.push(`        if (${n} < p.N) {`);
          L.push(`          let o = ${off(0)};`);
          if (v.bias === 'n') L.push(`          y += vec4<f32>(addBias[${n} / 4u]);`);
          if (v.act !== 'none') L.push(`          y = act(y);`);
          if (v.residual) L.push(`          y += vec4<f32>(addRes[o / 4u]);`);
          L.push(`          dst[(o + part) / 4u] = ${T4}(y);`);
          L.push(`        }`);
        } else {
          if (v.bias === 'n') {
            for (let q = 0; q < 4; q++) L.push(`        if (${n} + ${q}u < p.N) { y.${comps[q]} += f32(addBias[${n} + ${q}u]); }`);
          }
          if (v.act !== 'none') L.push(`        y = act(y);`);
          for (let q = 0; q < 4; q++) {
            const o = off(nchw ? q : 0).replace(` + ${n} + 0u`, ` + ${n}`);
            const idx = nchw ? o : `${o} + ${q}u`;
            const res = v.residual ? ` + f32(addRes[${idx}])` : '';
            L.push(`        if (${n} + ${q}u < p.N) { dst[${idx} + part] = ${T}(y.${comps[q]}${res}); }`);
          }
        }
        L.push(`      }`);
      }
      L.push(`    }`);
      L.push(`  }`);
    }
  }
  return L;
}

/** Sums split-K partial slices, then bias (index (i / biasDiv) % biasMod), activation and
 * residual, and converts to the storage type. One thread per output element. */
export function gemmReduceWgsl(bias: boolean, residual: boolean, act: Activation): string {
  return /* wgsl */ `
struct Params { total: u32, slices: u32, biasDiv: u32, biasMod: u32, }
@group(0) @binding(0) var<storage, read> part: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
${bias ? '@group(0) @binding(3) var<storage, read> bias: array<T>;' : ''}
${residual ? '@group(0) @binding(4) var<storage, read> residual: array<T>;' : ''}
${activationWgsl(act, 'f32')}
${flatMain(
  'p.total',
  `  var s = 0.0;
  for (var k = 0u; k < p.slices; k++) { s += part[k * p.total + i]; }
${bias ? '  s += f32(bias[(i / p.biasDiv) % p.biasMod]);' : ''}
${act !== 'none' ? '  s = act(s);' : ''}
${residual ? '  s += f32(residual[i]);' : ''}
  y[i] = T(s);`,
)}`;
}
