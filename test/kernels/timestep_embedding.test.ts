import { describe, it, expect, afterAll } from 'vitest';
import { Engine, ops } from '../../src/index.js';
import { getEngine, randArray, relL2, maxAbs, track, reportWorst, readF32 } from '../helpers.js';
import { loadCase } from '../fixture.js';
import { timestepEmbeddingRef } from '../ref/timestep_embedding.js';

const engine = await getEngine();
afterAll(() => reportWorst('timestepEmbedding'));

const near = (a: ArrayLike<number>, b: ArrayLike<number>, atol = 1e-4, rtol = 1e-4): boolean => {
  for (let i = 0; i < b.length; i++) if (!(Math.abs(a[i] - b[i]) <= atol + rtol * Math.abs(b[i]))) return false;
  return a.length === b.length;
};

describe('ops.timestepEmbedding', () => {
  for (const flip of [0, 1]) {
    for (const shift of [0, 1]) {
      it(`matches diffusers fixture flip${flip}_shift${shift}`, async () => {
        const e = await getEngine();
        const c = loadCase(`ops/timestep_embedding_flip${flip}_shift${shift}`);
        const ts = Array.from(c.input('timesteps').data);
        const want = c.output('emb').data;
        const dim = c.config.embedding_dim as number;
        const opts = { flipSinToCos: !!flip, downscaleFreqShift: shift };
        // host array, and the same timesteps as a GPU tensor
        const y1 = ops.timestepEmbedding(e, ts, dim, opts);
        const tt = e.tensor(Float32Array.from(ts), [ts.length]);
        const y2 = ops.timestepEmbedding(e, tt, dim, opts);
        for (const y of [y1, y2]) {
          expect(y.shape).toEqual([ts.length, dim]);
          const got = await readF32(y);
          const err = track('fixture', relL2(got, want));
          expect(err).toBeLessThanOrEqual(1e-5);
          expect(near(got, want)).toBe(true);
          y.dispose();
        }
        tt.dispose();
      });
    }
  }

  const shapes: [number, number][] = [
    [1, 2], [3, 3], [2, 31], [5, 32], [7, 33], [4, 320], [3, 1281], [2, 1024],
  ];
  for (const [batch, dim] of shapes) {
    // dim < 4 with shift 1 divides by zero (NaN in diffusers, refused here)
    for (const [flip, shift] of [[true, 0], [false, dim >= 4 ? 1 : 0]] as const) {
      it(`batch ${batch} dim ${dim} flip ${flip} shift ${shift} vs float64 of the float32 argument`, async () => {
        const e = await getEngine();
        // fractional timesteps over the whole diffusion range: arguments up to ~1000 rad
        const ts = Array.from(randArray(batch, 100 + dim + batch, 0, 1000));
        ts[0] = 999.75;
        const y = ops.timestepEmbedding(e, ts, dim, { flipSinToCos: flip, downscaleFreqShift: shift });
        const got = await readF32(y);
        const want = timestepEmbeddingRef(ts, dim, { flipSinToCos: flip, downscaleFreqShift: shift });
        expect(track('random', relL2(got, want))).toBeLessThanOrEqual(1e-5);
        expect(track('random maxAbs', maxAbs(got, want))).toBeLessThanOrEqual(5e-7);
        if (dim % 2) for (let b = 0; b < batch; b++) expect(got[b * dim + dim - 1]).toBe(0);
        y.dispose();
      });
    }
  }

  it('stays accurate for large arguments, scale and maxPeriod', async () => {
    const e = await getEngine();
    const ts = [1e4, 5e4, 65000.5, 0.001, 12345.678, -777.25, 4.5e5, 9.99e6];
    const o = { flipSinToCos: false, downscaleFreqShift: 1, scale: 1.5, maxPeriod: 5000 };
    const y = ops.timestepEmbedding(e, ts, 64, o);
    const got = await readF32(y);
    const want = timestepEmbeddingRef(ts, 64, o);
    expect(track('large args maxAbs', maxAbs(got, want))).toBeLessThanOrEqual(1e-6);
    y.dispose();
  });

  it('broadcasts a number, a length-1 array or tensor to batch rows; takes i32 tensors', async () => {
    const e = await getEngine();
    const o = { flipSinToCos: true, downscaleFreqShift: 0 };
    const want = timestepEmbeddingRef([10.5, 10.5, 10.5], 40, o);
    const a = ops.timestepEmbedding(e, 10.5, 40, { ...o, batch: 3 });
    const b = ops.timestepEmbedding(e, [10.5], 40, { ...o, batch: 3 });
    const t1 = e.tensor([10.5], [1]);
    const c = ops.timestepEmbedding(e, t1, 40, { ...o, batch: 3 });
    for (const y of [a, b, c]) {
      expect(y.shape).toEqual([3, 40]);
      expect(maxAbs(await readF32(y), want)).toBeLessThanOrEqual(5e-7);
      y.dispose();
    }
    const single = ops.timestepEmbedding(e, 981, 40, o);
    expect(single.shape).toEqual([1, 40]);
    expect(maxAbs(await readF32(single), timestepEmbeddingRef([981], 40, o))).toBeLessThanOrEqual(5e-7);
    const ints = [0, 1, 981, 999, 500];
    const ti = e.tensor(Int32Array.from(ints), [5]);
    const yi = ops.timestepEmbedding(e, ti, 33, o);
    expect(maxAbs(await readF32(yi), timestepEmbeddingRef(ints, 33, o))).toBeLessThanOrEqual(5e-7);
    for (const t of [single, t1, ti, yi]) t.dispose();
  });

  it.skipIf(!engine.hasShaderF16)('f16 output (needs shader-f16)', async () => {
    const e = engine;
    const o = { flipSinToCos: true, downscaleFreqShift: 0, dtype: 'f16' as const };
    const y = ops.timestepEmbedding(e, [1, 500, 999], 64, o);
    expect(y.dtype).toBe('f16');
    expect(relL2(await readF32(y), timestepEmbeddingRef([1, 500, 999], 64, o))).toBeLessThanOrEqual(2e-3);
    y.dispose();
  });

  it('rejects bad inputs with errors naming the op', async () => {
    const e = await getEngine();
    const o = { flipSinToCos: true, downscaleFreqShift: 0 };
    expect(() => ops.timestepEmbedding(e, 1, 1, o)).toThrow(/timestepEmbedding.*dim/);
    expect(() => ops.timestepEmbedding(e, 1, 0, o)).toThrow(/timestepEmbedding.*dim/);
    expect(() => ops.timestepEmbedding(e, 1, 32.5, o)).toThrow(/timestepEmbedding.*dim/);
    expect(() => ops.timestepEmbedding(e, 1, 2, { flipSinToCos: true, downscaleFreqShift: 1 })).toThrow(/timestepEmbedding.*zero/);
    expect(() => ops.timestepEmbedding(e, [], 8, o)).toThrow(/timestepEmbedding.*no timesteps/);
    expect(() => ops.timestepEmbedding(e, [1, NaN], 8, o)).toThrow(/timestepEmbedding.*finite/);
    expect(() => ops.timestepEmbedding(e, [1, 2], 8, { ...o, batch: 3 })).toThrow(/timestepEmbedding.*2 timesteps for batch 3/);
    expect(() => ops.timestepEmbedding(e, 1, 8, { ...o, batch: 0 })).toThrow(/timestepEmbedding.*batch/);
    expect(() => ops.timestepEmbedding(e, 1, 8, { ...o, dtype: 'i32' })).toThrow(/timestepEmbedding.*dtype/);
    const t2 = e.tensor(randArray(4, 1), [2, 2]);
    expect(() => ops.timestepEmbedding(e, t2, 8, o)).toThrow(/timestepEmbedding.*rank.*\[2, 2\]/);
    t2.dispose();
    expect(() => ops.timestepEmbedding(e, t2, 8, o)).toThrow(/timestepEmbedding.*dispose/);
    const e2 = await Engine.create();
    const other = e2.tensor([1, 2], [2]);
    expect(() => ops.timestepEmbedding(e, other, 8, o)).toThrow(/timestepEmbedding.*another engine/);
    e2.destroy();
    expect(() => ops.timestepEmbedding(undefined as unknown as Engine, 1, 8, o)).toThrow(/timestepEmbedding.*Engine/);
  });

  it('reports its cost', () => {
    const c = ops.timestepEmbeddingCost({ batch: 2, dim: 320 });
    expect(c.flops).toBeGreaterThan(0);
    expect(c.bytes).toBeGreaterThanOrEqual(2 * 320 * 4);
  });
});
