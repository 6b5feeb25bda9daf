// ops.countNonFinite(x) -> i32 tensor [1]: how many entries are NaN or +-Inf (a cheap per-step
// health check for the samplers). Cost: reads N elements.
import type { Tensor } from '../runtime/tensor.js';
import { finiteWgsl } from './finite.wgsl.js';
import { engineOf, floatDtype, grid1d } from './check.js';

const src = { name: 'countNonFinite', wgsl: finiteWgsl };

export function countNonFinite(x: Tensor): Tensor {
  const op = 'countNonFinite';
  const engine = engineOf(op, x);
  const dtype = floatDtype(op, x);
  const count = engine.tensor(new Int32Array(1), [1]);
  const [gx, gy] = grid1d(engine, Math.ceil(x.size / 256));
  engine.dispatch(src, { bindings: { x, count }, uniforms: { n: x.size, rowStride: gx * 256, pad0: 0, pad1: 0 }, workgroups: [gx, gy], dtype });
  return count;
}
