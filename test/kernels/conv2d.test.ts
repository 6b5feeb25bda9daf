import { describe, it, expect, afterAll } from 'vitest';
import { Engine, ops } from '../../src/index.js';
import type { Conv2dOptions } from '../../src/kernels/conv2d.js';
import { GEMM_TILES, tileFits, type GemmTileName } from '../../src/kernels/gemm.js';
import { getEngine, randn, randArray, relL2, track, reportWorst, readF32, maxAbs } from '../helpers.js';
import { loadCase } from '../fixture.js';
import { conv2dRef } from '../ref/conv2d.js';

afterAll(() => reportWorst('conv2d'));

interface Case {
  label: string;
  x: [number, number, number, number];
  w: [number, number, number, number];
  stride?: number | [number, number];
  padding?: number | [number, number, number, number];
  dilation?: number | [number, number];
  groups?: number;
  bias?: boolean;
  residual?: boolean;
  splitK?: number;
}

const two = (v: number | [number, number] | undefined, d: number): [number, number] => (v === undefined ? [d, d] : typeof v === 'number' ? [v, v] : v);
const four = (v: number | [number, number, number, number] | undefined): [number, number, number, number] =>
  v === undefined ? [0, 0, 0, 0] : typeof v === 'number' ? [v, v, v, v] : v;

let seed = 100;
async function check(c: Case): Promise<number> {
  const e = await getEngine();
  const s = seed++ * 7;
  const xs = randn(c.x.reduce((a, b) => a * b), s);
  const fanIn = c.w[1] * c.w[2] * c.w[3];
  const ws = randn(c.w.reduce((a, b) => a * b), s + 1, 1 / Math.sqrt(fanIn));
  const bs = c.bias === false ? null : randArray(c.w[0], s + 2, -0.5, 0.5);
  const refOpts = { stride: two(c.stride, 1), padding: four(c.padding), dilation: two(c.dilation, 1), groups: c.groups };
  const probe = ops.conv2dOutputShape(c.x, c.w, { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups });
  const rs = c.residual ? randn(probe.reduce((a, b) => a * b), s + 3) : undefined;
  const ref = conv2dRef(xs, c.x, ws, c.w, bs, refOpts, rs);
  expect(probe).toEqual(ref.shape);

  const x = e.tensor(xs, c.x);
  const w = e.tensor(ws, c.w);
  const b = bs ? e.tensor(bs, [c.w[0]]) : undefined;
  const r = rs ? e.tensor(rs, ref.shape) : undefined;
  const opts: Conv2dOptions = { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups, residual: r, splitK: c.splitK };
  const y = ops.conv2d(x, w, b, opts);
  expect(y.shape).toEqual(ref.shape);
  const got = await readF32(y);
  const err = track(c.label, relL2(got, ref.data));
  expect(err, `${c.label} x${JSON.stringify(c.x)} w${JSON.stringify(c.w)}`).toBeLessThanOrEqual(1e-5);
  for (const t of [x, w, b, r, y]) t?.dispose();
  return err;
}

