// A seeded safetensors fuzzer. It mutates real model files of this repository (bit flips,
// truncations, appended bytes, header-length edits, header JSON edits of offsets / shapes / dtypes /
// names / metadata, raw header text edits, swapped tensor ranges) in memory and runs each mutated
// file through SafetensorsFile.fromBytes and through the model's fromPretrained, which fetches a
// component folder from an in-memory URL (so the streaming download path runs too). Nothing is
// written to disk.
//
// Every file must either load or fail with a typed error (SafetensorsError, WeightError, IOError,
// ConfigError) whose message names the file. When it loads, every tensor's bytes must equal the
// bytes an independent, simpler reading of the format finds, and that reading must agree the file is
// valid (a differential check: the engine may neither accept a file the format forbids nor refuse
// one it allows). After each model load (disposed) or failure, engine.memory().inUseBytes must be
// back where it was. Each file's time is measured; one over `maxMsPerFile` counts as a hang.
//
//   npm run fuzz                      # 10,000 files, seed 1
//   npm run fuzz -- --files 2000 --seed 7 --json out.json
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine } from '../src/runtime/engine.js';
import { SafetensorsFile, SafetensorsError } from '../src/runtime/safetensors.js';
import { WeightError } from '../src/runtime/weights.js';
import { VQModel, UNet2DModel, AutoencoderKL } from '../src/index.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

interface Loader {
  fromPretrained(engine: Engine, url: string, opts: { fetch: typeof fetch }): Promise<{ dispose(): void }>;
}

export interface Seed {
  /** a short name used in labels */
  name: string;
  config: string;
  weights: string;
  model: Loader;
}

/** Real model files of this repository: the bundled ldm-mnist and the model fixtures. */
export const SEEDS: Seed[] = [
  { name: 'ldm-mnist-vqvae', config: 'models/ldm-mnist/vqvae/config.json', weights: 'models/ldm-mnist/vqvae/diffusion_pytorch_model.safetensors', model: VQModel as unknown as Loader },
  { name: 'ldm-mnist-unet', config: 'models/ldm-mnist/unet/config.json', weights: 'models/ldm-mnist/unet/diffusion_pytorch_model.safetensors', model: UNet2DModel as unknown as Loader },
  { name: 'vq-small', config: 'test/fixtures/vq_model/small/config.json', weights: 'test/fixtures/vq_model/small/weights.safetensors', model: VQModel as unknown as Loader },
  { name: 'unet-class-cond', config: 'test/fixtures/unet2d/class_cond/config.json', weights: 'test/fixtures/unet2d/class_cond/weights.safetensors', model: UNet2DModel as unknown as Loader },
  { name: 'unet-uncond', config: 'test/fixtures/unet2d/uncond/config.json', weights: 'test/fixtures/unet2d/uncond/weights.safetensors', model: UNet2DModel as unknown as Loader },
  { name: 'kl-small', config: 'test/fixtures/autoencoder_kl/small/config.json', weights: 'test/fixtures/autoencoder_kl/small/weights.safetensors', model: AutoencoderKL as unknown as Loader },
];

// ---------------------------------------------------------------- seeded randomness

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  constructor(readonly next: () => number) {}
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
}

// ---------------------------------------------------------------- the file as parts

interface Parts {
  n: number;
  header: Record<string, unknown>;
  data: Uint8Array;
}

function split(bytes: Uint8Array): Parts {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const n = dv.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
  return { n, header, data: bytes.subarray(8 + n) };
}

