// The GEMM autotuner. gemm() remembers every problem it runs (per engine, by op kind, shape class
// and dtype) and uses the heuristic tile until this has measured one: autotune(engine) times each
// candidate tile of the table on each remembered problem (on synthetic data of the same sizes),
// keeps the fastest per adapter, and from then on gemm() uses it. Results persist per adapter: a
// JSON file in Node (~/.cache/ldm-webgpu/gemm-tuning.json unless `path` says otherwise),
// localStorage in browsers; autotune() loads them first, so tuning a shape class happens once per
// adapter, ever. Typical use: run one forward pass, `await autotune(engine)`, then generate.
// The fused attention registers its problems the same way (tune_cache's KernelProblem): its
// variants are timed and chosen per adapter alongside the GEMM tiles.
import { readText, userCachePath, writeText } from '../runtime/io.js';
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import { GEMM_TILES, gemm, tileFits, type GemmArgs, type GemmTileName, type Im2colArgs } from './gemm.js';
import { adapterKey, seenKernelProblems, seenProblems, setTuned, tunedFor, tunedTable, type GemmProblem, type TunedTile } from './tune_cache.js';

export interface AutotuneOptions {
  /** GEMM tiles to try (default: every table entry that fits the device); other kernels try all their variants */
  candidates?: readonly GemmTileName[];
  /** timed runs per candidate after one warm-up (default 3; the fastest counts, since contention
   * from other work on the device or host only ever adds time) */
  runs?: number;
  /** persist: true (default location), false, or a file path (Node) */
  persist?: boolean | string;
  /** re-measure classes that already have a tuned tile */
  force?: boolean;
  log?: (line: string) => void;
}

export interface AutotuneResult extends TunedTile {
  key: string;
  op: string;
  /** measured now (false: taken from the cache) */
  measured: boolean;
}

const STORAGE_KEY = 'ldm-webgpu:gemm-tuning';

const defaultPath = () => userCachePath('gemm-tuning.json');

type Persisted = Record<string, Record<string, TunedTile>>;

async function readStore(engine: Engine, persist: boolean | string): Promise<Persisted> {
  try {
    if (engine.info().backend === 'browser') {
      const ls = (globalThis as { localStorage?: Storage }).localStorage;
      return JSON.parse(ls?.getItem(STORAGE_KEY) ?? '{}') as Persisted;
    }
    const path = typeof persist === 'string' ? persist : await defaultPath();
    return JSON.parse(await readText(path)) as Persisted;
  } catch {
    return {}; // nothing stored yet, or unreadable: tune afresh
  }
}

async function writeStore(engine: Engine, persist: boolean | string, store: Persisted): Promise<void> {
  const text = JSON.stringify(store, null, 1);
  if (engine.info().backend === 'browser') {
    (globalThis as { localStorage?: Storage }).localStorage?.setItem(STORAGE_KEY, text);
    return;
  }
  await writeText(typeof persist === 'string' ? persist : await defaultPath(), text);
}

/** Loads the persisted tuning of this engine's adapter into memory (autotune() does this itself). */
export async function loadTuning(engine: Engine, persist: boolean | string = true): Promise<number> {
  const mine = (await readStore(engine, persist))[adapterKey(engine)] ?? {};
  let n = 0;
  for (const [key, t] of Object.entries(mine)) {
    // GEMM keys must name a GEMM tile; other kernels (attention) check their own names when used
    const known = key.startsWith('attention|') || t?.tile in GEMM_TILES;
    if (t && typeof t.tile === 'string' && known && !tunedFor(engine, key)) {
      setTuned(engine, key, t);
      n++;
    }
  }
  return n;
}

function fill(engine: Engine, size: number, dtype: 'f32' | 'f16', seed: number): Tensor {
  // Values of ordinary magnitude (no zeros, no denormals, which some CPUs process slowly).
  const a = new Float32Array(size);
  for (let i = 0; i < size; i++) a[i] = (((i * 2654435761 + seed) >>> 0) / 4294967296 - 0.5) * 0.5;
  return engine.tensor(a, [size], dtype);
}