describe('conv2d vs float64 reference', () => {
  const cases: Case[] = [
    // 3x3 stride 1 padding 1 (the UNet/VAE workhorse), in each tile configuration
    { label: '3x3 s1 p1', x: [1, 4, 8, 8], w: [8, 4, 3, 3], padding: 1 },
    { label: '3x3 s1 p1', x: [2, 8, 9, 11], w: [16, 8, 3, 3], padding: 1 },
    { label: '3x3 s1 p1', x: [1, 16, 10, 10], w: [64, 16, 3, 3], padding: 1 },
    { label: '3x3 s1 p1', x: [1, 37, 7, 9], w: [70, 37, 3, 3], padding: 1 }, // K = 333, M = 70: ragged tiles
    { label: '3x3 s1 p1', x: [3, 5, 6, 7], w: [3, 5, 3, 3], padding: 1 }, // Cout = 3 (VAE conv_out)
    { label: '3x3 s1 p1', x: [1, 8, 9, 10], w: [130, 8, 3, 3], padding: 1 }, // 128-row tiles, 2 of them
    { label: '3x3 s1 p1', x: [1, 16, 8, 8], w: [128, 16, 3, 3], padding: 1, residual: true },
    { label: 'groups 2', x: [1, 4, 5, 5], w: [192, 2, 3, 3], padding: 1, groups: 2 },
    { label: 'split-K', x: [1, 64, 4, 4], w: [100, 64, 3, 3], padding: 1, splitK: 3 },
    // 1x1: the plain-GEMM path, and 1x1 through the general path (stride or padding)
    { label: '1x1', x: [2, 16, 9, 11], w: [8, 16, 1, 1] },
    { label: '1x1', x: [1, 32, 7, 5], w: [40, 32, 1, 1] },
    { label: '1x1', x: [2, 19, 5, 3], w: [96, 19, 1, 1] },
    { label: '1x1', x: [1, 6, 3, 3], w: [2, 6, 1, 1], bias: false },
    // H*W % 4 == 0: vec4 loads of x and vec4 stores of y; Cin % 4 != 0: scalar weight loads
    { label: '1x1', x: [2, 12, 4, 6], w: [20, 12, 1, 1] },
    { label: '1x1', x: [1, 7, 8, 8], w: [70, 7, 1, 1] },
    { label: '1x1', x: [3, 5, 2, 2], w: [3, 5, 1, 1], bias: false },
    { label: '1x1 stride 2', x: [1, 8, 9, 7], w: [12, 8, 1, 1], stride: 2 },
    { label: '1x1 pad 1', x: [1, 8, 5, 6], w: [12, 8, 1, 1], padding: 1 },
    // downsampling
    { label: 'stride 2 pad [0,1,0,1]', x: [2, 16, 16, 16], w: [16, 16, 3, 3], stride: 2, padding: [0, 1, 0, 1] },
    { label: 'stride 2 pad [0,1,0,1]', x: [1, 16, 15, 13], w: [16, 16, 3, 3], stride: 2, padding: [0, 1, 0, 1] },
    { label: 'stride 2 pad 1', x: [1, 12, 15, 13], w: [40, 12, 3, 3], stride: 2, padding: 1 },
    { label: 'stride [2,3] pad [2,0,1,3]', x: [2, 5, 11, 14], w: [9, 5, 3, 3], stride: [2, 3], padding: [2, 0, 1, 3] },
    { label: 'kernel 2 stride 3', x: [1, 4, 10, 11], w: [6, 4, 2, 2], stride: 3 },
    // dilation
    { label: 'dilation 2', x: [1, 6, 13, 12], w: [10, 6, 3, 3], padding: 2, dilation: 2 },
    { label: 'dilation [2,3] stride [1,2]', x: [2, 4, 12, 15], w: [8, 4, 3, 3], padding: [1, 2, 3, 0], dilation: [2, 3], stride: [1, 2] },
    // groups
    { label: 'groups 2', x: [2, 8, 9, 7], w: [12, 4, 3, 3], padding: 1, groups: 2 },
    { label: 'groups 4', x: [1, 16, 6, 6], w: [80, 4, 3, 3], padding: 1, groups: 4 },
    { label: 'depthwise', x: [1, 6, 10, 9], w: [6, 1, 3, 3], padding: 1, groups: 6 },
    { label: 'depthwise', x: [2, 5, 7, 8], w: [10, 1, 5, 5], padding: 2, stride: 2, groups: 5 }, // multiplier 2
    // kernel shapes
    { label: '5x5', x: [1, 7, 12, 10], w: [11, 7, 5, 5], padding: 2 },
    { label: '1x3', x: [2, 6, 5, 9], w: [10, 6, 1, 3], padding: [0, 0, 1, 1] },
    { label: '3x1', x: [1, 6, 9, 5], w: [10, 6, 3, 1], padding: [1, 1, 0, 0] },
    { label: '7x7 s2 p3', x: [1, 3, 19, 17], w: [16, 3, 7, 7], stride: 2, padding: 3 },
    // Cin = 3 (conv_in), odd sizes, batch > 1, no bias
    { label: 'Cin 3', x: [1, 3, 17, 15], w: [32, 3, 3, 3], padding: 1 },
    { label: 'Cin 3', x: [2, 3, 16, 16], w: [48, 3, 3, 3], padding: 1 },
    { label: 'odd 2x5x13x11', x: [2, 5, 13, 11], w: [7, 5, 3, 3], padding: 1 },
    { label: 'odd 2x5x13x11', x: [2, 5, 13, 11], w: [7, 5, 3, 3] },
    { label: 'batch 4', x: [4, 6, 7, 6], w: [33, 6, 3, 3], padding: 1 },
    { label: 'no bias', x: [2, 8, 9, 11], w: [16, 8, 3, 3], padding: 1, bias: false },
    { label: 'no bias', x: [1, 9, 8, 8], w: [65, 9, 3, 3], padding: 1, bias: false },
    // split-K: partial sums over K slices, then a reduction adding bias and residual
    { label: 'split-K', x: [2, 8, 9, 11], w: [16, 8, 3, 3], padding: 1, splitK: 3, residual: true },
    { label: 'split-K', x: [1, 16, 8, 8], w: [64, 16, 3, 3], padding: 1, splitK: 4, residual: true },
    { label: 'split-K', x: [1, 16, 8, 8], w: [64, 16, 3, 3], padding: 1, splitK: 2, bias: false },
    { label: 'split-K', x: [1, 64, 4, 4], w: [80, 64, 3, 3], padding: 1 }, // chosen by the heuristic
    { label: 'split-K', x: [1, 64, 4, 4], w: [20, 32, 1, 1], groups: 2, splitK: 2 },
    { label: 'split-K', x: [2, 40, 5, 3], w: [6, 40, 3, 3], padding: [1, 0, 0, 1], stride: [1, 2], splitK: 5, residual: true },
    { label: 'no split-K', x: [1, 37, 7, 9], w: [70, 37, 3, 3], padding: 1, splitK: 1 },
    // kernel as large as the padded input: one output pixel
    { label: 'full-size kernel', x: [2, 3, 4, 5], w: [5, 3, 4, 5] },
    { label: 'full-size kernel', x: [1, 2, 3, 3], w: [4, 2, 5, 5], padding: 1 },
    // fused residual add
    { label: 'residual', x: [2, 8, 9, 11], w: [16, 8, 3, 3], padding: 1, residual: true },
    { label: 'residual', x: [1, 16, 6, 7], w: [64, 16, 1, 1], residual: true },
    { label: 'residual', x: [1, 16, 6, 7], w: [4, 16, 3, 3], padding: 1, residual: true, bias: false },
    { label: 'residual', x: [2, 8, 8, 8], w: [72, 8, 3, 3], padding: 1, residual: true },
    { label: 'residual', x: [1, 12, 4, 5], w: [24, 12, 1, 1], residual: true },
    { label: 'residual', x: [1, 3, 4, 4], w: [2, 3, 1, 1], residual: true },
  ];
  for (const c of cases) {
    it(`${c.label}: x ${JSON.stringify(c.x)} w ${JSON.stringify(c.w)}`, async () => {
      await check(c);
    });
  }

  it('many output pixels (several column tiles, wide-N config)', async () => {
    await check({ label: 'large', x: [1, 8, 40, 52], w: [4, 8, 3, 3], padding: 1 });
    await check({ label: 'large', x: [1, 8, 33, 35], w: [72, 8, 3, 3], padding: 1 });
    // a ResNet-block-like layer, with and without the K split the heuristic picks for it
    await check({ label: 'large', x: [1, 64, 24, 24], w: [128, 64, 3, 3], padding: 1, residual: true });
    await check({ label: 'large', x: [1, 64, 24, 24], w: [128, 64, 3, 3], padding: 1, residual: true, splitK: 1 });
  });
});

