// ops.classifierFreeGuidance(out, scale, { rescale }): out [2B, ...] = [uncond; cond] -> [B, ...].
// Cost: reads 2N, writes N elements, 3 FLOPs each; with rescale, reads 6N (three passes), ~12 FLOPs each.
import type { Tensor } from '../runtime/tensor.js';
import { guidanceRescaleWgsl, guidanceWgsl } from './guidance.wgsl.js';
import { engineOf, fail, floatDtype } from './check.js';
import { flatWorkgroups } from './kit.js';

const src = { name: 'classifierFreeGuidance', wgsl: guidanceWgsl };
const rescaleSrc = { name: 'classifierFreeGuidanceRescale', wgsl: guidanceRescaleWgsl };

export interface GuidanceOptions {
  /** diffusers' guidance_rescale (0 = off): blend of the guided output and the guided output rescaled
   * to the conditional output's std per batch item (std over all other axes, unbiased) */
  rescale?: number;
}

export function classifierFreeGuidance(x: Tensor, scale: number, opts: GuidanceOptions = {}): Tensor {
  const op = 'classifierFreeGuidance';
  const engine = engineOf(op, x);
  const dtype = floatDtype(op, x);
  if (x.rank < 1 || x.shape[0] % 2 !== 0) fail(op, 'the batch must hold an unconditional and a conditional half', [x]);
  if (!Number.isFinite(scale)) throw new Error(`${op}: guidance scale ${scale} is not finite`);
  const rescale = opts.rescale ?? 0;
  if (!Number.isFinite(rescale) || rescale < 0 || rescale > 1) throw new Error(`${op}: rescale must be in [0, 1], got ${rescale}`);
  const half = x.size / 2;
  const batch = x.shape[0] / 2;
  const y = engine.empty([batch, ...x.shape.slice(1)], dtype, op);
  if (rescale > 0 && half > 0) {
    const n = half / batch;
    if (n < 2) fail(op, 'rescaling needs at least 2 values per item (a standard deviation)', [x]);
    engine.dispatch(rescaleSrc, { bindings: { x, y }, uniforms: { n, batch, scale, rescale }, workgroups: [batch, 1, 1], dtype });
    return y;
  }
  engine.dispatch(src, { bindings: { x, y }, uniforms: { half, scale }, workgroups: flatWorkgroups(engine, half) });
  return y;
}
