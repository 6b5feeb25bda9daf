// Every kernel in f16 storage against the float64 reference (the f16 project: Mesa lavapipe, which
// has shader-f16; nothing is skipped here). Inputs are stored in f16, so the reference is computed
// from the f16-rounded inputs: what remains is the kernel's own error, f16 output rounding
// (relative L2 ~3e-4) plus f16 intermediates. Cases are chosen so f16 accumulation would fail:
// long reductions (K = 2304, 1280 channels x 9), GroupNorm on values with a large mean, softmax
// with large logits. Tolerances (relative L2), per op:
//   conv2d, matmul/linear 1.5e-3 | attention 2e-3 | groupNorm, layerNorm 1.5e-3 |
//   add/mul/silu/gelu/quickGelu/exp/softClamp/clamp/scale/geglu/guidance 1e-3 | timestepEmbedding 1e-3 |
//   concat/slice/upsample/token layouts/embedding/vqLookup exact | cast f16->f32 and randn exact
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import * as ops from '../../src/kernels/index.js';
import type { Engine, Tensor } from '../../src/index.js';
import { getF16Engine, randArray, randn, relL2, track, reportWorst } from '../helpers.js';
import { conv2dRef } from '../ref/conv2d.js';
import { refMatmul, refLinear, activate64 } from '../ref/matmul.js';
import { attentionRef } from '../ref/attention.js';
import { ATTENTION_VARIANTS } from '../../src/kernels/attention.js';
import { groupNormRef, layerNormRef } from '../ref/norm.js';
import { broadcastRef, gegluRef, concatRef, sliceRef, upsampleNearest2xRef, transposeRef } from '../ref/elementwise.js';
import { vqLookupRef } from '../ref/vq_lookup.js';
import { timestepEmbeddingRef } from '../ref/timestep_embedding.js';

afterAll(() => reportWorst('f16 kernels'));

let e: Engine;
beforeAll(async () => {
  e = await getF16Engine();
});

/** Uploads as f16 and returns the tensor with the values it really holds (rounded to f16). */
async function h(data: Float32Array, shape: readonly number[]): Promise<{ t: Tensor; v: Float32Array }> {
  const t = e.tensor(data, shape, 'f16');
  return { t, v: (await t.read()) as Float32Array };
}

async function check(label: string, y: Tensor, ref: ArrayLike<number>, tol: number): Promise<void> {
  expect(y.dtype, label).toBe('f16');
  const got = (await y.read()) as Float32Array;
  y.dispose();
  const err = track(label, relL2(got, ref));
  expect(err, label).toBeLessThan(tol);
}

describe('f16 engine', () => {
  it('runs on an adapter with shader-f16 (lavapipe in this project)', () => {
    expect(e.f16).toBe(true);
    expect(e.hasShaderF16).toBe(true);
    console.log(`[f16] adapter ${e.info().adapterKind}: ${e.info().adapterReason}`);
  });
});

describe('conv2d f16 vs float64 (tol 1.5e-3)', () => {
  const cases: { x: number[]; w: number[]; stride?: number; padding?: number; groups?: number; res?: boolean }[] = [
    { x: [2, 7, 9, 11], w: [5, 7, 3, 3], padding: 1 },
    { x: [1, 13, 10, 7], w: [6, 13, 1, 1] },
    { x: [1, 12, 17, 15], w: [12, 12, 3, 3], stride: 2, padding: 1, res: false },
    { x: [1, 6, 10, 9], w: [6, 1, 3, 3], padding: 1, groups: 6 },
    { x: [1, 256, 6, 5], w: [36, 256, 3, 3], padding: 1, res: true }, // K = 2304: f32 accumulation needed
    { x: [2, 64, 16, 16], w: [64, 64, 3, 3], padding: 1, res: true },
  ];
  for (const [i, c] of cases.entries()) {
    it(`x ${c.x} w ${c.w}${c.stride ? ` s${c.stride}` : ''}${c.groups ? ` g${c.groups}` : ''}${c.res ? ' +residual' : ''}`, async () => {
      const n = (s: number[]) => s.reduce((a, b) => a * b, 1);
      const fanIn = c.w[1] * c.w[2] * c.w[3];
      const x = await h(randn(n(c.x), 10 + i), c.x);
      const w = await h(randn(n(c.w), 20 + i, 1 / Math.sqrt(fanIn)), c.w);
      const b = await h(randArray(c.w[0], 30 + i), [c.w[0]]);
      const p = c.padding ?? 0;
      const s = c.stride ?? 1;
      const refNoRes = conv2dRef(x.v, c.x, w.v, c.w, b.v, { stride: [s, s], padding: [p, p, p, p], groups: c.groups ?? 1 });
      let r: { t: Tensor; v: Float32Array } | null = null;
      if (c.res) r = await h(randn(refNoRes.data.length, 40 + i), refNoRes.shape);
      const ref = r ? refNoRes.data.map((v, j) => v + r!.v[j]) : refNoRes.data;
      const y = ops.conv2d(x.t, w.t, b.t, { stride: s, padding: p, groups: c.groups, residual: r?.t });
      await check('conv2d', y, ref, 1.5e-3);
      [x, w, b, r].forEach((q) => q?.t.dispose());
    });
  }
});