function join3(headerText: string, data: Uint8Array, lengthOverride?: number): Uint8Array {
  const h = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  const dv = new DataView(out.buffer);
  const n = lengthOverride ?? h.byteLength;
  dv.setUint32(0, n % 2 ** 32, true);
  dv.setUint32(4, Math.floor(n / 2 ** 32), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

type Entry = { dtype: unknown; shape: unknown; data_offsets: unknown };

function tensorNames(h: Record<string, unknown>): string[] {
  return Object.keys(h).filter((k) => k !== '__metadata__');
}

// ---------------------------------------------------------------- mutators

const WEIRD_NUMBERS: unknown[] = [-1, 0, 1, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 60, 1.5, -0, 1e308, '4', null, true, [], {}];
const DTYPES = ['F32', 'F16', 'BF16', 'I64', 'I32', 'F64', 'U8', 'BOOL', 'I8', 'f32', 'X9', '', 'F8_E4M3'];

type Mutator = (src: Uint8Array, r: Rng) => Uint8Array;

function headerEdit(edit: (h: Record<string, unknown>, r: Rng) => void): Mutator {
  return (src, r) => {
    const p = split(src);
    edit(p.header, r);
    return join3(JSON.stringify(p.header), p.data);
  };
}

function someEntry(h: Record<string, unknown>, r: Rng): Entry {
  return h[r.pick(tensorNames(h))] as Entry;
}

export const MUTATORS: Record<string, Mutator> = {
  bitflip: (src, r) => {
    const out = src.slice();
    const p = split(src);
    const flips = 1 + r.int(8);
    for (let i = 0; i < flips; i++) {
      // half the flips land in the length or the header, where they matter most
      const pos = r.next() < 0.5 ? r.int(8 + p.n) : r.int(out.length);
      out[pos] ^= 1 << r.int(8);
    }
    return out;
  },
  truncate: (src, r) => {
    const p = split(src);
    const cut = r.pick([r.int(8), 8 + r.int(p.n), 8 + p.n + r.int(p.data.length), src.length - 1 - r.int(16)]);
    return src.slice(0, Math.max(0, cut));
  },
  append: (src, r) => {
    const extra = new Uint8Array(1 + r.int(64)).map(() => r.int(256));
    const out = new Uint8Array(src.length + extra.length);
    out.set(src);
    out.set(extra, src.length);
    return out;
  },
  headerLength: (src, r) => {
    const out = src.slice();
    const dv = new DataView(out.buffer);
    const n = dv.getUint32(0, true);
    const v = r.pick([n + 1, n - 1, n + 8, n - 8, 0, 1, 2 ** 31, 2 ** 32 - 1, src.length, r.int(2 ** 32)]);
    dv.setUint32(0, v >>> 0, true);
    if (r.next() < 0.2) dv.setUint32(4, r.int(2 ** 20), true);
    return out;
  },
  offsets: headerEdit((h, r) => {
    const e = someEntry(h, r);
    const o = e.data_offsets as number[];
    const names = tensorNames(h);
    switch (r.int(6)) {
      case 0:
        o[r.int(2)] += r.pick([1, -1, 2, -2, 4, -4, 1024]);
        break;
      case 1:
        e.data_offsets = [o[1], o[0]];
        break;
      case 2:
        e.data_offsets = [...((h[r.pick(names)] as Entry).data_offsets as number[])];
        break;
      case 3:
        o[r.int(2)] = r.pick(WEIRD_NUMBERS) as number;
        break;
      case 4:
        e.data_offsets = r.pick([[o[0]], [o[0], o[1], o[1]], 'x', null, {}]);
        break;
      default:
        o[0] += 4;
        o[1] += 4;
    }
  }),
  shape: headerEdit((h, r) => {
    const e = someEntry(h, r);
    const s = [...(e.shape as number[])];
    switch (r.int(6)) {
      case 0:
        if (s.length) s[r.int(s.length)] += r.pick([1, -1]);
        e.shape = s;
        break;
      case 1:
        e.shape = [...s].reverse(); // same element count: valid file, wrong layout for the model
        break;
      case 2:
        e.shape = [s.reduce((a, b) => a * b, 1)]; // flattened: same count
        break;
      case 3:
        e.shape = [...s, 1];
        break;
      case 4:
        if (s.length) s[r.int(s.length)] = r.pick(WEIRD_NUMBERS) as number;
        e.shape = s;
        break;
      default:
        e.shape = r.pick([[], 'x', null, [[1]], {}]);
    }
  }),
  dtype: headerEdit((h, r) => {
    const e = someEntry(h, r);
    e.dtype = r.next() < 0.8 ? r.pick(DTYPES) : r.pick(WEIRD_NUMBERS);
  }),
  names: (src, r) => {
    const p = split(src);
    const names = tensorNames(p.header);
    const a = r.pick(names);
    switch (r.int(5)) {
      case 0: {
        // rename one tensor (a typo the loader should name)
        const entries = Object.entries(p.header).map(([k, v]) => [k === a ? a.replace(/.$/, 'x') : k, v]);
        return join3(JSON.stringify(Object.fromEntries(entries)), p.data);
      }
      case 1: {
        // remove one entry: its bytes become a gap (or trailing bytes)
        delete p.header[a];
        return join3(JSON.stringify(p.header), p.data);
      }
      case 2: {
        // a duplicate key in the raw JSON (JSON.parse would silently keep the second)
        const text = JSON.stringify(p.header);
        const dup = `${JSON.stringify(a)}:${JSON.stringify(p.header[r.pick(names)])},`;
        return join3(`{${dup}${text.slice(1)}`, p.data);
      }
      case 3: {
        // swap two tensors' ranges: a valid file whose tensors hold the wrong data
        const b = r.pick(names);
        const ea = p.header[a] as Entry;
        const eb = p.header[b] as Entry;
        [ea.data_offsets, eb.data_offsets] = [eb.data_offsets, ea.data_offsets];
        [ea.shape, eb.shape] = [eb.shape, ea.shape];
        [ea.dtype, eb.dtype] = [eb.dtype, ea.dtype];
        return join3(JSON.stringify(p.header), p.data);
      }
      default: {
        // an extra tensor: empty, or covering bytes past the end
        p.header[`extra.${r.int(100)}`] = r.pick([
          { dtype: 'F32', shape: [0], data_offsets: [p.data.length, p.data.length] },
          { dtype: 'F32', shape: [1], data_offsets: [p.data.length, p.data.length + 4] },
          { dtype: 'U8', shape: [0], data_offsets: [0, 0] },
        ]);
        return join3(JSON.stringify(p.header), p.data);
      }
    }
  },
  metadata: headerEdit((h, r) => {
    h.__metadata__ = r.pick<unknown>([{ format: 'pt' }, { n: 1 }, ['a'], 'x', null, { k: { nested: 'v' } }, { a: 'b'.repeat(1000) }]);
  }),
  headerText: (src, r) => {
    const p = split(src);
    let text = new TextDecoder().decode(src.subarray(8, 8 + p.n));
    const pos = r.int(text.length);
    const c = r.pick(['{', '}', '[', ']', ',', ':', '"', '\\', '0', '-', ' ', 'e', '\u00e9', '\ud800']);
    switch (r.int(3)) {
      case 0:
        text = text.slice(0, pos) + c + text.slice(pos);
        break;
      case 1:
        text = text.slice(0, pos) + text.slice(pos + 1);
        break;
      default:
        text = text.slice(0, pos) + c + text.slice(pos + 1);
    }
    return join3(text, p.data);
  },
  whitespace: (src, r) => {
    // Valid edits: re-serialised with spaces and shuffled key order; must load bit-identically.
    const p = split(src);
    const entries = Object.entries(p.header);
    for (let i = entries.length - 1; i > 0; i--) {
      const j = r.int(i + 1);
      [entries[i], entries[j]] = [entries[j], entries[i]];
    }
    return join3(JSON.stringify(Object.fromEntries(entries), null, r.int(3)) + ' '.repeat(r.int(8)), p.data);
  },
};

// ---------------------------------------------------------------- an independent reading of the format

/**
 * The format's rules, written plainly and separately from src/runtime/safetensors.ts: returns the
 * tensors' byte ranges in the file, or null for an invalid file. (Header size and entry caps are
 * the engine's limits, not the format's; none of the seeds come near them.)
 */
export function referenceRead(bytes: Uint8Array): Map<string, { dtype: string; shape: number[]; begin: number; end: number }> | null {
  if (bytes.length < 8) return null;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, 8);
  if (dv.getUint32(4, true) !== 0) return null;
  const n = dv.getUint32(0, true);
  if (8 + n > bytes.length) return null;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    return null;
  }
  let h: unknown;
  try {
    h = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof h !== 'object' || h === null || Array.isArray(h)) return null;
  // duplicate keys: re-serialising loses them, so count top-level and entry keys in the raw text
  if (hasDuplicateKeys(text)) return null;
  const size: Record<string, number> = { F64: 8, I64: 8, U64: 8, F32: 4, I32: 4, U32: 4, F16: 2, BF16: 2, I16: 2, U16: 2, U8: 1, I8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1 };
  const out = new Map<string, { dtype: string; shape: number[]; begin: number; end: number }>();
  for (const [k, v] of Object.entries(h)) {
    if (k === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
      if (!Object.values(v).every((x) => typeof x === 'string')) return null;
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
    const { dtype, shape, data_offsets } = v as Entry;
    if (typeof dtype !== 'string' || !(dtype in size)) return null;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return null;
    if (!Array.isArray(data_offsets) || data_offsets.length !== 2 || !data_offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) return null;
    const [b, e] = data_offsets as number[];
    if (e < b || (e - b) !== shape.reduce((a: number, d: number) => a * d, 1) * size[dtype]) return null;
    out.set(k, { dtype, shape, begin: 8 + n + b, end: 8 + n + e });
  }
  const ranges = [...out.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 8 + n;
  for (const t of ranges) {
    if (t.begin !== at) return null;
    at = t.end;
  }
  return at === bytes.length ? out : null;
}

function hasDuplicateKeys(text: string): boolean {
  // A JSON.parse reviver sees each object once, after its keys were merged; instead re-parse every
  // object's keys with a tiny tokenizer.
  const stack: Set<string>[] | null[] = [];
  const st = stack as (Set<string> | null)[];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        const s = st[st.length - 1]!;
        if (s.has(key)) return true;
        s.add(key);
      }
      expectKey = false;
      i = j;
    } else if (c === '{') {
      st.push(new Set());
      expectKey = true;
    } else if (c === '[') {
      st.push(null);
    } else if (c === '}' || c === ']') st.pop();
    else if (c === ',') expectKey = st[st.length - 1] instanceof Set;
  }
  return false;
}

