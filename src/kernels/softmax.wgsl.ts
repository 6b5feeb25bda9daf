// Row softmax of scores [rows, Lk] (rows = batch * Lq), f32 max and sum whatever the storage type:
// one workgroup per row, a strided pass for the max, one for the sum, one to write. `causal` keeps
// key j of query row i only for j <= i (as ops.attention's causal mask); masked entries become 0.
export const softmaxWgsl = /* wgsl */ `
struct Params { rows: u32, len: u32, lq: u32, causal: u32, gx: u32, scale: f32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> red: array<f32, 256>;

fn reduce(v: f32, lid: u32, isMax: bool) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s / 2u) {
    if (lid < s) {
      if (isMax) { red[lid] = max(red[lid], red[lid + s]); } else { red[lid] = red[lid] + red[lid + s]; }
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * p.gx + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.len;
  var lim = p.len;
  if (p.causal != 0u) { lim = min(p.len, row % p.lq + 1u); }
  var m = -3.0e38;
  for (var j = lid; j < lim; j = j + 256u) { m = max(m, f32(x[base + j]) * p.scale); }
  let mx = reduce(m, lid, true);
  var s = 0.0;
  for (var j = lid; j < lim; j = j + 256u) { s = s + exp(f32(x[base + j]) * p.scale - mx); }
  let total = reduce(s, lid, false);
  for (var j = lid; j < p.len; j = j + 256u) {
    var e = 0.0;
    if (j < lim) { e = exp(f32(x[base + j]) * p.scale - mx) / total; }
    y[base + j] = T(e);
  }
}`;
