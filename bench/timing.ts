// Timing rules shared by every benchmark: warm up, then take several samples; each sample runs the
// operation `reps` times back to back and ends with one read back of the last result, so the
// readback is amortised and both engines are measured the same way. We report the median.

export interface Timing {
  medianMs: number;
  minMs: number;
  samples: number;
  reps: number;
}

export async function timeIt(
  runOnce: () => Promise<void> | void,
  finish: () => Promise<void>,
  opts: { warmup?: number; samples?: number; targetMs?: number; maxReps?: number } = {},
): Promise<Timing> {
  const warmup = opts.warmup ?? 2;
  const samples = opts.samples ?? 5;
  const targetMs = opts.targetMs ?? 150;
  for (let i = 0; i < warmup; i++) {
    await runOnce();
    await finish();
  }
  const t0 = performance.now();
  await runOnce();
  await finish();
  const single = performance.now() - t0;
  const reps = Math.max(1, Math.min(opts.maxReps ?? 200, Math.ceil(targetMs / Math.max(single, 1e-3))));
  const times: number[] = [];
  for (let s = 0; s < samples; s++) {
    const a = performance.now();
    for (let r = 0; r < reps; r++) await runOnce();
    await finish();
    times.push((performance.now() - a) / reps);
  }
  times.sort((x, y) => x - y);
  return { medianMs: times[Math.floor(times.length / 2)], minMs: times[0], samples, reps };
}
