import { it } from 'vitest';
import { ops } from '../../src/index.js';
import { getEngine, randn, relL2 } from '../helpers.js';
import { groupNormRef } from '/work/main/test/ref/norm.js';
it('dbg', async () => {
  const e = await getEngine();
  for (const n of [1000, 100000, 270000]) {
    const shape = [n, 4];
    const xs = randn(n * 4, 5, 2);
    const x = e.tensor(xs, shape);
    try {
      const y = ops.groupNorm(x, null, null, { groups: 2, eps: 1e-5 });
      const got = await y.read();
      const ref = groupNormRef(xs, shape, 2, null, null, 1e-5);
      let bad = -1; for (let i = 0; i < got.length; i++) if (Math.abs(got[i]-ref[i]) > 1e-4) { bad = i; break; }
      console.log(n, relL2(got, ref), bad, got[bad], ref[bad]);
    } catch (err) { console.log(n, 'ERR', String(err), (err as Error).stack); }
  }
});
