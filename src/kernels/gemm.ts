// Launcher of the one GEMM core (gemm.wgsl.ts): the tile table, the tile choice (or the
// autotuner's pick), split-K with its reduction, and the one dispatch-limit splitter. matmul,
// linear and conv2d describe their problem as GemmArgs and call gemm().
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import { cachedSource, flatWorkgroups, isCpuAdapter, subgroupLanes } from './kit.js';
import type { Activation } from './kit.wgsl.js';
import { noteProblem, tunedFor, type GemmDims } from './tune_cache.js';
import { gemmKey, gemmReduceWgsl, gemmSharedBytes, gemmWgsl, tileDims, type GemmTile, type GemmVariant } from './gemm.wgsl.js';

export type { GemmTile };

/**
 * The tile table. GPU-style tiles stage big blocks in workgroup memory for reuse; the narrow ones
 * keep skinny problems (a 3-channel conv head, depthwise convs) from idling most of a tile; the
 * `cpu*` tiles suit software adapters (SwiftShader, lavapipe), where a workgroup runs on one core:
 * few threads with many outputs each, so fewer barriers and less staging per FMA. Tests run every
 * entry; the autotuner picks among the ones that fit the device.
 */
export const GEMM_TILES = {
  /** 128 x 128 outputs per workgroup, 8x8 per thread: for large products */
  large: { wgX: 16, wgY: 16, rm: 2, rn: 2, bk: 8 },
  /** 64 x 64, 4x4 per thread */
  medium: { wgX: 16, wgY: 16, rm: 1, rn: 1, bk: 16 },
  /** 32 x 32, 4x4 per thread, 64 threads: small or skinny products still fill the GPU */
  small: { wgX: 8, wgY: 8, rm: 1, rn: 1, bk: 16 },
  /** 16 x 64: few rows (narrow convs, M <= 16) */
  wide: { wgX: 16, wgY: 4, rm: 1, rn: 1, bk: 16 },
  /** 8 x 128: very few rows (RGB / latent heads, M <= 8) */
  narrow: { wgX: 16, wgY: 2, rm: 1, rn: 2, bk: 16 },
  /** 64 x 64 with 8x8 per thread and 64 threads: a CPU core's worth of work, 1 barrier per 8 k */
  cpu64: { wgX: 8, wgY: 8, rm: 2, rn: 2, bk: 8 },
  /** 32 x 32 with 8x8 per thread and 16 threads: even fewer threads per barrier */
  cpu32: { wgX: 4, wgY: 4, rm: 2, rn: 2, bk: 16 },
  /** subgroup-broadcast tiles (lavapipe; adapters with subgroups of >= 8 lanes): 16 x 128, each
   * lane 16 rows x 4 columns, no workgroup memory */
  sg16: { wgX: 32, wgY: 1, rm: 4, rn: 1, bk: 4, subgroup: true },
  /** 8 x 128: few rows (heads, M <= 8) */
  sg8: { wgX: 32, wgY: 1, rm: 2, rn: 1, bk: 4, subgroup: true },
  /** 24 x 32: more rows per loaded B vector, one subgroup per workgroup */
  sg24: { wgX: 8, wgY: 1, rm: 6, rn: 1, bk: 4, subgroup: true },
} as const satisfies Record<string, GemmTile>;
export type GemmTileName = keyof typeof GEMM_TILES;

/** B as the implicit im2col of an NCHW image (conv2d). */
export interface Im2colArgs {
  pointwise: boolean;
  h: number;
  w: number;
  cinG: number;
  inImg: number;
  hwOut: number;
  wOut: number;
  outImg: number;
  kw: number;
  khw: number;
  sh: number;
  sw: number;
  dh: number;
  dw: number;
  pt: number;
  pl: number;
}

/** A fully resolved GEMM: C[z] (M x N) = epilogue(op(A[z]) op(B[z])), strides in elements. */
export interface GemmArgs extends GemmDims {
  op: string;
  a: Tensor;
  b: Tensor;
  out: Tensor;
  bias?: Tensor;
  /** bias per column (linear, default) or per row (conv output channels) */
  biasAxis?: 'm' | 'n';
  residual?: Tensor;
  transA: boolean;
  transB: boolean;
  activation: Activation;
  /** B is the im2col of the image `b` and C is stored NCHW (conv2d) */
  im2col?: Im2colArgs;
  /** K slices (1 = no split-K, the default), or 'auto' to split deep, small problems to fill the GPU */
  splitK?: number | 'auto';
  /** force a tile shape (tests, autotuner); otherwise the tuned or heuristic choice */
  tile?: GemmTileName;
  /** GEGLU epilogue (subgroup tiles only): b is a linear weight [2N, K] (transB), bias [2N], and
   * C = (value + bias) * gelu(gate + bias) of the value columns n and gate columns n + N */
  geglu?: boolean;
  /** split the grid below the device's per-dimension limit (tests exercise the split path) */
  maxWorkgroupsPerDim?: number;
}

