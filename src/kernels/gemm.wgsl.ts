// Tiled GEMM, C[z] = epilogue(op(A[z]) op(B[z])), generated per variant.
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
// no special inner loop. The next K step's global loads are issued into registers right after the
// current tile is in shared memory, so their latency overlaps the FMA loop.
import { activationWgsl, type Activation } from './kit.wgsl.js';

export interface GemmTile {
  /** threads along n and m */
  wgX: number;
  wgY: number;
  /** 4x4 register blocks per thread along m and n */
  rm: number;
  rn: number;
  /** depth of one shared-memory stage */
  bk: number;
}

export interface GemmVariant {
  tile: GemmTile;
  transA: boolean;
  transB: boolean;
  /** vec4 global access to A / B / C (and residual and bias, which share C's row layout) */
  vecA: boolean;
  vecB: boolean;
  vecC: boolean;
  bias: boolean;
  residual: boolean;
  act: Activation;
}

export function gemmKey(v: GemmVariant): string {
  const t = v.tile;
  return [
    `gemm_${t.wgX}x${t.wgY}_r${t.rm}x${t.rn}_k${t.bk}`,
    v.transA ? 'tA' : 'nA',
    v.transB ? 'tB' : 'nB',
    `v${+v.vecA}${+v.vecB}${+v.vecC}`,
    v.bias ? 'b' : '',
    v.residual ? 'r' : '',
    v.act === 'none' ? '' : v.act,
  ].join('_');
}

/** Shared-memory bytes a tile needs at most (f32 staging, padded rows). */
export function gemmSharedBytes(t: GemmTile): number {
  return 16 * t.bk * (t.rm * t.wgY + 1 + t.rn * t.wgX + 1);
}