describe('matmul / linear f16 vs float64 (tol 1.5e-3)', () => {
  it('matmul batched, transposes, K = 2304', async () => {
    for (const [i, [as, bs, ta, tb]] of ([
      [[3, 17, 24], [3, 24, 20], false, false],
      [[2, 33, 19], [2, 45, 33], true, true],
      [[65, 2304], [2304, 37], false, false],
      [[4, 77, 40], [4, 77, 40], false, true],
    ] as [number[], number[], boolean, boolean][]).entries()) {
      const n = (s: number[]) => s.reduce((p, q) => p * q, 1);
      const a = await h(randn(n(as), 50 + i), as);
      const b = await h(randn(n(bs), 60 + i, 1 / Math.sqrt(as[as.length - (ta ? 2 : 1)])), bs);
      const ref = refMatmul(a.v, as, b.v, bs, ta, tb);
      await check('matmul', ops.matmul(a.t, b.t, { transposeA: ta, transposeB: tb }), ref.data, 1.5e-3);
      [a, b].forEach((q) => q.t.dispose());
    }
  });
  it('linear with bias, gelu and residual', async () => {
    const xs = [2, 9, 320];
    const x = await h(randn(2 * 9 * 320, 70), xs);
    const w = await h(randn(123 * 320, 71, 1 / Math.sqrt(320)), [123, 320]);
    const b = await h(randArray(123, 72), [123]);
    const r = await h(randn(2 * 9 * 123, 73), [2, 9, 123]);
    const ref = refLinear(x.v, xs, w.v, [123, 320], b.v, 'gelu', r.v);
    await check('linear', ops.linear(x.t, w.t, b.t, { activation: 'gelu', residual: r.t }), ref, 1.5e-3);
    expect(activate64(1, 'none')).toBe(1);
    [x, w, b, r].forEach((q) => q.t.dispose());
  });
});

describe('attention f16 vs float64 (tol 2e-3)', () => {
  for (const [i, [B, Lq, Lk, C, heads, causal, spread]] of ([
    [2, 37, 37, 40, 1, false, 1],
    [1, 64, 77, 80, 2, false, 1],
    [2, 77, 77, 96, 3, true, 1],
    [1, 33, 29, 64, 2, false, 6], // large logits: the running max and sum stay in f32
    [1, 9, 13, 3000, 1, false, 1], // a head too wide for the fused tiles: by parts
    [2, 12, 7, 3002, 2, true, 1],
  ] as [number, number, number, number, number, boolean, number][]).entries()) {
    it(`B${B} Lq${Lq} Lk${Lk} C${C} heads${heads}${causal ? ' causal' : ''}${spread > 1 ? ' large logits' : ''}`, async () => {
      const q = await h(randn(B * Lq * C, 80 + i, spread), [B, Lq, C]);
      const k = await h(randn(B * Lk * C, 90 + i, spread), [B, Lk, C]);
      const v = await h(randn(B * Lk * C, 100 + i), [B, Lk, C]);
      const ref = attentionRef(q.v, k.v, v.v, B, Lq, Lk, C, heads, { causal });
      await check('attention', ops.attention(q.t, k.t, v.t, { heads, causal }), ref, 2e-3);
      [q, k, v].forEach((t) => t.t.dispose());
    });
  }
});

