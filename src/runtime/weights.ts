// Weights for the model loaders: a name -> tensor source over one or more safetensors files, which
// uploads one tensor at a time (checking its shape, converting its dtype) and remembers which names
// were consumed so a loader can report weights it did not expect. Also the diffusers component
// folder reader (config.json + safetensors) for local paths (Node) and URLs (browser and Node).

import type { Engine } from './engine.js';
import { type DType, type Tensor, DTYPE_BYTES, numel, shapeStr } from './tensor.js';
import {
  SafetensorsFile,
  type SafetensorsTensorInfo,
  bytesToF16Bits,
  bytesToF32,
  bytesToI32,
} from './safetensors.js';
import { downloadSafetensorsFile, openSafetensorsFile } from './safetensors_sources.js';
import type { Config } from './config.js';
import { IOError, parseJsonObject, fileExists, isUrl, joinPath, readText, toPath, type IOOptions, type ProgressCallback } from './io.js';

/**
 * A checkpoint that does not fit the model: a missing, misshapen, unconvertible, duplicated or
 * unused weight. `source` names the file(s) (path, URL or label), `weight` the tensor.
 */
export class WeightError extends Error {
  override readonly name = 'WeightError';
  readonly source: string;
  readonly weight?: string;

  constructor(source: string, message: string, weight?: string) {
    super(`${source}: ${message}`);
    this.source = source;
    this.weight = weight;
  }
}

export interface WeightInfo {
  name: string;
  /** safetensors dtype: F32, F16, BF16, I64, I32 (others load but cannot be read) */
  dtype: string;
  shape: number[];
}

export interface UploadOptions {
  /** storage dtype on the GPU; loaders pass engine.f16 ? 'f16' : 'f32' (the default) */
  dtype?: DType;
  /** accept a stored shape with the same element count (e.g. a [o, i, 1, 1] conv as a [o, i] linear) */
  allowReshape?: boolean;
}

/** What a WeightSource reads tensors from: a safetensors file, or another container mapped onto
 * the same tensor records (e.g. a PyTorch .ckpt, src/loaders/ckpt.ts). */
export interface TensorFile {
  readonly label: string;
  readonly metadata: Record<string, string>;
  /** the size of all tensor data (progress totals) */
  readonly dataBytes: number;
  names(): string[];
  info(name: string): SafetensorsTensorInfo | undefined;
  /** the tensor's raw little-endian bytes, row-major */
  bytes(name: string): Promise<Uint8Array>;
  close(): Promise<void>;
}

interface Entry {
  file: TensorFile;
  info: SafetensorsTensorInfo;
}

/** State shared by a source and its views: what was read, and read progress of file sources. */
interface Shared {
  entries: Map<string, Entry>;
  used: Set<string>;
  files: TensorFile[];
  onRead?: ProgressCallback;
  readBytes: number;
  totalBytes: number;
}

export class WeightSource {
  readonly label: string;
  private shared: Shared;
  /** this view's names -> names in the files */
  private map: Map<string, string>;

  private constructor(label: string, shared: Shared, map: Map<string, string>) {
    this.label = label;
    this.shared = shared;
    this.map = map;
  }

  /** Combines opened files (shards of one checkpoint); a name in two files is an error. */
  static fromFiles(files: TensorFile[], label = files.map((f) => f.label).join(', '), onRead?: ProgressCallback): WeightSource {
    const entries = new Map<string, Entry>();
    let totalBytes = 0;
    for (const file of files) {
      totalBytes += file.dataBytes;
      for (const name of file.names()) {
        const prev = entries.get(name);
        if (prev) throw new WeightError(label, `tensor '${name}' appears in both ${prev.file.label} and ${file.label}`, name);
        entries.set(name, { file, info: file.info(name)! });
      }
    }
    const shared: Shared = { entries, used: new Set(), files, onRead, readBytes: 0, totalBytes };
    return new WeightSource(label, shared, new Map([...entries.keys()].map((k) => [k, k])));
  }

  /** An in-memory safetensors file (tensors are views of these bytes). */
  static fromBytes(bytes: Uint8Array | ArrayBuffer, label = 'safetensors bytes'): WeightSource {
    return WeightSource.fromFiles([SafetensorsFile.fromBytes(bytes, label)], label);
  }