// ---------------------------------------------------------------- running

/** Typed errors the engine promises; a message must also name the file. */
const TYPED = new Set(['SafetensorsError', 'WeightError', 'IOError', 'ConfigError']);

function typedName(e: unknown): string | null {
  if (e instanceof SafetensorsError) return 'SafetensorsError';
  if (e instanceof WeightError) return 'WeightError';
  const name = (e as Error)?.name;
  return typeof name === 'string' && TYPED.has(name) ? name : null;
}

export interface FuzzOptions {
  files: number;
  seed: number;
  engine: Engine;
  /** which seeds to mutate (default all) */
  seeds?: Seed[];
  /** a file slower than this counts as a hang */
  maxMsPerFile?: number;
  /** called every 500 files */
  onProgress?: (done: number, total: number) => void;
}

export interface FuzzReport {
  files: number;
  seed: number;
  /** outcome -> count, per path: "safetensors:<outcome>" and "model:<outcome>" */
  outcomes: Record<string, number>;
  /** mutator -> files */
  mutators: Record<string, number>;
  maxMsPerFile: number;
  meanMsPerFile: number;
  /** broken promises: untyped errors, errors not naming the file, wrong bytes, leaks, hangs */
  defects: string[];
}

/**
 * A fetch over in-memory files. With `chunk` set, bodies stream in pieces of up to that many bytes
 * without a Content-Length (the downloader then learns the size from the header); otherwise whole,
 * with one.
 */
