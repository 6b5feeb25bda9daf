import { describe, it, expect, afterAll } from 'vitest';
import { Engine, ops, type Tensor } from '../../src/index.js';
import { getEngine, randArray, randn, relL2, maxAbs, track, reportWorst } from '../helpers.js';
import { loadCase } from '../fixture.js';
import {
  broadcastRef, concatRef, gegluRef, geluRef, linearRef, sliceRef, transposeRef, upsampleNearest2xRef,
} from '../ref/elementwise.js';

afterAll(() => reportWorst('elementwise'));

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const seedOf = (...s: number[][]) => s.flat().reduce((a, b) => a * 31 + b + 7, 17) % 100000;

describe('add / sub / mul with broadcasting', () => {
  const pairs: [number[], number[]][] = [
    [[1000], [1000]],
    [[4099], [4099]],
    [[2, 3, 5, 7], [2, 3, 5, 7]],
    [[2, 4, 8, 8], [2, 4, 8, 8]], // 4 outputs per thread
    [[2, 3, 5, 7], [3, 1, 1]], // bias [C,1,1]
    [[2, 3, 5, 7], [1, 3, 1, 1]],
    [[2, 3, 5, 7], [2, 3, 1, 1]], // per-sample per-channel (time embedding)
    [[2, 6, 8, 8], [6, 1, 1]], // bias, innermost 64: vector path with a constant operand
    [[2, 77, 40], [40]], // [C] against [..., C]
    [[3, 1, 5], [1, 4, 1]], // both sides broadcast
    [[5], [2, 3, 5]], // broadcast on the left operand
    [[1, 3, 1, 1], [2, 3, 5, 7]],
    [[1], [2, 3]],
    [[2, 8, 4], [2, 1, 4]],
    [[2, 1, 3, 1, 4, 5], [1, 2, 1, 3, 4, 1]], // rank 6
    [[3, 1, 2, 1, 3, 1], [1, 2, 1, 2, 1, 3]], // rank 6, nothing merges
    [[0, 3], [3]],
    [[3, 1, 1], [2, 3, 4, 4]], // vector path, broadcast on the left
    [[2, 3, 4], [3, 1]], // vector path, b constant along the last dim
    [[4], [4]],
    [[2, 5, 8], [1]], // b a scalar: stays on the scalar path
  ];
  const opsList: [string, (a: Tensor, b: Tensor) => Tensor, (u: number, v: number) => number][] = [
    ['add', ops.add, (u, v) => u + v],
    ['sub', ops.sub, (u, v) => u - v],
    ['mul', ops.mul, (u, v) => u * v],
  ];
  for (const [as, bs] of pairs) {
    it(`${JSON.stringify(as)} with ${JSON.stringify(bs)}`, async () => {
      const e = await getEngine();
      const ad = randArray(numel(as), seedOf(as, bs), -2, 2);
      const bd = randArray(numel(bs), seedOf(bs, as) + 1, -2, 2);
      const a = e.tensor(ad, as);
      const b = e.tensor(bd, bs);
      for (const [name, op, f] of opsList) {
        const y = op(a, b);
        const ref = broadcastRef(ad, as, bd, bs, f);
        expect(y.shape).toEqual(ref.shape);
        const got = await y.read();
        if (ref.data.length) expect(track(name, relL2(got, ref.data))).toBeLessThan(1e-6);
        else expect(got.length).toBe(0);
        y.dispose();
      }
      a.dispose();
      b.dispose();
    });
  }

  it('f16 storage matches the f32 path', async ({ skip }) => {
    const e = await getEngine();
    if (!e.hasShaderF16) skip();
    const a = e.tensor(randArray(2 * 3 * 8 * 8, 3), [2, 3, 8, 8], 'f16');
    const b = e.tensor(randArray(3, 4), [3, 1, 1], 'f16');
    const y = ops.add(a, b);
    expect(y.dtype).toBe('f16');
    const ref = broadcastRef(await a.read(), a.shape, await b.read(), b.shape, (u, v) => u + v);
    expect(relL2(await y.read(), ref.data)).toBeLessThan(1e-3);
    for (const t of [a, b, y]) t.dispose();
  });

  it('rejects bad inputs', async () => {
    const e = await getEngine();
    const a = e.tensor(randArray(24, 1), [2, 3, 4]);
    const b = e.tensor(randArray(6, 2), [2, 3]);
    expect(() => ops.add(a, b)).toThrow(/add: shapes \[2, 3, 4\] and \[2, 3\] cannot be broadcast/);
    expect(() => ops.mul(b, a)).toThrow(/mul.*cannot be broadcast/);
    const h = e.tensor(randArray(4, 3), [4], 'f16');
    expect(() => ops.sub(a, h)).toThrow(/sub.*mixed dtypes/);
    const i = e.tensor(new Int32Array(4), [4]);
    expect(() => ops.add(a, i)).toThrow(/add.*i32/);
    const e2 = await Engine.create();
    const other = e2.tensor(randArray(4, 6), [4]);
    expect(() => ops.add(a, other)).toThrow(/add.*different engines/);
    e2.destroy();
    b.dispose();
    expect(() => ops.mul(a, b)).toThrow(/mul.*dispose/);
    for (const t of [a, h, i]) t.dispose();
  });

  it('reports its cost', () => {
    expect(ops.binaryCost({ a: [2, 4, 8, 8], b: [4, 1, 1] })).toEqual({ flops: 512, bytes: (512 + 4 + 512) * 4 });
    expect(ops.broadcastShape([3, 1, 5], [4, 1])).toEqual([3, 4, 5]);
    expect(ops.broadcastShape([3], [4])).toBeNull();
  });
});