// Every fused variant the tuner can choose (tiled, and the one-row-per-invocation kernels): f16
// loads widened to f32, f32 running max/sum/accumulator; ragged head dims, cross 77, causal.
describe('attention variants f16 vs float64 (tol 2e-3)', () => {
  for (const variant of ATTENTION_VARIANTS) {
    it(variant, async () => {
      for (const [i, [B, Lq, Lk, C, heads, causal, spread]] of ([
        [2, 37, 77, 80, 2, false, 1],
        [1, 45, 45, 33, 3, true, 1], // head dim 11
        [1, 33, 29, 64, 1, false, 6], // large logits
        [1, 70, 20, 10, 2, true, 1], // head dim 5, Lq > Lk
      ] as [number, number, number, number, number, boolean, number][]).entries()) {
        const q = await h(randn(B * Lq * C, 180 + i, spread), [B, Lq, C]);
        const k = await h(randn(B * Lk * C, 190 + i, spread), [B, Lk, C]);
        const v = await h(randn(B * Lk * C, 200 + i), [B, Lk, C]);
        const ref = attentionRef(q.v, k.v, v.v, B, Lq, Lk, C, heads, { causal });
        await check(`attention ${variant}`, ops.attention(q.t, k.t, v.t, { heads, causal, variant }), ref, 2e-3);
        [q, k, v].forEach((t) => t.t.dispose());
      }
    });
  }
});

// upcast_attention (SD 2.1): scores whose f16 storage would overflow. The fused kernel computes Q K^T
// and the softmax in f32 regardless; the by-parts path (heads too wide for the fused tiles) stores the
// score matrix, which upcast keeps in f32. q and k of size ~300 over 3000 channels: |scores| ~ 1e5 > 65504.
describe('attention upcast in f16 vs float64 (tol 2e-3)', () => {
  for (const [i, [Lq, Lk, C, spread]] of ([
    [9, 13, 3000, 300], // by parts
    [33, 29, 64, 40], // fused
  ] as [number, number, number, number][]).entries()) {
    it(`Lq${Lq} Lk${Lk} C${C} |q|,|k| ~ ${spread}${C > 1000 ? ' (by parts)' : ' (fused)'}`, async () => {
      const q = await h(randn(Lq * C, 140 + i, spread), [1, Lq, C]);
      const k = await h(randn(Lk * C, 150 + i, spread), [1, Lk, C]);
      const v = await h(randn(Lk * C, 160 + i), [1, Lk, C]);
      const ref = attentionRef(q.v, k.v, v.v, 1, Lq, Lk, C, 1, {});
      await check('attention upcast', ops.attention(q.t, k.t, v.t, { heads: 1, upcast: true }), ref, 2e-3);
      // what upcast prevents: without it the by-parts scores overflow f16 (the fused path is unaffected)
      const plain = ops.attention(q.t, k.t, v.t, { heads: 1 });
      const got = (await plain.read()) as Float32Array;
      plain.dispose();
      const bad = got.some((x) => !Number.isFinite(x)) || relL2(got, ref) > 2e-3;
      expect(bad).toBe(C > 1000);
      [q, k, v].forEach((t) => t.t.dispose());
    });
  }
});

