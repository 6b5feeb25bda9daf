// Deterministic weights from a key name, identical to tools/pyref/seeded.py: the reference models of
// the paper's release configs are built from these on both sides, so no weights are stored.
import { writeSafetensors } from '../src/runtime/safetensors.js';

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(s)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h >>> 0;
}

export function seededValues(key: string, shape: readonly number[]): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const kh = fnv1a(key);
  const out = new Float32Array(n);
  const fanIn = shape.length >= 2 ? n / shape[0] : 0;
  const s = shape.length >= 2 ? Math.sqrt(3 / fanIn) : 0;
  for (let i = 0; i < n; i++) {
    let h = (Math.imul(i, 0x9e3779b1) + kh) >>> 0;
    for (let r = 0; r < 2; r++) {
      h = (h ^ (h >>> 16)) >>> 0;
      h = Math.imul(h, 0x045d9f3b) >>> 0;
    }
    h = (h ^ (h >>> 16)) >>> 0;
    const u = h / 4294967296 - 0.5;
    out[i] = shape.length >= 2 ? u * 2 * s : shape.length === 1 && key.endsWith('weight') ? 1 + 0.4 * u : 0.4 * u;
  }
  return out;
}

export interface ManifestEntry {
  key: string;
  shape: number[];
  /** stored values for tensors that are not seeded (e.g. a scale_factor buffer) */
  values?: number[];
}

/** A safetensors file of seeded tensors with the manifest's names and shapes. */
export function seededSafetensors(entries: ManifestEntry[]): Uint8Array {
  const t: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const e of entries) t[e.key] = { dtype: 'F32', shape: e.shape, data: e.values ? Float32Array.from(e.values) : seededValues(e.key, e.shape) };
  return writeSafetensors(t);
}