/** K slices for a problem of `workgroups` output tiles and `kTiles` K steps. Low-resolution layers
 * with many channels (e.g. UNet 8x8 latents at 1280 channels: ~40 tiles, 720 K steps) would leave most
 * of a large GPU idle; splitting K fills it for the price of writing and summing f32 partials.
 * Each slice keeps >= 8 K steps so the partial traffic stays small next to the MACs. */
function splitKFor(workgroups: number, kTiles: number): number {
  const target = 256;
  if (workgroups >= target / 2 || kTiles < 16) return 1;
  return Math.max(1, Math.min(Math.ceil(target / workgroups), Math.floor(kTiles / 8)));
}

export function tileFits(engine: Engine, t: GemmTile): boolean {
  if (t.subgroup && subgroupLanes(engine) < 8) return false;
  return gemmSharedBytes(t) <= engine.limits.maxComputeWorkgroupStorageSize && t.wgX * t.wgY <= engine.limits.maxComputeInvocationsPerWorkgroup;
}

/** The shape class the autotuner keys on: sizes rounded to powers of two, so nearby shapes share a pick. */
export function shapeClass(g: Pick<GemmArgs, 'M' | 'N' | 'K' | 'batch' | 'im2col'>): string {
  const p2 = (v: number) => 2 ** Math.ceil(Math.log2(Math.max(1, v)));
  return `${g.im2col ? 'conv' : 'mm'}_${p2(g.M)}x${p2(g.N)}x${p2(g.K)}x${p2(g.batch)}`;
}

/** The autotuner's cache key of a problem: op kind, shape class and storage type. */
export function problemKey(g: GemmArgs): string {
  return `${shapeClass(g)}|${g.out.dtype}`;
}

/** The heuristic choice: bigger tiles reuse each loaded value more, but only pay off while there
 * are enough workgroups to occupy every core of a large GPU; few-row problems get wide tiles. */
export function heuristicTile(engine: Engine, M: number, N: number, batch: number): GemmTileName {
  const count = (n: GemmTileName) => {
    const { BM, BN } = tileDims(GEMM_TILES[n]);
    return Math.ceil(M / BM) * Math.ceil(N / BN) * batch;
  };
  const ok = (n: GemmTileName) => tileFits(engine, GEMM_TILES[n]);
  // On a CPU adapter with 8-lane subgroups the broadcast tiles beat the staged ones at every size
  // measured (bench/ops.ts rows on lavapipe).
  if (isCpuAdapter(engine) && ok('sg16')) return M <= 8 ? 'sg8' : 'sg16';
  if (M <= 8 && ok('narrow')) return 'narrow';
  if (M <= 16 && ok('wide')) return 'wide';
  if (ok('large') && count('large') >= 96) return 'large';
  if (ok('medium') && count('medium') >= 48) return 'medium';
  return 'small';
}

export function chooseTile(engine: Engine, g: GemmArgs): GemmTileName {
  if (g.tile) {
    if (!tileFits(engine, GEMM_TILES[g.tile])) throw new Error(`${g.op}: GEMM tile '${g.tile}' does not fit this device (workgroup memory, invocations, or subgroups of >= 8 lanes)`);
    return g.tile;
  }
  const key = problemKey(g);
  noteProblem(engine, {
    key,
    op: g.op,
    M: g.M,
    N: g.N,
    K: g.K,
    batch: g.batch,
    strideA: g.strideA,
    strideB: g.strideB,
    transA: g.transA,
    transB: g.transB,
    dtype: g.out.dtype === 'f16' ? 'f16' : 'f32',
    aSize: g.a.size,
    bSize: g.b.size,
    outSize: g.out.size,
    splitK: g.splitK ?? 1,
    im2col: g.im2col ? JSON.stringify(g.im2col) : undefined,
  });
  const tuned = tunedFor(engine, key)?.tile;
  if (tuned && tuned in GEMM_TILES && tileFits(engine, GEMM_TILES[tuned as GemmTileName])) return tuned as GemmTileName;
  return heuristicTile(engine, g.M, g.N, g.batch);
}

/** The kernel variant gemm() would run for these arguments and tile. */
export function gemmVariant(g: GemmArgs, tile: GemmTile, splitK: boolean): GemmVariant {
  const { M, N, K } = g;
  const ic = g.im2col;
  return {
    tile,
    transA: g.transA,
    // vec4 access needs every row of the operand (its contiguous dimension) to be a multiple of 4
    vecA: (g.transA ? M : K) % 4 === 0,
    b: ic
      ? { kind: 'im2col', pointwise: ic.pointwise, vec: ic.pointwise && ic.hwOut % 4 === 0, ...(tile.subgroup && !ic.pointwise ? { kw: ic.kw, khw: ic.khw } : {}) }
      : { kind: 'matrix', trans: g.transB, vec: (g.transB ? K : N) % 4 === 0 },
    vecC: ic ? ic.hwOut % 4 === 0 : N % 4 === 0,
    bias: splitK || !g.bias ? 'none' : (g.biasAxis ?? 'n'),
    residual: !splitK && !!g.residual,
    act: splitK ? 'none' : g.activation,
    out: ic ? 'nchw' : 'matrix',
    splitK,
    ...(g.geglu ? { geglu: true } : {}),
  };
}

