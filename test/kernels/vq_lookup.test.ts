import { describe, it, expect, afterAll } from 'vitest';
import { Engine, ops } from '../../src/index.js';
import { getEngine, randn, randArray, rng, relL2, maxAbs, track, reportWorst, readF32 } from '../helpers.js';
import { loadCase } from '../fixture.js';
import { vqLookupRef } from '../ref/vq_lookup.js';

const engine = await getEngine();
afterAll(() => reportWorst('vqLookup'));

async function readI32(t: ReturnType<typeof ops.vqLookup>['indices']): Promise<Int32Array> {
  const r = await t.read();
  if (!(r instanceof Int32Array)) throw new Error('expected i32');
  return r;
}

describe('ops.vqLookup', () => {
  it('matches the diffusers VectorQuantizer fixture (indices exactly)', async () => {
    const e = engine;
    const c = loadCase('ops/vq_codebook');
    const zH = c.input('z');
    const cb = c.weights['embedding.weight'];
    expect(cb.shape).toEqual([16, 3]);
    const z = e.tensor(zH.data as Float32Array, zH.shape);
    const book = e.tensor(cb.data as Float32Array, cb.shape);
    const { quantized, indices } = ops.vqLookup(z, book);
    expect(quantized.shape).toEqual(zH.shape);
    expect(indices.shape).toEqual([60]);
    expect(indices.dtype).toBe('i32');
    expect(Array.from(await readI32(indices))).toEqual(Array.from(c.output('indices').data));
    const q = await readF32(quantized);
    expect(track('fixture maxAbs', maxAbs(q, c.output('z_q').data))).toBeLessThanOrEqual(1e-6);
    for (const t of [z, book, quantized, indices]) t.dispose();
  });

  // [B, C, H, W, K]: C small and large, K from 16 to 16384, sizes off the 64-pixel / 64-entry tiles
  const cases: [number, number, number, number, number][] = [
    [1, 3, 5, 6, 16],
    [2, 4, 7, 9, 17],
    [1, 1, 3, 3, 20],
    [2, 5, 6, 11, 100],
    [1, 8, 8, 8, 256],
    [3, 13, 5, 7, 129],
    [1, 3, 9, 13, 16384],
    [1, 4, 5, 5, 8192],
    [1, 256, 4, 5, 300],
    [2, 17, 3, 3, 1000],
  ];
  // every case on both paths: the GEMM core (scores + argmin) and the direct kernel
  for (const path of ['gemm', 'direct'] as const) {
    for (const [B, C, H, W, K] of cases) {
      it(`${path}: z [${B}, ${C}, ${H}, ${W}] against K=${K} entries matches float64`, async () => {
        const e = engine;
        const seed = B * 1000 + C * 100 + K;
        const zd = randn(B * C * H * W, seed);
        const cd = randn(K * C, seed + 1);
        const z = e.tensor(zd, [B, C, H, W]);
        const book = e.tensor(cd, [K, C]);
        const { quantized, indices } = ops.vqLookup(z, book, { path });
        const idx = await readI32(indices);
        const q = await readF32(quantized);
        const ref = vqLookupRef(zd, [B, C, H, W], cd, K);
        let mismatches = 0;
        for (let n = 0; n < idx.length; n++) {
          if (idx[n] === ref.indices[n]) continue;
          // only a float32 near-tie may pick another entry: its exact distance must be as good to ~1e-6
          mismatches++;
          const best = ref.dist(n, ref.indices[n]);
          expect(idx[n]).toBeGreaterThanOrEqual(0);
          expect(idx[n]).toBeLessThan(K);
          expect(ref.dist(n, idx[n]) - best).toBeLessThanOrEqual(1e-6 * (1 + best));
        }
        expect(mismatches).toBeLessThanOrEqual(1);
        // quantized is exactly the chosen entries
        const hw = H * W;
        for (let n = 0; n < idx.length; n++) {
          const b = Math.floor(n / hw);
          for (let c = 0; c < C; c++) expect(q[(b * C + c) * hw + (n % hw)]).toBe(cd[idx[n] * C + c]);
        }
        if (!mismatches) track(`random ${path}`, relL2(q, ref.quantized));
        for (const t of [z, book, quantized, indices]) t.dispose();
      });
    }

    it(`${path}: picks the first of tied entries`, async () => {
      const e = engine;
      // integer data: every distance is exact, ties are real; entries k and k + 40 are duplicates
      const r = rng(7);
      const C = 5, K = 80, B = 2, H = 7, W = 9;
      const cd = new Float32Array(K * C);
      for (let k = 0; k < 40; k++) for (let c = 0; c < C; c++) cd[k * C + c] = cd[(k + 40) * C + c] = Math.floor(r() * 7) - 3;
      const zd = Float32Array.from({ length: B * C * H * W }, () => Math.floor(r() * 9) - 4);
      const z = e.tensor(zd, [B, C, H, W]);
      const book = e.tensor(cd, [K, C]);
      const { quantized, indices } = ops.vqLookup(z, book, { path });
      const idx = await readI32(indices);
      const ref = vqLookupRef(zd, [B, C, H, W], cd, K);
      expect(Array.from(idx)).toEqual(Array.from(ref.indices));
      expect(Math.max(...idx)).toBeLessThan(40);
      expect(await readF32(quantized)).toEqual(Float32Array.from(ref.quantized));
      // all-equal codebook: index 0 everywhere
      const same = e.tensor(new Float32Array(70 * C).fill(0.5), [70, C]);
      const r2 = ops.vqLookup(z, same, { path });
      expect(Array.from(await readI32(r2.indices)).every((v) => v === 0)).toBe(true);
      for (const t of [z, book, quantized, indices, same, r2.quantized, r2.indices]) t.dispose();
    });

    it.skipIf(!engine.hasShaderF16)(`${path}: f16 tensors`, async () => {
      const e = engine;
      const zd = randn(2 * 4 * 5 * 5, 3);
      const cd = randn(64 * 4, 4);
      const z = e.tensor(zd, [2, 4, 5, 5], 'f16');
      const book = e.tensor(cd, [64, 4], 'f16');
      const { quantized, indices } = ops.vqLookup(z, book, { path });
      expect(quantized.dtype).toBe('f16');
      const zr = await readF32(z);
      const cr = await readF32(book);
      const ref = vqLookupRef(zr, [2, 4, 5, 5], cr, 64);
      const idx = await readI32(indices);
      for (let n = 0; n < idx.length; n++) expect(ref.dist(n, idx[n]) - ref.dist(n, ref.indices[n])).toBeLessThanOrEqual(1e-3);
      for (const t of [z, book, quantized, indices]) t.dispose();
    });
  }

  it('rejects bad inputs with errors naming the op and shapes', async () => {
    const e = engine;
    const z = e.tensor(randArray(2 * 3 * 4 * 4, 1), [2, 3, 4, 4]);
    const book4 = e.tensor(randArray(16 * 4, 2), [16, 4]);
    const book3 = e.tensor(randArray(16 * 3, 3), [16, 3]);
    expect(() => ops.vqLookup(z, book4)).toThrow(/vqLookup.*codebook width 4.*3 channels.*\[2, 3, 4, 4\].*\[16, 4\]/);
    const z3 = e.tensor(randArray(3 * 16, 4), [3, 4, 4]);
    expect(() => ops.vqLookup(z3, book3)).toThrow(/vqLookup.*rank 4.*\[3, 4, 4\]/);
    const book3d = e.tensor(randArray(48, 5), [16, 3, 1]);
    expect(() => ops.vqLookup(z, book3d)).toThrow(/vqLookup.*rank 2.*\[16, 3, 1\]/);
    const bi = e.tensor(Int32Array.from({ length: 48 }, (_, i) => i), [16, 3]);
    expect(() => ops.vqLookup(z, bi)).toThrow(/vqLookup.*i32/);
    const empty = e.tensor(new Float32Array(0), [0, 3]);
    expect(() => ops.vqLookup(z, empty)).toThrow(/vqLookup.*empty/);
    const e2 = await Engine.create();
    const other = e2.tensor(randArray(48, 6), [16, 3]);
    expect(() => ops.vqLookup(z, other)).toThrow(/vqLookup.*different engines/);
    e2.destroy();
    book3.dispose();
    expect(() => ops.vqLookup(z, book3)).toThrow(/vqLookup.*dispose/);
    for (const t of [z, book4, z3, book3d, bi, empty]) t.dispose();
  });

  it('takes the GEMM path by default and the direct kernel past VQ_GEMM_MAX_BYTES', async () => {
    const z = engine.tensor(randn(2 * 4 * 5 * 5, 9), [2, 4, 5, 5]);
    const book = engine.tensor(randn(64 * 4, 10), [64, 4]);
    const names = async (fn: () => void) => (await engine.profile(fn)).kernels.map((k) => k.name).join(' ');
    let r = ops.vqLookup(z, book);
    const viaDefault = await readI32(r.indices);
    r.quantized.dispose();
    r.indices.dispose();
    expect(await names(() => { const o = ops.vqLookup(z, book); o.quantized.dispose(); o.indices.dispose(); })).toMatch(/vqArgmin/);
    r = ops.vqLookup(z, book, { path: 'direct' });
    expect(Array.from(await readI32(r.indices))).toEqual(Array.from(viaDefault));
    r.quantized.dispose();
    r.indices.dispose();
    for (const t of [z, book]) t.dispose();
  });

  it('reports its cost', () => {
    const c = ops.vqLookupCost({ pixels: 64 * 64, channels: 4, entries: 16384 });
    expect(c.flops).toBe(3 * 64 * 64 * 4 * 16384);
    expect(c.bytes).toBeGreaterThan(0);
  });
});
