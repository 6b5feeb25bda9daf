import { describe, it, expect, afterAll } from 'vitest';
import { Engine, ops } from '../../src/index.js';
import { gemm, GEMM_TILES, type Activation, type GemmTileName } from '../../src/kernels/matmul.js';
import { tileFits } from '../../src/kernels/gemm.js';
import { getEngine, randn, randArray, relL2, track, reportWorst, readF32, maxAbs } from '../helpers.js';
import { loadCase } from '../fixture.js';
import { refMatmul, refLinear, erf64, activate64 } from '../ref/matmul.js';

afterAll(() => reportWorst('matmul'));

let seed = 1;
const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

interface MmCase {
  a: number[];
  b: number[];
  tA?: boolean;
  tB?: boolean;
}

async function checkMatmul(c: MmCase, label: string): Promise<void> {
  const e = await getEngine();
  const s = (seed += 3);
  const as = randn(numel(c.a), s);
  const bs = randArray(numel(c.b), s + 1);
  const ref = refMatmul(as, c.a, bs, c.b, c.tA, c.tB);
  const a = e.tensor(as, c.a);
  const b = e.tensor(bs, c.b);
  const y = ops.matmul(a, b, { transposeA: c.tA, transposeB: c.tB });
  expect(y.shape).toEqual(ref.shape);
  const err = track(label, relL2(await readF32(y), ref.data));
  expect(err, `${label} a${JSON.stringify(c.a)} b${JSON.stringify(c.b)} tA=${!!c.tA} tB=${!!c.tB}`).toBeLessThanOrEqual(1e-5);
  for (const t of [a, b, y]) t.dispose();
}

/** [M, K, N] -> operand shapes for the given transposes */
function shapes(M: number, K: number, N: number, tA: boolean, tB: boolean, batch: number[] = []): MmCase {
  return { a: [...batch, ...(tA ? [K, M] : [M, K])], b: [...batch, ...(tB ? [N, K] : [K, N])], tA, tB };
}

describe('matmul vs float64 reference', () => {
  const mkn: [number, number, number][] = [
    [1, 1, 1],
    [7, 13, 5],
    [33, 65, 17],
    [128, 64, 96],
    [4, 8, 12], // every dimension a multiple of 4: all-vec4 path
    [1, 40, 64], // GEMV-like row
    [70, 3, 130], // K smaller than one k-step, ragged M and N
    [5, 200, 4],
  ];
  for (const [M, K, N] of mkn) {
    it(`${M}x${K}x${N}, all four transpose combinations`, async () => {
      for (const tA of [false, true]) for (const tB of [false, true]) await checkMatmul(shapes(M, K, N, tA, tB), `${tA ? 'T' : 'N'}${tB ? 'T' : 'N'}`);
    });
  }

  it('batched 3x(17x9x23) in every transpose combination', async () => {
    for (const tA of [false, true]) for (const tB of [false, true]) await checkMatmul(shapes(17, 9, 23, tA, tB, [3]), 'batched');
  });

  it('batched with two batch dimensions and vec4-friendly sizes', async () => {
    await checkMatmul(shapes(12, 16, 20, false, true, [2, 3]), 'batched');
    await checkMatmul(shapes(12, 16, 20, true, false, [2, 3]), 'batched');
  });

  it('broadcasts a rank-2 operand over the batch', async () => {
    for (const tA of [false, true]) for (const tB of [false, true]) {
      const c = shapes(10, 7, 9, tA, tB, [3]);
      await checkMatmul({ ...c, b: c.b.slice(1) }, 'broadcast b');
      await checkMatmul({ ...c, a: c.a.slice(1) }, 'broadcast a');
    }
    // folded into one tall GEMM (b shared, a not transposed), with a 4-multiple layout
    await checkMatmul({ a: [2, 3, 20, 16], b: [16, 8] }, 'broadcast b');
  });
});

