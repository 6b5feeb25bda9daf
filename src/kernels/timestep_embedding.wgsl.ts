// Sinusoidal timestep embedding (diffusers' get_timestep_embedding), one thread per output element.
// The frequencies come from the host, rounded exactly as torch computes them in float32, and the
// argument t * freq is one f32 multiply, as torch does. sin/cos do their own range reduction: the
// arguments reach ~1000 rad, where built-in sin/cos are only loosely specified (and imprecise on
// some GPUs); this version uses nothing but f32 add/mul and is accurate to a few ulp everywhere.
import { flatMain } from './kit.wgsl.js';

/** f32 sin/cos built from add/mul only (shared with randn). */
export const sinCosWgsl = /* wgsl */ `
// pi/2 = P1 + P2 + P3 + P4 + P5, P1..P4 with <= 8 significant bits. The quadrant count k is split
// as kh + kl (kh a multiple of 256, |kl| < 256), so every product kh * Pi and kl * Pi is exact for
// |k| < 2^24 (|x| < ~2.6e7) and the subtractions x - kh*P1 - kl*P1 are exact (Sterbenz): the reduced
// argument is right to ~1 ulp however the compiler fuses or orders the multiply-adds.
const P1: f32 = 1.5703125;
const P2: f32 = 0.0004825592041015625;
const P3: f32 = 1.2665987014770508e-6;
const P4: f32 = 9.89530235528946e-10;
const P5: f32 = 2.5633440682570896e-12;
const TWO_OVER_PI: f32 = 0.6366197723675814;

// sin(x + q * pi/2) for |r| <= ~pi/4 (minimax polynomials, ~1 ulp in f32)
fn sinQuadrant(r: f32, q: i32) -> f32 {
  let r2 = r * r;
  let s = r + r * r2 * (-1.6666654611e-1 + r2 * (8.3321608736e-3 + r2 * -1.9515295891e-4));
  let c = 1.0 - 0.5 * r2 + r2 * r2 * (4.166664568298827e-2 + r2 * (-1.388731625493765e-3 + r2 * 2.443315711809948e-5));
  var v = s;
  if ((q & 1) != 0) { v = c; }
  if ((q & 2) != 0) { v = -v; }
  return v;
}

// sin(x) (shift 0) or cos(x) = sin(x + pi/2) (shift 1)
fn sinShifted(x: f32, shift: i32) -> f32 {
  let kf = round(x * TWO_OVER_PI);
  let kh = trunc(kf * 0.00390625) * 256.0;
  let kl = kf - kh;
  var r = x - kh * P1;
  r = r - kl * P1;
  r = r - kh * P2;
  r = r - kl * P2;
  r = r - kh * P3;
  r = r - kl * P3;
  r = r - kh * P4;
  r = r - kl * P4;
  r = r - kf * P5;
  return sinQuadrant(r, i32(kf) + shift);
}
`;

export const timestepEmbeddingWgsl = /* wgsl */ `
struct Params {
  n: u32,          // rows * dim
  dim: u32,
  halfDim: u32,
  tsStride: u32,   // 0 broadcasts one timestep to every row
  tsOffset: u32,   // index of row 0's timestep in ts
  tsI32: u32,      // ts holds i32 values (else f32 bits)
  flip: u32,       // cat[cos, sin] instead of cat[sin, cos]
  scale: f32,
}
@group(0) @binding(0) var<storage, read> freqs: array<f32>;
@group(0) @binding(1) var<storage, read> ts: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<uniform> p: Params;

${sinCosWgsl}
${flatMain(
  'p.n',
  `  let row = i / p.dim;
  let col = i - row * p.dim;
  if (col >= 2u * p.halfDim) { y[i] = T(0.0); return; }  // odd dim: zero pad column
  let second = col >= p.halfDim;
  let j = select(col, col - p.halfDim, second);
  let raw = ts[p.tsOffset + row * p.tsStride];
  let t = select(bitcast<f32>(raw), f32(bitcast<i32>(raw)), p.tsI32 != 0u);
  let x = (t * freqs[j]) * p.scale;
  // first half sin (cos when flipped), second half the other
  let useCos = second != (p.flip != 0u);
  y[i] = T(sinShifted(x, select(0, 1, useCos)));`,
)}`;
