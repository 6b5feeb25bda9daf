// ONNX Runtime Web beside the whole-model rows: the same three models exported from the same torch
// modules with the same weights (tools/pyref/export_onnx.py writes bench/onnx/<id>.onnx, never
// committed), run in the same Node process through its WebGPU EP on a Dawn instance of the `webgpu`
// package (navigator.gpu), on the adapter our engine uses, timed the same way (median of calls, each
// ending with its output read back), output checked against the same diffusers reference.
// Dawn's Node binding refuses writeBuffer from a SharedArrayBuffer view ("Invalid argument"), which
// is how ORT's threaded wasm build uploads everything; a shim copies such data to a plain buffer.
// When the WebGPU EP cannot run, the row falls back to ORT's wasm EP (CPU), labelled as such.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Engine } from '../src/index.js';
import { SafetensorsFile } from '../src/runtime/safetensors.js';

const here = dirname(fileURLToPath(import.meta.url));

export interface OrtResult {
  /** 'webgpu' or 'wasm' (a labelled CPU reference when the WebGPU EP cannot run here) */
  ep?: string;
  /** the adapter ORT's WebGPU EP got */
  adapter?: string;
  ms?: number;
  /** ORT ms / our ms (> 1: we are faster) */
  speedup?: number;
  relL2?: number;
  /** why it did not run, or why it fell back */
  note?: string;
}