describe('norms f16 vs float64 (tol 1.5e-3)', () => {
  it('groupNorm (+SiLU) on values with a large mean: mean and variance in f32', async () => {
    for (const [i, [shape, groups, silu, mean]] of ([
      [[2, 12, 7, 9], 4, false, 0],
      [[1, 64, 16, 16], 32, true, 0],
      [[1, 96, 11, 13], 32, false, 40], // E[x^2] - E[x]^2 in f16 would cancel catastrophically
    ] as [number[], number, boolean, number][]).entries()) {
      const n = shape.reduce((a, b) => a * b, 1);
      const x = await h(randn(n, 110 + i).map((v) => v + mean), shape);
      const g = await h(randArray(shape[1], 120 + i, 0.5, 1.5), [shape[1]]);
      const b = await h(randArray(shape[1], 130 + i), [shape[1]]);
      const ref = groupNormRef(x.v, shape, groups, g.v, b.v, 1e-6, silu);
      await check('groupNorm', ops.groupNorm(x.t, g.t, b.t, { groups, eps: 1e-6, silu }), ref, 1.5e-3);
      [x, g, b].forEach((t) => t.t.dispose());
    }
  });
  it('layerNorm over 768 and 77 channels', async () => {
    for (const [i, shape] of [[2, 7, 768], [3, 77]].entries()) {
      const n = shape.reduce((a, b) => a * b, 1);
      const C = shape[shape.length - 1];
      const x = await h(randn(n, 140 + i).map((v) => 3 * v + 5), shape);
      const g = await h(randArray(C, 150 + i, 0.5, 1.5), [C]);
      const b = await h(randArray(C, 160 + i), [C]);
      await check('layerNorm', ops.layerNorm(x.t, g.t, b.t, { eps: 1e-5 }), layerNormRef(x.v, shape, g.v, b.v, 1e-5), 1.5e-3);
      [x, g, b].forEach((t) => t.t.dispose());
    }
  });
});

describe('element-wise f16 vs float64 (tol 1e-3)', () => {
  it('add / mul with broadcasting, silu, gelu, scale, geglu, cast', async () => {
    const as = [2, 5, 7, 9];
    const a = await h(randn(2 * 5 * 7 * 9, 170), as);
    const b = await h(randn(5, 171), [5, 1, 1]);
    await check('add', ops.add(a.t, b.t), broadcastRef(a.v, as, b.v, [5, 1, 1], (u, v) => u + v).data, 1e-3);
    await check('mul', ops.mul(a.t, b.t), broadcastRef(a.v, as, b.v, [5, 1, 1], (u, v) => u * v).data, 1e-3);
    await check('silu', ops.silu(a.t), Array.from(a.v, (v) => v / (1 + Math.exp(-v))), 1e-3);
    await check('gelu', ops.gelu(a.t), Array.from(a.v, (v) => activate64(v, 'gelu')), 1e-3);
    await check('scale', ops.scale(a.t, 0.37, -0.5), Array.from(a.v, (v) => 0.37 * v - 0.5), 1e-3);
    const gx = await h(randn(3 * 4 * 22, 172), [3, 4, 22]);
    await check('geglu', ops.geglu(gx.t), gegluRef(gx.v, 11), 1e-3);
    const c = ops.cast(a.t, 'f32');
    expect(c.dtype).toBe('f32');
    expect(Array.from((await c.read()) as Float32Array)).toEqual(Array.from(a.v)); // f16 -> f32 is exact
    c.dispose();
    [a, b, gx].forEach((t) => t.t.dispose());
  });
});

describe('timestepEmbedding f16 vs float64 (tol 1e-3)', () => {
  it('320 channels for SD timesteps', async () => {
    const ts = [999, 500.5, 1, 0, 37];
    const o = { flipSinToCos: true, downscaleFreqShift: 0 };
    const y = ops.timestepEmbedding(e, ts, 320, { ...o, dtype: 'f16' });
    await check('timestepEmbedding', y, timestepEmbeddingRef(ts, 320, o), 1e-3);
  });
});

describe('randn, guidance and the NaN counter in f16', () => {
  it('randn f16 equals the f32 draws rounded', async () => {
    const a = ops.randn(e, [1001], 5, { dtype: 'f16' });
    const b = ops.randn(e, [1001], 5, { dtype: 'f32' });
    const bf = ops.cast(b, 'f16');
    expect(Array.from((await a.read()) as Float32Array)).toEqual(Array.from((await bf.read()) as Float32Array));
    [a, b, bf].forEach((t) => t.dispose());
  });
  it('classifier-free guidance and countNonFinite', async () => {
    const x = await h(randn(2 * 4 * 5 * 3, 180), [2, 4, 5, 3]);
    const half = x.v.length / 2;
    const ref = Array.from({ length: half }, (_, j) => x.v[j] + 7.5 * (x.v[half + j] - x.v[j]));
    await check('guidance', ops.classifierFreeGuidance(x.t, 7.5), ref, 1e-3);
    // with rescale (diffusers' guidance_rescale): f32 statistics per item over the f16 values
    const n = half; // one item of 4 x 5 x 3
    const std = (v: number[]) => {
      const m = v.reduce((p, q) => p + q, 0) / v.length;
      return Math.sqrt(v.reduce((p, q) => p + (q - m) ** 2, 0) / (v.length - 1));
    };
    const cond = Array.from({ length: n }, (_, j) => x.v[half + j]);
    const f = 0.6 * (std(cond) / std(ref)) + 0.4;
    await check('guidance rescale', ops.classifierFreeGuidance(x.t, 7.5, { rescale: 0.6 }), ref.map((g) => g * f), 1e-3);
    // 70000 overflows f16 to +Inf: the counter sees it
    const big = e.tensor(Float32Array.from([1, 70000, -2, Number.NaN, 3]), [5], 'f16');
    const cnt = ops.countNonFinite(big);
    expect(Array.from(await cnt.read())).toEqual([2]);
    [x.t, big, cnt].forEach((t) => t.dispose());
  });
});

