// ops.attention: fused multi-head scaled dot-product attention (see attention.wgsl.ts).
//
// Cost, with B batch, Lq queries, Lk keys, C = heads * dHead channels and P the number of
// (query, key) pairs that are not masked (Lq * Lk, or about half of it when causal):
//   FLOPs  = 4 * B * P * dHead * heads  (QK^T and PV, a multiply-add each)
//          + 5 * B * P * heads          (scale, max, subtract, exp2, sum)
//   bytes  = elem * B * C * (2 * Lq + 2 * Lk)  (q read and o written once, k and v read once per
//            query tile: counted once, the ideal a fused kernel approaches)
import type { Tensor } from '../runtime/tensor.js';
import type { Engine } from '../runtime/engine.js';
import { DTYPE_BYTES, type DType } from '../runtime/tensor.js';
import type { KernelSource } from '../runtime/pipeline_cache.js';
import { attentionWgsl, attentionLayout, type AttentionConfig } from './attention.wgsl.js';
import { attentionRowsWgsl, attentionRowsBQ, type AttentionRowsConfig } from './attention_rows.wgsl.js';
import { engineOf, floatDtype, fail, rankIs, grid1d } from './check.js';
import { cachedSource, countCost, type Cost } from './kit.js';
import { noteKernelProblem, tunedFor } from './tune_cache.js';
import { matmul } from './matmul.js';
import { concat, slice } from './layout.js';
import { scale as scaleBy } from './unary.js';
import { softmax } from './softmax.js';
import { cast } from './elementwise.js';

export interface AttentionOptions {
  heads: number;
  /** multiplies Q K^T before the softmax; default dHead^-0.5 */
  scale?: number;
  /** mask key j > query i (decoder / CLIP text encoder) */
  causal?: boolean;
  /**
   * diffusers' upcast_attention (SD 2.1): Q K^T and the softmax in f32 for f16 inputs. The fused kernel
   * always computes them in f32 (its loads widen to f32, its running max/sum/accumulator are f32), so
   * this only changes the by-parts path for very wide heads, whose score matrix would otherwise be
   * stored in f16 (large logits overflow to Inf there). No effect on f32 inputs.
   */
  upcast?: boolean;
  /** @internal force a kernel variant (tests, tuner); otherwise the tuned or heuristic choice */
  variant?: AttentionVariant;
}

/**
 * The fused kernel variants: 'tiled' (attention.wgsl.ts, key tiles staged in workgroup memory and
 * split across lanes; suits GPUs and any head dim) and the one-row-per-invocation kernels
 * (attention_rows.wgsl.ts; suit CPU adapters; head dims up to ROWS_MAX_D), named r<RQ>w<W>k<BK>.
 * Measured and left out: 1 row per invocation (half the speed of 2 on SwiftShader) and 8-key blocks
 * (slower on both CPU drivers); on lavapipe, r1w32k4, r1w8k4, r2w8k4 and r2w32k8 also took 10-70 s
 * to create their pipelines for some head dims (r2w16k4 and r2w32k4: under 0.5 s).
 */
export const ATTENTION_ROWS = {
  r2w32k4: { W: 32, RQ: 2, BK: 4 },
  r2w16k4: { W: 16, RQ: 2, BK: 4 },
} as const satisfies Record<string, Omit<AttentionRowsConfig, 'D' | 'causal'>>;
export type AttentionVariant = 'tiled' | keyof typeof ATTENTION_ROWS;
export const ATTENTION_VARIANTS = ['tiled', ...Object.keys(ATTENTION_ROWS)] as AttentionVariant[];
/** widest head the rows variants take (their registers grow with 2 * D * RQ floats per invocation) */
export const ROWS_MAX_D = 64;

export interface AttentionCostArgs {
  batch: number;
  lq: number;
  lk: number;
  channels: number;
  heads: number;
  causal?: boolean;
  dtype?: DType;
}

function unmaskedPairs(lq: number, lk: number, causal: boolean): number {
  if (!causal) return lq * lk;
  // query i sees keys 0..min(i, lk - 1)
  const full = Math.min(lq, lk);
  return (full * (full + 1)) / 2 + Math.max(0, lq - lk) * lk;
}

export function attentionCost(a: AttentionCostArgs): Cost {
  const pairs = unmaskedPairs(a.lq, a.lk, a.causal ?? false);
  const flops = 4 * a.batch * pairs * a.channels + 5 * a.batch * pairs * a.heads;
  const bytes = DTYPE_BYTES[a.dtype ?? 'f32'] * a.batch * a.channels * (2 * a.lq + 2 * a.lk);
  return { flops, bytes };
}

function sourceFor(c: AttentionConfig): KernelSource {
  const key = `D${c.D}_rm${c.RM}_rg${c.RG}_tpr${c.TPR}_bk${c.BK}${c.kvShared ? '_kvs' : ''}${c.causal ? '_causal' : ''}`;
  return cachedSource(`attention_${key}`, () => attentionWgsl(c));
}

