// Elementwise unary ops over a flat array. `T` is the storage type (f32/f16); math runs in f32.
// OP selects the function at pipeline creation (an override constant, so one module serves all).
export const unaryWgsl = /* wgsl */ `
struct Params { n: u32, rowStride: u32, alpha: f32, beta: f32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
override OP: u32 = 0u;

fn erf_approx(v: f32) -> f32 {
  // Abramowitz-Stegun 7.1.26 is only ~1e-7 absolute; enough for f32 GELU.
  let s = sign(v);
  let a = abs(v);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return s * (1.0 - poly * exp(-a * a));
}

fn apply(v: f32) -> f32 {
  switch OP {
    case 0u: { return v / (1.0 + exp(-v)); }                       // silu
    case 1u: { return 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752)); } // gelu (erf)
    case 2u: { return p.alpha * v + p.beta; }                       // scale: alpha * x + beta
    case 3u: { return v / (1.0 + exp(-1.702 * v)); }               // quick_gelu
    case 4u: { return max(v, 0.0); }                                // relu
    case 5u: { return p.alpha * tanh(v / p.alpha); }                // soft clamp to (-alpha, alpha) (TAESD)
    case 6u: { return exp(p.alpha * v + p.beta); }                  // exp(alpha * x + beta)
    default: { return v; }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.y * p.rowStride + g.x;
  if (i >= p.n) { return; }
  y[i] = T(apply(f32(x[i])));
}
`;