describe('geglu', () => {
  for (const shape of [[3, 10], [2, 7, 96], [1, 5, 2], [1, 8198], [2, 3, 16], [4, 9, 200]]) {
    it(`${JSON.stringify(shape)} matches float64`, async () => {
      const e = await getEngine();
      const xd = randn(numel(shape), numel(shape), 2);
      const x = e.tensor(xd, shape);
      const y = ops.geglu(x);
      const d = shape[shape.length - 1] / 2;
      expect(y.shape).toEqual([...shape.slice(0, -1), d]);
      expect(track('geglu', relL2(await y.read(), gegluRef(xd, d)))).toBeLessThan(1e-5);
      x.dispose();
      y.dispose();
    });
  }

  it('matches diffusers fixture ops/geglu (projection done in float64 on the host)', async () => {
    // The fixture includes GEGLU's Linear; linear is another op, so its output is computed here.
    const e = await getEngine();
    const fx = loadCase('ops/geglu');
    const cfg = fx.config as { dim_in: number; dim_out: number };
    const xin = fx.input('x');
    const want = fx.output('y');
    const h = linearRef(xin.data, fx.weights['proj.weight'].data, fx.weights['proj.bias'].data, cfg.dim_in, 2 * cfg.dim_out);
    const x = e.tensor(Float32Array.from(h), [...xin.shape.slice(0, -1), 2 * cfg.dim_out]);
    const y = ops.geglu(x);
    expect(y.shape).toEqual(want.shape);
    const got = await y.read();
    for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - want.data[i])).toBeLessThanOrEqual(1e-4 + 1e-4 * Math.abs(want.data[i]));
    track('fixture geglu', relL2(got, want.data));
    x.dispose();
    y.dispose();
  });

  it('matches diffusers fixture ops/gelu_exact (through ops.gelu)', async () => {
    const e = await getEngine();
    const fx = loadCase('ops/gelu_exact');
    const xin = fx.input('x');
    const want = fx.output('y');
    const x = e.tensor(xin.data as Float32Array, xin.shape);
    const y = ops.gelu(x);
    const got = await y.read();
    for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - want.data[i])).toBeLessThanOrEqual(1e-4 + 1e-4 * Math.abs(want.data[i]));
    track('fixture gelu_exact', relL2(got, want.data));
    expect(relL2(got, Array.from(xin.data, geluRef))).toBeLessThan(1e-6);
    x.dispose();
    y.dispose();
  });

  it('rejects an odd last dimension, i32 and disposed input', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(15, 1), [3, 5]);
    expect(() => ops.geglu(x)).toThrow(/geglu.*even.*\[3, 5\]/);
    const i = e.tensor(new Int32Array(4), [2, 2]);
    expect(() => ops.geglu(i)).toThrow(/geglu.*i32/);
    x.dispose();
    expect(() => ops.geglu(x)).toThrow(/geglu.*dispose/);
    i.dispose();
    expect(ops.gegluCost({ shape: [2, 10] })).toEqual({ flops: 200, bytes: 30 * 4 });
  });
});

