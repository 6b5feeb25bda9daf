// Counter-based Gaussian noise. Philox4x32-10 (Salmon et al., SC'11) keyed by the seed turns the
// counter floor(e / 4) of element e into four u32s, and Box-Muller turns each pair into two normals:
//   u = (x0 >> 8 + 1) / 2^24 in (0, 1],  turn = (x1 >> 8) / 2^24,  r = sqrt(-2 ln u),
//   (e0, e1) = (r cos(2 pi turn), r sin(2 pi turn)), likewise (e2, e3) from (x2, x3).
// The integer stream is exact everywhere. The float part avoids the loosely specified built-ins
// (log, sin, cos) so every GPU lands within a few ulp of the exact value: ln comes from the exponent
// (integer ops) plus an atanh series, and the angle's quadrant is taken from the integer bits, so
// the polynomial only ever sees |phi| <= pi/4. The grid's z index is the batch item: item i writes
// its own n elements from the stream of seed + i (the engine's seed rule), in the same dispatch.
import { sinCosWgsl } from './timestep_embedding.wgsl.js';

export const randnWgsl = /* wgsl */ `
struct Params {
  n: u32,          // elements to write per item
  lane0: u32,      // offset % 4: lanes of the first call that precede the output
  ctrLo: u32,      // floor(offset / 4), the first call's counter, as two words
  ctrHi: u32,
  key0: u32,       // seed of item 0, low and high words
  key1: u32,
  rowStride: u32,  // threads per grid row (grid split over y)
}
@group(0) @binding(0) var<storage, read_write> y: array<T>;
@group(0) @binding(1) var<uniform> p: Params;

${sinCosWgsl}

fn mulhi(a: u32, b: u32) -> u32 {
  // 32x32 -> high 32 bits from 16-bit halves (WGSL has no 64-bit integers)
  let a0 = a & 0xffffu; let a1 = a >> 16u;
  let b0 = b & 0xffffu; let b1 = b >> 16u;
  let p01 = a0 * b1;
  let p10 = a1 * b0;
  let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  return a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}

fn philox(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = ctr;
  var k = key;
  for (var r = 0u; r < 10u; r++) {
    if (r > 0u) { k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u); }
    let lo0 = 0xD2511F53u * c.x;
    let hi0 = mulhi(0xD2511F53u, c.x);
    let lo1 = 0xCD9E8D57u * c.z;
    let hi1 = mulhi(0xCD9E8D57u, c.z);
    c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }
  return c;
}

const LN2_HI: f32 = 0.69313812255859375;    // 17 significant bits: e * LN2_HI is exact
const LN2_LO: f32 = 9.0580006145e-06;
const SQRT2: f32 = 1.41421356237;
const QUARTER_STEP: f32 = 3.7450702829238e-7;  // (pi / 2) / 2^22

// sqrt(-2 ln u) for u = (a + 1) / 2^24, a < 2^24
fn radius(a: u32) -> f32 {
  let m1 = a + 1u;
  let e = firstLeadingBit(m1);
  var m = f32(m1) * bitcast<f32>((127u - e) << 23u);  // m1 / 2^e in [1, 2), exact
  var ex = i32(e) - 24;
  if (m > SQRT2) { m = m * 0.5; ex = ex + 1; }
  let s = (m - 1.0) / (m + 1.0);
  let s2 = s * s;
  let lnm = 2.0 * s + 2.0 * s * s2 * (0.33333333333 + s2 * (0.2 + s2 * (0.142857142857 + s2 * 0.111111111111)));
  let lnu = f32(ex) * LN2_HI + (f32(ex) * LN2_LO + lnm);
  return sqrt(max(-2.0 * lnu, 0.0));
}

// (cos, sin) of 2 pi t / 2^24, t < 2^24: quadrant from the top bits, |phi| <= pi/4 from the rest
fn cosSinTurn(t: u32) -> vec2<f32> {
  let h = t + 0x200000u;
  let q = i32((h >> 22u) & 3u);
  let s = i32(h & 0x3fffffu) - 0x200000;
  let phi = f32(s) * QUARTER_STEP;
  return vec2<f32>(sinQuadrant(phi, q + 1), sinQuadrant(phi, q));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  // item g.z: key seed + g.z, carried into the high word
  let k0 = p.key0 + g.z;
  let key = vec2<u32>(k0, p.key1 + select(0u, 1u, k0 < g.z));
  let out0 = g.z * p.n;
  let t = g.y * p.rowStride + g.x;
  // outputs 4t .. 4t+3 of the stream that starts at lane0, i.e. tensor indices 4t + l - lane0
  let base = t * 4u;
  if (base >= p.n + p.lane0) { return; }
  let lo = p.ctrLo + t;
  let hi = p.ctrHi + select(0u, 1u, lo < t);
  let x = philox(vec4<u32>(lo, hi, 0u, 0u), key);
  let r0 = radius(x.x >> 8u);
  let r1 = radius(x.z >> 8u);
  let a = cosSinTurn(x.y >> 8u) * r0;
  let b = cosSinTurn(x.w >> 8u) * r1;
  let v = array<f32, 4>(a.x, a.y, b.x, b.y);
  for (var l = 0u; l < 4u; l++) {
    let j = base + l;
    if (j >= p.lane0 && j - p.lane0 < p.n) { y[out0 + j - p.lane0] = T(v[l]); }
  }
}
`;
