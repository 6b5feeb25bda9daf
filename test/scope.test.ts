// engine.scope / engine.keep: what a scope frees, what it hands back, nesting, failures, and two
// async scopes interleaving without taking each other's tensors.
import { describe, expect, it } from 'vitest';
import { ops, type Engine, type Tensor } from '../src/index.js';
import { getEngine, randArray } from './helpers.js';

const inUse = (e: Engine) => e.memory().inUseBytes;
const tick = () => new Promise((r) => setTimeout(r, 1));

function input(engine: Engine, seed: number, shape = [2, 3, 5]): Tensor {
  return engine.tensor(randArray(shape.reduce((a, b) => a * b, 1), seed), shape);
}

describe('engine.scope', () => {
  it('frees intermediates, keeps the returned tensor and the values right', async () => {
    const engine = await getEngine();
    const x = input(engine, 1);
    const base = inUse(engine);
    const y = engine.scope(() => {
      const a = ops.scale(x, 2, 1);
      const b = ops.silu(a);
      return ops.add(b, a);
    });
    // only y remains of what the scope made: one 120-byte tensor in a 256-byte pool buffer
    expect(inUse(engine) - base).toBe(256);
    const xs = (await x.read()) as Float32Array;
    const ys = (await y.read()) as Float32Array;
    for (let i = 0; i < xs.length; i++) {
      const a = 2 * xs[i] + 1;
      expect(ys[i]).toBeCloseTo(a / (1 + Math.exp(-a)) + a, 5);
    }
    y.dispose();
    expect(inUse(engine)).toBe(base);
    expect(x.disposed).toBe(false); // inputs made outside are not the scope's
    x.dispose();
  });

  it('hands back tensors nested in arrays and objects, frees the rest, and keep() exempts one', async () => {
    const engine = await getEngine();
    const x = input(engine, 2);
    const base = inUse(engine);
    let kept: Tensor | null = null;
    let dropped: Tensor | null = null;
    const r = engine.scope(() => {
      const a = ops.scale(x, 3);
      dropped = ops.scale(x, 4);
      kept = engine.keep(ops.scale(x, 5));
      return { list: [a, { deep: ops.scale(a, 2) }], n: 7, same: x };
    });
    expect(dropped!.disposed).toBe(true);
    expect(kept!.disposed).toBe(false);
    expect(r.n).toBe(7);
    expect(r.same).toBe(x);
    expect((r.list[0] as Tensor).disposed).toBe(false);
    const deep = (r.list[1] as { deep: Tensor }).deep;
    expect(Array.from(await deep.read()).slice(0, 3)).toEqual(Array.from(await x.read()).slice(0, 3).map((v) => Math.fround(Math.fround(v * 3) * 2)));
    [r.list[0] as Tensor, deep, kept!].forEach((t) => t.dispose());
    expect(inUse(engine)).toBe(base);
    x.dispose();
  });

  it('nested scopes: the inner result belongs to the outer scope; a throw frees everything and rethrows', async () => {
    const engine = await getEngine();
    const x = input(engine, 3);
    const base = inUse(engine);
    let inner: Tensor | null = null;
    const out = engine.scope(() => {
      inner = engine.scope(() => ops.silu(ops.scale(x, 2)));
      expect(inner.disposed).toBe(false);
      return ops.add(inner, x);
    });
    expect(inner!.disposed).toBe(true); // the outer scope did not return it
    out.dispose();
    expect(inUse(engine)).toBe(base);

    const err = new Error('boom');
    let made: Tensor[] = [];
    expect(() =>
      engine.scope(() => {
        made.push(ops.scale(x, 2));
        engine.scope(() => {
          made.push(ops.scale(x, 3));
          throw err;
        });
      }),
    ).toThrow(err);
    expect(made.every((t) => t.disposed)).toBe(true);
    expect(inUse(engine)).toBe(base);
    // a failing kernel call (bad shapes) inside a scope: same
    made = [];
    expect(() =>
      engine.scope(() => {
        made.push(ops.scale(x, 2));
        return ops.add(made[0], input(engine, 9, [4, 4]));
      }),
    ).toThrow();
    expect(made[0].disposed).toBe(true);
    expect(inUse(engine)).toBe(base);
    x.dispose();
  });

  it('views made by reshape are scoped like tensors; returning a view keeps the buffer alive', async () => {
    const engine = await getEngine();
    const x = input(engine, 4);
    const base = inUse(engine);
    const v = engine.scope(() => ops.scale(x, 2).reshape([30]));
    expect(v.shape).toEqual([30]);
    const want = Array.from(await x.read()).map((a) => Math.fround(a * 2));
    expect(Array.from(await v.read())).toEqual(want);
    v.dispose();
    expect(inUse(engine)).toBe(base);
    x.dispose();
  });

  it('async scopes: results after awaits, failures after awaits, and two interleaved scopes keep their own tensors', async () => {
    const engine = await getEngine();
    const x = input(engine, 5);
    const base = inUse(engine);
    const made: Record<number, Tensor[]> = {};
    const run = (k: number, fail: boolean) =>
      engine.scope(async (s) => {
        let h = s.run(() => ops.scale(x, k));
        const mine: Tensor[] = (made[k] = [h]);
        for (let i = 0; i < 3; i++) {
          await tick();
          h = s.run(() => ops.add(h, x));
          mine.push(h);
          // a child async scope: its result comes back to s
          const c = await s.scope(async (c2) => {
            await tick();
            return c2.run(() => ops.scale(h, 1));
          });
          mine.push(c);
        }
        if (fail) throw new Error(`fail ${k}`);
        return { h };
      });
    const [a, b] = await Promise.allSettled([run(2, false), run(3, true)]);
    expect(b.status).toBe('rejected');
    expect(a.status).toBe('fulfilled');
    const ra = (a as PromiseFulfilledResult<{ h: Tensor }>).value;
    // a's scope freed everything but its result, and b's failure did not touch a's tensors
    expect(ra.h.disposed).toBe(false);
    expect(made[2].length).toBe(7);
    expect(made[2].filter((t) => !t.disposed)).toEqual([ra.h]);
    expect(made[3].every((t) => t.disposed)).toBe(true);
    const xs = await x.read();
    const hs = await ra.h.read();
    for (let i = 0; i < xs.length; i++) expect(hs[i]).toBeCloseTo(5 * xs[i], 5);
    ra.h.dispose();
    expect(inUse(engine)).toBe(base);
    // a synchronous section may not be async
    await expect(engine.scope(async (s) => s.run(() => Promise.resolve(1) as unknown as number))).rejects.toThrow(/synchronous/);
    x.dispose();
  });

  it('tensors made outside any scope are not tracked', async () => {
    const engine = await getEngine();
    const x = input(engine, 6);
    const base = inUse(engine);
    let outside: Tensor | null = null;
    await engine.scope(async () => {
      await tick();
      outside = ops.scale(x, 2); // after an await, no scope is current: the caller owns it
    });
    expect(outside!.disposed).toBe(false);
    outside!.dispose();
    expect(inUse(engine)).toBe(base);
    x.dispose();
  });
});