// Typed loosely on purpose: a checkout without `npm ci` after this dependency arrived still typechecks.
interface OrtTensor {
  getData(): Promise<unknown>;
  dispose(): void;
}
interface OrtSession {
  outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
interface Ort {
  env: { logLevel: string; webgpu: unknown };
  Tensor: new (type: string, data: unknown, dims: readonly number[]) => OrtTensor;
  InferenceSession: { create(bytes: Uint8Array, opts: { executionProviders: string[] }): Promise<OrtSession> };
}
const ORT_MODULE = 'onnxruntime-web/webgpu';
let ortPromise: Promise<{ ort: Ort; adapter: GPUAdapter | null } | string> | null = null;

async function loadOrt(): Promise<{ ort: Ort; adapter: GPUAdapter | null } | string> {
  try {
    const g = globalThis as { navigator?: { gpu?: GPU } };
    if (!g.navigator?.gpu) {
      const { create } = (await import('webgpu')) as unknown as { create: (f: string[]) => GPU };
      Object.defineProperty(globalThis, 'navigator', { value: { ...(g.navigator ?? {}), gpu: create([]) }, configurable: true, writable: true });
    }
    const gpu = (globalThis as unknown as { navigator: { gpu: GPU } }).navigator.gpu;
    const adapter = await gpu.requestAdapter();
    if (adapter) {
      const dev = await adapter.requestDevice();
      const proto = Object.getPrototypeOf(dev.queue) as GPUQueue & { __ldmShim?: boolean };
      if (!proto.__ldmShim) {
        const write = proto.writeBuffer;
        proto.writeBuffer = function (this: GPUQueue, buffer: GPUBuffer, offset: number, data: BufferSource | SharedArrayBuffer, dataOffset?: number, size?: number) {
          if (ArrayBuffer.isView(data) && data.buffer instanceof SharedArrayBuffer) {
            const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
            const per = (data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
            const start = (dataOffset ?? 0) * per;
            const n = size === undefined ? bytes.byteLength - start : size * per;
            return write.call(this, buffer, offset, bytes.slice(start, start + n), 0, n);
          }
          return write.call(this, buffer, offset, data as BufferSource, dataOffset, size);
        } as GPUQueue['writeBuffer'];
        proto.__ldmShim = true;
      }
      dev.destroy();
    }
    // the package's default Node entry has only the wasm EP; the webgpu entry has both
    const ort = (await import(ORT_MODULE)) as Ort;
    ort.env.logLevel = 'error';
    if (adapter) (ort.env.webgpu as { adapter?: GPUAdapter }).adapter = adapter;
    return { ort, adapter };
  } catch (e) {
    return `ORT Web: not run (onnxruntime-web did not load: ${(e as Error).message})`;
  }
}

function feeds(ort: Ort, id: string, refs: SafetensorsFile): Promise<Record<string, OrtTensor>> {
  const meta = JSON.parse(readFileSync(join(here, 'refs/model_rows.json'), 'utf8')).rows;
  const f32 = async (name: string) => new ort.Tensor('float32', await refs.f32(name), [...refs.info(name)!.shape]);
  const i64 = (v: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), [v.length]);
  return (async (): Promise<Record<string, OrtTensor>> => {
    if (id === 'mnist_unet') return { sample: await f32('mnist_unet.input'), timestep: i64(Array(20).fill(501)), class_labels: i64(meta.mnist_unet.class_labels) };
    if (id === 'mnist_vq') return { latents: await f32('mnist_vq.input') };
    const { seededInput } = await import('./model_rows.js');
    const inp = meta.sd_unet.inputs as Record<string, [string, number[]]>;
    const t = (k: string) => new ort.Tensor('float32', seededInput(inp[k][0], inp[k][1]), inp[k][1]);
    return { sample: t('sample'), timestep: i64([501, 501]), encoder_hidden_states: t('encoder_hidden_states') };
  })();
}

async function timeSession(ort: Ort, bytes: Uint8Array, ep: string, input: Record<string, OrtTensor>, ref: Float32Array): Promise<{ ms: number; relL2: number }> {
  const session = await ort.InferenceSession.create(bytes, { executionProviders: [ep] });
  try {
    const once = async () => {
      const out = await session.run(input);
      const t = out[session.outputNames[0]];
      const v = (await t.getData()) as Float32Array;
      t.dispose();
      return v;
    };
    const first = await once(); // warm-up: compiles every shader
    let num = 0;
    let den = 0;
    for (let i = 0; i < ref.length; i++) {
      num += (first[i] - ref[i]) ** 2;
      den += ref[i] ** 2;
    }
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await once();
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return { ms: times[1], relL2: first.length === ref.length ? Math.sqrt(num / den) : Infinity };
  } finally {
    await session.release();
  }
}

/** ORT Web on bench/onnx/<id>.onnx; `oursMs` gives the speedup column. */
export async function ortRow(engine: Engine, id: string, dtype: 'f32' | 'f16', oursMs: number, log: (s: string) => void): Promise<OrtResult> {
  const file = join(here, 'onnx', `${id}.onnx`);
  if (!existsSync(file)) return { note: 'ORT Web: not run (no bench/onnx; run tools/pyref/export_onnx.py)' };
  if (dtype !== 'f32') return { note: 'ORT Web: f32 graphs only (see the f32 table)' };
  ortPromise ??= loadOrt();
  const loaded = await ortPromise;
  if (typeof loaded === 'string') return { note: loaded };
  const { ort, adapter } = loaded;
  const refs = SafetensorsFile.fromBytes(readFileSync(join(here, 'refs/model_rows.safetensors')));
  const ref = await refs.f32(`${id}.output`);
  const input = await feeds(ort, id, refs);
  const bytes = readFileSync(file);
  const adapterName = adapter ? `${adapter.info?.vendor ?? ''} ${adapter.info?.description ?? ''}`.trim() : 'none';
  if (adapter && !/llvmpipe|lavapipe|swiftshader/i.test(adapterName) !== !/llvmpipe|lavapipe|swiftshader/i.test(engine.info().name)) {
    log(`  ORT's adapter (${adapterName}) is not ours (${engine.info().name})`);
  }
  try {
    const r = await timeSession(ort, bytes, 'webgpu', input, ref);
    return { ep: 'webgpu', adapter: adapterName, ms: r.ms, relL2: r.relL2, speedup: r.ms / oursMs };
  } catch (e) {
    const why = (e as Error).message;
    log(`  ORT Web WebGPU EP failed on ${id}: ${why}; falling back to the wasm EP`);
    const r = await timeSession(ort, bytes, 'wasm', input, ref);
    return { ep: 'wasm', ms: r.ms, relL2: r.relL2, speedup: r.ms / oursMs, note: `WebGPU EP failed: ${why}` };
  }
}
