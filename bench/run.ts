// Headless benchmarks in Node (Dawn). Usage: npm run bench -- [--suite ops,modelrows,models] [--no-tfjs] [--quick]
//   [--dtype f32,f16] [--adapter hardware|lavapipe|swiftshader]
// Writes bench/results/<adapter>-<suite>[-f16].json and regenerates bench/RESULTS.md from every JSON there.
import { parseArgs } from 'node:util';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine, type NodeAdapterKind } from '../src/index.js';
import { benchOps, selectOpCases, type OpRow } from './ops.js';
import { writeResultsMarkdown } from './report.js';

const here = dirname(fileURLToPath(import.meta.url));

export async function loadTfjs(): Promise<typeof import('@tensorflow/tfjs-core') | null> {
  try {
    const g = globalThis as { navigator?: { gpu?: GPU } };
    if (!g.navigator?.gpu) {
      // TF.js looks for navigator.gpu; give it a Dawn instance of its own on the same ICD/adapter.
      const { create } = (await import('webgpu')) as unknown as { create: (f: string[]) => GPU };
      const gpu = create([]);
      Object.defineProperty(globalThis, 'navigator', { value: { ...(g.navigator ?? {}), gpu }, configurable: true, writable: true });
    }
    const tf = await import('@tensorflow/tfjs-core');
    await import('@tensorflow/tfjs-backend-webgpu');
    if (!(await tf.setBackend('webgpu'))) throw new Error('setBackend(webgpu) failed');
    await tf.ready();
    return tf;
  } catch (e) {
    console.warn(`TF.js WebGPU backend unavailable: ${(e as Error).message}`);
    return null;
  }
}

export function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);
}

export interface BenchOptions {
  /** 'ops', 'modelrows' (the three checked whole-model rows) and/or 'models' */
  suite: string[];
  /** compare with TF.js's WebGPU backend (ops) */
  tfjs: boolean;
  quick: boolean;
  /** only the op cases whose name contains this */
  filter?: string;
  /** folder for the JSON results (default bench/results) */
  out?: string;
  log?: (line: string) => void;
  /** storage dtypes to run, each on its own engine (default ['f32']); f16 needs shader-f16 (lavapipe, GPUs) */
  dtypes?: ('f32' | 'f16')[];
  /** force an adapter (else LDM_WEBGPU_ADAPTER, else hardware -> lavapipe -> SwiftShader) */
  adapter?: NodeAdapterKind;
}

export function parseBenchOptions(args: string[]): BenchOptions {
  const { values } = parseArgs({
    args,
    options: {
      suite: { type: 'string', default: 'ops,modelrows' },
      'no-tfjs': { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      filter: { type: 'string' },
      out: { type: 'string', default: join(here, 'results') },
      dtype: { type: 'string', default: 'f32' },
      adapter: { type: 'string' },
    },
  });
  const dtypes = values.dtype!.split(',').map((d) => d.trim());
  for (const d of dtypes) if (d !== 'f32' && d !== 'f16') throw new Error(`--dtype: '${d}' is not f32 or f16`);
  const adapter = values.adapter as NodeAdapterKind | undefined;
  if (adapter !== undefined && !['hardware', 'lavapipe', 'swiftshader'].includes(adapter)) throw new Error(`--adapter: '${adapter}' is not hardware, lavapipe or swiftshader`);
  return { suite: values.suite!.split(','), tfjs: !values['no-tfjs'], quick: values.quick!, filter: values.filter, out: values.out, dtypes: dtypes as ('f32' | 'f16')[], adapter };
}

/** Runs the suites in Node (Dawn), writes <out>/<adapter>-<suite>.json and regenerates bench/RESULTS.md. */
export async function runBench(opts: BenchOptions): Promise<{ ops?: OpRow[]; models?: unknown[] }> {
  const log = opts.log ?? console.log;
  const outDir = opts.out ?? join(here, 'results');
  const suites = opts.suite;
  mkdirSync(outDir, { recursive: true });
  const result: { ops?: OpRow[]; models?: unknown[] } = {};
  let tf: Awaited<ReturnType<typeof loadTfjs>> | undefined;
  // Every engine is made before TF.js puts a navigator.gpu on globalThis (after that, Engine.create
  // would take the browser path).
  const engines: [('f32' | 'f16'), Engine][] = [];
  for (const dtype of opts.dtypes ?? ['f32']) engines.push([dtype, await Engine.create({ f16: dtype === 'f16', adapterKind: opts.adapter })]);
  for (const [dtype, engine] of engines) {
    const info = engine.info();
    log(`adapter: ${info.name} (${info.backend}, ${info.adapterKind}: ${info.adapterReason}), f16: ${info.f16}, timestamp-query: ${info.timestampQuery}`);
    if (dtype === 'f16' && !engine.f16) {
      log(`skipping the f16 rows: this adapter (${info.adapterKind}) has no shader-f16; try --adapter lavapipe`);
      engine.destroy();
      continue;
    }
    const kindName = { hardware: 'Vulkan', lavapipe: 'Vulkan/lavapipe', swiftshader: 'Vulkan/SwiftShader', browser: 'browser' }[info.adapterKind];
    const meta = { adapter: info.name, adapterKind: info.adapterKind, dtype, backend: `node (Dawn ${kindName})`, date: new Date().toISOString(), node: process.version };
    const suffix = dtype === 'f32' ? '' : `-${dtype}`;
    if (suites.includes('ops')) {
      // TF.js gets its Dawn instance once, on the ICD the first engine chose (the same adapter)
      if (tf === undefined) tf = opts.tfjs ? await loadTfjs() : null;
      const rows = await benchOps(engine, tf, selectOpCases(opts.filter), log, dtype);
      const file = join(outDir, `${slug(info.name)}-ops${suffix}.json`);
      writeFileSync(file, JSON.stringify({ ...meta, suite: 'ops', tfjs: tf ? tf.version_core : null, rows }, null, 2));
      log(`wrote ${file}`);
      result.ops = [...(result.ops ?? []), ...rows];
    }
    if (suites.includes('modelrows')) {
      const { benchModelRows } = await import('./model_rows.js');
      const load = (await import('node:os')).loadavg()[0].toFixed(1);
      const rows = await benchModelRows(engine, { log, filter: opts.filter });
      const file = join(outDir, `${slug(info.name)}-modelrows${suffix}.json`);
      writeFileSync(file, JSON.stringify({ ...meta, suite: 'modelrows', load, rows }, null, 2));
      log(`wrote ${file}`);
      result.models = [...(result.models ?? []), ...rows];
    }
    if (suites.includes('models')) {
      const { benchModels } = await import('./models.js');
      const rows = await benchModels(engine, { quick: opts.quick });
      const file = join(outDir, `${slug(info.name)}-models${suffix}.json`);
      writeFileSync(file, JSON.stringify({ ...meta, suite: 'models', rows }, null, 2));
      log(`wrote ${file}`);
      result.models = [...(result.models ?? []), ...rows];
    }
    engine.destroy();
  }
  // RESULTS.md sits next to the results folder (bench/RESULTS.md for the default bench/results).
  const md = join(dirname(outDir), 'RESULTS.md');
  writeResultsMarkdown(outDir, md);
  log(`updated ${md}`);
  return result;
}

async function main() {
  await runBench(parseBenchOptions(process.argv.slice(2)));
  process.exit(0);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
