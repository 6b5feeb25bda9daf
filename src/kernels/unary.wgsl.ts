// Elementwise unary ops over a flat array. `T` is the storage type (f32/f16); math runs in f32.
// OP selects the function at pipeline creation (an override constant, so one module serves all).
import { activationExpr, erfWgsl, flatMain } from './kit.wgsl.js';

export const unaryWgsl = /* wgsl */ `
struct Params { n: u32, alpha: f32, beta: f32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
override OP: u32 = 0u;
${erfWgsl()}
fn apply(v: f32) -> f32 {
  switch OP {
    case 0u: { return ${activationExpr('silu', 'v')}; }
    case 1u: { return ${activationExpr('gelu', 'v')}; }
    case 2u: { return p.alpha * v + p.beta; }                       // scale: alpha * x + beta
    case 3u: { return ${activationExpr('quickGelu', 'v')}; }
    case 4u: { return max(v, 0.0); }                                // relu
    case 5u: { return p.alpha * tanh(v / p.alpha); }                // soft clamp to (-alpha, alpha) (TAESD)
    case 6u: { return exp(p.alpha * v + p.beta); }                  // exp(alpha * x + beta)
    default: { return v; }
  }
}
${flatMain('p.n', '  y[i] = T(apply(f32(x[i])));')}`;
