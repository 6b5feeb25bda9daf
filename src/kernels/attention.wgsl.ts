// Fused multi-head attention, FlashAttention-2 style: one workgroup owns BQ query rows of one
// (batch, head) and streams K/V through workgroup memory in tiles of BK keys, keeping a running
// row max and row sum (online softmax), so no Lq x Lk matrix ever exists.
//
// The tile shape is baked into the text (not override constants) because the per-thread register
// arrays (the S micro-tile and the O accumulator) must have const sizes in WGSL; the launcher
// caches one module per configuration.
//
// Thread layout: WG = RG * TPR threads. Thread t is lane j = t % TPR of row group rg = t / TPR and
// owns rows rg + i * RG (i < RM): rows of one thread are RG apart so that the row groups of a warp
// hit distinct banks when reading qs / ps. For S it owns the key columns j + m * TPR (m < CN), for
// O the vec4 channel slots j + k * TPR (k < NK). Row strides in vec4 units are odd (QS, KS) so the
// TPR lanes reading different key rows never share a bank.
//
// Softmax runs in base 2: Q is pre-scaled by scale * log2(e) when it is staged, so p = exp2(s - m).
// The row sum is kept per lane (each lane sums only the columns it owns) and reduced once at the
// end; only the row max needs a cross-lane reduction per tile.

export interface AttentionConfig {
  /** head dim */
  D: number;
  /** rows per thread */
  RM: number;
  /** row groups per workgroup */
  RG: number;
  /** lanes (threads) per row group */
  TPR: number;
  /** keys per tile */
  BK: number;
  /** K and V share one workgroup buffer (less memory; V waits in registers until K's reads are done) */
  kvShared: boolean;
  causal: boolean;
}

export interface AttentionLayout {
  D4: number;
  BQ: number;
  WG: number;
  CN: number;
  NK: number;
  QS: number;
  KS: number;
  /** vec4 elements of the K (and V) tile buffer */
  KV: number;
  PS: number;
  /** workgroup memory in bytes */
  bytes: number;
}

export function attentionLayout(c: AttentionConfig): AttentionLayout {
  const D4 = Math.ceil(c.D / 4);
  const BQ = c.RG * c.RM;
  const WG = c.RG * c.TPR;
  const CN = c.BK / c.TPR;
  const NK = Math.ceil(D4 / c.TPR);
  const QS = D4 | 1;
  const KS = D4 | 1;
  // The last lanes may read O slots up to NK * TPR - 1, past their key row (those results are
  // discarded); a short tail keeps the last row's reads inside the array.
  const KV = c.BK * KS + Math.max(0, NK * c.TPR - KS);
  const PS = c.BK + 1;
  const kvVec4 = (c.kvShared ? 1 : 2) * KV;
  const bytes = 16 * (BQ * QS + kvVec4) + 4 * (BQ * PS + BQ * c.TPR);
  return { D4, BQ, WG, CN, NK, QS, KS, KV, PS, bytes };
}

/** The bindings and the uniform block every fused-attention variant shares: the launcher
 * (attention.ts) writes one Params layout whichever variant runs. `elem` is the storage element
 * type (T or T4). */
export function attentionBindings(elem: string): string {
  return `struct Params { Lq: u32, Lk: u32, C: u32, heads: u32, qTiles: u32, total: u32, gx: u32, scale: f32, }
@group(0) @binding(0) var<storage, read> q: array<${elem}>;
@group(0) @binding(1) var<storage, read> k: array<${elem}>;
@group(0) @binding(2) var<storage, read> v: array<${elem}>;
@group(0) @binding(3) var<storage, read_write> o: array<${elem}>;
@group(0) @binding(4) var<uniform> p: Params;`;
}