describe('conv2d grid limits', () => {
  it('splits the column tiles over z when they exceed maxComputeWorkgroupsPerDimension', async () => {
    const e = await getEngine();
    // Pretend the device allows 4 workgroups per dimension: 5 column tiles of 64 pixels must then
    // run as 4 x-tiles times 2 z-slices per group (the last slice mostly empty).
    const real = e.limits;
    const fake = new Proxy(real, {
      get: (t, k) => (k === 'maxComputeWorkgroupsPerDimension' ? 4 : (t as unknown as Record<string | symbol, unknown>)[k]),
    });
    Object.defineProperty(e, 'limits', { value: fake, configurable: true });
    try {
      await check({ label: 'grid split', x: [1, 4, 13, 20], w: [16, 4, 3, 3], padding: 1 });
      await check({ label: 'grid split', x: [1, 2, 15, 20], w: [20, 1, 3, 3], padding: 1, groups: 2 });
    } finally {
      Object.defineProperty(e, 'limits', { value: real, configurable: true });
    }
    expect(e.limits.maxComputeWorkgroupsPerDimension).toBeGreaterThan(4);
  });
});

describe('conv2d diffusers fixtures', () => {
  const close = (got: Float32Array, want: Float32Array, label: string) => {
    expect(got.length).toBe(want.length);
    let bad = 0;
    for (let i = 0; i < want.length; i++) if (!(Math.abs(got[i] - want[i]) <= 1e-4 + 1e-4 * Math.abs(want[i]))) bad++;
    const err = track(`fixture ${label}`, relL2(got, want));
    expect(bad, `${label}: ${bad} values off, max |diff| ${maxAbs(got, want)}`).toBe(0);
    expect(err).toBeLessThanOrEqual(1e-5);
  };

  for (const [name, k] of [
    ['conv2d_3x3_s1_p1', 3],
    ['conv2d_1x1', 1],
  ] as const) {
    it(`ops/${name}`, async () => {
      const e = await getEngine();
      const fc = loadCase(`ops/${name}`);
      const cfg = fc.config as { kernel_size: number; padding: number; stride: number };
      expect(cfg.kernel_size).toBe(k);
      const xin = fc.input('x');
      const wt = fc.weights['weight'];
      const bt = fc.weights['bias'];
      const x = e.tensor(xin.data as Float32Array, xin.shape);
      const w = e.tensor(wt.data as Float32Array, wt.shape);
      const b = e.tensor(bt.data as Float32Array, bt.shape);
      const y = ops.conv2d(x, w, b, { stride: cfg.stride, padding: cfg.padding });
      const want = fc.output('y');
      expect(y.shape).toEqual(want.shape);
      close(await readF32(y), want.data as Float32Array, name);
      for (const t of [x, w, b, y]) t.dispose();
    });
  }

  for (const [name, padding] of [
    ['downsample2d_conv_pad0_asym', [0, 1, 0, 1]],
    ['downsample2d_conv_pad1', 1],
  ] as const) {
    for (const which of ['even', 'odd']) {
      it(`ops/${name} (${which})`, async () => {
        const e = await getEngine();
        const fc = loadCase(`ops/${name}`);
        const xin = fc.input(`x_${which}`);
        const wt = fc.weights['conv.weight'];
        const bt = fc.weights['conv.bias'];
        const x = e.tensor(xin.data as Float32Array, xin.shape);
        const w = e.tensor(wt.data as Float32Array, wt.shape);
        const b = e.tensor(bt.data as Float32Array, bt.shape);
        const y = ops.conv2d(x, w, b, { stride: 2, padding: padding as number | [number, number, number, number] });
        const want = fc.output(`y_${which}`);
        expect(y.shape).toEqual(want.shape);
        close(await readF32(y), want.data as Float32Array, `${name} ${which}`);
        for (const t of [x, w, b, y]) t.dispose();
      });
    }
  }
});