export function gemmWgsl(v: GemmVariant): string {
  const { wgX, wgY, rm, rn, bk } = v.tile;
  const threads = wgX * wgY;
  const BM = 4 * rm * wgY;
  const BN = 4 * rn * wgX;
  // k-row pitch of the shared tiles, in vec4s. When the operand's global rows run along k, each
  // thread scatters one vec4 down four k rows; one vec4 of padding per row moves those rows onto
  // different banks (conflict-free for the large tile, halved conflicts for the others).
  const BM4 = BM / 4 + (v.transA ? 0 : 1);
  const BN4 = BN / 4 + (v.transB ? 1 : 0);
  if (bk % 4 !== 0) throw new Error('gemm: BK must be a multiple of 4');
  if (((BM * bk) / 4) % threads !== 0 || ((BN * bk) / 4) % threads !== 0) {
    throw new Error(`gemm: tile ${BM}x${BN}x${bk} does not split evenly over ${threads} threads`);
  }
  const elt = (vec: boolean) => (vec ? 'T4' : 'T');
  const L: string[] = [];
  L.push(`// strideA / strideB: 0 when that operand is one matrix shared by the whole batch
struct Params { M: u32, N: u32, K: u32, strideA: u32, strideB: u32, strideC: u32, offX: u32, offY: u32, offZ: u32, }`);
  L.push(`@group(0) @binding(0) var<storage, read> lhs: array<${elt(v.vecA)}>;`);
  L.push(`@group(0) @binding(1) var<storage, read> rhs: array<${elt(v.vecB)}>;`);
  if (v.bias) L.push(`@group(0) @binding(2) var<storage, read> addBias: array<${elt(v.vecC)}>;`);
  if (v.residual) L.push(`@group(0) @binding(3) var<storage, read> addRes: array<${elt(v.vecC)}>;`);
  L.push(`@group(0) @binding(4) var<storage, read_write> dst: array<${elt(v.vecC)}>;`);
  L.push(`@group(0) @binding(5) var<uniform> p: Params;`);
  L.push(`var<workgroup> As: array<vec4<f32>, ${bk * BM4}>;`);
  L.push(`var<workgroup> Bs: array<vec4<f32>, ${bk * BN4}>;`);
  L.push(activationWgsl(v.act, 'vec4<f32>'));

  // One operand's staging. The operand is a row-major matrix with S rows (the strided dimension)
  // and C columns (contiguous); `kContig` says whether its contiguous dimension is k. A tile
  // covers Es x Ec of it; thread slot l always handles the same (s, c) offset inside the tile, so
  // those are computed once, and each K step only moves the tile origin.
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
  const comps = ['x', 'y', 'z', 'w'];
  const loader = (o: Operand): string => {
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
  const fetch = (o: Operand, k0: string, decl: boolean): string[] => {
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
  // A: [M, K] (k contiguous) or transposed [K, M] (m contiguous); rows of a batch item start at z * rowsPerItem.
  const opA: Operand = v.transA
    ? { id: 'A', buf: 'lhs', shared: 'As', outer4: BM4, kContig: false, vec: v.vecA, S: 'rowsA', C: 'p.M', Ec: BM, Es: bk, base: 'rowA0', origin: (k0) => [k0, 'tileM'] }
    : { id: 'A', buf: 'lhs', shared: 'As', outer4: BM4, kContig: true, vec: v.vecA, S: 'rowsA', C: 'p.K', Ec: bk, Es: BM, base: 'rowA0', origin: (k0) => ['tileM', k0] };
  // B: [K, N] (n contiguous) or transposed [N, K] (k contiguous)
  const opB: Operand = v.transB
    ? { id: 'B', buf: 'rhs', shared: 'Bs', outer4: BN4, kContig: true, vec: v.vecB, S: 'rowsB', C: 'p.K', Ec: bk, Es: BN, base: 'rowB0', origin: (k0) => ['tileN', k0] }
    : { id: 'B', buf: 'rhs', shared: 'Bs', outer4: BN4, kContig: false, vec: v.vecB, S: 'rowsB', C: 'p.N', Ec: BN, Es: bk, base: 'rowB0', origin: (k0) => [k0, 'tileN'] };
  L.push(loader(opA), loader(opB));

  L.push(`@compute @workgroup_size(${wgX}, ${wgY}, 1)`);
  L.push(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`);
  L.push(`  let tx = lid3.x;`);
  L.push(`  let ty = lid3.y;`);
  L.push(`  let z = wid.z + p.offZ;`);
  L.push(`  let tileN = (wid.x + p.offX) * ${BN}u;`);
  L.push(`  let tileM = (wid.y + p.offY) * ${BM}u;`);
  // Bounds are checked against the end of this batch item's rows, so a partial tile never reads
  // into the next item.
  L.push(`  let rowsPerA = ${v.transA ? 'p.K' : 'p.M'};`);
  L.push(`  let rowsPerB = ${v.transB ? 'p.N' : 'p.K'};`);
  L.push(`  let rowA0 = select(0u, z * rowsPerA, p.strideA != 0u);`);
  L.push(`  let rowB0 = select(0u, z * rowsPerB, p.strideB != 0u);`);
  L.push(`  let rowsA = rowA0 + rowsPerA;`);
  L.push(`  let rowsB = rowB0 + rowsPerB;`);
  L.push(`  let baseC = z * p.strideC;`);
  for (let i = 0; i < rm; i++) for (let r = 0; r < 4; r++) for (let j = 0; j < rn; j++) L.push(`  var acc_${i}_${r}_${j} = vec4<f32>(0.0);`);
  L.push(...setup(opA), ...setup(opB));
  L.push(...fetch(opA, '0u', true), ...fetch(opB, '0u', true));
  L.push(`  let kTiles = (p.K + ${bk - 1}u) / ${bk}u;`);
  L.push(`  for (var kt = 0u; kt < kTiles; kt++) {`);
  L.push(...store(opA), ...store(opB));
  L.push(`  workgroupBarrier();`);
  // Issue the next tile's global loads now so they are in flight during the FMAs below.
  L.push(`  if (kt + 1u < kTiles) {`);
  L.push(`    let k1 = (kt + 1u) * ${bk}u;`);
  L.push(...fetch(opA, 'k1', false).map((x) => '  ' + x), ...fetch(opB, 'k1', false).map((x) => '  ' + x));
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

  // Epilogue: bias, activation, residual, store.
  for (let i = 0; i < rm; i++) {
    for (let r = 0; r < 4; r++) {
      L.push(`  {`);
      L.push(`    let m = tileM + (ty + ${i * wgY}u) * 4u + ${r}u;`);
      L.push(`    if (m < p.M) {`);
      for (let j = 0; j < rn; j++) {
        L.push(`      {`);
        L.push(`        let n = tileN + (tx + ${j * wgX}u) * 4u;`);
        L.push(`        let o = baseC + m * p.N + n;`);
        if (v.vecC) {
          L.push(`        if (n < p.N) {`);
          L.push(`          var y = acc_${i}_${r}_${j};`);
          if (v.bias) L.push(`          y += vec4<f32>(addBias[n / 4u]);`);
          if (v.act !== 'none') L.push(`          y = act(y);`);
          if (v.residual) L.push(`          y += vec4<f32>(addRes[o / 4u]);`);
          L.push(`          dst[o / 4u] = T4(y);`);
          L.push(`        }`);
        } else {
          L.push(`        var y = acc_${i}_${r}_${j};`);
          if (v.bias) {
            for (let q = 0; q < 4; q++) L.push(`        if (n + ${q}u < p.N) { y.${comps[q]} += f32(addBias[n + ${q}u]); }`);
          }
          if (v.act !== 'none') L.push(`        y = act(y);`);
          for (let q = 0; q < 4; q++) {
            const res = v.residual ? ` + f32(addRes[o + ${q}u])` : '';
            L.push(`        if (n + ${q}u < p.N) { dst[o + ${q}u] = T(y.${comps[q]}${res}); }`);
          }
        }
        L.push(`      }`);
      }
      L.push(`    }`);
      L.push(`  }`);
    }
  }
  L.push(`}`);
  return L.join('\n') + '\n';
}

