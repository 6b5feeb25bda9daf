import { describe, it, expect, afterAll } from 'vitest';
import { Engine, ops } from '../../src/index.js';
import { attentionConfig, attentionCandidates, ATTENTION_VARIANTS, ROWS_MAX_D, type AttentionVariant } from '../../src/kernels/attention.js';
import { autotune } from '../../src/index.js';
import { clearTuning, tunedFor } from '../../src/kernels/tune_cache.js';
import { attentionLayout } from '../../src/kernels/attention.wgsl.js';
import { getEngine, randn, randArray, relL2, track, reportWorst, readF32 } from '../helpers.js';
import { loadCase } from '../fixture.js';
import { attentionRef, headsToChannels } from '../ref/attention.js';

afterAll(() => reportWorst('attention'));

interface Case {
  label: string;
  B: number;
  Lq: number;
  Lk: number;
  heads: number;
  D: number;
  causal?: boolean;
  scale?: number;
  /** input spread: large values make the softmax peaky and test the running max */
  std?: number;
}

const cases: Case[] = [
  { label: 'self h1 d8', B: 1, Lq: 13, Lk: 13, heads: 1, D: 8 },
  { label: 'cross h2 d40', B: 2, Lq: 37, Lk: 77, heads: 2, D: 40 },
  { label: 'self h2 d40 two query tiles', B: 1, Lq: 70, Lk: 70, heads: 2, D: 40 },
  { label: 'cross h8 d64', B: 1, Lq: 20, Lk: 33, heads: 8, D: 64 },
  { label: 'self h1 d64 many key tiles', B: 1, Lq: 30, Lk: 100, heads: 1, D: 64 },
  { label: 'cross h1 d80', B: 1, Lq: 41, Lk: 77, heads: 1, D: 80 },
  { label: 'self h2 d160', B: 1, Lq: 9, Lk: 17, heads: 2, D: 160 },
  { label: 'self h1 d160 shared kv', B: 2, Lq: 40, Lk: 23, heads: 1, D: 160 },
  { label: 'Lq 1 h8 d40', B: 2, Lq: 1, Lk: 77, heads: 8, D: 40 },
  { label: 'Lk 1', B: 1, Lq: 13, Lk: 1, heads: 2, D: 8 },
  { label: 'Lq 1 Lk 1', B: 3, Lq: 1, Lk: 1, heads: 1, D: 40 },
  { label: 'ragged d13 h3', B: 1, Lq: 11, Lk: 29, heads: 3, D: 13 },
  { label: 'ragged d6', B: 2, Lq: 35, Lk: 5, heads: 1, D: 6 },
  { label: 'ragged d33 h2', B: 1, Lq: 7, Lk: 40, heads: 2, D: 33 },
  { label: 'peaky scores', B: 1, Lq: 33, Lk: 70, heads: 2, D: 40, std: 3 },
  { label: 'custom scale', B: 1, Lq: 45, Lk: 21, heads: 1, D: 40, scale: 0.7 },
  { label: 'causal clip h2 d32', B: 2, Lq: 77, Lk: 77, heads: 2, D: 32, causal: true },
  { label: 'causal h1 d32 three query tiles', B: 1, Lq: 130, Lk: 130, heads: 1, D: 32, causal: true },
  { label: 'causal Lq > Lk', B: 1, Lq: 40, Lk: 20, heads: 1, D: 32, causal: true },
  { label: 'causal Lq < Lk', B: 1, Lq: 40, Lk: 90, heads: 2, D: 32, causal: true },
  { label: 'causal Lq 1', B: 1, Lq: 1, Lk: 9, heads: 1, D: 8, causal: true },
];

