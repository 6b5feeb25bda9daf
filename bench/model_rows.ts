// Whole-model rows (issue #11 §4-5): three fixed models with fixed inputs, each checked against a
// stored diffusers output (bench/refs, made by tools/pyref/gen_bench_refs.py), then timed, with the
// whole model's GFLOP/s (the sum of the ops' own cost functions over one forward, counted through
// the engine's cost sink), dispatches per forward, and the top kernels' shares of GPU time from
// engine.profile. A row whose output disagrees with the reference (rel L2 over 1e-3 in f32, 1e-2 in
// f16) is marked FAIL and makes the bench exit non-zero.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { autotune, UNet2DModel, UNet2DConditionModel, VQModel, type Engine, type Tensor } from '../src/index.js';
import { SafetensorsFile } from '../src/runtime/safetensors.js';
import { seededSafetensors, seededValues } from '../test/seeded.js';
import { timeIt } from './timing.js';
import { ortRow, type OrtResult } from './ort.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');

export interface KernelShare {
  kernel: string;
  count: number;
  share: number;
}

export interface ModelRowResult {
  name: string;
  /** row id (bench/refs and bench/onnx names) */
  id: string;
  dtype: 'f32' | 'f16';
  msPerCall: number;
  /** the ops' cost functions summed over one call */
  gflopPerCall: number;
  gflops: number;
  dispatches: number;
  /** ||ours - reference|| / ||reference|| (diffusers, CPU, f32) */
  relL2: number;
  tolerance: number;
  ok: boolean;
  /** top kernels by GPU time (engine.profile with timestamp queries), share of the profiled total */
  top: KernelShare[];
  profileMethod: string;
  /** wall time of the profiled call and the sum of its kernels' GPU times (their gap: per-dispatch
   * overhead, which profiling's one pass per dispatch inflates) */
  profileWallMs: number;
  kernelMs: number;
  peakBytes: number;
  /** ONNX Runtime Web on the same adapter, or why it did not run */
  ort?: OrtResult;
}

interface Case {
  id: string;
  name: string;
  /** loads the model and inputs; run() records one call and returns its output */
  setup(engine: Engine): Promise<{ run: () => Tensor; dispose: () => void }>;
}

interface Refs {
  file: SafetensorsFile;
  meta: { rows: Record<string, { timestep: number; class_labels?: number[]; config?: Record<string, unknown>; inputs?: Record<string, [string, number[]]>; keys?: Record<string, number[]> }> };
}

let refsCache: Refs | null = null;
function refs(): Refs {
  refsCache ??= {
    file: SafetensorsFile.fromBytes(readFileSync(join(here, 'refs/model_rows.safetensors')), 'bench/refs/model_rows.safetensors'),
    meta: JSON.parse(readFileSync(join(here, 'refs/model_rows.json'), 'utf8')),
  };
  return refsCache;
}

async function refTensor(engine: Engine, name: string, dtype: 'f32' | 'f16'): Promise<Tensor> {
  const f = refs().file;
  return engine.tensor(await f.f32(name), f.info(name)!.shape, dtype);
}

/** seeded_input of tools/pyref/gen_bench_refs.py: seeded values scaled to unit variance. */
export function seededInput(key: string, shape: readonly number[]): Float32Array {
  const v = seededValues(key, shape);
  const s = Math.sqrt(v.length / shape[0]);
  return v.map((x) => x * s);
}

export const MODEL_CASES: Case[] = [
  {
    id: 'mnist_unet',
    name: 'ldm-mnist UNet2DModel, CFG batch 20, 8x8x4, t=501',
    async setup(engine) {
      const unet = await UNet2DModel.fromPretrained(engine, join(root, 'models/ldm-mnist/unet'));
      const m = refs().meta.rows.mnist_unet;
      const x = await refTensor(engine, 'mnist_unet.input', unet.dtype as 'f32' | 'f16');
      return { run: () => unet.forward(x, m.timestep, { classLabels: m.class_labels }), dispose: () => (x.dispose(), unet.dispose()) };
    },
  },
  {
    id: 'mnist_vq',
    name: 'ldm-mnist VQModel decode, batch 10, 4x8x8 -> 1x32x32',
    async setup(engine) {
      const vq = await VQModel.fromPretrained(engine, join(root, 'models/ldm-mnist/vqvae'));
      const h = await refTensor(engine, 'mnist_vq.input', vq.dtype as 'f32' | 'f16');
      return { run: () => vq.decode(h), dispose: () => (h.dispose(), vq.dispose()) };
    },
  },
  {
    id: 'sd_unet',
    name: 'SD-shaped UNet2DConditionModel 32/64/128/128, batch 2, 32x32x4, 77x96 context',
    async setup(engine) {
      const m = refs().meta.rows.sd_unet;
      const weights = seededSafetensors(Object.entries(m.keys!).map(([key, shape]) => ({ key, shape })));
      const unet = await UNet2DConditionModel.fromConfig(engine, m.config!, weights);
      const dt = unet.dtype as 'f32' | 'f16';
      const input = (k: string) => engine.tensor(seededInput(m.inputs![k][0], m.inputs![k][1]), m.inputs![k][1], dt);
      const x = input('sample');
      const ctx = input('encoder_hidden_states');
      return { run: () => unet.forward(x, m.timestep, { encoderHiddenStates: ctx }), dispose: () => (x.dispose(), ctx.dispose(), unet.dispose()) };
    },
  },
];

