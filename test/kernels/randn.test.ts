import { describe, it, expect, afterAll } from 'vitest';
import { Engine, ops } from '../../src/index.js';
import { getEngine, relL2, track, reportWorst, readF32 } from '../helpers.js';
import { philoxRef, randnRef, randnRefArray } from '../ref/randn.js';

const engine = await getEngine();
afterAll(() => reportWorst('randn'));

/** worst |a - b| / (|b| + 1e-6) */
function worstRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let w = 0;
  for (let i = 0; i < b.length; i++) {
    const r = Math.abs(a[i] - b[i]) / (Math.abs(b[i]) + 1e-6);
    if (!(r <= w)) w = Number.isNaN(r) ? Infinity : r;
  }
  return w;
}

const bits = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

describe('Philox4x32-10', () => {
  // Random123's published known-answer vectors
  const kat: [number[], number[], number[]][] = [
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
    [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]],
  ];
  it('reference and host implementation reproduce the Random123 known answers', () => {
    for (const [ctr, key, want] of kat) {
      expect(philoxRef(ctr, key)).toEqual(want);
      expect(Array.from(ops.philox4x32(ctr, key as [number, number]))).toEqual(want);
    }
  });
  it('host mulhi agrees with BigInt on many counters and keys', () => {
    for (let i = 0; i < 500; i++) {
      const ctr = [i * 0x9e3779b1, i ^ 0xdeadbeef, i * 7919, 0xffffffff - i].map((v) => v >>> 0);
      const key: [number, number] = [(i * 2654435761) >>> 0, (i * 40503) >>> 0];
      expect(Array.from(ops.philox4x32(ctr, key))).toEqual(philoxRef(ctr, key));
    }
  });
});