async function runCase(e: Engine, c: Case, seed: number, variant?: AttentionVariant) {
  const C = c.heads * c.D;
  const std = c.std ?? 1;
  const qa = randn(c.B * c.Lq * C, seed, std);
  const ka = randn(c.B * c.Lk * C, seed + 1, std);
  const va = randArray(c.B * c.Lk * C, seed + 2);
  const q = e.tensor(qa, [c.B, c.Lq, C]);
  const k = e.tensor(ka, [c.B, c.Lk, C]);
  const v = e.tensor(va, [c.B, c.Lk, C]);
  const o = ops.attention(q, k, v, { heads: c.heads, scale: c.scale, causal: c.causal, variant });
  expect(o.shape).toEqual([c.B, c.Lq, C]);
  const got = await readF32(o);
  const ref = attentionRef(qa, ka, va, c.B, c.Lq, c.Lk, C, c.heads, { scale: c.scale, causal: c.causal });
  for (const t of [q, k, v, o]) t.dispose();
  return { got, ref };
}

describe('attention', () => {
  for (const [n, c] of cases.entries()) {
    it(`${c.label}: B${c.B} Lq${c.Lq} Lk${c.Lk} heads${c.heads} dHead${c.D}`, async () => {
      const e = await getEngine();
      const { got, ref } = await runCase(e, c, 100 + 7 * n);
      expect(got.every(Number.isFinite)).toBe(true);
      expect(track(c.causal ? 'causal' : 'attention', relL2(got, ref))).toBeLessThan(1e-5);
    });
  }

  // Every variant the tuner can choose, on awkward shapes: head dims not divisible by 4, query
  // counts that leave part of the last workgroup idle, cross-attention with 77 keys, key counts
  // that end inside a key block, the causal mask with Lq above and below Lk.
  const awkward: Case[] = [
    { label: 'ragged d5 h3 cross 77', B: 2, Lq: 19, Lk: 77, heads: 3, D: 5 },
    { label: 'ragged d11 h2', B: 1, Lq: 70, Lk: 37, heads: 2, D: 11 },
    { label: 'd40 h2 cross 77, 3 query tiles', B: 1, Lq: 131, Lk: 77, heads: 2, D: 40 },
    { label: 'd64 Lk 1', B: 2, Lq: 9, Lk: 1, heads: 1, D: 64 },
    { label: 'd8 Lq 1', B: 3, Lq: 1, Lk: 10, heads: 2, D: 8 },
    { label: 'peaky d40', B: 1, Lq: 33, Lk: 70, heads: 2, D: 40, std: 3, scale: 0.9 },
    { label: 'causal d13 Lq 77', B: 2, Lq: 77, Lk: 77, heads: 1, D: 13, causal: true },
    { label: 'causal d32 Lq > Lk', B: 1, Lq: 70, Lk: 30, heads: 2, D: 32, causal: true },
    { label: 'causal d40 Lq < Lk', B: 1, Lq: 20, Lk: 45, heads: 1, D: 40, causal: true },
  ];
  for (const variant of ATTENTION_VARIANTS) {
    it(`variant ${variant} on awkward shapes vs float64`, async () => {
      const e = await getEngine();
      for (const [n, c] of awkward.entries()) {
        const { got, ref } = await runCase(e, c, 300 + 13 * n, variant);
        expect(got.every(Number.isFinite), c.label).toBe(true);
        expect(track(`variant ${variant}`, relL2(got, ref)), c.label).toBeLessThan(1e-5);
      }
    });
  }

  it('rows variants only for head dims up to ROWS_MAX_D; a bad variant is a typed error that frees everything', async () => {
    const e = await getEngine();
    expect(attentionCandidates(ROWS_MAX_D)).toEqual(ATTENTION_VARIANTS);
    expect(attentionCandidates(ROWS_MAX_D + 1)).toEqual(['tiled']);
    const q = e.tensor(randn(2 * 80, 1), [1, 2, 80]);
    const before = e.memory().inUseBytes;
    expect(() => ops.attention(q, q, q, { heads: 1, variant: 'r2w32k4' })).toThrow(/head dims up to/);
    expect(() => ops.attention(q, q, q, { heads: 1, variant: 'nope' as AttentionVariant })).toThrow(/unknown variant/);
    expect(e.memory().inUseBytes).toBe(before);
    q.dispose();
  });

  it('autotune measures the attention variants per shape class and attention then runs the winner', async () => {
    const e = await getEngine();
    clearTuning(e);
    const c: Case = { label: 'tuned', B: 1, Lq: 40, Lk: 77, heads: 2, D: 24 };
    await runCase(e, c, 5); // registers the problem
    const res = (await autotune(e, { runs: 1, persist: false })).filter((r) => r.op === 'attention');
    expect(res.length).toBe(1);
    expect(res[0].measured).toBe(true);
    expect(Object.keys(res[0].candidates).sort()).toEqual([...ATTENTION_VARIANTS].sort());
    expect(tunedFor(e, res[0].key)!.tile).toBe(res[0].tile);
    const { got, ref } = await runCase(e, c, 6);
    expect(relL2(got, ref)).toBeLessThan(1e-5);
    clearTuning(e);
  });

  it('exercises the different tile configurations', async () => {
    const e = await getEngine();
    const seen = new Set<string>();
    for (const c of cases) {
      const cfg = attentionConfig(e, c.D, c.Lq, c.causal ?? false)!;
      const l = attentionLayout(cfg);
      seen.add(`BQ${l.BQ} BK${cfg.BK} RM${cfg.RM} TPR${cfg.TPR}${cfg.kvShared ? ' kvShared' : ''}`);
      expect(l.bytes).toBeLessThanOrEqual(e.limits.maxComputeWorkgroupStorageSize);
    }
    console.log('attention tile configs used:', [...seen].join('; '));
    expect([...seen].some((s) => s.includes('kvShared'))).toBe(true);
    expect([...seen].some((s) => s.includes('RM2'))).toBe(true);
    expect([...seen].some((s) => s.includes('TPR2'))).toBe(true);
  });

  it('finds a tile configuration for every head dim up to 240 within 16 KiB and 32 KiB', () => {
    for (const lim of [16384, 32768]) {
      const fake = { limits: { maxComputeWorkgroupStorageSize: lim, maxComputeInvocationsPerWorkgroup: 256 } } as unknown as Engine;
      for (let D = 1; D <= 240; D++) {
        for (const lq of [1, 20, 4096]) {
          const cfg = attentionConfig(fake, D, lq, false);
          expect(cfg, `D ${D} limit ${lim}`).not.toBeNull();
          const l = attentionLayout(cfg!);
          expect(l.bytes).toBeLessThanOrEqual(lim);
          expect(cfg!.BK % cfg!.TPR).toBe(0);
          expect(l.NK * cfg!.TPR).toBeGreaterThanOrEqual(l.D4);
        }
      }
    }
  });

  // Heads too wide for the fused kernel's workgroup tiles (cin256-v2 has one head of 384-960
  // channels) run by parts: scores in memory, row softmax, P V; the same numbers either way.
  for (const [n, c] of ([
    { label: 'wide head d3000 (by parts)', B: 2, Lq: 9, Lk: 13, heads: 1, D: 3000, byParts: true },
    { label: 'wide heads d1501 x2 cross (by parts)', B: 1, Lq: 7, Lk: 11, heads: 2, D: 1501, byParts: true },
    { label: 'wide head d3001 causal, Lq > Lk (by parts)', B: 1, Lq: 12, Lk: 5, heads: 1, D: 3001, causal: true, byParts: true },
    { label: 'wide head d3000 peaky scale 0.3 (by parts)', B: 1, Lq: 10, Lk: 300, heads: 1, D: 3000, std: 2, scale: 0.3, byParts: true },
    { label: 'head d576 (cin256-v2 level 2)', B: 2, Lq: 64, Lk: 64, heads: 1, D: 576 },
  ] as (Case & { byParts?: boolean })[]).entries()) {
    it(`${c.label}: B${c.B} Lq${c.Lq} Lk${c.Lk} heads${c.heads} dHead${c.D}`, async () => {
      const e = await getEngine();
      if (c.byParts) expect(attentionConfig(e, c.D, c.Lq, c.causal ?? false)).toBeNull();
      const before = e.memory().inUseBytes;
      const { got, ref } = await runCase(e, c, 500 + 11 * n);
      expect(got.every(Number.isFinite)).toBe(true);
      expect(track('wide heads', relL2(got, ref))).toBeLessThan(1e-5);
      expect(e.memory().inUseBytes).toBe(before);
    });
  }

  it('upcast (upcast_attention) changes nothing in f32, fused or by parts', async () => {
    const e = await getEngine();
    for (const [i, [Lq, Lk, D]] of [
      [21, 30, 40],
      [9, 13, 3000],
    ].entries()) {
      const q = e.tensor(randn(Lq * D, 900 + i, 2), [1, Lq, D]);
      const k = e.tensor(randn(Lk * D, 910 + i, 2), [1, Lk, D]);
      const v = e.tensor(randn(Lk * D, 920 + i), [1, Lk, D]);
      const ta = ops.attention(q, k, v, { heads: 1 });
      const tb = ops.attention(q, k, v, { heads: 1, upcast: true });
      expect(Array.from(await readF32(tb))).toEqual(Array.from(await readF32(ta)));
      [q, k, v, ta, tb].forEach((t) => t.dispose());
    }
  });

  it('softmax over the last axis matches float64, with scale and the causal mask', async () => {
    const e = await getEngine();
    for (const [i, [rows, lq, len, causal, sc]] of ([
      [6, 3, 1, false, 1],
      [7, 7, 301, false, 0.5],
      [10, 5, 17, true, 2],
      [4, 4, 600, true, 1],
    ] as [number, number, number, boolean, number][]).entries()) {
      const xa = randn(rows * lq * len, 700 + i, 3);
      const x = e.tensor(xa, [rows, lq, len]);
      const got = await readF32(ops.softmax(x, { scale: sc, causal }));
      const ref = new Float64Array(xa.length);
      for (let r = 0; r < rows * lq; r++) {
        const n = causal ? Math.min(len, (r % lq) + 1) : len;
        let mx = -Infinity;
        for (let j = 0; j < n; j++) mx = Math.max(mx, xa[r * len + j] * sc);
        let sum = 0;
        for (let j = 0; j < n; j++) sum += Math.exp(xa[r * len + j] * sc - mx);
        for (let j = 0; j < n; j++) ref[r * len + j] = Math.exp(xa[r * len + j] * sc - mx) / sum;
      }
      expect(track('softmax', relL2(got, ref))).toBeLessThan(1e-6);
      x.dispose();
    }
  });

  it('long sequence (1024 x 1024) without an L^2 buffer', async () => {
    const e = await getEngine();
    const B = 1, L = 1024, heads = 2, D = 8, C = heads * D;
    const qa = randn(B * L * C, 901);
    const ka = randn(B * L * C, 902);
    const va = randArray(B * L * C, 903);
    const q = e.tensor(qa, [B, L, C]);
    const k = e.tensor(ka, [B, L, C]);
    const v = e.tensor(va, [B, L, C]);
    await e.sync();
    e.resetPeakMemory();
    const before = e.memory().inUseBytes;
    const o = ops.attention(q, k, v, { heads });
    const got = await readF32(o);
    const extra = e.memory().peakInUseBytes - before;
    // only the output itself (B * L * C floats); a score matrix would be heads * L * L floats
    expect(extra).toBeLessThanOrEqual(2 * B * L * C * 4);
    expect(extra).toBeLessThan(heads * L * L * 4 / 16);
    const ref = attentionRef(qa, ka, va, B, L, L, C, heads);
    expect(track('long', relL2(got, ref))).toBeLessThan(1e-5);
    for (const t of [q, k, v, o]) t.dispose();
  });

  it('matches diffusers ops/softmax_attention_raw', async () => {
    const e = await getEngine();
    const fx = loadCase('ops/softmax_attention_raw');
    const qf = fx.input('q');
    const kf = fx.input('k');
    const vf = fx.input('v');
    const [B, H, N, D] = qf.shape;
    const M = kf.shape[2];
    const q = e.tensor(headsToChannels(qf.data, B, H, N, D), [B, N, H * D]);
    const k = e.tensor(headsToChannels(kf.data, B, H, M, D), [B, M, H * D]);
    const v = e.tensor(headsToChannels(vf.data, B, H, M, D), [B, M, H * D]);
    const scale = (fx.config as { scale?: number }).scale;
    expect(scale).toBeCloseTo(D ** -0.5, 7);
    const o = ops.attention(q, k, v, { heads: H, scale });
    const got = await readF32(o);
    const exp = headsToChannels(fx.output('out').data, B, H, N, D);
    let bad = 0;
    for (let i = 0; i < exp.length; i++) if (!(Math.abs(got[i] - exp[i]) <= 1e-4 + 1e-4 * Math.abs(exp[i]))) bad++;
    expect(bad).toBe(0);
    expect(track('fixture softmax_attention_raw', relL2(got, exp))).toBeLessThan(1e-5);
    for (const t of [q, k, v, o]) t.dispose();
  });

  it('is deterministic and leaves its inputs alone', async () => {
    const e = await getEngine();
    const qa = randn(2 * 17 * 24, 5);
    const q = e.tensor(qa, [2, 17, 24]);
    const k = e.tensor(randn(2 * 9 * 24, 6), [2, 9, 24]);
    const a = await readF32(ops.attention(q, k, k, { heads: 3 }));
    const b = await readF32(ops.attention(q, k, k, { heads: 3 }));
    expect(b).toEqual(a);
    expect(await q.read()).toEqual(qa);
    q.dispose();
    k.dispose();
  });

  it('f16 storage matches the f32 path', async (ctx) => {
    const e = await getEngine();
    if (!e.hasShaderF16) return ctx.skip();
    const B = 1, Lq = 33, Lk = 45, heads = 2, D = 40, C = heads * D;
    const qa = randn(B * Lq * C, 11), ka = randn(B * Lk * C, 12), va = randArray(B * Lk * C, 13);
    const q = e.tensor(qa, [B, Lq, C], 'f16');
    const k = e.tensor(ka, [B, Lk, C], 'f16');
    const v = e.tensor(va, [B, Lk, C], 'f16');
    const o = ops.attention(q, k, v, { heads });
    expect(o.dtype).toBe('f16');
    const got = await readF32(o);
    const ref = attentionRef(await readF32(q), await readF32(k), await readF32(v), B, Lq, Lk, C, heads);
    expect(track('f16', relL2(got, ref))).toBeLessThan(2e-3);
    for (const t of [q, k, v, o]) t.dispose();
  });

  it('splits a grid of more than 65535 workgroups', async () => {
    const e = await getEngine();
    // B * heads = 66048 single-query tiles: over the per-dimension limit, so the grid folds into y
    const c: Case = { label: 'grid', B: 129, Lq: 1, Lk: 2, heads: 512, D: 4 };
    for (const variant of [undefined, 'tiled', 'r2w16k4'] as const) {
      const { got, ref } = await runCase(e, c, 77, variant);
      expect(track('grid split', relL2(got, ref)), variant).toBeLessThan(1e-5);
    }
  });

  it('returns an empty output for Lq = 0 and B = 0', async () => {
    const e = await getEngine();
    const q = e.tensor(new Float32Array(0), [1, 0, 8]);
    const k = e.tensor(randArray(3 * 8, 1), [1, 3, 8]);
    const o = ops.attention(q, k, k, { heads: 2 });
    expect(o.shape).toEqual([1, 0, 8]);
    const qb = e.tensor(new Float32Array(0), [0, 3, 8]);
    const kb = e.tensor(new Float32Array(0), [0, 5, 8]);
    const ob = ops.attention(qb, kb, kb, { heads: 1 });
    expect(ob.shape).toEqual([0, 3, 8]);
    for (const t of [q, k, o, qb, kb, ob]) t.dispose();
  });

  it('rejects bad inputs with errors naming the op and shapes', async () => {
    const e = await getEngine();
    const q = e.tensor(randArray(2 * 5 * 12, 1), [2, 5, 12]);
    const k = e.tensor(randArray(2 * 7 * 12, 2), [2, 7, 12]);
    const v = e.tensor(randArray(2 * 7 * 12, 3), [2, 7, 12]);
    expect(() => ops.attention(q, k, v, { heads: 5 })).toThrow(/attention: channels 12 are not divisible by heads 5.*\[2, 5, 12\]/);
    expect(() => ops.attention(q, k, v, { heads: 0 })).toThrow(/attention: heads must be a positive integer/);
    expect(() => ops.attention(q, k, v, { heads: 1.5 })).toThrow(/attention: heads/);
    const v6 = e.tensor(randArray(2 * 6 * 12, 4), [2, 6, 12]);
    expect(() => ops.attention(q, k, v6, { heads: 2 })).toThrow(/attention: k and v must have the same length.*\[2, 6, 12\]/);
    const k1 = e.tensor(randArray(1 * 7 * 12, 5), [1, 7, 12]);
    expect(() => ops.attention(q, k1, v, { heads: 2 })).toThrow(/attention: .*batch.*\[1, 7, 12\]/);
    const k8 = e.tensor(randArray(2 * 7 * 8, 6), [2, 7, 8]);
    expect(() => ops.attention(q, k8, k8, { heads: 2 })).toThrow(/attention: .*channel.*\[2, 7, 8\]/);
    const q2 = e.tensor(randArray(5 * 12, 7), [5, 12]);
    expect(() => ops.attention(q2, k, v, { heads: 2 })).toThrow(/attention: q must have rank 3, got \[5, 12\]/);
    const v4 = e.tensor(randArray(2 * 7 * 12, 8), [2, 7, 3, 4]);
    expect(() => ops.attention(q, k, v4, { heads: 2 })).toThrow(/attention: v must have rank 3/);
    const qi = e.tensor(Int32Array.from({ length: 2 * 5 * 12 }, (_, i) => i), [2, 5, 12]);
    expect(() => ops.attention(qi, k, v, { heads: 2 })).toThrow(/attention: expected float tensors/);
    expect(() => ops.attention(q, k, v, { heads: 2, scale: NaN })).toThrow(/attention: scale/);
    const k0 = e.tensor(new Float32Array(0), [2, 0, 12]);
    expect(() => ops.attention(q, k0, k0, { heads: 2 })).toThrow(/attention: needs at least one key/);
    const e2 = await Engine.create();
    const ko = e2.tensor(randArray(2 * 7 * 12, 9), [2, 7, 12]);
    expect(() => ops.attention(q, ko, v, { heads: 2 })).toThrow(/attention: tensors belong to different engines/);
    e2.destroy();
    const d = e.tensor(randArray(2 * 7 * 12, 10), [2, 7, 12]);
    d.dispose();
    expect(() => ops.attention(q, k, d, { heads: 2 })).toThrow(/attention: .*dispose/);
    for (const t of [q, k, v, v6, k1, k8, q2, v4, qi, k0]) t.dispose();
  });

  it('reports its cost', () => {
    const c = ops.attentionCost({ batch: 2, lq: 4096, lk: 4096, channels: 320, heads: 8 });
    expect(c.flops).toBe(4 * 2 * 4096 * 4096 * 320 + 5 * 2 * 4096 * 4096 * 8);
    expect(c.bytes).toBe(4 * 2 * 320 * (2 * 4096 + 2 * 4096));
    const cc = ops.attentionCost({ batch: 1, lq: 77, lk: 77, channels: 768, heads: 12, causal: true, dtype: 'f16' });
    expect(cc.flops).toBe(4 * (77 * 78) / 2 * 768 + 5 * (77 * 78) / 2 * 12);
    expect(cc.bytes).toBe(2 * 768 * 4 * 77);
  });
});
