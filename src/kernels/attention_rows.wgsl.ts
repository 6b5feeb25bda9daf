// Fused attention, one query row per invocation ("rows" variants), for CPU adapters.
//
// SwiftShader and lavapipe run a workgroup's invocations as the lanes of SIMD vectors (4 or 8
// wide). The tiled kernel (attention.wgsl.ts) splits a row's keys across lanes, so its loads of
// Q and K tiles from workgroup memory have a different address in every lane (gathers), and it needs
// a cross-lane max and three barriers per key tile. Here every lane owns its own query row(s), kept
// in registers with its O accumulator, and all lanes walk the same keys in step: the K and V loads
// have one address for the whole SIMD vector (a scalar load and a broadcast on both drivers), the
// online softmax is per lane, and there is no workgroup memory and no barrier at all.
//
// Keys go in blocks of BK: the BK scores of a block are computed first (independent dot-product
// chains the CPU can overlap), then one max, one rescale of the accumulator per block (not per key)
// and the BK exp2/FMA updates. The head dim and block loops are unrolled here in the template, so
// q, o and the scores are plain registers (no dynamically indexed arrays).
//
// Registers grow with the head dim (2 * D floats per row, times RQ rows): the launcher offers these
// variants for head dims up to 64; on GPUs they are candidates only through the tuner.

import { attentionBindings } from './attention.wgsl.js';

export interface AttentionRowsConfig {
  /** head dim */
  D: number;
  /** invocations per workgroup (each owns RQ query rows) */
  W: number;
  /** query rows per invocation: rows t, t + W, ... (each K/V load then serves RQ rows) */
  RQ: 1 | 2;
  /** keys per block (one max and one rescale per block) */
  BK: number;
  causal: boolean;
}

export function attentionRowsBQ(c: AttentionRowsConfig): number {
  return c.W * c.RQ;
}

export function attentionRowsWgsl(c: AttentionRowsConfig): string {
  const { D, W, RQ, BK } = c;
  const D4 = Math.ceil(D / 4);
  const ragged = D % 4 !== 0;
  const BQ = W * RQ;
  const rows = [...Array(RQ).keys()];
  const dims = [...Array(D4).keys()];
  const keys = [...Array(BK).keys()];

  // vec4 d4 (channels 4*d4 .. 4*d4+3) of the row starting at element `base`; channels past D read 0.
  const ld = (buf: string, base: string, d4: number): string => {
    if (!ragged) return `vec4<f32>(${buf}[${base} / 4u + ${d4}u])`;
    const parts = [0, 1, 2, 3].map((e) => (4 * d4 + e < D ? `f32(${buf}[${base} + ${4 * d4 + e}u])` : '0.0'));
    return `vec4<f32>(${parts.join(', ')})`;
  };
  const lines: string[] = [];
  const emit = (s: string) => lines.push(s);

  for (const r of rows) {
    emit(`  let qi${r} = q0 + t${r ? ` + ${r * W}u` : ''};`);
    // rows past Lq compute on the last row (valid data) and are not stored
    emit(`  let qb${r} = (b * p.Lq + min(qi${r}, p.Lq - 1u)) * p.C + h * D;`);
    for (const d of dims) emit(`  let q${r}_${d} = ${ld('q', `qb${r}`, d)} * p.scale;`);
    emit(`  var m${r} = NEG;`);
    emit(`  var l${r} = 0.0;`);
    for (const d of dims) emit(`  var o${r}_${d} = vec4<f32>(0.0);`);
  }
  emit(`  let kvb = b * p.Lk * p.C + h * D;`);
  emit(`  var kEnd = p.Lk;`);
  // causal: keys past the tile's last query are masked for every row
  if (c.causal) emit(`  kEnd = min(p.Lk, q0 + BQ);`);
  // a block needs the mask when it reaches past Lk, or (causal) past the tile's first query
  emit(`  let maskFrom = ${c.causal ? 'min(p.Lk, q0 + 1u)' : 'p.Lk'};`);
  emit(`  for (var k0 = 0u; k0 < kEnd; k0 += BK) {`);
  // keys past Lk load the last key (valid data); their scores are masked below
  for (const j of keys) emit(`    let kb${j} = kvb + min(k0 + ${j}u, p.Lk - 1u) * p.C;`);
  for (const j of keys) {
    for (const r of rows) {
      const terms = dims.map((d) => `dot(q${r}_${d}, k${j}_${d})`);
      if (r === 0) for (const d of dims) emit(`    let k${j}_${d} = ${ld('k', `kb${j}`, d)};`);
      emit(`    var s${r}_${j} = ${terms.join(' + ')};`);
    }
  }
  emit(`    if (k0 + BK > maskFrom) {`);
  for (const j of keys) {
    for (const r of rows) {
      const ok = c.causal ? `k0 + ${j}u < p.Lk && k0 + ${j}u <= qi${r}` : `k0 + ${j}u < p.Lk`;
      emit(`      s${r}_${j} = select(NEG, s${r}_${j}, ${ok});`);
    }
  }
  emit(`    }`);
  for (const r of rows) {
    // Key 0 is never masked (Lk >= 1; causally every row sees key 0), so after the first block the
    // running max is finite and exp2(NEG - m) of a masked score is exactly 0.
    const tree = (xs: string[]): string => (xs.length === 1 ? xs[0] : `max(${tree(xs.slice(0, xs.length >> 1))}, ${tree(xs.slice(xs.length >> 1))})`);
    emit(`    let mn${r} = max(m${r}, ${tree(keys.map((j) => `s${r}_${j}`))});`);
    emit(`    let al${r} = exp2(m${r} - mn${r});`);
    emit(`    m${r} = mn${r};`);
    for (const j of keys) emit(`    let p${r}_${j} = exp2(s${r}_${j} - mn${r});`);
    emit(`    l${r} = l${r} * al${r} + ${keys.map((j) => `p${r}_${j}`).join(' + ')};`);
    for (const d of dims) emit(`    o${r}_${d} *= al${r};`);
  }
  for (const j of keys) {
    for (const d of dims) {
      emit(`    let v${j}_${d} = ${ld('v', `kb${j}`, d)};`);
      for (const r of rows) emit(`    o${r}_${d} += p${r}_${j} * v${j}_${d};`);
    }
  }
  emit(`  }`);
  for (const r of rows) {
    emit(`  if (qi${r} < p.Lq) {`);
    emit(`    let inv = 1.0 / l${r};`);
    emit(`    let ob = (b * p.Lq + qi${r}) * p.C + h * D;`);
    for (const d of dims) {
      if (!ragged) emit(`    o[ob / 4u + ${d}u] = T4(o${r}_${d} * inv);`);
      else for (let e = 0; e < 4 && 4 * d + e < D; e++) emit(`    o[ob + ${4 * d + e}u] = T(o${r}_${d}[${e}] * inv);`);
    }
    emit(`  }`);
  }

  const elem = ragged ? 'T' : 'T4';
  return /* wgsl */ `
${attentionBindings(elem)}

const D = ${D}u;
const BQ = ${BQ}u;
const BK = ${BK}u;
// A finite "minus infinity" for masked scores.
const NEG = -3.0e38;

@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t0: u32) {
  let wid = wg.y * p.gx + wg.x;
  if (wid >= p.total) { return; }
  let qt = wid % p.qTiles;
  let bh = wid / p.qTiles;
  let h = bh % p.heads;
  let b = bh / p.heads;
  let q0 = qt * BQ;
  let t = t0;
${lines.join('\n')}
}
`;
}