export function attentionWgsl(c: AttentionConfig): string {
  const L = attentionLayout(c);
  const { D4, BQ, WG, CN, NK, QS, KS, KV, PS } = L;
  const { D, RM, RG, TPR, BK } = c;
  const ragged = D % 4 !== 0;
  const vs = c.kvShared ? 'ks' : 'vs';
  // dHead % 4 == 0 makes every row segment start on a vec4 boundary: bind the tensors as vec4s.
  const elem = ragged ? 'T' : 'T4';
  // A vec4 of channels d4*4 .. d4*4+3 of one row; the tail past D reads as zero.
  const load4 = (buf: string) =>
    ragged
      ? `vec4<f32>(ld_${buf}(base, d, 0u), ld_${buf}(base, d, 1u), ld_${buf}(base, d, 2u), ld_${buf}(base, d, 3u))`
      : `vec4<f32>(${buf}[base / 4u])`;
  const ldFn = (buf: string) =>
    ragged ? `fn ld_${buf}(base: u32, d: u32, e: u32) -> f32 { if (d + e < D) { return f32(${buf}[base + e]); } return 0.0; }\n` : '';
  // V with a shared K/V buffer: fetched from global memory with K (so both loads are in flight
  // together) into VN registers per thread, stored once K's reads are done.
  const VN = Math.ceil((BK * D4) / WG);
  const fetchV = `
    var vreg: array<vec4<f32>, ${VN}>;
    for (var u = 0u; u < ${VN}u; u++) {
      let idx = t + u * WG;
      let c = idx / D4;
      let d = (idx % D4) * 4u;
      let kj = k0 + c;
      var val = vec4<f32>(0.0);
      if (idx < BK * D4 && kj < p.Lk) {
        let base = (b * p.Lk + kj) * p.C + h * D + d;
        val = ${load4('v')};
      }
      vreg[u] = val;
    }`;
  const storeV = `
    for (var u = 0u; u < ${VN}u; u++) {
      let idx = t + u * WG;
      if (idx < BK * D4) { ks[(idx / D4) * KS + idx % D4] = vreg[u]; }
    }`;
  const stageKV = (buf: string, dst: string) => `
    for (var idx = t; idx < BK * D4; idx += WG) {
      let c = idx / D4;
      let d = (idx % D4) * 4u;
      let kj = k0 + c;
      var val = vec4<f32>(0.0);
      if (kj < p.Lk) {
        let base = (b * p.Lk + kj) * p.C + h * D + d;
        val = ${load4(buf)};
      }
      ${dst}[c * KS + idx % D4] = val;
    }`;

  return /* wgsl */ `
${attentionBindings(elem)}

const D = ${D}u;
const D4 = ${D4}u;
const RM = ${RM}u;
const RG = ${RG}u;
const TPR = ${TPR}u;
const BQ = ${BQ}u;
const BK = ${BK}u;
const WG = ${WG}u;
const CN = ${CN}u;
const NK = ${NK}u;
const QS = ${QS}u;
const KS = ${KS}u;
const PS = ${PS}u;
const CAUSAL = ${c.causal};
// A finite "minus infinity": exp2(NEG - NEG) stays finite, and masked entries are zeroed explicitly.
const NEG = -3.0e38;

var<workgroup> qs: array<vec4<f32>, ${BQ * QS}>;
var<workgroup> ks: array<vec4<f32>, ${KV}>;
${c.kvShared ? '' : `var<workgroup> vs: array<vec4<f32>, ${KV}>;`}
var<workgroup> ps: array<f32, ${BQ * PS}>;
var<workgroup> red: array<f32, ${BQ * TPR}>;

${ldFn('q')}${ldFn('k')}${ldFn('v')}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let wid = wg.y * p.gx + wg.x;
  if (wid >= p.total) { return; }
  let qt = wid % p.qTiles;
  let bh = wid / p.qTiles;
  let h = bh % p.heads;
  let b = bh / p.heads;
  let q0 = qt * BQ;
  let j = t % TPR;
  let rg = t / TPR;

  for (var idx = t; idx < BQ * D4; idx += WG) {
    let r = idx / D4;
    let d = (idx % D4) * 4u;
    let qi = q0 + r;
    var val = vec4<f32>(0.0);
    if (qi < p.Lq) {
      let base = (b * p.Lq + qi) * p.C + h * D + d;
      val = ${load4('q')} * p.scale;
    }
    qs[r * QS + idx % D4] = val;
  }

  var mrow: array<f32, RM>;
  var lrow: array<f32, RM>;
  var acc: array<vec4<f32>, ${RM * NK}>;
  for (var i = 0u; i < RM; i++) { mrow[i] = NEG; lrow[i] = 0.0; }
  for (var x = 0u; x < RM * NK; x++) { acc[x] = vec4<f32>(0.0); }

  // Causal: keys past the last query of this tile are masked for every row, so stop there.
  var kEnd = p.Lk;
  if (CAUSAL) { kEnd = min(p.Lk, q0 + BQ); }

  for (var k0 = 0u; k0 < kEnd; k0 += BK) {
    ${c.kvShared ? fetchV : stageKV('v', 'vs')}
    ${stageKV('k', 'ks')}
    workgroupBarrier();

    var s: array<f32, ${RM * CN}>;
    for (var x = 0u; x < RM * CN; x++) { s[x] = 0.0; }
    for (var d4 = 0u; d4 < D4; d4++) {
      var qv: array<vec4<f32>, RM>;
      for (var i = 0u; i < RM; i++) { qv[i] = qs[(rg + i * RG) * QS + d4]; }
      for (var m = 0u; m < CN; m++) {
        let kv = ks[(j + m * TPR) * KS + d4];
        for (var i = 0u; i < RM; i++) { s[i * CN + m] += dot(qv[i], kv); }
      }
    }

    for (var i = 0u; i < RM; i++) {
      let qi = q0 + rg + i * RG;
      var mx = NEG;
      for (var m = 0u; m < CN; m++) {
        let kj = k0 + j + m * TPR;
        var ok = kj < p.Lk;
        if (CAUSAL) { ok = ok && kj <= qi; }
        let sv = select(NEG, s[i * CN + m], ok);
        s[i * CN + m] = sv;
        mx = max(mx, sv);
      }
      red[(rg + i * RG) * TPR + j] = mx;
    }
    workgroupBarrier();

${c.kvShared ? `    // Every read of the K tile is done (the barrier above): V takes its place.${storeV}
` : ''}
    for (var i = 0u; i < RM; i++) {
      let row = rg + i * RG;
      var tmax = red[row * TPR];
      for (var jj = 1u; jj < TPR; jj++) { tmax = max(tmax, red[row * TPR + jj]); }
      let mnew = max(mrow[i], tmax);
      let alpha = exp2(mrow[i] - mnew);
      mrow[i] = mnew;
      var lsum = 0.0;
      for (var m = 0u; m < CN; m++) {
        let sv = s[i * CN + m];
        let pv = select(0.0, exp2(sv - mnew), sv > NEG);
        ps[row * PS + j + m * TPR] = pv;
        lsum += pv;
      }
      lrow[i] = lrow[i] * alpha + lsum;
      for (var x = 0u; x < NK; x++) { acc[i * NK + x] *= alpha; }
    }
    workgroupBarrier();

    for (var c = 0u; c < BK; c++) {
      var pr: array<f32, RM>;
      for (var i = 0u; i < RM; i++) { pr[i] = ps[(rg + i * RG) * PS + c]; }
      for (var x = 0u; x < NK; x++) {
        let vv = ${vs}[c * KS + j + x * TPR];
        for (var i = 0u; i < RM; i++) { acc[i * NK + x] += pr[i] * vv; }
      }
    }
    workgroupBarrier();
  }

  // Each lane summed only its own columns: combine the lanes' partial row sums.
  for (var i = 0u; i < RM; i++) { red[(rg + i * RG) * TPR + j] = lrow[i]; }
  workgroupBarrier();
  for (var i = 0u; i < RM; i++) {
    let row = rg + i * RG;
    let qi = q0 + row;
    if (qi >= p.Lq) { continue; }
    var l = 0.0;
    for (var jj = 0u; jj < TPR; jj++) { l += red[row * TPR + jj]; }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let base = (b * p.Lq + qi) * p.C + h * D;
    for (var x = 0u; x < NK; x++) {
      let d4 = j + x * TPR;
      if (d4 >= D4) { break; }
      let r = acc[i * NK + x] * inv;
${ragged ? `      for (var e = 0u; e < 4u; e++) {
        let d = d4 * 4u + e;
        if (d < D) { o[base + d] = T(r[e]); }
      }` : `      o[base / 4u + d4] = T4(r);`}
    }
  }
}
`;
}