describe('gemm tile configurations', () => {
  // Every tile shape sees partial tiles in M, N and K, both vec4 and scalar paths.
  const tiles = Object.keys(GEMM_TILES) as GemmTileName[];
  for (const tile of tiles) for (const dtype of ['f32', 'f16'] as const) {
    it(`${tile} tile ${dtype}`, async () => {
      const e = await getEngine();
      if (dtype === 'f16' && !e.hasShaderF16) return; // SwiftShader has no shader-f16
      // subgroup tiles need 8-lane subgroups: lavapipe has them, so there they must run
      if (e.adapterKind === 'lavapipe') expect(tileFits(e, GEMM_TILES[tile])).toBe(true);
      if (!tileFits(e, GEMM_TILES[tile])) return;
      for (const [M, K, N, tA, tB, batch] of [
        [150, 37, 133, false, false, 1],
        [37, 24, 52, false, false, 3],
        [131, 44, 136, true, true, 2],
        [9, 20, 260, false, true, 1],
        [260, 21, 12, true, false, 1],
      ] as [number, number, number, boolean, boolean, number][]) {
        const c = shapes(M, K, N, tA, tB, batch > 1 ? [batch] : []);
        const s = (seed += 3);
        const as = randn(numel(c.a), s);
        const bs = randn(numel(c.b), s + 1);
        const ref = refMatmul(as, c.a, bs, c.b, tA, tB);
        const a = e.tensor(as, c.a, dtype);
        const b = e.tensor(bs, c.b, dtype);
        const out = e.empty(ref.shape, dtype);
        gemm(e, { op: 'test', a, b, out, M, N, K, batch, strideA: M * K, strideB: K * N, transA: tA, transB: tB, activation: 'none', tile });
        const err = track(`tile ${tile} ${dtype}`, relL2(await readF32(out), ref.data));
        expect(err, `${tile} ${dtype} ${M}x${K}x${N} tA=${tA} tB=${tB}`).toBeLessThanOrEqual(dtype === 'f16' ? 5e-3 : 1e-5);
        for (const t of [a, b, out]) t.dispose();
      }
    });
  }
});

describe('grid splitting', () => {
  it('splits every grid dimension over several dispatches with offsets', async () => {
    const e = await getEngine();
    // 3 batch items, each 3x3 small tiles; a limit of 2 workgroups per dimension needs 8 dispatches
    const [M, K, N, batch] = [70, 19, 66, 3];
    const as = randn(batch * M * K, 501);
    const bs = randn(batch * K * N, 502);
    const ref = refMatmul(as, [batch, M, K], bs, [batch, K, N]);
    const a = e.tensor(as, [batch, M, K]);
    const b = e.tensor(bs, [batch, K, N]);
    const out = e.empty(ref.shape, 'f32');
    const d0 = e.stats().dispatches;
    gemm(e, { op: 'test', a, b, out, M, N, K, batch, strideA: M * K, strideB: K * N, transA: false, transB: false, activation: 'none', tile: 'small', maxWorkgroupsPerDim: 2 });
    expect(e.stats().dispatches - d0).toBe(8);
    const err = track('grid split', relL2(await readF32(out), ref.data));
    expect(err).toBeLessThanOrEqual(1e-5);
    for (const t of [a, b, out]) t.dispose();
  });

  it('handles K = 0 (bias and activation only) and empty outputs', async () => {
    const e = await getEngine();
    const x = e.tensor(new Float32Array(0), [3, 0]);
    const w = e.tensor(new Float32Array(0), [5, 0]);
    const bs = randArray(5, 503);
    const b = e.tensor(bs, [5]);
    const y = ops.linear(x, w, b, { activation: 'silu' });
    const got = await readF32(y);
    const ref = Array.from({ length: 15 }, (_, i) => bs[i % 5] / (1 + Math.exp(-bs[i % 5])));
    expect(relL2(got, ref)).toBeLessThanOrEqual(1e-6);
    const x0 = e.tensor(new Float32Array(0), [0, 4]);
    const w0 = e.tensor(randArray(12, 504), [3, 4]);
    const y0 = ops.linear(x0, w0);
    expect(y0.shape).toEqual([0, 3]);
    for (const t of [x, w, b, y, x0, w0, y0]) t.dispose();
  });
});

