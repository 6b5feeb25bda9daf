// The WGSL kit: the flat entry point drives the small kernels that have no suite of their own
// (embedding, classifier-free guidance, non-finite count), on sizes that leave a partial last
// workgroup, and the source cache hands back one object per name.
import { describe, it, expect } from 'vitest';
import { ops } from '../../src/index.js';
import { cachedSource } from '../../src/kernels/kit.js';
import { activationWgsl, flatMain } from '../../src/kernels/kit.wgsl.js';
import { getEngine, randArray, readF32, relL2 } from '../helpers.js';

describe('kit', () => {
  it('embedding gathers rows (flat index past a partial workgroup)', async () => {
    const engine = await getEngine();
    const V = 13;
    const D = 37; // 5 rows x 37 = 185 threads: one partial workgroup
    const tab = randArray(V * D, 1);
    const ids = [12, 0, 7, 7, 3];
    const t = engine.tensor(tab, [V, D]);
    const y = ops.embedding(t, ids);
    const got = await readF32(y);
    const ref = new Float32Array(ids.length * D);
    ids.forEach((id, r) => ref.set(tab.subarray(id * D, id * D + D), r * D));
    expect(Array.from(got)).toEqual(Array.from(ref));
    [t, y].forEach((a) => a.dispose());
  });

  it('classifierFreeGuidance mixes the halves', async () => {
    const engine = await getEngine();
    const half = 3 * 5 * 7 * 11; // 1155: not a multiple of 256
    const x = randArray(2 * half, 2);
    const t = engine.tensor(x, [2, 3, 5, 7, 11]);
    const y = ops.classifierFreeGuidance(t, 7.5);
    const got = await readF32(y);
    const ref = new Float64Array(half);
    for (let i = 0; i < half; i++) ref[i] = x[i] + 7.5 * (x[i + half] - x[i]);
    expect(relL2(got, ref)).toBeLessThan(1e-6);
    [t, y].forEach((a) => a.dispose());
  });

  it('classifierFreeGuidance with rescale: per item, unbiased std over C, H, W (float64 reference)', async () => {
    const engine = await getEngine();
    for (const [B, C, H, W, r, seed] of [[3, 3, 7, 13, 0.7, 4], [1, 5, 1, 1, 1, 5], [2, 4, 19, 23, 0.25, 6]] as const) {
      const n = C * H * W; // 273, 5, 1748: below, far below and past one 256-thread sweep
      // the halves with different spreads and offsets per item, so a whole-batch std or a biased one shows
      const x = new Float32Array(2 * B * n);
      const raw = randArray(2 * B * n, seed);
      for (let i = 0; i < x.length; i++) x[i] = raw[i] * (1 + Math.floor(i / n)) + 0.3 * (i % 3);
      const t = engine.tensor(x, [2 * B, C, H, W]);
      const y = ops.classifierFreeGuidance(t, 6.5, { rescale: r });
      const got = await readF32(y);
      const ref = new Float64Array(B * n);
      const std = (v: Float64Array) => {
        const m = v.reduce((a, b) => a + b, 0) / v.length;
        return Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - 1));
      };
      for (let b = 0; b < B; b++) {
        const c = Float64Array.from(x.subarray((B + b) * n, (B + b + 1) * n));
        const g = c.map((cv, j) => x[b * n + j] + 6.5 * (cv - x[b * n + j]));
        const f = r * (std(c) / std(g)) + 1 - r;
        for (let j = 0; j < n; j++) ref[b * n + j] = g[j] * f;
      }
      expect(relL2(got, ref), `${B}x${C}x${H}x${W}`).toBeLessThan(1e-6);
      // rescale 0 is the plain kernel
      const plain = ops.classifierFreeGuidance(t, 6.5, { rescale: 0 });
      const p0 = await readF32(plain);
      expect(relL2(p0, Float64Array.from({ length: B * n }, (_, i) => x[i] + 6.5 * (x[i + B * n] - x[i])))).toBeLessThan(1e-6);
      [t, y, plain].forEach((a) => a.dispose());
    }
    const one = engine.tensor(new Float32Array([1, 2]), [2, 1]);
    expect(() => ops.classifierFreeGuidance(one, 2, { rescale: 0.5 })).toThrow(/at least 2 values per item/);
    expect(() => ops.classifierFreeGuidance(one, 2, { rescale: 1.5 })).toThrow(/rescale must be in \[0, 1\]/);
    one.dispose();
  });

  it('cachedSource builds once per name', () => {
    let builds = 0;
    const a = cachedSource('kit_test_source', () => `// ${++builds}`);
    const b = cachedSource('kit_test_source', () => `// ${++builds}`);
    expect(a).toBe(b);
    expect(builds).toBe(1);
  });

  it('flatMain and activationWgsl produce the guard and one function', () => {
    expect(flatMain('p.n', '  y[i] = x[i];')).toMatch(/if \(i >= p\.n\) \{ return; \}/);
    expect(activationWgsl('none')).toBe('');
    expect(activationWgsl('gelu', 'vec4<f32>')).toMatch(/fn erf_approx\(v: vec4<f32>\)[\s\S]*fn act\(v: vec4<f32>\)/);
  });
});
