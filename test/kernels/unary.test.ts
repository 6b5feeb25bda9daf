import { describe, it, expect, afterAll } from 'vitest';
import { ops } from '../../src/index.js';
import { getEngine, randArray, relL2, track, reportWorst } from '../helpers.js';

afterAll(() => reportWorst('unary'));

const erf = (x: number): number => {
  // float64 erf by its Maclaurin series (|x| < 3) or continued fraction tail: accurate to ~1e-15
  const ax = Math.abs(x);
  if (ax < 3) {
    let sum = 0;
    let term = x;
    for (let n = 0; n < 200; n++) {
      const t = term / (2 * n + 1);
      sum += t;
      term *= (-x * x) / (n + 1);
      if (Math.abs(t) < 1e-17) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (ax + f);
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f);
  return Math.sign(x) * (1 - erfc);
};

const cases: [string, (x: ReturnType<typeof ops.silu>) => ReturnType<typeof ops.silu>, (v: number) => number][] = [
  ['silu', (x) => ops.silu(x), (v) => v / (1 + Math.exp(-v))],
  ['gelu', (x) => ops.gelu(x), (v) => 0.5 * v * (1 + erf(v / Math.SQRT2))],
  ['quickGelu', (x) => ops.quickGelu(x), (v) => v / (1 + Math.exp(-1.702 * v))],
  ['relu', (x) => ops.relu(x), (v) => Math.max(v, 0)],
  ['scale', (x) => ops.scale(x, -1.7, 0.3), (v) => -1.7 * v + 0.3],
  ['softClamp', (x) => ops.softClamp(x, 3), (v) => 3 * Math.tanh(v / 3)],
  ['exp', (x) => ops.exp(x, 0.5, -0.1), (v) => Math.exp(0.5 * v - 0.1)],
];

describe('unary ops', () => {
  for (const [name, op, ref] of cases) {
    it(`${name} matches float64 on awkward sizes`, async () => {
      const e = await getEngine();
      for (const n of [1, 3, 255, 257, 1000, 4099]) {
        const data = randArray(n, n + name.length, -6, 6);
        const x = e.tensor(data, [n]);
        const y = op(x);
        const got = await y.read();
        expect(track(name, relL2(got, Array.from(data, ref)))).toBeLessThan(1e-5);
        x.dispose();
        y.dispose();
      }
    });
  }
  it('keeps the shape and rejects i32 and disposed tensors', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(30, 1), [2, 3, 5]);
    const y = ops.silu(x);
    expect(y.shape).toEqual([2, 3, 5]);
    y.dispose();
    const i = e.tensor(new Int32Array(4), [4]);
    expect(() => ops.gelu(i)).toThrow(/gelu.*i32/);
    x.dispose();
    expect(() => ops.relu(x)).toThrow(/relu.*dispose/);
    i.dispose();
  });
});
