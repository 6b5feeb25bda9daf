// Loads the diffusers reference cases copied from ../shared/fixtures into test/fixtures.
import { readFileSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

export interface HostTensor {
  dtype: string;
  shape: number[];
  /** F32 as Float32Array; I64/I32 as Float64Array of exact integer values */
  data: Float32Array | Float64Array;
}

/** A minimal reader for the fixture files (the engine's own reader is tested separately). */
export function readSafetensorsFile(path: string): Record<string, HostTensor> {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + n;
  const out: Record<string, HostTensor> = {};
  for (const [name, h] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const bytes = buf.subarray(base + h.data_offsets[0], base + h.data_offsets[1]);
    const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    let data: Float32Array | Float64Array;
    if (h.dtype === 'F32') data = new Float32Array(ab);
    else if (h.dtype === 'I64') data = Float64Array.from(new BigInt64Array(ab), (v) => Number(v));
    else if (h.dtype === 'I32') data = Float64Array.from(new Int32Array(ab));
    else throw new Error(`fixture ${path}: dtype ${h.dtype} not handled`);
    out[name] = { dtype: h.dtype, shape: h.shape, data };
  }
  return out;
}

export interface FixtureCase {
  dir: string;
  config: Record<string, unknown>;
  caseInfo: Record<string, unknown>;
  weights: Record<string, HostTensor>;
  io: Record<string, HostTensor>;
  input(name: string): HostTensor;
  output(name: string): HostTensor;
}

/** e.g. loadCase('ops/conv2d_1x1') */
export function loadCase(name: string): FixtureCase {
  const dir = join(FIXTURES, name);
  const json = (f: string) => JSON.parse(readFileSync(join(dir, f), 'utf8'));
  const weightsPath = join(dir, 'weights.safetensors');
  const io = readSafetensorsFile(join(dir, 'io.safetensors'));
  const get = (k: string) => {
    const t = io[k];
    if (!t) throw new Error(`${name}: no ${k} in io.safetensors (have ${Object.keys(io).join(', ')})`);
    return t;
  };
  return {
    dir,
    config: json('config.json'),
    caseInfo: existsSync(join(dir, 'case.json')) ? json('case.json') : {},
    weights: existsSync(weightsPath) ? readSafetensorsFile(weightsPath) : {},
    io,
    input: (n) => get(`input.${n}`),
    output: (n) => get(`output.${n}`),
  };
}