const hasF16 = (await getEngine()).hasShaderF16; // SwiftShader has no shader-f16

describe('conv2d f16', () => {
  it.skipIf(!hasF16)('f16 storage matches the f32 reference within f16 rounding', async () => {
    const e = await getEngine();
    const xs = randn(2 * 8 * 9 * 11, 5);
    const ws = randn(16 * 8 * 9, 6, 1 / Math.sqrt(72));
    const bs = randArray(16, 7, -0.5, 0.5);
    const ref = conv2dRef(xs, [2, 8, 9, 11], ws, [16, 8, 3, 3], bs, { padding: [1, 1, 1, 1] });
    const x = e.tensor(xs, [2, 8, 9, 11], 'f16');
    const w = e.tensor(ws, [16, 8, 3, 3], 'f16');
    const b = e.tensor(bs, [16], 'f16');
    const y = ops.conv2d(x, w, b, { padding: 1 });
    expect(y.dtype).toBe('f16');
    const err = track('f16', relL2(await readF32(y), ref.data));
    expect(err).toBeLessThanOrEqual(3e-3);
    for (const t of [x, w, b, y]) t.dispose();
  });

  it.skipIf(!hasF16)('f16 through the vec4, 128-row and split-K variants', async () => {
    const e = await getEngine();
    for (const [xs, ws, opts] of [
      [[1, 16, 8, 8], [128, 16, 3, 3], { padding: 1 }],
      [[2, 12, 4, 4], [40, 12, 1, 1], {}],
      [[1, 64, 4, 4], [80, 64, 3, 3], { padding: 1, splitK: 3 }],
      [[1, 6, 7, 5], [6, 1, 3, 3], { padding: 1, groups: 6 }],
    ] as [number[], number[], Conv2dOptions & { padding?: number }][]) {
      const xd = randn(xs.reduce((a, b) => a * b), 11);
      const wd = randn(ws.reduce((a, b) => a * b), 12, 1 / Math.sqrt(ws[1] * ws[2] * ws[3]));
      const bd = randArray(ws[0], 13, -0.5, 0.5);
      const rd = randn(ops.conv2dOutputShape(xs, ws, opts).reduce((a, b) => a * b), 14);
      const pad = opts.padding ?? 0;
      const ref = conv2dRef(xd, xs, wd, ws, bd, { padding: [pad, pad, pad, pad], groups: opts.groups }, rd);
      const x = e.tensor(xd, xs, 'f16');
      const w = e.tensor(wd, ws, 'f16');
      const b = e.tensor(bd, [ws[0]], 'f16');
      const r = e.tensor(rd, ref.shape, 'f16');
      const y = ops.conv2d(x, w, b, { ...opts, residual: r });
      const err = track('f16', relL2(await readF32(y), ref.data));
      expect(err).toBeLessThanOrEqual(3e-3);
      for (const t of [x, w, b, r, y]) t.dispose();
    }
  });
});