function memFetch(files: Map<string, Uint8Array>, chunk?: number): typeof fetch {
  return (async (input: RequestInfo | URL) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const body = files.get(url);
    if (!body) return new Response('not found', { status: 404, statusText: 'Not Found' });
    if (!chunk) return new Response(body as Uint8Array<ArrayBuffer>, { status: 200, headers: { 'content-length': String(body.byteLength) } });
    let at = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (at >= body.byteLength) return c.close();
        const n = Math.min(chunk, body.byteLength - at);
        c.enqueue(body.slice(at, at + n));
        at += n;
      },
    });
    return new Response(stream, { status: 200 });
  }) as typeof fetch;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const seeds = opts.seeds ?? SEEDS;
  const maxMs = opts.maxMsPerFile ?? 10_000;
  const originals = seeds.map((s) => ({
    seed: s,
    bytes: new Uint8Array(readFileSync(join(ROOT, s.weights))),
    config: readFileSync(join(ROOT, s.config)),
  }));
  const origTensors = originals.map((o) => referenceRead(o.bytes)!);
  const r = new Rng(mulberry32(opts.seed));
  const names = Object.keys(MUTATORS);
  const report: FuzzReport = { files: 0, seed: opts.seed, outcomes: {}, mutators: {}, maxMsPerFile: 0, meanMsPerFile: 0, defects: [] };
  const count = (k: string) => (report.outcomes[k] = (report.outcomes[k] ?? 0) + 1);
  const defect = (s: string) => {
    if (report.defects.length < 50) report.defects.push(s);
  };
  const warn = console.warn;
  console.warn = () => {}; // unexpected-weight notes from models that loaded a renamed file
  let totalMs = 0;
  try {
    for (let i = 0; i < opts.files; i++) {
      const k = r.int(originals.length);
      const o = originals[k];
      const m = r.pick(names);
      report.mutators[m] = (report.mutators[m] ?? 0) + 1;
      let mutated: Uint8Array;
      try {
        mutated = MUTATORS[m](o.bytes, r);
      } catch (e) {
        defect(`mutator ${m} failed on ${o.seed.name}: ${(e as Error).message}`);
        continue;
      }
      const label = `fuzz-${opts.seed}-${i}-${m}-${o.seed.name}.safetensors`;
      const t0 = performance.now();
      const ref = referenceRead(mutated);

      // 1. the format reader
      try {
        const f = SafetensorsFile.fromBytes(mutated, label);
        if (!ref) defect(`${label}: accepted, but the format forbids it`);
        else {
          let identical = f.names().length === origTensors[k].size;
          for (const name of f.names()) {
            const got = await f.bytes(name);
            const want = ref.get(name);
            if (!want || !sameBytes(got, mutated.subarray(want.begin, want.end))) {
              defect(`${label}: tensor '${name}' bytes differ from the file's`);
              break;
            }
            const orig = origTensors[k].get(name);
            const info = f.info(name)!;
            if (!orig || orig.dtype !== info.dtype || orig.shape.join() !== info.shape.join() || !sameBytes(got, o.bytes.subarray(orig.begin, orig.end))) identical = false;
          }
          count(identical ? 'safetensors:loaded-identical' : 'safetensors:loaded-changed');
        }
      } catch (e) {
        const t = typedName(e);
        if (!t) defect(`${label}: untyped ${(e as Error)?.name}: ${(e as Error)?.message}`);
        else if (!(e as Error).message.includes(label)) defect(`${label}: ${t} does not name the file: ${(e as Error).message}`);
        else if (ref) defect(`${label}: refused a valid file: ${(e as Error).message}`);
        count(`safetensors:${t ?? 'untyped'}`);
      }

      // 2. the model loader, from an in-memory URL
      const chunk = r.next() < 0.5 ? undefined : r.pick([997, 4096, 65536]);
      const base = `http://fuzz.invalid/${label}`;
      const weightsUrl = `${base}/diffusion_pytorch_model.safetensors`;
      const before = opts.engine.memory().inUseBytes;
      try {
        const model = await o.seed.model.fromPretrained(opts.engine, base, {
          fetch: memFetch(new Map([[`${base}/config.json`, o.config], [weightsUrl, mutated]]), chunk),
        });
        model.dispose();
        if (!ref) defect(`${label}: the model loaded a file the format forbids`);
        count('model:loaded');
      } catch (e) {
        const t = typedName(e);
        if (!t) defect(`${label}: model: untyped ${(e as Error)?.name}: ${(e as Error)?.message}`);
        else if (!(e as Error).message.includes(label)) defect(`${label}: model: ${t} does not name the file: ${(e as Error).message}`);
        count(`model:${t ?? 'untyped'}`);
      }
      const after = opts.engine.memory().inUseBytes;
      if (after !== before) defect(`${label}: ${after - before} GPU bytes left in use`);

      const ms = performance.now() - t0;
      totalMs += ms;
      report.maxMsPerFile = Math.max(report.maxMsPerFile, ms);
      if (ms > maxMs) defect(`${label}: took ${ms.toFixed(0)} ms (limit ${maxMs})`);
      report.files++;
      if (opts.onProgress && report.files % 500 === 0) opts.onProgress(report.files, opts.files);
      // return pooled buffers now and then so the pool does not grow with every seed's sizes
      if (i % 200 === 199) await opts.engine.releaseCached();
    }
  } finally {
    console.warn = warn;
  }
  report.meanMsPerFile = report.files ? totalMs / report.files : 0;
  return report;
}

