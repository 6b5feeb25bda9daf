// Shared by the test suites: one engine per file, seeded random data, float64 CPU references'
// comparison with relative L2 error, and a report of the worst error seen.
import { Engine } from '../src/index.js';
import type { Tensor } from '../src/index.js';

let enginePromise: Promise<Engine> | null = null;
/** The f32 engine the parity tests use (f16 would be chosen by default where the adapter has it). */
export function getEngine(): Promise<Engine> {
  enginePromise ??= Engine.create({ f16: false });
  return enginePromise;
}

let f16Promise: Promise<Engine> | null = null;
/** An engine running in f16 where the adapter has shader-f16 (check engine.f16 and skip otherwise). */
export function getF16Engine(): Promise<Engine> {
  f16Promise ??= Engine.create({ f16: true });
  return f16Promise;
}

/** mulberry32: small, fast, seeded. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform in [lo, hi) — nonzero, non-constant data by construction. */
export function randArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * r();
  return a;
}

/** Standard normal draws (Box-Muller), for weights and activations of realistic spread. */
export function randn(n: number, seed: number, std = 1): Float32Array {
  const r = rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12);
    const v = r();
    const m = Math.sqrt(-2 * Math.log(u)) * std;
    a[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) a[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return a;
}

export function relL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    num += d * d;
    den += expected[i] * expected[i];
  }
  if (!Number.isFinite(num)) return Infinity;
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

export function maxAbs(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

const worst = new Map<string, number>();
/** Records the error under a label; call reportWorst() in afterAll to print the worst per label. */
export function track(label: string, err: number): number {
  worst.set(label, Math.max(worst.get(label) ?? 0, err));
  return err;
}
export function reportWorst(suite: string): void {
  const rows = [...worst.entries()].map(([k, v]) => `  ${k}: ${v.toExponential(2)}`);
  if (rows.length) console.log(`[${suite}] worst relative L2 error per case family:\n${rows.join('\n')}`);
  worst.clear();
}

export async function readF32(t: Tensor): Promise<Float32Array> {
  const r = await t.read();
  return r instanceof Float32Array ? r : Float32Array.from(r);
}
