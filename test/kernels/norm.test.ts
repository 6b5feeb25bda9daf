import { describe, it, expect, afterAll } from 'vitest';
import { Engine, ops } from '../../src/index.js';
import { groupNormCost, layerNormCost } from '../../src/kernels/norm.js';
import { getEngine, randArray, randn, relL2, maxAbs, track, reportWorst } from '../helpers.js';
import { loadCase } from '../fixture.js';
import { groupNormRef, layerNormRef } from '../ref/norm.js';

afterAll(() => reportWorst('norm'));

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

describe('groupNorm', () => {
  // [shape, groups, affine, silu, eps]
  const cases: [number[], number, boolean, boolean, number][] = [
    [[2, 64, 6, 5], 32, true, false, 1e-5],
    [[1, 6, 33, 17], 3, true, true, 1e-6],
    [[3, 5, 7, 3], 5, true, false, 1e-5], // groups == channels
    [[2, 7, 1, 1], 1, true, true, 1e-5], // C not divisible by 4, spatial 1x1
    [[2, 8, 3], 8, false, false, 1e-5], // rank 3, non-affine
    [[4, 12], 4, true, false, 1e-6], // rank 2
    [[2, 32, 9, 11], 8, true, true, 1e-6],
    [[1, 64, 4, 4, 3], 32, true, false, 1e-5], // rank 5
    [[3, 256, 1, 1], 256, true, false, 1e-5], // large group count, one element per group
    [[1, 6, 41, 37], 2, true, true, 1e-6], // 4551-element groups: split over workgroups
    [[1, 20, 64, 64], 2, true, false, 1e-6], // 10 channels x 64x64 per group (the big-group path)
    [[2, 3, 129, 65], 1, false, true, 1e-5], // one group of 25155 elements, non-affine
    [[1, 1, 1100, 1000], 1, true, false, 1e-6], // 1.1M elements, 269 chunks: more partials than threads
    [[70000, 4], 2, true, false, 1e-5], // 140000 tiny rows, 256 per workgroup
    [[2, 16, 1, 1], 2, true, true, 1e-5], // vec4 over 4 consecutive channels
    [[2, 24, 8, 4], 3, true, true, 1e-6], // vec4 within a channel
    [[2, 8, 20, 20], 2, false, false, 1e-5], // vec4, non-affine
    [[2, 12, 40, 40], 2, true, true, 1e-6], // vec4 split path (9600-element groups, 3 chunks)
  ];
  for (const [shape, groups, affine, silu, eps] of cases) {
    it(`${JSON.stringify(shape)} groups ${groups}${affine ? '' : ' non-affine'}${silu ? ' +silu' : ''} matches float64`, async () => {
      const e = await getEngine();
      const c = shape[1];
      const seed = numel(shape) + groups;
      // A large common offset checks that the variance is computed around the mean (not for
      // groups of a few elements, where f32 rounding of the mean itself dominates, as in torch).
      const xs = randn(numel(shape), seed, 2);
      const offset = numel(shape.slice(1)) / groups >= 64 ? 30 : 0;
      for (let i = 0; i < xs.length; i++) xs[i] += offset;
      const gs = affine ? randArray(c, seed + 1, 0.5, 1.5) : null;
      const bs = affine ? randArray(c, seed + 2, -0.5, 0.5) : null;
      const x = e.tensor(xs, shape);
      const g = gs ? e.tensor(gs, [c]) : null;
      const b = bs ? e.tensor(bs, [c]) : null;
      const ref = groupNormRef(xs, shape, groups, gs, bs, eps, silu);
      // both long-group strategies: split over workgroups (GPUs) and one pass per group (CPU adapters)
      for (const split of [true, false]) {
        const y = ops.groupNorm(x, g, b, { groups, eps, silu, split });
        expect(y.shape).toEqual(shape);
        const got = await y.read();
        expect(track(`groupNorm${silu ? '+silu' : ''}`, relL2(got, ref)), `split ${split}`).toBeLessThan(1e-5);
        y.dispose();
      }
      for (const t of [x, g, b]) t?.dispose();
    });
  }

  const fixtures = ['g32_eps1e-05', 'g32_eps1e-05_silu', 'g32_eps1e-06', 'g32_eps1e-06_silu', 'g8_eps1e-05', 'g8_eps1e-05_silu', 'g8_eps1e-06', 'g8_eps1e-06_silu'];
  for (const name of fixtures) {
    it(`matches diffusers fixture ops/group_norm_${name}`, async () => {
      const e = await getEngine();
      const fx = loadCase(`ops/group_norm_${name}`);
      const cfg = fx.config as { num_groups: number; num_channels: number; eps: number; silu_after: boolean };
      const xin = fx.input('x');
      const want = fx.output('y');
      const x = e.tensor(xin.data as Float32Array, xin.shape);
      const g = e.tensor(fx.weights.weight.data as Float32Array, [cfg.num_channels]);
      const b = e.tensor(fx.weights.bias.data as Float32Array, [cfg.num_channels]);
      const y = ops.groupNorm(x, g, b, { groups: cfg.num_groups, eps: cfg.eps, silu: cfg.silu_after });
      const got = await y.read();
      for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - want.data[i])).toBeLessThanOrEqual(1e-4 + 1e-4 * Math.abs(want.data[i]));
      track('fixture group_norm', relL2(got, want.data));
      for (const t of [x, g, b, y]) t.dispose();
    });
  }

  it('f16 storage matches the f32 path', async ({ skip }) => {
    const e = await getEngine();
    if (!e.hasShaderF16) skip();
    const shape = [2, 16, 9, 7];
    const xs = randn(numel(shape), 77);
    const gs = randArray(16, 78, 0.5, 1.5);
    const bs = randArray(16, 79, -0.5, 0.5);
    const x = e.tensor(xs, shape, 'f16');
    const g = e.tensor(gs, [16], 'f16');
    const b = e.tensor(bs, [16], 'f16');
    const y = ops.groupNorm(x, g, b, { groups: 4, eps: 1e-5, silu: true });
    expect(y.dtype).toBe('f16');
    const got = await y.read();
    const xr = await x.read();
    const ref = groupNormRef(xr, shape, 4, await g.read(), await b.read(), 1e-5, true);
    expect(relL2(got, ref)).toBeLessThan(2e-3);
    for (const t of [x, g, b, y]) t.dispose();
  });

  it('rejects bad inputs with errors naming the op and shapes', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(2 * 6 * 3 * 3, 1), [2, 6, 3, 3]);
    const g = e.tensor(randArray(6, 2), [6]);
    const b = e.tensor(randArray(6, 3), [6]);
    const g5 = e.tensor(randArray(5, 4), [5]);
    expect(() => ops.groupNorm(x, g, b, { groups: 4 })).toThrow(/groupNorm.*groups \(4\).*6.*\[2, 6, 3, 3\]/);
    expect(() => ops.groupNorm(x, g, b, { groups: 0 })).toThrow(/groupNorm.*groups/);
    expect(() => ops.groupNorm(x, g5, b, { groups: 3 })).toThrow(/groupNorm.*gamma must have shape \[6\].*\[5\]/);
    expect(() => ops.groupNorm(x, g, null, { groups: 3 })).toThrow(/groupNorm.*both/);
    const v = e.tensor(randArray(6, 5), [6]);
    expect(() => ops.groupNorm(v, null, null, { groups: 3 })).toThrow(/groupNorm.*rank >= 2.*\[6\]/);
    expect(() => ops.groupNorm(x, g, b, { groups: 3, eps: -1 })).toThrow(/groupNorm.*eps/);
    const i = e.tensor(new Int32Array(36), [1, 6, 6]);
    expect(() => ops.groupNorm(i, null, null, { groups: 3 })).toThrow(/groupNorm.*i32/);
    const e2 = await Engine.create();
    const other = e2.tensor(randArray(6, 6), [6]);
    expect(() => ops.groupNorm(x, other, b, { groups: 3 })).toThrow(/groupNorm.*different engines/);
    e2.destroy();
    const d = e.tensor(randArray(36, 7), [1, 6, 6]);
    d.dispose();
    expect(() => ops.groupNorm(d, null, null, { groups: 3, silu: true })).toThrow(/groupNorm\+silu.*dispose/);
    for (const t of [x, g, b, g5, v, i]) t.dispose();
  });

  it('reports its cost', () => {
    const c = groupNormCost({ shape: [2, 320, 64, 64], groups: 32, silu: true });
    expect(c.flops).toBe(2 * 320 * 64 * 64 * 12);
    expect(c.bytes).toBe(2 * 320 * 64 * 64 * 4 * 3 + 2 * 320 * 4);
    expect(groupNormCost({ shape: [1, 64, 8, 8], groups: 32, affine: false }).bytes).toBe(64 * 64 * 4 * 2);
  });
});