function relL2(a: Float32Array, ref: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = a[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return a.length === ref.length ? Math.sqrt(num / den) : Infinity;
}

/** The cost sink's sum over one recorded call, and the dispatches it recorded. */
function countForward(engine: Engine, run: () => Tensor): { flops: number; dispatches: number; out: Tensor } {
  let flops = 0;
  const d0 = engine.stats().dispatches;
  engine.costSink = (_op, f) => {
    flops += f;
  };
  try {
    const out = run();
    return { flops, dispatches: engine.stats().dispatches - d0, out };
  } finally {
    engine.costSink = null;
  }
}

export async function benchModelRows(engine: Engine, opts: { log?: (s: string) => void; filter?: string; tune?: boolean; ort?: boolean } = {}): Promise<ModelRowResult[]> {
  const log = opts.log ?? console.log;
  const dtype = engine.f16 ? 'f16' : 'f32';
  const tolerance = dtype === 'f16' ? 1e-2 : 1e-3;
  const rows: ModelRowResult[] = [];
  for (const c of MODEL_CASES) {
    if (opts.filter && !c.id.includes(opts.filter) && !c.name.includes(opts.filter)) continue;
    const { run, dispose } = await c.setup(engine);
    try {
      const ref = await refs().file.f32(`${c.id}.output`);
      const check = async () => {
        const y = run();
        const v = (await y.read()) as Float32Array;
        y.dispose();
        return relL2(v, ref);
      };
      let err = await check(); // also compiles every pipeline and notes the GEMM problems for the tuner
      if (opts.tune !== false) {
        await autotune(engine, { persist: false });
        err = Math.max(err, await check()); // the tuned tiles must give the same answer
      }
      const counted = countForward(engine, run);
      await counted.out.read();
      counted.out.dispose();
      let last: Tensor | null = null;
      engine.resetPeakMemory();
      const t = await timeIt(
        () => {
          const y = run();
          last?.dispose();
          last = y;
        },
        async () => {
          await last!.read();
        },
        { warmup: 1, samples: 3, targetMs: 1 },
      );
      (last as Tensor | null)?.dispose();
      const peakBytes = engine.memory().peakInUseBytes;
      const prof = await engine.profile(async () => {
        const y = run();
        await y.read();
        y.dispose();
      });
      const total = prof.kernels.reduce((s, k) => s + (k.ms ?? 0), 0);
      const top = prof.kernels.slice(0, 5).map((k) => ({ kernel: k.name, count: k.count, share: total > 0 ? (k.ms ?? 0) / total : 0 }));
      const ok = err <= tolerance;
      const row: ModelRowResult = {
        name: c.name,
        id: c.id,
        dtype,
        msPerCall: t.medianMs,
        gflopPerCall: counted.flops / 1e9,
        gflops: counted.flops / 1e6 / t.medianMs,
        dispatches: counted.dispatches,
        relL2: err,
        tolerance,
        ok,
        top,
        profileMethod: prof.method,
        profileWallMs: prof.wallMs,
        kernelMs: total,
        peakBytes,
      };
      // LDM_BENCH_ORT=0 skips ONNX Runtime Web; LDM_BENCH_ORT=id,id runs it for those rows only
      const ortEnv = process.env.LDM_BENCH_ORT;
      const ortOn = opts.ort !== false && ortEnv !== '0' && (!ortEnv || ortEnv === '1' || ortEnv.split(',').includes(c.id));
      if (!ortOn) row.ort = { note: 'ORT Web: skipped (LDM_BENCH_ORT)' };
      else {
        row.ort = await ortRow(engine, c.id, dtype, t.medianMs, log);
        if (row.ort.ms !== undefined) log(`    ORT Web (${row.ort.ep}, ${row.ort.adapter ?? 'CPU'}): ${row.ort.ms.toFixed(1)} ms, rel L2 ${row.ort.relL2?.toExponential(2)}, ORT / ours ${row.ort.speedup?.toFixed(2)}`);
        else log(`    ${row.ort.note}`);
      }
      rows.push(row);
      log(
        `${c.name.padEnd(80)} ${t.medianMs.toFixed(1).padStart(9)} ms ${row.gflops.toFixed(2).padStart(7)} GFLOP/s ${String(row.dispatches).padStart(5)} dispatches  rel L2 ${err.toExponential(2)} ${ok ? 'ok' : `FAIL (> ${tolerance})`}`,
      );
      log(`    profiled: wall ${prof.wallMs.toFixed(0)} ms, kernels ${total.toFixed(0)} ms; top kernels: ${top.map((k) => `${k.kernel} x${k.count} ${(100 * k.share).toFixed(1)}%`).join('; ')}`);
      if (!ok) {
        log(`ERROR: ${c.name} (${dtype}) disagrees with the diffusers reference: rel L2 ${err.toExponential(3)} > ${tolerance}`);
        process.exitCode = 1;
      }
    } finally {
      dispose();
    }
  }
  return rows;
}
