// The op benchmarks as a page script: built into dist/bench/bench.js (importing the built browser
// library) and driven by bench/browser.ts in headless Chromium.
import { Engine } from '../src/index.js';
import { benchOps, selectOpCases, type OpRow } from './ops.js';

type TF = typeof import('@tensorflow/tfjs-core');

async function loadTfjs(log: (s: string) => void): Promise<TF | null> {
  try {
    const tf = await import('@tensorflow/tfjs-core');
    await import('@tensorflow/tfjs-backend-webgpu');
    if (!(await tf.setBackend('webgpu'))) throw new Error('setBackend(webgpu) failed');
    await tf.ready();
    return tf;
  } catch (e) {
    log(`TF.js WebGPU backend unavailable: ${(e as Error).message}`);
    return null;
  }
}

export interface BrowserBenchResult {
  adapter: string;
  userAgent: string;
  tfjs: string | null;
  rows: OpRow[];
}

async function run(opts: { tfjs: boolean; filter?: string }): Promise<BrowserBenchResult> {
  const log = (s: string) => console.log(s);
  const engine = await Engine.create();
  const info = engine.info();
  log(`adapter: ${info.name} (${info.backend}), f16: ${info.f16}, timestamp-query: ${info.timestampQuery}`);
  const tf = opts.tfjs ? await loadTfjs(log) : null;
  const rows = await benchOps(engine, tf, selectOpCases(opts.filter), log);
  return { adapter: info.name, userAgent: navigator.userAgent, tfjs: tf ? tf.version_core : null, rows };
}

(globalThis as { ldmBench?: typeof run }).ldmBench = run;
document.title = 'ldm-webgpu bench: ready';