  /** A local safetensors file (Node), read tensor by tensor; onProgress follows the reads. */
  static async fromFile(path: string, opts: { onProgress?: ProgressCallback } = {}): Promise<WeightSource> {
    return WeightSource.fromFiles([await openSafetensorsFile(path)], path, opts.onProgress);
  }

  /** A safetensors file downloaded with a streaming fetch; onProgress follows the download. */
  static async fromUrl(url: string | URL, opts: IOOptions = {}): Promise<WeightSource> {
    return WeightSource.fromFiles([await downloadSafetensorsFile(url, opts)], String(url));
  }

  /** A safetensors file at a URL (downloaded) or a local path (read tensor by tensor). */
  static async open(pathOrUrl: string | URL, opts: IOOptions = {}): Promise<WeightSource> {
    const s = String(pathOrUrl);
    return isUrl(s) ? WeightSource.fromUrl(s, opts) : WeightSource.fromFile(toPath(s), opts);
  }

  // ------------------------------------------------------------ listing

  names(): string[] {
    return [...this.map.keys()].sort();
  }

  has(name: string): boolean {
    return this.map.has(name);
  }

  info(name: string): WeightInfo | undefined {
    const k = this.map.get(name);
    if (k === undefined) return undefined;
    const { info } = this.shared.entries.get(k)!;
    return { name, dtype: info.dtype, shape: [...info.shape] };
  }

  /** all tensors with their dtypes and shapes, sorted by name */
  list(): WeightInfo[] {
    return this.names().map((n) => this.info(n)!);
  }

  /** metadata of the (first) file */
  get metadata(): Record<string, string> {
    return this.shared.files[0]?.metadata ?? {};
  }

  /** One source over several (e.g. a TAESD encoder file and a decoder file, renamed apart).
   * Names must not collide; the merged source tracks use on its own. */
  static merge(sources: WeightSource[], label = sources.map((s) => s.label).join(' + ')): WeightSource {
    const entries = new Map<string, Entry>();
    const map = new Map<string, string>();
    const files: TensorFile[] = [];
    let totalBytes = 0;
    sources.forEach((src, i) => {
      for (const f of src.shared.files) if (!files.includes(f)) files.push(f);
      totalBytes += src.shared.totalBytes;
      for (const [n, k] of src.map) {
        if (map.has(n)) throw new WeightError(label, `tensor '${n}' is in more than one source`, n);
        const key = `${i}:${k}`;
        entries.set(key, src.shared.entries.get(k)!);
        map.set(n, key);
      }
    });
    const shared: Shared = { entries, used: new Set(), files, readBytes: 0, totalBytes };
    return new WeightSource(label, shared, map);
  }

  // ------------------------------------------------------------ views

  /** The tensors whose names start with prefix, named without it (e.g. 'unet.' in a pipeline file). */
  withPrefix(prefix: string): WeightSource {
    const map = new Map<string, string>();
    for (const [n, k] of this.map) if (n.startsWith(prefix)) map.set(n.slice(prefix.length), k);
    return new WeightSource(`${this.label} [${prefix}*]`, this.shared, map);
  }

  /** Renames tensors (e.g. CompVis single-file keys -> diffusers keys); null drops a name. */
  renamed(fn: (name: string) => string | null | undefined): WeightSource {
    const map = new Map<string, string>();
    const from = new Map<string, string>();
    for (const [n, k] of this.map) {
      const m = fn(n);
      if (m === null || m === undefined) continue;
      const prev = from.get(m);
      if (prev !== undefined) throw new WeightError(this.label, `tensors '${prev}' and '${n}' both map to '${m}'`, m);
      from.set(m, n);
      map.set(m, k);
    }
    return new WeightSource(this.label, this.shared, map);
  }

  // ------------------------------------------------------------ reading