// Preference order: big query tiles first (each K/V tile staged serves more queries, so K and V
// are read from global memory fewer times), then big key tiles (fewer barriers per key), separate K
// and V buffers before a shared one (V is then stored to workgroup memory straight away instead of
// waiting in registers).
const CANDIDATES: [rg: number, rm: number, bk: number, kvShared: boolean][] = [
  [32, 2, 32, false], [32, 2, 32, true], [32, 2, 16, false], [32, 2, 16, true],
  [32, 1, 32, false], [32, 1, 32, true], [32, 1, 16, false], [32, 1, 16, true],
  [16, 1, 16, false], [16, 1, 16, true], [16, 1, 8, false], [16, 1, 8, true],
  [8, 1, 8, false], [8, 1, 8, true],
];

/** @internal exported for tests: the tile configuration used for a head dim and query count. */
export function attentionConfig(engine: Engine, dHead: number, lq: number, causal: boolean): AttentionConfig | null {
  const D4 = Math.ceil(dHead / 4);
  const TPR = D4 <= 2 ? 2 : 4;
  const maxBytes = engine.limits.maxComputeWorkgroupStorageSize;
  const maxInv = engine.limits.maxComputeInvocationsPerWorkgroup;
  // Don't stage far more query rows than exist (cross-attention with a few queries, Lq = 1).
  const minRows = lq <= 8 ? 8 : lq <= 16 ? 16 : lq <= 32 ? 32 : 64;
  const fits = (c: AttentionConfig) => {
    const l = attentionLayout(c);
    return l.bytes <= maxBytes && l.WG <= maxInv;
  };
  let fallback: AttentionConfig | null = null;
  for (const [RG, RM, BK, kvShared] of CANDIDATES) {
    const c: AttentionConfig = { D: dHead, RM, RG, TPR, BK, kvShared, causal };
    if (!fits(c)) continue;
    fallback ??= c;
    if (RG * RM <= minRows) return c;
  }
  return fallback;
}

const pow2Class = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/** @internal the variants that can run a head dim (rows: up to ROWS_MAX_D) */
export function attentionCandidates(dHead: number): AttentionVariant[] {
  return dHead <= ROWS_MAX_D ? ATTENTION_VARIANTS : ['tiled'];
}

/**
 * The untuned choice. CPU adapters: one row per invocation (measured on lavapipe and SwiftShader:
 * 2 rows per invocation, 4-key blocks; smaller workgroups when there are few queries, so that most
 * lanes are not idle). GPUs: the tiled kernel, until the tuner has measured the others.
 */
export function heuristicVariant(engine: Engine, dHead: number, lq: number): AttentionVariant {
  const cpu = engine.adapterKind === 'lavapipe' || engine.adapterKind === 'swiftshader';
  if (!cpu || dHead > ROWS_MAX_D) return 'tiled';
  return lq <= 32 ? 'r2w16k4' : 'r2w32k4';
}

function chooseVariant(engine: Engine, dtype: DType, a: { B: number; Lq: number; Lk: number; heads: number; dHead: number; causal: boolean }): AttentionVariant {
  const { B, Lq, Lk, heads, dHead, causal } = a;
  const candidates = attentionCandidates(dHead);
  if (candidates.length === 1) return candidates[0];
  const key = `attention|D${dHead}|q${pow2Class(Lq)}|k${pow2Class(Lk)}|bh${pow2Class(B * heads)}|${dtype}${causal ? '|causal' : ''}`;
  noteKernelProblem(engine, {
    key,
    op: 'attention',
    candidates,
    // synthetic inputs of this call's sizes: scores of ordinary size, not zeros
    time: async (eng, candidate, runs) => {
      const C = heads * dHead;
      const fill = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => ((((i * 2654435761 + seed) >>> 0) / 4294967296) - 0.5) * 2);
      const [tq, tk, tv] = [
        eng.tensor(fill(B * Lq * C, 1), [B, Lq, C], dtype),
        eng.tensor(fill(B * Lk * C, 2), [B, Lk, C], dtype),
        eng.tensor(fill(B * Lk * C, 3), [B, Lk, C], dtype),
      ];
      try {
        const once = () => attention(tq, tk, tv, { heads, causal, variant: candidate as AttentionVariant });
        once().dispose(); // compiles
        await eng.sync();
        let best = Infinity;
        for (let r = 0; r < runs; r++) {
          const t0 = performance.now();
          const o = once();
          await eng.sync();
          best = Math.min(best, performance.now() - t0);
          o.dispose();
        }
        return best;
      } finally {
        [tq, tk, tv].forEach((t) => t.dispose());
      }
    },
  });
  const tuned = tunedFor(engine, key)?.tile as AttentionVariant | undefined;
  if (tuned && candidates.includes(tuned)) return tuned;
  return heuristicVariant(engine, dHead, Lq);
}

/**
 * The unfused path: per head, S = (scale q) k^T, P = softmax(S), P v, with the scores in memory
 * (B * Lq * Lk per head). q is scaled first so f16 scores stay in range.
 */
