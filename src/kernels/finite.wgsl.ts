// Counts NaN and Inf entries. Works on the bit pattern (exponent all ones) because a compiler may
// fold x != x away; f16 values are widened first, which keeps Inf/NaN.
export const finiteWgsl = /* wgsl */ `
struct Params { n: u32, rowStride: u32, pad0: u32, pad1: u32, }
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> count: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> local: atomic<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = g.y * p.rowStride + g.x;
  if (i < p.n) {
    let bits = bitcast<u32>(f32(x[i]));
    if ((bits & 0x7f800000u) == 0x7f800000u) { atomicAdd(&local, 1u); }
  }
  workgroupBarrier();
  if (li == 0u) {
    let c = atomicLoad(&local);
    if (c > 0u) { atomicAdd(&count[0], c); }
  }
}
`;