describe('concat', () => {
  const cases: [number[][], number][] = [
    [[[2, 3, 4, 5], [2, 5, 4, 5], [2, 1, 4, 5]], 1], // UNet skip: channels
    [[[1, 3, 5], [2, 3, 5]], 0], // batch (CFG)
    [[[2, 3, 5], [2, 3, 2]], -1],
    [[[2, 3, 7, 5], [2, 3, 1, 5], [2, 3, 9, 5], [2, 3, 2, 5]], 2],
    [[[4], [3]], 0],
    [[[2, 0, 3], [2, 4, 3]], 1],
  ];
  for (const [shapes, axis] of cases) {
    it(`${JSON.stringify(shapes)} along ${axis}`, async () => {
      const e = await getEngine();
      const parts = shapes.map((s, i) => ({ data: randArray(numel(s), 100 + i + numel(s)), shape: s }));
      const ts = parts.map((p) => e.tensor(p.data, p.shape));
      const y = ops.concat(ts, axis);
      const ax = axis < 0 ? axis + shapes[0].length : axis;
      const want = [...shapes[0]];
      want[ax] = shapes.reduce((s, sh) => s + sh[ax], 0);
      expect(y.shape).toEqual(want);
      expect(maxAbs(await y.read(), concatRef(parts, ax))).toBe(0);
      for (const t of [...ts, y]) t.dispose();
    });
  }

  it('rejects mismatched shapes, bad axes, one tensor, mixed engines and disposed tensors', async () => {
    const e = await getEngine();
    const a = e.tensor(randArray(24, 1), [2, 3, 4]);
    const b = e.tensor(randArray(20, 2), [2, 2, 5]);
    expect(() => ops.concat([a, b], 1)).toThrow(/concat: shapes must match except along axis 1.*\[2, 3, 4\].*\[2, 2, 5\]/);
    expect(() => ops.concat([a, a], 3)).toThrow(/concat.*axis 3 is out of range/);
    expect(() => ops.concat([a], 0)).toThrow(/concat.*at least 2/);
    const r2 = e.tensor(randArray(12, 3), [3, 4]);
    expect(() => ops.concat([a, r2], 0)).toThrow(/concat: shapes must match/);
    const e2 = await Engine.create();
    const other = e2.tensor(randArray(24, 6), [2, 3, 4]);
    expect(() => ops.concat([a, other], 0)).toThrow(/concat.*different engines/);
    e2.destroy();
    b.dispose();
    expect(() => ops.concat([a, b], 1)).toThrow(/concat.*dispose/);
    for (const t of [a, r2]) t.dispose();
    expect(ops.concatCost({ shapes: [[2, 3], [2, 5]] }).bytes).toBe(16 * 2 * 4);
  });
});

describe('slice', () => {
  const cases: [number[], number, number, number][] = [
    [[4, 3, 5], 0, 2, 4], // the second half of a CFG batch
    [[4, 3, 5], 0, 0, 2],
    [[2, 7, 3, 3], 1, 3, 6],
    [[2, 7, 9], -1, 1, 8],
    [[3, 5], 1, 2, 2], // empty
    [[6], 0, 0, 6],
  ];
  for (const [shape, axis, start, end] of cases) {
    it(`${JSON.stringify(shape)} axis ${axis} [${start}, ${end})`, async () => {
      const e = await getEngine();
      const xd = randArray(numel(shape), 200 + numel(shape) + start);
      const x = e.tensor(xd, shape);
      const y = ops.slice(x, axis, start, end);
      const ax = axis < 0 ? axis + shape.length : axis;
      const want = [...shape];
      want[ax] = end - start;
      expect(y.shape).toEqual(want);
      expect(maxAbs(await y.read(), sliceRef(xd, shape, ax, start, end))).toBe(0);
      x.dispose();
      y.dispose();
    });
  }
  it('rejects bad ranges and axes', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(12, 1), [4, 3]);
    expect(() => ops.slice(x, 0, 3, 5)).toThrow(/slice.*\[3, 5\).*\[4, 3\]/);
    expect(() => ops.slice(x, 0, 2, 1)).toThrow(/slice/);
    expect(() => ops.slice(x, 2, 0, 1)).toThrow(/slice.*axis 2/);
    x.dispose();
    expect(() => ops.slice(x, 0, 0, 1)).toThrow(/slice.*dispose/);
  });
});

describe('upsampleNearest2x', () => {
  for (const shape of [[1, 3, 1, 1], [2, 5, 7, 3], [1, 4, 16, 16]]) {
    it(`${JSON.stringify(shape)}`, async () => {
      const e = await getEngine();
      const xd = randArray(numel(shape), 300 + numel(shape));
      const x = e.tensor(xd, shape);
      const y = ops.upsampleNearest2x(x);
      expect(y.shape).toEqual([shape[0], shape[1], 2 * shape[2], 2 * shape[3]]);
      expect(maxAbs(await y.read(), upsampleNearest2xRef(xd, shape))).toBe(0);
      x.dispose();
      y.dispose();
    });
  }
  it('matches diffusers fixture ops/upsample_nearest2x', async () => {
    const e = await getEngine();
    const fx = loadCase('ops/upsample_nearest2x');
    const xin = fx.input('x');
    const want = fx.output('y');
    const x = e.tensor(xin.data as Float32Array, xin.shape);
    const y = ops.upsampleNearest2x(x);
    expect(y.shape).toEqual(want.shape);
    expect(maxAbs(await y.read(), want.data)).toBe(0);
    x.dispose();
    y.dispose();
  });
  it('rejects non-4D input', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(12, 1), [3, 4]);
    expect(() => ops.upsampleNearest2x(x)).toThrow(/upsampleNearest2x.*rank 4.*\[3, 4\]/);
    x.dispose();
    expect(() => ops.upsampleNearest2x(x)).toThrow(/upsampleNearest2x.*dispose/);
  });
});