  private entry(name: string): { key: string; e: Entry } {
    const key = this.map.get(name);
    if (key === undefined) {
      const close = closeNames(name, [...this.map.keys()]);
      const hint = close.length
        ? `; close names: ${close.join(', ')}`
        : this.map.size
          ? `; the source has ${this.map.size} tensors, e.g. ${this.names().slice(0, 3).join(', ')}`
          : '; the source has no tensors';
      throw new WeightError(this.label, `missing weight '${name}'${hint}`, name);
    }
    return { key, e: this.shared.entries.get(key)! };
  }

  private describe(name: string, key: string): string {
    return key === name ? `'${name}'` : `'${name}' (stored as '${key}')`;
  }

  private async rawBytes(key: string, e: Entry): Promise<Uint8Array> {
    const bytes = await e.file.bytes(e.info.name);
    const s = this.shared;
    s.used.add(key);
    if (s.onRead) {
      s.readBytes += bytes.byteLength;
      s.onRead(s.readBytes, s.totalBytes);
    }
    return bytes;
  }

  /**
   * Uploads one tensor: checks the stored shape against expectedShape (when given), reads only
   * this tensor's bytes, converts to the storage dtype and marks the name used.
   */
  async upload(engine: Engine, name: string, expectedShape?: readonly number[], opts: UploadOptions = {}): Promise<Tensor> {
    const { key, e } = this.entry(name);
    const stored = e.info.shape;
    let shape: readonly number[] = stored;
    if (expectedShape) {
      const same = stored.length === expectedShape.length && stored.every((d, i) => d === expectedShape[i]);
      if (!same && !(opts.allowReshape && numel(stored) === numel(expectedShape))) {
        throw new WeightError(this.label, `weight ${this.describe(name, key)} has shape ${shapeStr(stored)}, expected ${shapeStr(expectedShape)}`, name);
      }
      shape = expectedShape;
    }
    const dtype: DType = opts.dtype ?? (engine.f16 ? 'f16' : 'f32');
    const src = e.info.dtype;
    const isFloat = src === 'F32' || src === 'F16' || src === 'BF16';
    const isInt = src === 'I32' || src === 'I64';
    if (!(dtype === 'i32' ? isInt : isFloat)) {
      throw new WeightError(this.label, `weight ${this.describe(name, key)} has dtype ${src}, which cannot be uploaded as ${dtype}`, name);
    }
    // Refused before its bytes are read: otherwise a weight of gigabytes would be read from disk and
    // converted on the host only for engine.empty to reject it.
    const need = numel(shape) * DTYPE_BYTES[dtype];
    const limit = engine.limits.maxStorageBufferBindingSize;
    if (need > limit) {
      throw new WeightError(
        this.label,
        `weight ${this.describe(name, key)} ${shapeStr(shape)} needs ${need} bytes as ${dtype}, over this device's maxStorageBufferBindingSize (${limit}); this model does not fit this device`,
        name,
      );
    }
    const bytes = await this.rawBytes(key, e);
    const label = e.file.label;
    let data: ArrayBufferView;
    if (dtype === 'f32') data = src === 'F32' ? bytes : bytesToF32(bytes, e.info, label);
    else if (dtype === 'f16') data = bytesToF16Bits(bytes, e.info, label);
    else data = src === 'I32' ? bytes : bytesToI32(bytes, e.info, label);
    const t = engine.empty(shape, dtype, `upload ${name}`, true);
    try {
      engine.writeTensor(t, data);
    } catch (err) {
      t.dispose();
      throw err;
    }
    return t;
  }

  /** f32 values of one tensor (marks it used). */
  async readF32(name: string, expectedShape?: readonly number[]): Promise<Float32Array> {
    const { key, e } = this.entry(name);
    this.checkShape(name, key, e, expectedShape);
    return bytesToF32(await this.rawBytes(key, e), e.info, e.file.label);
  }

  /** IEEE half bits of one tensor (marks it used). */
  async readF16Bits(name: string, expectedShape?: readonly number[]): Promise<Uint16Array> {
    const { key, e } = this.entry(name);
    this.checkShape(name, key, e, expectedShape);
    return bytesToF16Bits(await this.rawBytes(key, e), e.info, e.file.label);
  }

