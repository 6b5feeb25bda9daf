// The modern UNet cases of test/fixtures/modern (tools/pyref/gen_modern_unets.py): config, io and a
// manifest of state-dict keys whose weights are seeded from their names (test/seeded.ts).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadCase, FIXTURES, type FixtureCase } from './fixture.js';
import { seededSafetensors, type ManifestEntry } from './seeded.js';

export interface ModernCase {
  c: FixtureCase;
  /** original: the tensor's Stability (sgm) single-file key, where the generator wrote one */
  manifest: (ManifestEntry & { original?: string })[];
  /** the weights as a safetensors file with diffusers names */
  bytes: Uint8Array;
}

export function loadModern(name: string): ModernCase {
  const c = loadCase(`modern/${name}`);
  const manifest = (JSON.parse(readFileSync(join(FIXTURES, 'modern', name, 'manifest.json'), 'utf8')) as { tensors: ModernCase['manifest'] }).tensors;
  return { c, manifest, bytes: seededSafetensors(manifest) };
}