/** Records the GEMM: one dispatch per grid piece under the per-dimension limit, plus a reduction
 * when K is split. */
export function gemm(engine: Engine, g: GemmArgs): void {
  const { M, N, K, batch } = g;
  if (M === 0 || N === 0 || batch === 0) return;
  const tile = GEMM_TILES[chooseTile(engine, g)];
  const { BM, BN } = tileDims(tile);
  const kTiles = Math.ceil(K / tile.bk);
  const max = Math.min(g.maxWorkgroupsPerDim ?? Infinity, engine.limits.maxComputeWorkgroupsPerDimension);
  // On CPU adapters a few workgroups already occupy every core: splitting K would only add the
  // partial-sum traffic and a second pass.
  const auto = () => (isCpuAdapter(engine) ? 1 : splitKFor(Math.ceil(N / BN) * Math.ceil(M / BM) * batch, kTiles));
  const want = g.splitK === 'auto' ? auto() : (g.splitK ?? 1);
  let slices = Math.max(1, Math.min(want, kTiles));
  const tilesPerSlice = Math.max(1, Math.ceil(kTiles / slices));
  slices = Math.max(1, Math.ceil(kTiles / tilesPerSlice)); // no empty slices
  const split = slices > 1;
  const variant = gemmVariant(g, tile, split);
  const src = cachedSource(`${g.op} ${gemmKey(variant)}`, () => gemmWgsl(variant));
  const total = g.out.size;
  const part = split ? engine.empty([slices * total], 'f32', g.op) : g.out;
  try {
    const bindings: Record<string, Tensor> = { lhs: g.a, rhs: g.b, dst: part };
    if (variant.bias !== 'none') bindings.addBias = g.bias!;
    if (variant.residual) bindings.addRes = g.residual!;
    const ic = g.im2col;
    const geometry = ic
      ? { h: ic.h, w: ic.w, hw: ic.h * ic.w, inImg: ic.inImg, cinG: ic.cinG, hwOut: ic.hwOut, wOut: ic.wOut, outImg: ic.outImg, kw: ic.kw, khw: ic.khw, sh: ic.sh, sw: ic.sw, dh: ic.dh, dw: ic.dw, pt: ic.pt, pl: ic.pl }
      : { h: 0, w: 0, hw: 0, inImg: 0, cinG: 0, hwOut: 1, wOut: 1, outImg: 0, kw: 1, khw: 1, sh: 1, sw: 1, dh: 1, dw: 1, pt: 0, pl: 0 };
    const base = { M, N, K, batch, strideA: g.strideA, strideB: g.strideB, strideC: M * N, kTilesPerSlice: split ? tilesPerSlice : Math.max(1, kTiles), partStride: split ? total : 0, ...geometry };
    const gx = Math.ceil(N / BN);
    const gy = Math.ceil(M / BM);
    const gz = batch * slices;
    // The one dispatch-limit splitter: each grid dimension in pieces of at most `max` workgroups.
    for (let z = 0; z < gz; z += max) {
      for (let y = 0; y < gy; y += max) {
        for (let x = 0; x < gx; x += max) {
          engine.dispatch(src, {
            bindings,
            uniforms: { ...base, offX: x, offY: y, offZ: z },
            workgroups: [Math.min(max, gx - x), Math.min(max, gy - y), Math.min(max, gz - z)],
            dtype: g.out.dtype,
          });
        }
      }
    }
    if (split) {
      const bias = !!g.bias;
      const rb: Record<string, Tensor> = { part, y: g.out };
      if (g.bias) rb.bias = g.bias;
      if (g.residual) rb.residual = g.residual;
      const byRow = (g.biasAxis ?? 'n') === 'm';
      const reduce = cachedSource(`gemm_reduce_${bias ? 'b' : ''}${g.residual ? 'r' : ''}_${g.activation}`, () => gemmReduceWgsl(bias, !!g.residual, g.activation));
      engine.dispatch(reduce, {
        bindings: rb,
        uniforms: {
          total,
          slices,
          // bias index (i / biasDiv) % biasMod: NCHW channel, or row-major row / column
          biasDiv: byRow ? (ic ? ic.hwOut : N) : 1,
          biasMod: byRow ? (ic ? batch * M : M) : N,
        },
        workgroups: flatWorkgroups(engine, total),
        dtype: g.out.dtype,
      });
    }
  } finally {
    if (split) part.dispose();
  }
}
