// What the GEMM autotuner knows: per adapter, the fastest tile of each (op, shape class, dtype),
// and per engine the problems gemm() has seen (so autotune() can replay them). Kept apart from
// autotune.ts so gemm.ts can consult it without importing the tuner (no import circle).
import type { Engine } from '../runtime/engine.js';

/** The sizes of a batched GEMM C[z] (M x N) = A[z] (M x K) B[z] (K x N), strides in elements. */
export interface GemmDims {
  M: number;
  N: number;
  K: number;
  batch: number;
  strideA: number;
  strideB: number;
}

/** A GEMM problem as autotune() replays it: sizes and layout, not data. */
export interface GemmProblem extends GemmDims {
  /** op | shape class | dtype: the cache key */
  key: string;
  op: string;
  transA: boolean;
  transB: boolean;
  dtype: 'f32' | 'f16';
  aSize: number;
  bSize: number;
  outSize: number;
  splitK: number | 'auto';
  /** JSON of the im2col geometry (conv2d), if any */
  im2col?: string;
}

export interface TunedTile {
  tile: string;
  /** ms of the winner and of every candidate tried (fastest of the timed runs) */
  ms: number;
  candidates: Record<string, number>;
}

/** adapter key -> problem key -> tuned tile */
const tuned = new Map<string, Map<string, TunedTile>>();
const seen = new WeakMap<Engine, Map<string, GemmProblem>>();
const adapterKeys = new WeakMap<Engine, string>();

/** Identifies the adapter (and its f16 mode) the measurements belong to. */
export function adapterKey(engine: Engine): string {
  let k = adapterKeys.get(engine);
  if (!k) {
    const i = engine.info();
    k = [i.vendor, i.architecture, i.device, i.description, i.backend].map((s) => s || '?').join('/');
    adapterKeys.set(engine, k);
  }
  return k;
}

export function tunedFor(engine: Engine, key: string): TunedTile | undefined {
  return tuned.get(adapterKey(engine))?.get(key);
}

export function setTuned(engine: Engine, key: string, t: TunedTile): void {
  const a = adapterKey(engine);
  let m = tuned.get(a);
  if (!m) tuned.set(a, (m = new Map()));
  m.set(key, t);
}

/** All tuned entries of this engine's adapter (for reports and persistence). */
export function tunedTable(engine: Engine): Record<string, TunedTile> {
  return Object.fromEntries(tuned.get(adapterKey(engine)) ?? []);
}

const recent = new WeakMap<Engine, string[]>();

/** Called by gemm() on every problem: remembered once per key. */
export function noteProblem(engine: Engine, p: GemmProblem): void {
  let m = seen.get(engine);
  if (!m) seen.set(engine, (m = new Map()));
  if (!m.has(p.key)) m.set(p.key, p);
  const r = recent.get(engine);
  if (r && r.length < 1000) r.push(p.key);
  else if (!r) recent.set(engine, [p.key]);
}

/** The problem keys gemm() ran since the last call (the bench names each row's tuned tile). */
export function takeRecentProblems(engine: Engine): string[] {
  const r = recent.get(engine) ?? [];
  recent.set(engine, []);
  return r;
}

export function seenProblems(engine: Engine): GemmProblem[] {
  return [...(seen.get(engine)?.values() ?? [])];
}

/** Forget every tuned tile (all adapters) and the problems seen by `engine`. */
export function clearTuning(engine?: Engine): void {
  tuned.clear();
  if (engine) {
    seen.delete(engine);
    seenKernels.delete(engine);
  }
}

/**
 * A problem of a kernel other than the GEMM (the fused attention): it names its candidates and
 * times one on synthetic data of its sizes, so autotune() can measure it without knowing the op.
 */
export interface KernelProblem {
  /** op | shape class | dtype: the cache key */
  key: string;
  op: string;
  candidates: readonly string[];
  /** fastest of `runs` timed calls of `candidate` after one untimed call, in ms */
  time(engine: Engine, candidate: string, runs: number): Promise<number>;
}

const seenKernels = new WeakMap<Engine, Map<string, KernelProblem>>();

/** Called by a tunable kernel on every call: remembered once per key (and named to the bench). */
export function noteKernelProblem(engine: Engine, p: KernelProblem): void {
  let m = seenKernels.get(engine);
  if (!m) seenKernels.set(engine, (m = new Map()));
  if (!m.has(p.key)) m.set(p.key, p);
  const r = recent.get(engine);
  if (r && r.length < 1000) r.push(p.key);
  else if (!r) recent.set(engine, [p.key]);
}

export function seenKernelProblems(engine: Engine): KernelProblem[] {
  return [...(seenKernels.get(engine)?.values() ?? [])];
}