describe('linear vs float64 reference', () => {
  async function checkLinear(xShape: number[], out: number, opts: { bias?: boolean; act?: Activation; residual?: boolean }, label: string) {
    const e = await getEngine();
    const s = (seed += 5);
    const K = xShape[xShape.length - 1];
    const xs = randn(numel(xShape), s);
    const ws = randn(out * K, s + 1, 1 / Math.sqrt(Math.max(K, 1)));
    const bs = opts.bias ? randArray(out, s + 2, -0.5, 0.5) : null;
    const outShape = [...xShape.slice(0, -1), out];
    const rs = opts.residual ? randn(numel(outShape), s + 3) : null;
    const ref = refLinear(xs, xShape, ws, [out, K], bs, opts.act ?? 'none', rs);
    const x = e.tensor(xs, xShape);
    const w = e.tensor(ws, [out, K]);
    const b = bs ? e.tensor(bs, [out]) : undefined;
    const r = rs ? e.tensor(rs, outShape) : undefined;
    const y = ops.linear(x, w, b, { activation: opts.act, residual: r });
    expect(y.shape).toEqual(outShape);
    const err = track(label, relL2(await readF32(y), ref));
    expect(err, `${label} x${JSON.stringify(xShape)} out ${out}`).toBeLessThanOrEqual(1e-5);
    for (const t of [x, w, b, r, y]) t?.dispose();
  }

  it('with and without bias over assorted shapes', async () => {
    for (const [xs, n] of [
      [[1], 1],
      [[7, 13], 5],
      [[2, 7, 32], 48],
      [[3, 5, 33], 17],
      [[64, 40], 24],
      [[2, 9], 130],
    ] as [number[], number][]) {
      await checkLinear(xs, n, { bias: true }, 'linear+bias');
      await checkLinear(xs, n, { bias: false }, 'linear');
    }
  });

  for (const act of ['silu', 'gelu', 'quickGelu', 'none'] as Activation[]) {
    it(`fused ${act}, with and without residual`, async () => {
      await checkLinear([2, 11, 24], 36, { bias: true, act }, `act ${act}`);
      await checkLinear([5, 13], 7, { bias: true, act }, `act ${act}`);
      await checkLinear([2, 11, 24], 36, { bias: true, act, residual: true }, `act ${act} + residual`);
      await checkLinear([5, 13], 7, { bias: false, act, residual: true }, `act ${act} + residual`);
    });
  }

  it('the reference erf is accurate', () => {
    // values from high-precision tables
    expect(Math.abs(erf64(0.5) - 0.5204998778130465)).toBeLessThan(1e-15);
    expect(Math.abs(erf64(-1.5) + 0.9661051464753108)).toBeLessThan(1e-15);
    expect(Math.abs(erf64(3.5) - 0.9999992569016276)).toBeLessThan(1e-15);
  });
});

describe('linearGeglu (the GEGLU gate as a GEMM epilogue) vs float64', () => {
  // y = h * gelu(g) with [h, g] = x w^T + b; fused on the subgroup tiles (value column n and gate
  // column n + D in one thread), unfused elsewhere. D % 4 != 0 takes the scalar store path.
  for (const tile of ['sg8', 'sg16', 'sg24', 'unfused'] as const) for (const dtype of ['f32', 'f16'] as const) {
    it(`${tile} ${dtype}`, async () => {
      const e = await getEngine();
      if (dtype === 'f16' && !e.hasShaderF16) return;
      if (tile !== 'unfused' && !tileFits(e, GEMM_TILES[tile])) {
        expect(e.adapterKind).not.toBe('lavapipe');
        return;
      }
      for (const [xShape, D, bias] of [
        [[2, 7, 13], 10, true],
        [[37, 24], 36, true],
        [[5, 20], 12, false],
        [[3, 11, 33], 41, true],
      ] as [number[], number, boolean][]) {
        const s = (seed += 7);
        const K = xShape[xShape.length - 1];
        const xs = randn(numel(xShape), s);
        const ws = randn(2 * D * K, s + 1, 1 / Math.sqrt(K));
        const bs = bias ? randArray(2 * D, s + 2, -0.5, 0.5) : null;
        const proj = refLinear(xs, xShape, ws, [2 * D, K], bs);
        const rows = proj.length / (2 * D);
        const ref = new Float64Array(rows * D);
        for (let m = 0; m < rows; m++) for (let n = 0; n < D; n++) ref[m * D + n] = proj[m * 2 * D + n] * activate64(proj[m * 2 * D + D + n], 'gelu');
        const x = e.tensor(xs, xShape, dtype);
        const w = e.tensor(ws, [2 * D, K], dtype);
        const b = bs ? e.tensor(bs, [2 * D], dtype) : null;
        const d0 = e.stats().dispatches;
        const y = ops.linearGeglu(x, w, b, { tile });
        expect(e.stats().dispatches - d0).toBe(tile === 'unfused' ? 2 : 1);
        expect(y.shape).toEqual([...xShape.slice(0, -1), D]);
        const err = track(`linearGeglu ${tile} ${dtype}`, relL2(await readF32(y), ref));
        expect(err, `${tile} ${dtype} x${JSON.stringify(xShape)} D=${D}`).toBeLessThanOrEqual(dtype === 'f16' ? 5e-3 : 1e-5);
        for (const t of [x, w, b, y]) t?.dispose();
      }
    });
  }

  it('picks the fused form on lavapipe and refuses bad shapes', async () => {
    const e = await getEngine();
    const x = e.tensor(randn(6 * 8, 1), [6, 8]);
    const w = e.tensor(randn(10 * 8, 2), [10, 8]);
    const d0 = e.stats().dispatches;
    ops.linearGeglu(x, w).dispose();
    if (e.adapterKind === 'lavapipe') expect(e.stats().dispatches - d0).toBe(1);
    const wOdd = e.tensor(randn(9 * 8, 3), [9, 8]);
    const bBad = e.tensor(randn(8, 4), [8]);
    const before = e.memory().inUseBytes;
    expect(() => ops.linearGeglu(x, wOdd)).toThrow(/linearGeglu: weight must have shape \[2D, in\]/);
    expect(() => ops.linearGeglu(x, w, bBad)).toThrow(/linearGeglu: bias must have shape \[10\]/);
    expect(e.memory().inUseBytes).toBe(before);
    for (const t of [x, w, wOdd, bBad]) t.dispose();
  });
});

