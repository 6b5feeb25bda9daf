import { describe, it, expect, afterAll } from 'vitest';
import { Engine, ops } from '../../src/index.js';
import { getEngine, randArray, randn, relL2, track, reportWorst, readF32, rng } from '../helpers.js';
import { schedulerStepRef, addNoiseRef } from '../ref/scheduler_step.js';

afterAll(() => reportWorst('scheduler_step'));

const SHAPES: number[][] = [[1], [3], [4], [7], [2, 3, 5], [257], [2, 4, 8, 8], [1000], [4099], [1, 4, 33, 31]];

function coefs(n: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => (r() * 4 - 2));
}

describe('ops.schedulerStep', () => {
  let seed = 1;
  for (const shape of SHAPES) {
    for (const nIn of [1, 2, 3, 5]) {
      for (const outputs of [1, 2, 3] as const) {
        const clip = (nIn + outputs) % 2 === 0;
        it(`${shape.join('x')} inputs=${nIn} outputs=${outputs}${clip ? ' clip' : ''}`, async () => {
          const e = await getEngine();
          const n = shape.reduce((p, q) => p * q, 1);
          const host = Array.from({ length: nIn }, () => randn(n, seed++, 1.5));
          const ins = host.map((h) => e.tensor(h, shape));
          const a = coefs(nIn, seed++);
          const b = coefs(nIn + 1, seed++);
          const c = coefs(nIn + 1, seed++);
          const range: [number, number] | null = clip ? [-0.7, 0.9] : null;
          const res = ops.schedulerStep({ inputs: ins, x0: a, out: b, aux: outputs === 3 ? c : undefined, clip: range ?? undefined, outputs });
          expect(res.length).toBe(outputs);
          const ref = schedulerStepRef(host, a, b, outputs === 3 ? c : null, range);
          const got0 = await readF32(res[0]);
          expect(track('out', relL2(got0, ref.out))).toBeLessThanOrEqual(1e-5);
          if (outputs >= 2) expect(track('x0', relL2(await readF32(res[1]), ref.x0))).toBeLessThanOrEqual(1e-5);
          if (outputs === 3) expect(track('aux', relL2(await readF32(res[2]), ref.aux!))).toBeLessThanOrEqual(1e-5);
          for (const t of [...ins, ...res]) {
            expect(t.shape).toEqual(shape);
            t.dispose();
          }
        });
      }
    }
  }

  it('matches in f16 storage', async () => {
    const e = await getEngine();
    if (!e.hasShaderF16) return;
    const n = 515;
    const host = [randn(n, 91), randn(n, 92), randn(n, 93)];
    const ins = host.map((h) => e.tensor(h, [n], 'f16'));
    const back = await Promise.all(ins.map((t) => readF32(t)));
    const [out, x0] = ops.schedulerStep({ inputs: ins, x0: [1.1, -0.4, 0], out: [0.5, 0.2, 0.3, 0.7], clip: [-1, 1] });
    const ref = schedulerStepRef(back, [1.1, -0.4, 0], [0.5, 0.2, 0.3, 0.7], null, [-1, 1]);
    expect(out.dtype).toBe('f16');
    expect(relL2(await readF32(out), ref.out)).toBeLessThanOrEqual(2e-3);
    expect(relL2(await readF32(x0), ref.x0)).toBeLessThanOrEqual(2e-3);
    for (const t of [...ins, out, x0]) t.dispose();
  });

  it('rejects bad inputs with errors naming the op and shapes', async () => {
    const e = await getEngine();
    const a = e.tensor(randArray(12, 1), [3, 4]);
    const b = e.tensor(randArray(12, 2), [4, 3]);
    const i = e.tensor(Int32Array.from({ length: 12 }, (_, k) => k), [3, 4]);
    expect(() => ops.schedulerStep({ inputs: [], x0: [], out: [0] })).toThrow(/schedulerStep: takes 1 to 5/);
    expect(() => ops.schedulerStep({ inputs: [a, a, a, a, a, a], x0: [1, 1, 1, 1, 1, 1], out: [1, 1, 1, 1, 1, 1, 1] })).toThrow(/schedulerStep: takes 1 to 5/);
    expect(() => ops.schedulerStep({ inputs: [a, b], x0: [1, 1], out: [1, 1, 1] })).toThrow(/schedulerStep: inputs must have one shape.*\[3, 4\].*\[4, 3\]/);
    expect(() => ops.schedulerStep({ inputs: [a, i], x0: [1, 1], out: [1, 1, 1] })).toThrow(/schedulerStep.*i32/);
    expect(() => ops.schedulerStep({ inputs: [a], x0: [1, 2], out: [1, 1] })).toThrow(/schedulerStep: x0 needs 1 coefficients, got 2/);
    expect(() => ops.schedulerStep({ inputs: [a], x0: [1], out: [1] })).toThrow(/schedulerStep: out needs 2/);
    expect(() => ops.schedulerStep({ inputs: [a], x0: [NaN], out: [1, 1] })).toThrow(/finite/);
    expect(() => ops.schedulerStep({ inputs: [a], x0: [1], out: [1, 1], outputs: 3 })).toThrow(/aux needs 2/);
    expect(() => ops.schedulerStep({ inputs: [a], x0: [1], out: [1, 1], clip: [1, -1] })).toThrow(/clip range/);
    const e2 = await Engine.create();
    const other = e2.tensor(randArray(12, 3), [3, 4]);
    expect(() => ops.schedulerStep({ inputs: [a, other], x0: [1, 1], out: [1, 1, 1] })).toThrow(/schedulerStep: tensors belong to different engines/);
    e2.destroy();
    const d = e.tensor(randArray(12, 4), [3, 4]);
    d.dispose();
    expect(() => ops.schedulerStep({ inputs: [a, d], x0: [1, 1], out: [1, 1, 1] })).toThrow(/schedulerStep: a tensor was used after dispose/);
    a.dispose();
    b.dispose();
    i.dispose();
  });

  it('records one dispatch per call', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(64, 5), [64]);
    const y = e.tensor(randArray(64, 6), [64]);
    await e.sync();
    const before = e.stats().dispatches;
    const outs = ops.schedulerStep({ inputs: [x, y], x0: [1, -0.3], out: [0.9, 0.1, 0.2], aux: [0, 1, -1], outputs: 3 });
    expect(e.stats().dispatches - before).toBe(1);
    for (const t of [x, y, ...outs]) t.dispose();
  });

  it('reports its cost', () => {
    const c = ops.schedulerStepCost({ elements: 100, inputs: 3, outputs: 2 });
    expect(c.bytes).toBe(100 * 4 * 5);
    expect(c.flops).toBe(100 * 2 * 7);
  });
});

