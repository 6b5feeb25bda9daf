// ONNX Runtime Web beside the whole-model rows: the same three models exported from the same torch
// modules with the same weights (tools/pyref/export_onnx.py writes bench/onnx/<id>.onnx, never
// committed), run on the same adapter in the same process, timed the same way as ours.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Engine } from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));

export interface OrtResult {
  /** 'webgpu' or 'wasm' (labelled reference row when the WebGPU EP cannot run here) */
  ep?: string;
  ms?: number;
  /** ORT ms / our ms */
  speedup?: number;
  relL2?: number;
  /** why it did not run */
  note?: string;
}

export async function ortRow(_engine: Engine, id: string, _dtype: 'f32' | 'f16', _log: (s: string) => void): Promise<OrtResult> {
  const file = join(here, 'onnx', `${id}.onnx`);
  if (!existsSync(file)) return { note: 'ORT Web: not run (no bench/onnx; run tools/pyref/export_onnx.py)' };
  return { note: 'ORT Web: not run (onnxruntime-web is not installed)' };
}