describe('nchwToTokens / tokensToNchw', () => {
  for (const shape of [[2, 40, 9, 7], [1, 3, 33, 35], [1, 64, 32, 32], [3, 1, 1, 5]]) {
    it(`${JSON.stringify(shape)} round trip`, async () => {
      const e = await getEngine();
      const [b, c, h, w] = shape;
      const xd = randArray(numel(shape), 400 + numel(shape));
      const x = e.tensor(xd, shape);
      const t = ops.nchwToTokens(x);
      expect(t.shape).toEqual([b, h * w, c]);
      expect(maxAbs(await t.read(), transposeRef(xd, b, c, h * w))).toBe(0);
      const back = ops.tokensToNchw(t, h, w);
      expect(back.shape).toEqual(shape);
      expect(maxAbs(await back.read(), xd)).toBe(0);
      for (const u of [x, t, back]) u.dispose();
    });
  }
  it('rejects bad shapes', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(24, 1), [2, 3, 4]);
    expect(() => ops.nchwToTokens(x)).toThrow(/nchwToTokens.*rank 4.*\[2, 3, 4\]/);
    expect(() => ops.tokensToNchw(x, 2, 3)).toThrow(/tokensToNchw.*2 \* 3.*3/);
    x.dispose();
    expect(() => ops.tokensToNchw(x, 1, 3)).toThrow(/tokensToNchw.*dispose/);
  });
});

describe('clamp', () => {
  it('matches float64 on awkward sizes and infinite bounds', async () => {
    const e = await getEngine();
    for (const [n, lo, hi] of [[1, -0.5, 0.5], [257, -1, 2], [4099, -Infinity, 0.25], [1000, 0.3, 0.3]] as const) {
      const xd = randArray(n, n, -3, 3);
      const x = e.tensor(xd, [n]);
      const y = ops.clamp(x, lo, hi);
      // the bounds are f32 uniforms
      const [l, h] = [Math.fround(lo), Math.fround(hi)];
      expect(maxAbs(await y.read(), Array.from(xd, (v) => Math.min(Math.max(v, l), h)))).toBe(0);
      x.dispose();
      y.dispose();
    }
  });
  it('rejects lo > hi and bad tensors', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(4, 1), [4]);
    expect(() => ops.clamp(x, 1, 0)).toThrow(/clamp.*lo <= hi/);
    const i = e.tensor(new Int32Array(4), [4]);
    expect(() => ops.clamp(i, 0, 1)).toThrow(/clamp.*i32/);
    x.dispose();
    i.dispose();
    expect(() => ops.clamp(x, 0, 1)).toThrow(/clamp.*dispose/);
  });
});

describe('cast', () => {
  it('f32 -> f32 is a copy', async () => {
    const e = await getEngine();
    const xd = randArray(37, 9);
    const x = e.tensor(xd, [37]);
    const y = ops.cast(x, 'f32');
    x.dispose();
    expect(await y.read()).toEqual(xd);
    y.dispose();
  });
  it('f32 <-> f16 round to nearest and back', async ({ skip }) => {
    const e = await getEngine();
    if (!e.hasShaderF16) skip();
    const xd = randn(1001, 10, 3);
    const x = e.tensor(xd, [7, 11, 13]);
    const h = ops.cast(x, 'f16');
    expect(h.dtype).toBe('f16');
    const viaUpload = e.tensor(xd, [7, 11, 13], 'f16');
    expect(await h.read()).toEqual(await viaUpload.read());
    const back = ops.cast(h, 'f32');
    expect(back.dtype).toBe('f32');
    expect(relL2(await back.read(), xd)).toBeLessThan(1e-3);
    for (const t of [x, h, viaUpload, back]) t.dispose();
  });
  it('refuses f16 without shader-f16, i32, and disposed tensors', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(4, 1), [4]);
    if (!e.hasShaderF16) expect(() => ops.cast(x, 'f16')).toThrow(/cast.*shader-f16/);
    const i = e.tensor(new Int32Array(4), [4]);
    expect(() => ops.cast(i, 'f32')).toThrow(/cast.*i32/);
    x.dispose();
    i.dispose();
    expect(() => ops.cast(x, 'f32')).toThrow(/cast.*dispose/);
    expect(ops.castCost({ shape: [10], from: 'f32', to: 'f16' }).bytes).toBe(60);
  });
});
