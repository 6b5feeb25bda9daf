// Row gather: out[i, :] = table[ids[i], :]. One thread per output element; ids out of range were
// rejected on the host when known there, and are clamped here so a bad id can never read outside.
import { flatMain } from './kit.wgsl.js';

export const embeddingWgsl = /* wgsl */ `
struct Params { rows: u32, dim: u32, tableRows: u32, }
@group(0) @binding(0) var<storage, read> table: array<T>;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<uniform> p: Params;
${flatMain(
  'p.rows * p.dim',
  `  let r = i / p.dim;
  let c = i - r * p.dim;
  let id = u32(clamp(ids[r], 0, i32(p.tableRows) - 1));
  y[i] = table[id * p.dim + c];`,
)}`;