describe('conv2d cost', () => {
  it('counts 2*MNK flops and each tensor once', () => {
    const c = ops.conv2dCost({ x: [2, 8, 9, 11], w: [16, 8, 3, 3], padding: 1, bias: true });
    const outs = 2 * 16 * 9 * 11;
    expect(c.flops).toBe(2 * outs * 72 + outs);
    expect(c.bytes).toBe(4 * (2 * 8 * 9 * 11 + 16 * 72 + 16 + outs));
    const d = ops.conv2dCost({ x: [1, 6, 10, 9], w: [6, 1, 3, 3], padding: 1, groups: 6, dtype: 'f16' });
    expect(d.flops).toBe(2 * 6 * 90 * 9);
    expect(d.bytes).toBe(2 * (540 + 54 + 540));
  });
});

describe('conv2d bad inputs', () => {
  it('rejects mismatched shapes, options and dtypes with messages naming conv2d and the shapes', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(2 * 4 * 5 * 5, 1), [2, 4, 5, 5]);
    const w = e.tensor(randArray(8 * 4 * 9, 2), [8, 4, 3, 3]);
    const wBad = e.tensor(randArray(8 * 3 * 9, 3), [8, 3, 3, 3]);
    const b = e.tensor(randArray(8, 4), [8]);
    const bBad = e.tensor(randArray(7, 5), [7]);
    const x3 = e.tensor(randArray(4 * 5 * 5, 6), [4, 5, 5]);
    const xi = e.tensor(new Int32Array(2 * 4 * 5 * 5), [2, 4, 5, 5]);
    expect(() => ops.conv2d(x, wBad, b)).toThrow(/conv2d.*\[8, 3, 3, 3\].*\[2, 4, 5, 5\]/);
    expect(() => ops.conv2d(x, w, b, { groups: 3 })).toThrow(/conv2d: groups=3 must divide Cin=4/);
    expect(() => ops.conv2d(x, w, b, { groups: 2 })).toThrow(/conv2d.*Cin\/groups/); // w has Cin/g = 4, needs 2
    expect(() => ops.conv2d(x3, w, b)).toThrow(/conv2d: input must have rank 4.*\[4, 5, 5\]/);
    expect(() => ops.conv2d(x, x3, b)).toThrow(/conv2d: weight must have rank 4/);
    expect(() => ops.conv2d(x, w, bBad)).toThrow(/conv2d: bias must have shape \[8\].*\[7\]/);
    expect(() => ops.conv2d(x, w, b, { residual: b })).toThrow(/conv2d: residual must have the output shape \[2, 8, 3, 3\]/);
    expect(() => ops.conv2d(x, w, b, { stride: 0 })).toThrow(/conv2d: stride/);
    expect(() => ops.conv2d(x, w, b, { padding: -1 })).toThrow(/conv2d: padding/);
    expect(() => ops.conv2d(x, w, b, { dilation: [1, 0] })).toThrow(/conv2d: dilation/);
    expect(() => ops.conv2d(x, w, b, { dilation: 3 })).toThrow(/conv2d: the output would be empty.*\[2, 4, 5, 5\]/);
    expect(() => ops.conv2d(x, w, b, { padding: [0, 0, 0, 0], dilation: [1, 4] })).toThrow(/output would be empty/);
    expect(() => ops.conv2d(xi, w, b)).toThrow(/conv2d.*i32/);
    // padding that makes the output empty cannot exist (padding only grows it); a kernel larger than
    // the padded input can:
    const wBig = e.tensor(randArray(8 * 4 * 49, 8), [8, 4, 7, 7]);
    expect(() => ops.conv2d(x, wBig, b, { padding: [1, 0, 1, 0] })).toThrow(/conv2d: the output would be empty/);
    for (const t of [x, w, wBad, b, bBad, x3, xi, wBig]) t.dispose();
  });

  it('rejects tensors of another engine and disposed tensors', async () => {
    const e = await getEngine();
    const e2 = await Engine.create();
    const x = e.tensor(randArray(4 * 5 * 5, 1), [1, 4, 5, 5]);
    const w = e.tensor(randArray(8 * 4 * 9, 2), [8, 4, 3, 3]);
    const w2 = e2.tensor(randArray(8 * 4 * 9, 2), [8, 4, 3, 3]);
    expect(() => ops.conv2d(x, w2)).toThrow(/conv2d.*different engines/);
    const r = e.tensor(randArray(8 * 9, 3), [1, 8, 3, 3]);
    r.dispose();
    expect(() => ops.conv2d(x, w, null, { residual: r })).toThrow(/conv2d.*dispose/);
    w.dispose();
    expect(() => ops.conv2d(x, w)).toThrow(/conv2d.*dispose/);
    x.dispose();
    e2.destroy();
  });
});