describe('ops.addNoise', () => {
  for (const shape of [[1, 5], [3, 7, 3], [2, 4, 8, 8], [4, 1025]]) {
    it(shape.join('x'), async () => {
      const e = await getEngine();
      const n = shape.reduce((p, q) => p * q, 1);
      const hx = randn(n, 11);
      const hn = randn(n, 12);
      const B = shape[0];
      const sig = coefs(B, 13).map(Math.abs);
      const sc = coefs(B, 14).map(Math.abs);
      const x = e.tensor(hx, shape);
      const nz = e.tensor(hn, shape);
      const y = ops.addNoise(x, nz, sig, sc);
      expect(track('add_noise', relL2(await readF32(y), addNoiseRef(hx, hn, sig, sc)))).toBeLessThanOrEqual(1e-6);
      for (const t of [x, nz, y]) t.dispose();
    });
  }

  it('rejects bad inputs', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(8, 1), [2, 4]);
    const m = e.tensor(randArray(8, 2), [4, 2]);
    expect(() => ops.addNoise(x, m, [1, 1], [1, 1])).toThrow(/addNoise: x0 and noise must have one shape.*\[2, 4\].*\[4, 2\]/);
    expect(() => ops.addNoise(x, x, [1], [1, 1])).toThrow(/addNoise: need one coefficient pair per batch item \(2\)/);
    m.dispose();
    expect(() => ops.addNoise(x, m, [1, 1], [1, 1])).toThrow(/addNoise: a tensor was used after dispose/);
    x.dispose();
  });
});
