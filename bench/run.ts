// Headless benchmarks in Node (Dawn). Usage: npm run bench -- [--suite ops,models] [--no-tfjs] [--quick]
// Writes bench/results/<adapter>-<suite>.json and regenerates bench/RESULTS.md from every JSON there.
import { parseArgs } from 'node:util';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine } from '../src/index.js';
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
  /** 'ops' and/or 'models' */
  suite: string[];
  /** compare with TF.js's WebGPU backend (ops) */
  tfjs: boolean;
  quick: boolean;
  /** only the op cases whose name contains this */
  filter?: string;
  /** folder for the JSON results (default bench/results) */
  out?: string;
  log?: (line: string) => void;
}

export function parseBenchOptions(args: string[]): BenchOptions {
  const { values } = parseArgs({
    args,
    options: {
      suite: { type: 'string', default: 'ops' },
      'no-tfjs': { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      filter: { type: 'string' },
      out: { type: 'string', default: join(here, 'results') },
    },
  });
  return { suite: values.suite!.split(','), tfjs: !values['no-tfjs'], quick: values.quick!, filter: values.filter, out: values.out };
}

/** Runs the suites in Node (Dawn), writes <out>/<adapter>-<suite>.json and regenerates bench/RESULTS.md. */
export async function runBench(opts: BenchOptions): Promise<{ ops?: OpRow[]; models?: unknown[] }> {
  const log = opts.log ?? console.log;
  const outDir = opts.out ?? join(here, 'results');
  const engine = await Engine.create();
  const info = engine.info();
  log(`adapter: ${info.name} (${info.backend}), f16: ${info.f16}, timestamp-query: ${info.timestampQuery}`);
  const suites = opts.suite;
  mkdirSync(outDir, { recursive: true });
  const meta = { adapter: info.name, backend: `node (Dawn ${process.env.VK_ICD_FILENAMES?.includes('swiftshader') ? 'Vulkan/SwiftShader' : 'Vulkan'})`, date: new Date().toISOString(), node: process.version };
  const result: { ops?: OpRow[]; models?: unknown[] } = {};
  if (suites.includes('ops')) {
    const tf = opts.tfjs ? await loadTfjs() : null;
    const rows = await benchOps(engine, tf, selectOpCases(opts.filter), log);
    const file = join(outDir, `${slug(info.name)}-ops.json`);
    writeFileSync(file, JSON.stringify({ ...meta, suite: 'ops', tfjs: tf ? tf.version_core : null, rows }, null, 2));
    log(`wrote ${file}`);
    result.ops = rows;
  }
  if (suites.includes('models')) {
    const { benchModels } = await import('./models.js');
    const rows = await benchModels(engine, { quick: opts.quick });
    const file = join(outDir, `${slug(info.name)}-models.json`);
    writeFileSync(file, JSON.stringify({ ...meta, suite: 'models', rows }, null, 2));
    log(`wrote ${file}`);
    result.models = rows;
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