  /** i32 values of an I32/I64 tensor (marks it used). */
  async readI32(name: string, expectedShape?: readonly number[]): Promise<Int32Array> {
    const { key, e } = this.entry(name);
    this.checkShape(name, key, e, expectedShape);
    return bytesToI32(await this.rawBytes(key, e), e.info, e.file.label);
  }

  private checkShape(name: string, key: string, e: Entry, expected?: readonly number[]): void {
    if (!expected) return;
    const s = e.info.shape;
    if (s.length !== expected.length || s.some((d, i) => d !== expected[i])) {
      throw new WeightError(this.label, `weight ${this.describe(name, key)} has shape ${shapeStr(s)}, expected ${shapeStr(expected)}`, name);
    }
  }

  /** Marks tensors as deliberately skipped (e.g. buffers such as position_ids) without reading them. */
  markUsed(...names: string[]): void {
    for (const n of names) {
      const k = this.map.get(n);
      if (k !== undefined) this.shared.used.add(k);
    }
  }

  /** Names (in this view) that no upload/read/markUsed has consumed, sorted. */
  unusedNames(): string[] {
    return this.names().filter((n) => !this.shared.used.has(this.map.get(n)!));
  }

  /** Throws when weights were left over, naming some of them (loaders call this last). */
  assertAllUsed(what = 'model'): void {
    const left = this.unusedNames();
    if (left.length) {
      const shown = left.slice(0, 8).join(', ');
      throw new WeightError(this.label, `${left.length} weight(s) not used by the ${what}: ${shown}${left.length > 8 ? ', ...' : ''}`);
    }
  }

  /** Releases file handles (sources over local files); views share them. */
  async close(): Promise<void> {
    await Promise.all(this.shared.files.map((f) => f.close()));
  }
}

// ---------------------------------------------------------------- close-name suggestions

function editDistance(a: string, b: string, cap: number): number {
  if (Math.abs(a.length - b.length) > cap) return cap + 1;
  let prev = new Array<number>(b.length + 1);
  let cur = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (cur[j] < rowMin) rowMin = cur[j];
    }
    if (rowMin > cap) return cap + 1;
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

/** Up to 5 names within a small edit distance of name, closest first. */
export function closeNames(name: string, names: readonly string[], max = 5): string[] {
  const cap = Math.max(3, Math.floor(name.length * 0.3));
  return names
    .map((n) => ({ n, d: editDistance(name, n, cap) }))
    .filter((x) => x.d <= cap)
    .sort((a, b) => a.d - b.d || (a.n < b.n ? -1 : 1))
    .slice(0, max)
    .map((x) => x.n);
}

// ---------------------------------------------------------------- config helpers

function parseConfig(src: Config | string | Uint8Array | ArrayBuffer, label: string): Config {
  if (typeof src === 'string' || src instanceof Uint8Array || src instanceof ArrayBuffer) {
    return parseJsonObject(typeof src === 'string' ? src : new TextDecoder().decode(src), label);
  }
  if (typeof src !== 'object' || src === null || Array.isArray(src)) throw new IOError(label, 'parse', 'the config must be a JSON object');
  return src;
}

// ---------------------------------------------------------------- component folders

export interface ComponentLoadOptions extends IOOptions {
  /** 'fp16' prefers the *.fp16.safetensors files; either is used when only one exists */
  variant?: 'fp16';
  /** download progress (URL) or read progress as tensors are uploaded (local folder) */
  onProgress?: ProgressCallback;
  /** the source the model loads from instead of the folder's weights (e.g. LoRAs merged on upload) */
  transformWeights?: (weights: WeightSource, config: Config) => WeightSource;
}

export interface Component {
  config: Config;
  weights: WeightSource;
}

/** A diffusers component held in memory. */
export function fromConfigBytes(config: Config | string | Uint8Array | ArrayBuffer, bytes: Uint8Array | ArrayBuffer, label = 'weights'): Component {
  return { config: parseConfig(config, 'config'), weights: WeightSource.fromBytes(bytes, label) };
}

function weightCandidates(variant?: 'fp16'): string[] {
  const order = variant === 'fp16' ? ['.fp16', ''] : ['', '.fp16'];
  const out: string[] = [];
  for (const stem of ['diffusion_pytorch_model', 'model']) {
    for (const v of order) out.push(`${stem}${v}.safetensors`, `${stem}.safetensors.index${v}.json`);
  }
  return out;
}