describe('diffusers fixtures', () => {
  it('ops/linear', async () => {
    const e = await getEngine();
    const c = loadCase('ops/linear');
    const xin = c.input('x');
    const yref = c.output('y');
    const x = e.tensor(xin.data as Float32Array, xin.shape);
    const w = e.tensor(c.weights.weight.data as Float32Array, c.weights.weight.shape);
    const b = e.tensor(c.weights.bias.data as Float32Array, c.weights.bias.shape);
    const y = ops.linear(x, w, b);
    expect(y.shape).toEqual(yref.shape);
    const got = await readF32(y);
    const err = track('fixture ops/linear', relL2(got, yref.data));
    expect(err).toBeLessThanOrEqual(1e-5);
    for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - yref.data[i])).toBeLessThanOrEqual(1e-4 + 1e-4 * Math.abs(yref.data[i]));
    for (const t of [x, w, b, y]) t.dispose();
  });

  it('ops/gelu_proj (linear with fused exact GELU)', async () => {
    const e = await getEngine();
    const c = loadCase('ops/gelu_proj');
    expect(c.config.approximate).toBe('none');
    const xin = c.input('x');
    const yref = c.output('y');
    const x = e.tensor(xin.data as Float32Array, xin.shape);
    const w = e.tensor(c.weights['proj.weight'].data as Float32Array, c.weights['proj.weight'].shape);
    const b = e.tensor(c.weights['proj.bias'].data as Float32Array, c.weights['proj.bias'].shape);
    const y = ops.linear(x, w, b, { activation: 'gelu' });
    const got = await readF32(y);
    const err = track('fixture ops/gelu_proj', relL2(got, yref.data));
    expect(err).toBeLessThanOrEqual(1e-5);
    expect(maxAbs(got, yref.data)).toBeLessThanOrEqual(1e-4 + 1e-4 * 3.5);
    for (const t of [x, w, b, y]) t.dispose();
  });
});

describe('f16', () => {
  it('f16 storage matches the f32 reference within f16 rounding', async () => {
    const e = await getEngine();
    if (!e.hasShaderF16) return; // SwiftShader has no shader-f16
    const xs = randn(3 * 17 * 24, 901);
    const ws = randn(20 * 24, 902, 0.2);
    const bs = randArray(20, 903);
    const ref = refLinear(Float32Array.from(xs), [3, 17, 24], ws, [20, 24], bs, 'gelu');
    const x = e.tensor(xs, [3, 17, 24], 'f16');
    const w = e.tensor(ws, [20, 24], 'f16');
    const b = e.tensor(bs, [20], 'f16');
    const y = ops.linear(x, w, b, { activation: 'gelu' });
    expect(y.dtype).toBe('f16');
    expect(track('f16 linear', relL2(await readF32(y), ref))).toBeLessThan(5e-3);
    const m = ops.matmul(x, w, { transposeB: true });
    const mref = refMatmul(xs, [3, 17, 24], ws, [20, 24], false, true);
    expect(track('f16 matmul', relL2(await readF32(m), mref.data))).toBeLessThan(5e-3);
    for (const t of [x, w, b, y, m]) t.dispose();
  });
});

