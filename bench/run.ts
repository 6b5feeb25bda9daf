// Headless benchmarks in Node (Dawn). Usage: npm run bench -- [--suite ops,models] [--no-tfjs] [--quick]
// Writes bench/results/<adapter>-<suite>.json and regenerates bench/RESULTS.md from every JSON there.
import { parseArgs } from 'node:util';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine } from '../src/index.js';
import { benchOps } from './ops.js';
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

async function main() {
  const { values } = parseArgs({
    options: {
      suite: { type: 'string', default: 'ops' },
      'no-tfjs': { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      out: { type: 'string', default: join(here, 'results') },
    },
  });
  const engine = await Engine.create();
  const info = engine.info();
  console.log(`adapter: ${info.name} (${info.backend}), f16: ${info.f16}, timestamp-query: ${info.timestampQuery}`);
  const suites = values.suite!.split(',');
  mkdirSync(values.out!, { recursive: true });
  const meta = { adapter: info.name, backend: `node (Dawn ${process.env.VK_ICD_FILENAMES?.includes('swiftshader') ? 'Vulkan/SwiftShader' : 'Vulkan'})`, date: new Date().toISOString(), node: process.version };
  if (suites.includes('ops')) {
    const tf = values['no-tfjs'] ? null : await loadTfjs();
    const rows = await benchOps(engine, tf);
    const file = join(values.out!, `${slug(info.name)}-ops.json`);
    writeFileSync(file, JSON.stringify({ ...meta, suite: 'ops', tfjs: tf ? tf.version_core : null, rows }, null, 2));
    console.log(`wrote ${file}`);
  }
  if (suites.includes('models')) {
    const { benchModels } = await import('./models.js');
    const rows = await benchModels(engine, { quick: values.quick! });
    const file = join(values.out!, `${slug(info.name)}-models.json`);
    writeFileSync(file, JSON.stringify({ ...meta, suite: 'models', rows }, null, 2));
    console.log(`wrote ${file}`);
  }
  writeResultsMarkdown(values.out!, join(here, 'RESULTS.md'));
  console.log(`updated ${join(here, 'RESULTS.md')}`);
  process.exit(0);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