describe('conv2d on every GEMM tile', () => {
  // Each tile of the table (any of which the autotuner may pick) through the im2col loader's
  // paths: padded 3x3 with residual, strided + dilated groups, pointwise vec4, split-K; ragged in
  // M, N and K everywhere.
  const cases: [number[], number[], Conv2dOptions & { padding?: number | [number, number, number, number] }][] = [
    [[2, 7, 9, 11], [19, 7, 3, 3], { padding: 1 }],
    [[1, 6, 11, 10], [10, 3, 3, 3], { stride: 2, dilation: [2, 1], padding: [2, 1, 0, 1], groups: 2 }],
    [[2, 12, 4, 4], [21, 12, 1, 1], {}],
    [[1, 40, 5, 3], [9, 40, 3, 3], { padding: 1, splitK: 3 }],
    // 49 taps: more than the subgroup tiles' 32-bit tap mask holds (their per-k bounds path)
    [[1, 3, 9, 10], [5, 3, 7, 7], { padding: [3, 2, 3, 1] }],
  ];
  for (const tile of Object.keys(GEMM_TILES) as GemmTileName[]) {
    for (const dtype of ['f32', 'f16'] as const) {
      it.skipIf(dtype === 'f16' && !hasF16)(`${tile} ${dtype}`, async () => {
        const e = await getEngine();
        if (e.adapterKind === 'lavapipe') expect(tileFits(e, GEMM_TILES[tile])).toBe(true);
        if (!tileFits(e, GEMM_TILES[tile])) return; // subgroup tiles off lavapipe without 8-lane subgroups
        let s = 900;
        for (const [xs, ws, opts] of cases) {
          const xd = randn(xs.reduce((a, b) => a * b), s++);
          const wd = randn(ws.reduce((a, b) => a * b), s++, 1 / Math.sqrt(ws[1] * ws[2] * ws[3]));
          const bd = randArray(ws[0], s++, -0.5, 0.5);
          const outShape = ops.conv2dOutputShape(xs, ws, opts);
          const rd = randn(outShape.reduce((a, b) => a * b), s++);
          const ref = conv2dRef(xd, xs, wd, ws, bd, { stride: two(opts.stride as number, 1), padding: four(opts.padding), dilation: two(opts.dilation as number, 1), groups: opts.groups }, rd);
          const x = e.tensor(xd, xs, dtype);
          const w = e.tensor(wd, ws, dtype);
          const b = e.tensor(bd, [ws[0]], dtype);
          const r = e.tensor(rd, ref.shape, dtype);
          const y = ops.conv2d(x, w, b, { ...opts, residual: r, tile });
          const err = track(`tile ${tile} ${dtype}`, relL2(await readF32(y), ref.data));
          expect(err, `${tile} ${dtype} x${JSON.stringify(xs)} w${JSON.stringify(ws)}`).toBeLessThanOrEqual(dtype === 'f16' ? 3e-3 : 1e-5);
          for (const t of [x, w, b, r, y]) t.dispose();
        }
      });
    }
  }
});