function attentionByParts(q: Tensor, k: Tensor, v: Tensor, heads: number, dHead: number, scale: number, causal: boolean, upcast: boolean): Tensor {
  return q.engine.scope(() => {
    const head = (x: Tensor, h: number) => (heads === 1 ? x : slice(x, 2, h * dHead, (h + 1) * dHead));
    // upcast: scores and probabilities in f32, P cast back to v's dtype for P v (as diffusers does)
    const wide = upcast && q.dtype === 'f16' ? (x: Tensor) => cast(x, 'f32') : (x: Tensor) => x;
    const outs: Tensor[] = [];
    for (let h = 0; h < heads; h++) {
      const scores = matmul(scaleBy(wide(head(q, h)), scale), wide(head(k, h)), { transposeB: true });
      const p = softmax(scores, { causal });
      outs.push(matmul(p.dtype === v.dtype ? p : cast(p, v.dtype), head(v, h)));
    }
    return heads === 1 ? outs[0] : concat(outs, 2);
  });
}

/** softmax(Q K^T * scale) V per head; q [B, Lq, C], k and v [B, Lk, C], C = heads * dHead, heads
 * splitting the channels head-major. Returns [B, Lq, C]. */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  const op = 'attention';
  const engine = engineOf(op, q, k, v);
  const dtype = floatDtype(op, q, k, v);
  rankIs(op, q, 3, 'q');
  rankIs(op, k, 3, 'k');
  rankIs(op, v, 3, 'v');
  const [B, Lq, C] = q.shape;
  const Lk = k.shape[1];
  const heads = opts?.heads;
  if (!Number.isInteger(heads) || heads < 1) fail(op, `heads must be a positive integer, got ${heads}`, [q, k, v]);
  if (k.shape[0] !== B || v.shape[0] !== B) fail(op, 'q, k and v must have the same batch size', [q, k, v]);
  if (v.shape[1] !== Lk) fail(op, 'k and v must have the same length', [q, k, v]);
  if (k.shape[2] !== C || v.shape[2] !== C) fail(op, 'q, k and v must have the same channel count', [q, k, v]);
  if (C % heads !== 0) fail(op, `channels ${C} are not divisible by heads ${heads}`, [q, k, v]);
  if (Lk < 1 && Lq > 0) fail(op, 'needs at least one key', [q, k, v]);
  const dHead = C / heads;
  const scale = opts.scale ?? 1 / Math.sqrt(dHead);
  if (!Number.isFinite(scale)) fail(op, `scale must be a finite number, got ${scale}`, [q, k, v]);
  const causal = opts.causal ?? false;

  if (B * Lq * C === 0) return engine.empty([B, Lq, C], dtype, op);
  if (opts.variant !== undefined && !ATTENTION_VARIANTS.includes(opts.variant)) fail(op, `unknown variant ${opts.variant}`, [q, k, v]);
  const variant = opts.variant ?? chooseVariant(engine, dtype, { B, Lq, Lk, heads, dHead, causal });
  if (variant !== 'tiled') {
    if (dHead > ROWS_MAX_D) fail(op, `variant ${variant} takes head dims up to ${ROWS_MAX_D}, got ${dHead}`, [q, k, v]);
    const rc: AttentionRowsConfig = { ...ATTENTION_ROWS[variant as keyof typeof ATTENTION_ROWS], D: dHead, causal };
    const out = engine.empty([B, Lq, C], dtype, op);
    const qTiles = Math.ceil(Lq / attentionRowsBQ(rc));
    const total = qTiles * heads * B;
    const [gx, gy] = grid1d(engine, total);
    const src = cachedSource(`attention_rows_D${dHead}_${variant}${causal ? '_causal' : ''}`, () => attentionRowsWgsl(rc));
    engine.dispatch(src, {
      bindings: { q, k, v, o: out },
      uniforms: { Lq, Lk, C, heads, qTiles, total, gx, scale: scale * Math.LOG2E },
      workgroups: [gx, gy],
    });
    countCost(engine, op, () => attentionCost({ batch: B, lq: Lq, lk: Lk, channels: C, heads, dtype }));
    return out;
  }
  const cfg = attentionConfig(engine, dHead, Lq, causal);
  // A head too wide for the fused kernel's tiles in workgroup memory (the paper's cin256-v2 has one
  // head of up to 960 channels): attention by parts, with an L x L score matrix per head.
  if (!cfg) return attentionByParts(q, k, v, heads, dHead, scale, causal, opts.upcast ?? false);
  const out = engine.empty([B, Lq, C], dtype, op);
  const { BQ } = attentionLayout(cfg);
  const qTiles = Math.ceil(Lq / BQ);
  const total = qTiles * heads * B;
  const [gx, gy] = grid1d(engine, total);
  engine.dispatch(sourceFor(cfg), {
    bindings: { q, k, v, o: out },
    uniforms: { Lq, Lk, C, heads, qTiles, total, gx, scale: scale * Math.LOG2E },
    workgroups: [gx, gy],
  });
  countCost(engine, op, () => attentionCost({ batch: B, lq: Lq, lk: Lk, channels: C, heads, dtype }));
  return out;
}