describe('ops.randn', () => {
  const sizes = [1, 2, 3, 4, 5, 7, 255, 1023, 4097, 65537];
  for (const n of sizes) {
    it(`size ${n} matches the float64 reference of the same u32 stream`, async () => {
      const seed = 1234 + n;
      const y = ops.randn(engine, [n], seed);
      expect(y.shape).toEqual([n]);
      const got = await readF32(y);
      const want = randnRefArray(n, seed);
      expect(track('gpu vs ref (worst elementwise)', worstRel(got, want))).toBeLessThanOrEqual(1e-5);
      expect(track('gpu vs ref', relL2(got, want))).toBeLessThanOrEqual(1e-6);
      y.dispose();
    });
  }

  it('randnHost gives the same numbers on the CPU', async () => {
    for (const [shape, seed, offset] of [[[2, 3, 5, 7], 42, 0], [[1001], 2 ** 40 + 17, 3], [[4, 4], 0, 2 ** 45 + 1]] as [number[], number, number][]) {
      const host = ops.randnHost(shape, seed, { offset });
      const n = host.length;
      const want = randnRefArray(n, seed, offset);
      expect(track('host vs ref (worst elementwise)', worstRel(host, want))).toBeLessThanOrEqual(1e-6);
      const y = ops.randn(engine, shape, seed, { offset });
      expect(y.shape).toEqual(shape);
      expect(track('gpu vs host (worst elementwise)', worstRel(await readF32(y), host))).toBeLessThanOrEqual(1e-5);
      y.dispose();
    }
  });

  it('has mean 0, variance 1 and normal tails over 1e6 samples', async () => {
    const n = 1_000_000;
    const y = ops.randn(engine, [1000, 1000], 2024);
    const v = await readF32(y);
    y.dispose();
    let s1 = 0, s2 = 0, s4 = 0, beyond2 = 0, nonFinite = 0;
    for (let i = 0; i < n; i++) {
      const x = v[i];
      if (!Number.isFinite(x)) nonFinite++;
      s1 += x;
      s2 += x * x;
      s4 += x * x * x * x;
      if (Math.abs(x) > 2) beyond2++;
    }
    expect(nonFinite).toBe(0);
    const mean = s1 / n;
    const variance = s2 / n - mean * mean;
    // 5 standard errors: mean 1/sqrt(n), variance sqrt(2/n), fourth moment sqrt(96/n), tail mass
    expect(Math.abs(mean)).toBeLessThan(5 / Math.sqrt(n));
    expect(Math.abs(variance - 1)).toBeLessThan(5 * Math.sqrt(2 / n));
    expect(Math.abs(s4 / n - 3)).toBeLessThan(5 * Math.sqrt(96 / n));
    const p2 = 0.0455002638963584; // P(|x| > 2)
    expect(Math.abs(beyond2 / n - p2)).toBeLessThan(5 * Math.sqrt((p2 * (1 - p2)) / n));
    // every lane of the four outputs per Philox call is itself standard normal
    for (let lane = 0; lane < 4; lane++) {
      let a = 0, b = 0;
      for (let i = lane; i < n; i += 4) {
        a += v[i];
        b += v[i] * v[i];
      }
      const m = n / 4;
      expect(Math.abs(a / m)).toBeLessThan(5 / Math.sqrt(m));
      expect(Math.abs(b / m - 1)).toBeLessThan(5 * Math.sqrt(2 / m));
    }
  });

  it('is deterministic: the same seed gives the same bits', async () => {
    const a = ops.randn(engine, [3, 777], 99);
    const b = ops.randn(engine, [3, 777], 99);
    expect(bits(await readF32(b))).toEqual(bits(await readF32(a)));
    a.dispose();
    b.dispose();
  });

  it('different seeds (also in the high key word) give different streams', async () => {
    const seeds = [0, 1, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER];
    const outs: Float32Array[] = [];
    for (const s of seeds) {
      const y = ops.randn(engine, [256], s);
      outs.push(await readF32(y));
      y.dispose();
    }
    for (let i = 0; i < outs.length; i++) {
      for (let j = i + 1; j < outs.length; j++) {
        let same = 0;
        for (let k = 0; k < 256; k++) if (outs[i][k] === outs[j][k]) same++;
        expect(same).toBeLessThan(3);
      }
    }
    expect(worstRel(outs[4], randnRefArray(256, Number.MAX_SAFE_INTEGER))).toBeLessThanOrEqual(1e-5);
  });

  it('randnItems: item i of the batch is the stream of seed + i (one dispatch; the key carries into the high word)', async () => {
    for (const [shape, seed, offset] of [[[3, 5, 7], 11, 0], [[4, 3], 2 ** 32 - 2, 3], [[2, 1, 9, 1], 2 ** 40 + 5, 2 ** 41 + 6]] as [number[], number, number][]) {
      const before = engine.stats().dispatches;
      const y = ops.randnItems(engine, shape, seed, { offset });
      expect(engine.stats().dispatches - before).toBe(1);
      expect(y.shape).toEqual(shape);
      const got = await readF32(y);
      y.dispose();
      const per = got.length / shape[0];
      for (let i = 0; i < shape[0]; i++) {
        const one = ops.randn(engine, [1, ...shape.slice(1)], seed + i, { offset });
        expect(bits(got.slice(i * per, (i + 1) * per)), `item ${i}`).toEqual(bits(await readF32(one)));
        one.dispose();
        expect(worstRel(got.subarray(i * per, (i + 1) * per), randnRefArray(per, seed + i, offset))).toBeLessThanOrEqual(1e-5);
      }
    }
    expect(() => ops.randnItems(engine, [3, 2], Number.MAX_SAFE_INTEGER - 1)).toThrow(/seed must be an integer/);
  });

  it('offset continues the stream (any offset, also past 2^32 calls)', async () => {
    const whole = ops.randn(engine, [103], 5);
    const w = await readF32(whole);
    for (const off of [1, 3, 4, 41, 100]) {
      const tail = ops.randn(engine, [103 - off], 5, { offset: off });
      expect(bits(await readF32(tail))).toEqual(bits(w.subarray(off)));
      tail.dispose();
    }
    const far = 2 ** 34 * 4 - 6; // crosses a carry into the counter's high word
    const y = ops.randn(engine, [13], 77, { offset: far });
    const got = await readF32(y);
    for (let i = 0; i < 13; i++) expect(Math.abs(got[i] - randnRef(77, far + i))).toBeLessThanOrEqual(1e-5 * (Math.abs(got[i]) + 1e-6));
    whole.dispose();
    y.dispose();
  });

  it('keeps shape and handles an empty shape', async () => {
    const y = ops.randn(engine, [2, 0, 3], 1);
    expect(y.shape).toEqual([2, 0, 3]);
    y.dispose();
    const s = ops.randn(engine, [], 1);
    expect(s.shape).toEqual([]);
    expect((await readF32(s))[0]).toBeCloseTo(randnRef(1, 0), 5);
    s.dispose();
  });

  it.skipIf(!engine.hasShaderF16)('f16 output', async () => {
    const y = ops.randn(engine, [999], 3, { dtype: 'f16' });
    expect(y.dtype).toBe('f16');
    expect(relL2(await readF32(y), randnRefArray(999, 3))).toBeLessThanOrEqual(1e-3);
    y.dispose();
  });

  it('rejects bad seeds, offsets, shapes and engines', async () => {
    for (const seed of [-1, 1.5, NaN, Infinity, 2 ** 53, '3' as unknown as number]) {
      expect(() => ops.randn(engine, [4], seed)).toThrow(/randn: seed must be an integer/);
      expect(() => ops.randnHost([4], seed)).toThrow(/randnHost: seed must be an integer/);
    }
    for (const offset of [-1, 0.5, 2 ** 53]) expect(() => ops.randn(engine, [4], 1, { offset })).toThrow(/randn: offset/);
    expect(() => ops.randn(engine, [2, -1], 1)).toThrow(/randn: invalid shape \[2, -1\]/);
    expect(() => ops.randn(engine, [2.5], 1)).toThrow(/randn: invalid shape/);
    expect(() => ops.randn(engine, [4], 1, { dtype: 'i32' })).toThrow(/randn: dtype/);
    expect(() => ops.randn(null as unknown as Engine, [4], 1)).toThrow(/randn.*Engine/);
    const e2 = await Engine.create();
    e2.destroy();
    expect(() => ops.randn(e2, [4], 1)).toThrow(/randn.*destroyed/);
  });

  it('reports its cost', () => {
    const c = ops.randnCost({ size: 4 * 64 * 64 });
    expect(c.bytes).toBe(4 * 4 * 64 * 64);
    expect(c.flops).toBeGreaterThan(0);
  });
});
