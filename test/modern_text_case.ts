// The modern_text reference cases (tools/pyref/gen_modern_text.py): weights are seeded from the names and
// shapes in case.json (test/seeded.ts), so only ids and outputs are stored.
import { loadCase, type FixtureCase, type HostTensor } from './fixture.js';
import { seededSafetensors, type ManifestEntry } from './seeded.js';

const cases = new Map<string, FixtureCase>();
export function modernCase(name: string): FixtureCase {
  if (!cases.has(name)) cases.set(name, loadCase(`modern_text/${name}`));
  return cases.get(name)!;
}

/** The case's seeded weights as safetensors bytes (nothing stored but names and shapes). */
export function caseWeights(c: FixtureCase): Uint8Array {
  return seededSafetensors(c.caseInfo.weights as ManifestEntry[]);
}

export function idsOf(h: HostTensor): number[][] {
  const [B, T] = h.shape;
  return Array.from({ length: B }, (_, b) => Array.from(h.data.subarray(b * T, (b + 1) * T)));
}

