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