// ---------------------------------------------------------------- command line

async function main(argv: string[]): Promise<number> {
  const arg = (name: string, def: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : def;
  };
  const files = Number(arg('files', '10000'));
  const seed = Number(arg('seed', '1'));
  const json = arg('json', '');
  const engine = await Engine.create();
  const t0 = performance.now();
  const report = await runFuzz({
    files,
    seed,
    engine,
    onProgress: (d, t) => process.stderr.write(`${d}/${t} files, ${((performance.now() - t0) / 1000).toFixed(0)} s\n`),
  });
  engine.destroy();
  const total = (performance.now() - t0) / 1000;
  const lines = [
    `safetensors fuzz: ${report.files} mutated files (seed ${seed}) in ${total.toFixed(0)} s on ${engine.info().name}`,
    `max ${report.maxMsPerFile.toFixed(0)} ms per file, mean ${report.meanMsPerFile.toFixed(1)} ms`,
    'outcomes:',
    ...Object.entries(report.outcomes)
      .sort()
      .map(([k, v]) => `  ${k.padEnd(34)} ${v}`),
    'mutators: ' + Object.entries(report.mutators).map(([k, v]) => `${k} ${v}`).join(', '),
    `defects: ${report.defects.length}`,
    ...report.defects.map((d) => `  ${d}`),
  ];
  process.stdout.write(lines.join('\n') + '\n');
  if (json) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(json, JSON.stringify({ ...report, seconds: total }, null, 2));
  }
  return report.defects.length ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