describe('costs', () => {
  it('matmulCost and linearCost count FLOPs and bytes', () => {
    expect(ops.matmulCost({ a: [3, 17, 9], b: [9, 23] })).toEqual({ flops: 2 * 3 * 17 * 9 * 23, bytes: 4 * (3 * 17 * 9 + 9 * 23 + 3 * 17 * 23) });
    expect(ops.matmulCost({ a: [9, 17], b: [2, 23, 9], transposeA: true, transposeB: true, dtype: 'f16' }).flops).toBe(2 * 2 * 17 * 9 * 23);
    const l = ops.linearCost({ x: [2, 7, 32], w: [48, 32], bias: true });
    expect(l.flops).toBe(2 * 14 * 48 * 32 + 14 * 48);
    expect(l.bytes).toBe(4 * (14 * 32 + 48 * 32 + 14 * 48 + 48));
  });
});

describe('bad inputs', () => {
  it('rejects mismatched shapes with errors naming the op and shapes', async () => {
    const e = await getEngine();
    const a = e.tensor(randArray(6, 1), [2, 3]);
    const b = e.tensor(randArray(8, 2), [4, 2]);
    expect(() => ops.matmul(a, b)).toThrow(/matmul: inner dimensions differ: 3 vs 4.*\[2, 3\].*\[4, 2\]/);
    const v = e.tensor(randArray(3, 3), [3]);
    expect(() => ops.matmul(v, b)).toThrow(/matmul: both operands need rank >= 2/);
    const ba = e.tensor(randArray(2 * 2 * 3, 4), [2, 2, 3]);
    const bb = e.tensor(randArray(3 * 3 * 4, 5), [3, 3, 4]);
    expect(() => ops.matmul(ba, bb)).toThrow(/matmul: batch dimensions \[2\] and \[3\] differ/);
    const w = e.tensor(randArray(5 * 3, 6), [5, 3]);
    const w4 = e.tensor(randArray(5 * 4, 7), [5, 4]);
    expect(() => ops.linear(a, w4)).toThrow(/linear: x has 3 input features but weight expects 4/);
    const bad = e.tensor(randArray(4, 8), [4]);
    expect(() => ops.linear(a, w, bad)).toThrow(/linear: bias must have shape \[5\], got \[4\]/);
    const w3 = e.tensor(randArray(15, 9), [1, 5, 3]);
    expect(() => ops.linear(a, w3)).toThrow(/linear: weight must have rank 2/);
    const res = e.tensor(randArray(10, 10), [5, 2]);
    expect(() => ops.linear(a, w, undefined, { residual: res })).toThrow(/linear: residual must have the output shape \[2, 5\], got \[5, 2\]/);
    expect(() => ops.linear(a, w, undefined, { activation: 'relu' as Activation })).toThrow(/linear: unknown activation 'relu'/);
    const i32 = e.tensor(Int32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
    expect(() => ops.matmul(i32, b)).toThrow(/matmul: expected float tensors/);
    for (const t of [a, b, v, ba, bb, w, w4, bad, w3, res, i32]) t.dispose();
  });

  it('rejects tensors of another engine and disposed tensors', async () => {
    const e = await getEngine();
    const e2 = await Engine.create();
    const a = e.tensor(randArray(6, 11), [2, 3]);
    const w = e.tensor(randArray(15, 12), [5, 3]);
    const w2 = e2.tensor(randArray(15, 13), [5, 3]);
    expect(() => ops.linear(a, w2)).toThrow(/linear.*different engines/);
    expect(() => ops.matmul(a, w2, { transposeB: true })).toThrow(/matmul.*different engines/);
    const gone = e.tensor(randArray(15, 14), [5, 3]);
    gone.dispose();
    expect(() => ops.linear(a, gone)).toThrow(/linear.*after dispose/);
    expect(() => ops.matmul(a, gone, { transposeB: true })).toThrow(/matmul.*after dispose/);
    const bgone = e.tensor(randArray(5, 15), [5]);
    bgone.dispose();
    expect(() => ops.linear(a, w, bgone)).toThrow(/linear.*after dispose/);
    a.dispose();
    w.dispose();
    e2.destroy();
  });
});