describe('layerNorm', () => {
  const shapes: number[][] = [[2, 7, 32], [1, 1], [5, 3], [3, 77, 40], [9, 320], [2, 1280], [4, 6000], [3, 6001], [2, 770], [1, 513, 3]];
  for (const shape of shapes) {
    for (const affine of [true, false]) {
      it(`${JSON.stringify(shape)}${affine ? '' : ' non-affine'} matches float64`, async () => {
        const e = await getEngine();
        const d = shape[shape.length - 1];
        const seed = numel(shape) * 3 + (affine ? 1 : 0);
        const xs = randn(numel(shape), seed, 3);
        for (let i = 0; i < xs.length; i++) xs[i] -= 20;
        const gs = affine ? randArray(d, seed + 1, 0.5, 1.5) : null;
        const bs = affine ? randArray(d, seed + 2, -0.5, 0.5) : null;
        const x = e.tensor(xs, shape);
        const g = gs ? e.tensor(gs, [d]) : null;
        const b = bs ? e.tensor(bs, [d]) : null;
        const y = ops.layerNorm(x, g, b, { eps: 1e-5 });
        expect(y.shape).toEqual(shape);
        const got = await y.read();
        const ref = layerNormRef(xs, shape, gs, bs, 1e-5);
        // d = 1 normalises to exactly beta (or 0): relL2 against a zero reference is meaningless there
        if (d === 1) expect(maxAbs(got, ref)).toBeLessThan(1e-6);
        else expect(track('layerNorm', relL2(got, ref))).toBeLessThan(1e-5);
        for (const t of [x, g, b, y]) t?.dispose();
      });
    }
  }

  it('matches diffusers fixture ops/layer_norm', async () => {
    const e = await getEngine();
    const fx = loadCase('ops/layer_norm');
    const cfg = fx.config as { eps: number; normalized_shape: number[] };
    const xin = fx.input('x');
    const want = fx.output('y');
    const d = cfg.normalized_shape[0];
    const x = e.tensor(xin.data as Float32Array, xin.shape);
    const g = e.tensor(fx.weights.weight.data as Float32Array, [d]);
    const b = e.tensor(fx.weights.bias.data as Float32Array, [d]);
    const y = ops.layerNorm(x, g, b, { eps: cfg.eps });
    const got = await y.read();
    for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - want.data[i])).toBeLessThanOrEqual(1e-4 + 1e-4 * Math.abs(want.data[i]));
    track('fixture layer_norm', relL2(got, want.data));
    for (const t of [x, g, b, y]) t.dispose();
  });

  it('rejects bad inputs', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(24, 1), [2, 3, 4]);
    const g3 = e.tensor(randArray(3, 2), [3]);
    const g4 = e.tensor(randArray(4, 2), [4]);
    expect(() => ops.layerNorm(x, g3, g3)).toThrow(/layerNorm.*gamma must have shape \[4\].*\[3\]/);
    expect(() => ops.layerNorm(x, g4, null)).toThrow(/layerNorm.*both/);
    const h = e.tensor(randArray(4, 3), [4], 'f32');
    const e2 = await Engine.create();
    const other = e2.tensor(randArray(4, 6), [4]);
    expect(() => ops.layerNorm(x, g4, other)).toThrow(/layerNorm.*different engines/);
    e2.destroy();
    h.dispose();
    expect(() => ops.layerNorm(x, g4, h)).toThrow(/layerNorm.*dispose/);
    expect(layerNormCost({ shape: [2, 77, 768] }).bytes).toBe(2 * 2 * 77 * 768 * 4 + 2 * 768 * 4);
    for (const t of [x, g3, g4]) t.dispose();
  });
});
