// ops.classifierFreeGuidance(out, scale): out [2B, ...] = [uncond; cond] -> [B, ...].
// Cost: reads 2N, writes N elements, 3 FLOPs each.
import type { Tensor } from '../runtime/tensor.js';
import { guidanceWgsl } from './guidance.wgsl.js';
import { engineOf, fail, floatDtype } from './check.js';
import { flatWorkgroups } from './kit.js';

const src = { name: 'classifierFreeGuidance', wgsl: guidanceWgsl };

export function classifierFreeGuidance(x: Tensor, scale: number): Tensor {
  const op = 'classifierFreeGuidance';
  const engine = engineOf(op, x);
  const dtype = floatDtype(op, x);
  if (x.rank < 1 || x.shape[0] % 2 !== 0) fail(op, 'the batch must hold an unconditional and a conditional half', [x]);
  if (!Number.isFinite(scale)) throw new Error(`${op}: guidance scale ${scale} is not finite`);
  const half = x.size / 2;
  const y = engine.empty([x.shape[0] / 2, ...x.shape.slice(1)], dtype, op);
  engine.dispatch(src, { bindings: { x, y }, uniforms: { half, scale }, workgroups: flatWorkgroups(engine, half) });
  return y;
}
