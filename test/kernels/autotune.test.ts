// The GEMM autotuner: it measures the problems gemm() has seen, keeps the fastest candidate per
// adapter, persists it, and gemm() then runs that tile (results unchanged).
import { describe, it, expect } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ops, autotune } from '../../src/index.js';
import { chooseTile, problemKey } from '../../src/kernels/gemm.js';
import { clearTuning, tunedFor } from '../../src/kernels/tune_cache.js';
import { getEngine, randn, readF32, relL2 } from '../helpers.js';
import { refMatmul } from '../ref/matmul.js';

describe('autotune', () => {
  it('tunes the seen matmul and conv classes, persists them and runs the winner', async () => {
    const e = await getEngine();
    clearTuning(e);
    const path = join(mkdtempSync(join(tmpdir(), 'gemm-tune-')), 'tuning.json');
    const as = randn(33 * 20, 1);
    const bs = randn(20 * 45, 2);
    const a = e.tensor(as, [33, 20]);
    const b = e.tensor(bs, [20, 45]);
    ops.matmul(a, b).dispose();
    const x = e.tensor(randn(2 * 5 * 9 * 7, 3), [2, 5, 9, 7]);
    const w = e.tensor(randn(6 * 5 * 9, 4, 0.2), [6, 5, 3, 3]);
    ops.conv2d(x, w, null, { padding: 1 }).dispose();

    const res = await autotune(e, { candidates: ['small', 'cpu32'], runs: 1, persist: path });
    expect(res.map((r) => r.op).sort()).toEqual(['conv2d', 'matmul']);
    for (const r of res) {
      expect(r.measured).toBe(true);
      expect(['small', 'cpu32']).toContain(r.tile);
      expect(Object.keys(r.candidates).sort()).toEqual(['cpu32', 'small']);
    }
    const stored = JSON.parse(readFileSync(path, 'utf8')) as Record<string, Record<string, { tile: string }>>;
    expect(Object.values(stored)[0]).toBeDefined();

    // gemm() now picks the tuned tile, and the product is still right
    const mmKey = res.find((r) => r.op === 'matmul')!.key;
    const y = ops.matmul(a, b);
    const out = e.empty([33, 45], 'f32');
    expect(chooseTile(e, { op: 'matmul', a, b, out, M: 33, N: 45, K: 20, batch: 1, strideA: 0, strideB: 0, transA: false, transB: false, activation: 'none' })).toBe(
      tunedFor(e, mmKey)!.tile,
    );
    expect(problemKey({ op: 'matmul', a, b, out, M: 33, N: 45, K: 20, batch: 1, strideA: 0, strideB: 0, transA: false, transB: false, activation: 'none' })).toBe(mmKey);
    expect(relL2(await readF32(y), refMatmul(as, [33, 20], bs, [20, 45]).data)).toBeLessThan(1e-5);

    // a fresh in-memory cache reloads from the file: nothing is measured again
    clearTuning();
    const again = await autotune(e, { candidates: ['small', 'cpu32'], runs: 1, persist: path });
    expect(again.every((r) => !r.measured)).toBe(true);
    clearTuning(e);
    for (const t of [a, b, x, w, y, out]) t.dispose();
  });
});