describe('layout, lookup and the remaining element-wise ops in f16 (exact, or tol 1e-3)', () => {
  it('concat, slice, upsampleNearest2x, nchwToTokens / tokensToNchw move f16 values exactly', async () => {
    const a = await h(randn(2 * 3 * 5 * 7, 190), [2, 3, 5, 7]);
    const b = await h(randn(2 * 4 * 5 * 7, 191), [2, 4, 5, 7]);
    const cat = ops.concat([a.t, b.t], 1);
    await check('concat', cat, concatRef([{ data: a.v, shape: [2, 3, 5, 7] }, { data: b.v, shape: [2, 4, 5, 7] }], 1), 1e-7);
    await check('slice', ops.slice(b.t, 1, 1, 3), sliceRef(b.v, [2, 4, 5, 7], 1, 1, 3), 1e-7);
    await check('upsampleNearest2x', ops.upsampleNearest2x(a.t), upsampleNearest2xRef(a.v, [2, 3, 5, 7]), 1e-7);
    const tok = ops.nchwToTokens(a.t);
    expect(tok.shape).toEqual([2, 35, 3]);
    const back = ops.tokensToNchw(tok, 5, 7);
    await check('nchwToTokens', tok, transposeRef(a.v, 2, 3, 35), 1e-7);
    await check('tokensToNchw', back, a.v, 1e-7);
    [a, b].forEach((t) => t.t.dispose());
  });

  it('embedding rows and vqLookup against float64', async () => {
    const table = await h(randn(50 * 24, 192), [50, 24]);
    const ids = [3, 0, 49, 3, 17];
    const want = ids.flatMap((i) => Array.from(table.v.subarray(i * 24, (i + 1) * 24)));
    await check('embedding', ops.embedding(table.t, ids), want, 1e-7);
    const z = await h(randn(2 * 4 * 5 * 6, 193), [2, 4, 5, 6]);
    const book = await h(randn(33 * 4, 194), [33, 4]);
    const ref = vqLookupRef(z.v, [2, 4, 5, 6], book.v, 33);
    const { quantized, indices } = ops.vqLookup(z.t, book.t);
    expect(Array.from(await indices.read())).toEqual(Array.from(ref.indices));
    await check('vqLookup', quantized, ref.quantized, 1e-7);
    [table.t, z.t, book.t, indices].forEach((t) => t.dispose());
  });

  it('clamp, quickGelu, exp, softClamp', async () => {
    const a = await h(randn(3 * 11 * 13, 195, 2), [3, 11, 13]);
    await check('clamp', ops.clamp(a.t, -0.7, 1.3), Array.from(a.v, (v) => Math.min(1.3, Math.max(-0.7, v))), 1e-3); // the bounds round to f16
    await check('quickGelu', ops.quickGelu(a.t), Array.from(a.v, (v) => v / (1 + Math.exp(-1.702 * v))), 1e-3);
    await check('exp', ops.exp(a.t, 0.5), Array.from(a.v, (v) => Math.exp(0.5 * v)), 1e-3);
    await check('softClamp', ops.softClamp(a.t, 2), Array.from(a.v, (v) => 2 * Math.tanh(v / 2)), 1e-3);
    a.t.dispose();
  });
});
