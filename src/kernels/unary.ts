import type { Tensor } from '../runtime/tensor.js';
import { unaryWgsl } from './unary.wgsl.js';
import { engineOf, floatDtype, grid1d } from './check.js';
import { FLAT_WG } from './kit.wgsl.js';

const src = { name: 'unary', wgsl: unaryWgsl };
const OPS = { silu: 0, gelu: 1, scale: 2, quickGelu: 3, relu: 4, softClamp: 5, exp: 6 } as const;

function unary(op: keyof typeof OPS, x: Tensor, alpha = 1, beta = 0): Tensor {
  const engine = engineOf(op, x);
  const dtype = floatDtype(op, x);
  const y = engine.empty(x.shape, dtype, op);
  engine.dispatch(src, {
    bindings: { x, y },
    uniforms: { n: x.size, alpha, beta },
    workgroups: grid1d(engine, Math.ceil(x.size / FLAT_WG)),
    constants: { OP: OPS[op] },
  });
  return y;
}

/** x * sigmoid(x) */
export const silu = (x: Tensor): Tensor => unary('silu', x);
/** exact (erf) GELU */
export const gelu = (x: Tensor): Tensor => unary('gelu', x);
/** x * sigmoid(1.702 x), CLIP's activation */
export const quickGelu = (x: Tensor): Tensor => unary('quickGelu', x);
/** alpha * x + beta */
export const scale = (x: Tensor, alpha: number, beta = 0): Tensor => unary('scale', x, alpha, beta);
/** max(x, 0) */
export const relu = (x: Tensor): Tensor => unary('relu', x);
/** limit * tanh(x / limit): TAESD's smooth clamp of latents */
export const softClamp = (x: Tensor, limit: number): Tensor => unary('softClamp', x, limit);
/** exp(alpha * x + beta) */
export const exp = (x: Tensor, alpha = 1, beta = 0): Tensor => unary('exp', x, alpha, beta);
