// The quick subset of the safetensors fuzzer (tools/fuzz_safetensors.ts; `npm run fuzz` runs
// 10,000 files): 300 mutated model files through SafetensorsFile and fromPretrained from an
// in-memory URL. Each loads with the bytes an independent reading of the format finds, or fails
// with a typed error naming the file; no GPU bytes stay in use; no file takes seconds.
import { describe, expect, it } from 'vitest';
import { MUTATORS, SEEDS, referenceRead, runFuzz } from '../tools/fuzz_safetensors.js';
import { getEngine } from './helpers.js';
import { writeSafetensors } from '../src/runtime/safetensors.js';

describe('safetensors fuzzer', () => {
  it('the reference reading agrees with the format on hand-made cases', () => {
    const ok = writeSafetensors({ a: { dtype: 'F32', shape: [2], data: [1, 2] }, b: { dtype: 'F16', shape: [0], data: [] } });
    expect(referenceRead(ok)?.size).toBe(2);
    const trailing = new Uint8Array(ok.length + 1);
    trailing.set(ok);
    expect(referenceRead(trailing)).toBeNull();
    expect(referenceRead(ok.subarray(0, ok.length - 1))).toBeNull();
  });

  it('300 mutated files: typed errors naming the file, exact bytes when loaded, no leaks', async () => {
    const engine = await getEngine();
    const before = engine.memory().inUseBytes;
    // the 9 MB UNet is left to the full run
    const report = await runFuzz({ files: 300, seed: 20261205, engine, seeds: SEEDS.filter((s) => s.name !== 'ldm-mnist-unet'), maxMsPerFile: 10_000 });
    expect(report.defects).toEqual([]);
    expect(report.files).toBe(300);
    // every mutator ran, and both outcomes happen (a fuzzer that only ever fails proves nothing)
    expect(Object.keys(report.mutators).sort()).toEqual(Object.keys(MUTATORS).sort());
    expect(report.outcomes['safetensors:loaded-identical']).toBeGreaterThan(0);
    expect(report.outcomes['safetensors:loaded-changed']).toBeGreaterThan(0);
    expect(report.outcomes['safetensors:SafetensorsError']).toBeGreaterThan(50);
    expect(report.outcomes['model:loaded']).toBeGreaterThan(0);
    expect(report.outcomes['model:WeightError']).toBeGreaterThan(0);
    expect(engine.memory().inUseBytes).toBe(before);
  }, 300_000);
});