async function timeTile(engine: Engine, p: GemmProblem, tile: GemmTileName, runs: number): Promise<number> {
  const a = fill(engine, p.aSize, p.dtype, 1);
  const b = fill(engine, p.bSize, p.dtype, 2);
  const out = engine.empty([p.outSize], p.dtype, 'autotune');
  try {
    const args: GemmArgs = {
      op: p.op,
      a,
      b,
      out,
      M: p.M,
      N: p.N,
      K: p.K,
      batch: p.batch,
      strideA: p.strideA,
      strideB: p.strideB,
      transA: p.transA,
      transB: p.transB,
      activation: 'none',
      splitK: p.splitK,
      tile,
      im2col: p.im2col ? (JSON.parse(p.im2col) as Im2colArgs) : undefined,
      biasAxis: 'n',
    };
    gemm(engine, args); // compiles the pipeline; not timed
    await engine.sync();
    const times: number[] = [];
    for (let r = 0; r < runs; r++) {
      const t0 = performance.now();
      gemm(engine, args);
      await engine.sync();
      times.push(performance.now() - t0);
    }
    return Math.min(...times);
  } finally {
    for (const t of [a, b, out]) t.dispose();
  }
}

/**
 * Tunes every GEMM problem class this engine has run (matmul, linear, conv2d) that has no tuned
 * tile yet: each candidate tile is run once to compile, then timed; the fastest is kept for this
 * adapter. Returns one result per class, measured or from the cache.
 */
export async function autotune(engine: Engine, opts: AutotuneOptions = {}): Promise<AutotuneResult[]> {
  const persist = opts.persist ?? true;
  const runs = Math.max(1, opts.runs ?? 3);
  if (persist) await loadTuning(engine, persist);
  const names = (opts.candidates ?? (Object.keys(GEMM_TILES) as GemmTileName[])).filter((n) => n in GEMM_TILES && tileFits(engine, GEMM_TILES[n]));
  if (!names.length) throw new Error('autotune: no candidate tile fits this device');
  const results: AutotuneResult[] = [];
  let changed = false;
  for (const p of seenProblems(engine)) {
    const have = tunedFor(engine, p.key);
    if (have && !opts.force) {
      results.push({ ...have, key: p.key, op: p.op, measured: false });
      continue;
    }
    const candidates: Record<string, number> = {};
    for (const n of names) candidates[n] = await timeTile(engine, p, n, runs);
    const best = names.reduce((x, y) => (candidates[y] < candidates[x] ? y : x));
    const t: TunedTile = { tile: best, ms: candidates[best], candidates };
    setTuned(engine, p.key, t);
    changed = true;
    results.push({ ...t, key: p.key, op: p.op, measured: true });
    opts.log?.(`autotune ${p.op} ${p.key}: ${best} ${t.ms.toFixed(3)} ms (${names.map((n) => `${n} ${candidates[n].toFixed(3)}`).join(', ')})`);
  }
  // The other tunable kernels (the fused attention's variants): each problem brings its candidates.
  for (const p of seenKernelProblems(engine)) {
    const have = tunedFor(engine, p.key);
    if (have && !opts.force) {
      results.push({ ...have, key: p.key, op: p.op, measured: false });
      continue;
    }
    const candidates: Record<string, number> = {};
    for (const n of p.candidates) candidates[n] = await p.time(engine, n, runs);
    const best = p.candidates.reduce((x, y) => (candidates[y] < candidates[x] ? y : x));
    const t: TunedTile = { tile: best, ms: candidates[best], candidates };
    setTuned(engine, p.key, t);
    changed = true;
    results.push({ ...t, key: p.key, op: p.op, measured: true });
    opts.log?.(`autotune ${p.op} ${p.key}: ${best} ${t.ms.toFixed(3)} ms (${p.candidates.map((n) => `${n} ${candidates[n].toFixed(3)}`).join(', ')})`);
  }
  if (persist && changed) {
    const store = await readStore(engine, persist);
    store[adapterKey(engine)] = { ...(store[adapterKey(engine)] ?? {}), ...tunedTable(engine) };
    await writeStore(engine, persist, store);
  }
  return results;
}