/** The shard files named by a sharded checkpoint's index json, in order of first appearance. */
function shardFiles(index: unknown, label: string): string[] {
  const map = (index as { weight_map?: unknown })?.weight_map;
  if (typeof map !== 'object' || map === null) throw new Error(`${label}: no weight_map object`);
  const files: string[] = [];
  for (const [k, v] of Object.entries(map as Record<string, unknown>)) {
    if (typeof v !== 'string' || v.includes('/') || v.includes('\\') || v.startsWith('.')) {
      throw new Error(`${label}: bad shard file name for '${k}': ${JSON.stringify(v)}`);
    }
    if (!files.includes(v)) files.push(v);
  }
  return files;
}

/**
 * Reads config.json and the weights of a diffusers component folder: a local path (Node) or a
 * base URL. Weights: diffusion_pytorch_model[.fp16].safetensors, model[.fp16].safetensors
 * (transformers components), or a sharded *.safetensors.index.json.
 */
export async function loadComponentFolder(pathOrUrl: string | URL, opts: ComponentLoadOptions = {}): Promise<Component> {
  const base = String(pathOrUrl);
  const remote = isUrl(base);
  const io: IOOptions = { ...opts, onProgress: undefined };
  const configPath = joinPath(base, 'config.json');
  let configText: string;
  try {
    configText = await readText(configPath, io);
  } catch (e) {
    // A local folder without config.json is usually a wrong path: say what was looked for.
    if (remote || !(e instanceof IOError)) throw e;
    throw new IOError(configPath, e.kind, `cannot read the component config (${e.message.slice(configPath.length + 2)})`, { cause: e });
  }
  const config = parseConfig(configText, configPath);
  const candidates = weightCandidates(opts.variant);
  for (const c of candidates) {
    const p = joinPath(base, c);
    // Locally a missing file is checked for; over HTTP only a 404 moves on, a broken file is an error.
    if (!remote && !(await fileExists(p))) continue;
    let names = [c];
    if (c.endsWith('.json')) {
      let text: string;
      try {
        text = await readText(p, io);
      } catch (e) {
        if (e instanceof IOError && e.kind === 'not-found') continue;
        throw e;
      }
      names = shardFiles(parseConfig(text, p), p);
    }
    const files: SafetensorsFile[] = [];
    let done = 0;
    try {
      for (const n of names) {
        if (!remote) {
          files.push(await openSafetensorsFile(toPath(joinPath(base, n))));
          continue;
        }
        const onProgress: ProgressCallback | undefined = opts.onProgress && ((l, t) => opts.onProgress!(done + l, done + t));
        const file = await downloadSafetensorsFile(joinPath(base, n), { ...opts, onProgress });
        done += file.dataBytes + file.header.dataOffset;
        files.push(file);
      }
    } catch (e) {
      await Promise.all(files.map((f) => f.close()));
      if (remote && names.length === 1 && e instanceof IOError && e.kind === 'not-found') continue;
      throw e;
    }
    const label = names.length === 1 ? files[0].label : p;
    // Local files are read tensor by tensor, so progress follows the reads; downloads reported theirs.
    return { config, weights: WeightSource.fromFiles(files, label, remote ? undefined : opts.onProgress) };
  }
  let bin = false;
  if (!remote) for (const b of ['diffusion_pytorch_model.bin', 'pytorch_model.bin']) bin ||= await fileExists(joinPath(base, b));
  throw new Error(
    `${base}: no safetensors weights found (tried ${candidates.join(', ')})${bin ? '; PyTorch .bin weights are not supported, convert them to safetensors' : ''}`,
  );
}

/** Options of loadComponentFolder (the name the model classes use). */
export type LoadOptions = ComponentLoadOptions;

/** A WeightSource over safetensors bytes in memory. */
export function sourceFromBytes(bytes: Uint8Array | ArrayBuffer, label = 'safetensors bytes'): WeightSource {
  return WeightSource.fromBytes(bytes, label);
}
