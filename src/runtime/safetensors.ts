// The safetensors format: a strict header parser, tensor access over any byte source (in memory
// here; local files and URLs in safetensors_sources.ts), host-side dtype conversion and a writer.
//
// Format: 8-byte little-endian u64 N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets:
// [begin, end]}, "__metadata__"?: {string: string}}, then the data section; offsets are relative to
// its start. Model files come from the network and from users' disks, so every field is checked
// before any offset is used: a bad file fails with an Error naming the file and the tensor instead
// of reading out of bounds or allocating absurd amounts of memory. As the format requires (and the
// reference implementation checks), the tensors' byte ranges tile the data section exactly: no
// duplicate names, gaps, overlaps or trailing bytes. Every such failure is a SafetensorsError.

import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from './half.js';

export type { ProgressCallback } from './io.js';

/** dtypes this engine converts; other known safetensors dtypes parse but fail when read. */
export type SafetensorsDType = 'F32' | 'F16' | 'BF16' | 'I64' | 'I32';

const SUPPORTED: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4 };

// Element sizes of the dtypes the safetensors spec defines. A checkpoint may carry a tensor a model
// never reads (a U8 flag, an F64 buffer); knowing its size lets the header validate and the file
// load, and reading that tensor is what fails.
const KNOWN_SIZES: Record<string, number> = {
  ...SUPPORTED,
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  U16: 2,
  I16: 2,
  U32: 4,
  F64: 8,
  U64: 8,
};

/**
 * The header refuses to be larger than this. The reference implementation allows 100 MB, but real
 * headers are small (an SDXL single-file checkpoint: ~2,500 tensors, ~250 KB; ~100-150 bytes per
 * entry), and a 100 MB header costs seconds and ~1 GB of memory to parse. 16 MiB holds the entry
 * cap below with room for metadata, so a 1M-entry header fails from its 8-byte length alone.
 */
export const MAX_HEADER_BYTES = 16 * 2 ** 20;

/** At most this many tensors in one file (real checkpoints have a few thousand). */
export const MAX_TENSORS = 100_000;

/** A malformed or unreadable safetensors file; `file` names it (a path, URL or label). */
export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
  readonly file: string;
  /** the tensor concerned, when one is */
  readonly tensor?: string;

  constructor(file: string, message: string, tensor?: string) {
    super(`${file}: ${message}`);
    this.file = file;
    this.tensor = tensor;
  }
}

export interface SafetensorsTensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** offsets relative to the start of the data section */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** byte offset of the data section in the file (8 + header length) */
  dataOffset: number;
  /** the end of the last tensor, relative to the data section */
  dataEnd: number;
  tensors: Map<string, SafetensorsTensorInfo>;
  metadata: Record<string, string>;
}

function isSupported(dtype: string): dtype is SafetensorsDType {
  return Object.prototype.hasOwnProperty.call(SUPPORTED, dtype);
}

export function dtypeBytes(dtype: string): number | undefined {
  return Object.prototype.hasOwnProperty.call(KNOWN_SIZES, dtype) ? KNOWN_SIZES[dtype] : undefined;
}

function describeValue(v: unknown): string {
  if (v === undefined) return 'undefined';
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Reads the header length from the first 8 bytes; checks it against the limit and the file size. */
export function readHeaderLength(first8: Uint8Array, fileBytes: number | undefined, label: string): number {
  if (first8.byteLength < 8) {
    throw new SafetensorsError(label, `not a safetensors file: ${first8.byteLength} bytes, shorter than the 8-byte header length`);
  }
  const dv = new DataView(first8.buffer, first8.byteOffset, 8);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  const n = hi * 2 ** 32 + lo; // exact below 2^53; anything near that fails the limit check anyway
  if (n > MAX_HEADER_BYTES) {
    throw new SafetensorsError(label, `safetensors header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
  }
  if (fileBytes !== undefined && 8 + n > fileBytes) {
    throw new SafetensorsError(label, `safetensors header length ${n} goes beyond the end of the file (${fileBytes} bytes)`);
  }
  return n;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Deeper than a header can legitimately be: {name: {shape: [..]}} is three levels. */
const MAX_DEPTH = 8;

/**
 * One pass over the header text before JSON.parse, which would keep the last of two equal keys and
 * recurse into any depth: refuses duplicate keys in any object, nesting deeper than MAX_DEPTH and
 * more than MAX_TENSORS top-level entries. Malformed JSON is left for JSON.parse to report.
 */
function scanKeys(text: string, label: string): void {
  const stack: (Set<string> | null)[] = []; // a key set per open object, null per open array
  let expectKey = false;
  let entries = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      while (j < text.length) {
        const d = text.charCodeAt(j);
        if (d === 0x5c) {
          escaped = true;
          j += 2;
        } else if (d === 0x22) break;
        else j++;
      }
      if (expectKey && j < text.length) {
        let key: string;
        try {
          key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : text.slice(i + 1, j);
        } catch {
          return; // a bad escape: JSON.parse reports it
        }
        const keys = stack[stack.length - 1]!;
        const where = stack.length === 1 ? 'the header' : 'an entry of the header';
        if (keys.has(key)) throw new SafetensorsError(label, `${where} has the key '${key}' twice`, stack.length === 1 ? key : undefined);
        keys.add(key);
        if (stack.length === 1 && key !== '__metadata__' && ++entries > MAX_TENSORS) {
          throw new SafetensorsError(label, `more than ${MAX_TENSORS} tensors in the header (corrupt, or not a model file)`);
        }
      }
      expectKey = false;
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (stack.length >= MAX_DEPTH) throw new SafetensorsError(label, `safetensors header nests deeper than ${MAX_DEPTH} levels`);
      stack.push(c === 0x7b ? new Set() : null);
      expectKey = c === 0x7b;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      expectKey = stack.length > 0 && stack[stack.length - 1] !== null;
    }
  }
}

/**
 * Parses and validates the JSON header (the N bytes after the length). dataBytes is the size of the
 * data section when known: the tensors must cover it exactly. Without it (a stream of unknown
 * length), the caller must check header.dataEnd against what arrives.
 */
export function parseHeader(headerBytes: Uint8Array, dataBytes: number | undefined, label: string): SafetensorsHeader {
  const fail = (message: string, tensor?: string) => new SafetensorsError(label, message, tensor);
  let text: string;
  try {
    text = utf8.decode(headerBytes);
  } catch {
    throw fail('safetensors header is not valid UTF-8');
  }
  scanKeys(text, label);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw fail(`safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw fail(`safetensors header must be a JSON object, got ${Array.isArray(json) ? 'an array' : describeValue(json)}`);
  }
  const tensors = new Map<string, SafetensorsTensorInfo>();
  const metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        throw fail(`__metadata__ must be an object of strings, got ${describeValue(entry)}`);
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw fail(`__metadata__ value for key '${k}' must be a string, got ${describeValue(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    const bad = (message: string) => fail(`tensor '${name}': ${message}`, name);
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      throw bad(`entry must be an object with dtype, shape and data_offsets, got ${describeValue(entry)}`);
    }
    const e = entry as Record<string, unknown>;
    for (const key of ['dtype', 'shape', 'data_offsets']) {
      if (!(key in e)) throw bad(`missing '${key}'`);
    }
    const { dtype, shape, data_offsets: offs } = e;
    if (typeof dtype !== 'string') throw bad(`dtype must be a string, got ${describeValue(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad(`shape must be an array of non-negative integers, got ${describeValue(shape)}`);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => typeof o === 'number' && Number.isSafeInteger(o))) {
      throw bad(`data_offsets must be two integers [begin, end], got ${describeValue(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (begin < 0 || end < 0) throw bad(`negative data_offsets [${begin}, ${end}]`);
    if (end < begin) throw bad(`data_offsets [${begin}, ${end}] end before they begin`);
    if (dataBytes !== undefined && end > dataBytes) {
      throw bad(`data_offsets [${begin}, ${end}] lie outside the data section (${dataBytes} bytes)`);
    }
    const size = dtypeBytes(dtype);
    if (size === undefined) throw bad(`unknown dtype '${dtype}'`);
    let count = 1;
    for (const d of shape as number[]) count *= d;
    if (count * size !== end - begin) {
      throw bad(`${end - begin} bytes at data_offsets [${begin}, ${end}] but shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${count * size}`);
    }
    tensors.set(name, { name, dtype, shape: [...(shape as number[])], begin, end });
  }
  // The ranges, in (begin, end) order, must follow each other without gaps or overlaps from 0 to
  // the end of the data section. An empty tensor sits where the previous one ends.
  const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let dataEnd = 0;
  let prev: SafetensorsTensorInfo | undefined;
  for (const t of sorted) {
    if (t.begin < dataEnd) {
      throw fail(`tensor '${t.name}' [${t.begin}, ${t.end}] overlaps tensor '${prev!.name}' [${prev!.begin}, ${prev!.end}]`, t.name);
    }
    if (t.begin > dataEnd) {
      const after = prev ? `after tensor '${prev.name}' [${prev.begin}, ${prev.end}]` : 'at the start of the data section';
      throw fail(`${t.begin - dataEnd} bytes [${dataEnd}, ${t.begin}] belong to no tensor (a gap ${after}, before '${t.name}')`, t.name);
    }
    dataEnd = t.end;
    prev = t;
  }
  if (dataBytes !== undefined && dataEnd !== dataBytes) {
    throw fail(`the data section has ${dataBytes} bytes but the tensors cover ${dataEnd} (${dataBytes - dataEnd} trailing bytes belong to no tensor)`);
  }
  return { dataOffset: 0, dataEnd, tensors, metadata };
}

/** Parses the whole header of an in-memory file. */
export function parseSafetensorsHeader(bytes: Uint8Array, label = 'safetensors bytes'): SafetensorsHeader {
  const n = readHeaderLength(bytes.subarray(0, 8), bytes.byteLength, label);
  const h = parseHeader(bytes.subarray(8, 8 + n), bytes.byteLength - 8 - n, label);
  h.dataOffset = 8 + n;
  return h;
}

// ---------------------------------------------------------------- conversions

/** A typed view needs an aligned offset; tensors inside a file need not be aligned. */
function aligned(bytes: Uint8Array, align: number): Uint8Array {
  return bytes.byteOffset % align === 0 ? bytes : copyBytes(bytes);
}

// Not bytes.slice(): on a Node Buffer that returns a view, not a copy.
function copyBytes(bytes: Uint8Array): Uint8Array {
  const c = new Uint8Array(bytes.byteLength);
  c.set(bytes);
  return c;
}

function u16View(bytes: Uint8Array): Uint16Array {
  const b = aligned(bytes, 2);
  return new Uint16Array(b.buffer, b.byteOffset, b.byteLength >>> 1);
}

function conversionError(label: string, info: SafetensorsTensorInfo, to: string): Error {
  const why = isSupported(info.dtype) ? `not a ${to === 'i32' ? 'integer' : 'float'} tensor` : 'unsupported dtype (supported: F32, F16, BF16, I64, I32)';
  return new SafetensorsError(label, `tensor '${info.name}' has dtype ${info.dtype}: cannot convert to ${to}, ${why}`, info.name);
}

/** Raw tensor bytes -> f32 values (F32 copied, F16/BF16 widened exactly). */
export function bytesToF32(bytes: Uint8Array, info: SafetensorsTensorInfo, label: string): Float32Array {
  switch (info.dtype) {
    case 'F32': {
      const copy = copyBytes(bytes);
      return new Float32Array(copy.buffer, 0, copy.byteLength >>> 2);
    }
    case 'F16':
      return f16BitsToF32(u16View(bytes));
    case 'BF16':
      return bf16BitsToF32(u16View(bytes));
    default:
      throw conversionError(label, info, 'f32');
  }
}

/** Raw tensor bytes -> IEEE half bits (F16 copied; F32/BF16 rounded to nearest even once). */
export function bytesToF16Bits(bytes: Uint8Array, info: SafetensorsTensorInfo, label: string): Uint16Array {
  switch (info.dtype) {
    case 'F16': {
      const copy = copyBytes(bytes);
      return new Uint16Array(copy.buffer, 0, copy.byteLength >>> 1);
    }
    case 'F32': {
      const b = aligned(bytes, 4);
      return f32ToF16Bits(new Float32Array(b.buffer, b.byteOffset, b.byteLength >>> 2));
    }
    case 'BF16':
      // bf16 -> f32 is exact, so this rounds once.
      return f32ToF16Bits(bf16BitsToF32(u16View(bytes)));
    default:
      throw conversionError(label, info, 'f16');
  }
}

/** Raw tensor bytes -> i32 (I64 must fit in i32: indices, positions, flags). */
export function bytesToI32(bytes: Uint8Array, info: SafetensorsTensorInfo, label: string): Int32Array {
  switch (info.dtype) {
    case 'I32': {
      const copy = copyBytes(bytes);
      return new Int32Array(copy.buffer, 0, copy.byteLength >>> 2);
    }
    case 'I64': {
      const b = aligned(bytes, 4);
      const w = new Int32Array(b.buffer, b.byteOffset, b.byteLength >>> 2);
      const out = new Int32Array(w.length >>> 1);
      for (let i = 0; i < out.length; i++) {
        const lo = w[2 * i];
        const hi = w[2 * i + 1];
        // in range iff the high word is the sign extension of the low word
        if (hi !== lo >> 31) {
          const v = (BigInt(hi) << 32n) | BigInt(lo >>> 0);
          throw new SafetensorsError(label, `tensor '${info.name}': I64 value ${v} at index ${i} does not fit in i32`, info.name);
        }
        out[i] = lo;
      }
      return out;
    }
    default:
      throw conversionError(label, info, 'i32');
  }
}

// ---------------------------------------------------------------- sources

/** Reads bytes [begin, end) of the data section. */
export type RangeReader = (begin: number, end: number) => Promise<Uint8Array>;

/**
 * An opened safetensors file. Tensor bytes are read on demand (a file) or viewed in place (memory,
 * URL): a model never sits in host memory twice.
 */
export class SafetensorsFile {
  readonly label: string;
  readonly header: SafetensorsHeader;
  private readRange: RangeReader;
  private closeFn: (() => Promise<void>) | null;
  /** bytes of tensor data read so far (file sources) */
  bytesRead = 0;

  private constructor(label: string, header: SafetensorsHeader, readRange: RangeReader, close: (() => Promise<void>) | null) {
    this.label = label;
    this.header = header;
    this.readRange = readRange;
    this.closeFn = close;
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  names(): string[] {
    return [...this.header.tensors.keys()].sort();
  }

  info(name: string): SafetensorsTensorInfo | undefined {
    return this.header.tensors.get(name);
  }

  /** the size of all tensor data in the file */
  get dataBytes(): number {
    return this.header.dataEnd;
  }

  private infoOrThrow(name: string): SafetensorsTensorInfo {
    const t = this.header.tensors.get(name);
    if (!t) throw new SafetensorsError(this.label, `no tensor named '${name}'`, name);
    return t;
  }

  /** The raw little-endian bytes of one tensor (a view for in-memory sources: do not modify). */
  async bytes(name: string): Promise<Uint8Array> {
    const t = this.infoOrThrow(name);
    const b = await this.readRange(t.begin, t.end);
    this.bytesRead += b.byteLength;
    return b;
  }

  async f32(name: string): Promise<Float32Array> {
    const t = this.infoOrThrow(name);
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') throw conversionError(this.label, t, 'f32');
    return bytesToF32(await this.bytes(name), t, this.label);
  }

  async f16Bits(name: string): Promise<Uint16Array> {
    const t = this.infoOrThrow(name);
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') throw conversionError(this.label, t, 'f16');
    return bytesToF16Bits(await this.bytes(name), t, this.label);
  }

  async i32(name: string): Promise<Int32Array> {
    const t = this.infoOrThrow(name);
    if (t.dtype !== 'I32' && t.dtype !== 'I64') throw conversionError(this.label, t, 'i32');
    return bytesToI32(await this.bytes(name), t, this.label);
  }

  /** Releases the file handle (file sources) or the reference to the bytes. */
  async close(): Promise<void> {
    const c = this.closeFn;
    this.closeFn = null;
    this.readRange = () => Promise.reject(new SafetensorsError(this.label, 'file is closed'));
    if (c) await c();
  }

  /**
   * A file over any byte source: `header` parsed with parseHeader (dataOffset set), `readRange`
   * reading [begin, end) of the data section, `close` releasing the source. safetensors_sources.ts
   * opens local files and URLs with it.
   */
  static fromReader(label: string, header: SafetensorsHeader, readRange: RangeReader, close: (() => Promise<void>) | null = null): SafetensorsFile {
    return new SafetensorsFile(label, header, readRange, close);
  }

  /** An in-memory file (no copy: tensors are views of these bytes). */
  static fromBytes(bytes: Uint8Array | ArrayBuffer, label = 'safetensors bytes'): SafetensorsFile {
    // a plain Uint8Array view, also of a Node Buffer (whose slice() returns a view)
    const u8 = bytes instanceof Uint8Array ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : new Uint8Array(bytes);
    const header = parseSafetensorsHeader(u8, label);
    const base = header.dataOffset;
    return new SafetensorsFile(label, header, async (b, e) => u8.subarray(base + b, base + e), null);
  }
}

// ---------------------------------------------------------------- writer

export interface TensorToWrite {
  dtype: SafetensorsDType;
  shape: readonly number[];
  /**
   * Values, or raw little-endian bytes as a Uint8Array. A Uint16Array holds the bits for F16/BF16;
   * a BigInt64Array holds I64 values; other arrays are values converted to the dtype (rounding to
   * nearest even for F16/BF16).
   */
  data: ArrayLike<number> | BigInt64Array | Uint8Array;
}

function encodeTensor(name: string, t: TensorToWrite): Uint8Array {
  const size = SUPPORTED[t.dtype];
  if (size === undefined) throw new Error(`writeSafetensors: tensor '${name}': unsupported dtype ${String(t.dtype)}`);
  for (const d of t.shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new Error(`writeSafetensors: tensor '${name}': invalid shape [${t.shape.join(', ')}]`);
  }
  let count = 1;
  for (const d of t.shape) count *= d;
  const { data } = t;
  let out: ArrayBufferView;
  if (data instanceof Uint8Array) {
    out = data;
  } else if (data instanceof BigInt64Array) {
    if (t.dtype !== 'I64') throw new Error(`writeSafetensors: tensor '${name}': BigInt64Array data for dtype ${t.dtype}`);
    out = data;
  } else if (data instanceof Uint16Array && (t.dtype === 'F16' || t.dtype === 'BF16')) {
    out = data;
  } else {
    const vals = data as ArrayLike<number>;
    switch (t.dtype) {
      case 'F32':
        out = vals instanceof Float32Array ? vals : Float32Array.from(vals);
        break;
      case 'F16':
        out = f32ToF16Bits(vals);
        break;
      case 'BF16':
        out = f32ToBf16Bits(vals);
        break;
      case 'I32':
        out = vals instanceof Int32Array ? vals : Int32Array.from(vals, (v) => checkedInt(name, v, -(2 ** 31), 2 ** 31 - 1));
        break;
      case 'I64':
        out = BigInt64Array.from(Array.from(vals), (v) => BigInt(checkedInt(name, v, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)));
        break;
    }
  }
  if (out.byteLength !== count * size) {
    throw new Error(`writeSafetensors: tensor '${name}': ${out.byteLength} bytes of data, shape [${t.shape.join(', ')}] of ${t.dtype} needs ${count * size}`);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

function checkedInt(name: string, v: number, lo: number, hi: number): number {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new Error(`writeSafetensors: tensor '${name}': value ${v} is not an integer in [${lo}, ${hi}]`);
  return v;
}

/** Serialises tensors (sorted by name, packed in that order) with an optional string metadata map. */
export function writeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new Error(`writeSafetensors: __metadata__ value for key '${k}' must be a string`);
    }
    header.__metadata__ = metadata;
  }
  const names = Object.keys(tensors).sort();
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const name of names) {
    if (name === '__metadata__') throw new Error(`writeSafetensors: '__metadata__' is reserved and cannot name a tensor`);
    const bytes = encodeTensor(name, tensors[name]);
    header[name] = { dtype: tensors[name].dtype, shape: [...tensors[name].shape], data_offsets: [offset, offset + bytes.byteLength] };
    parts.push(bytes);
    offset += bytes.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const n = Math.ceil(json.byteLength / 8) * 8;
  const out = new Uint8Array(8 + n + offset);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, n % 2 ** 32, true);
  dv.setUint32(4, Math.floor(n / 2 ** 32), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.byteLength, 8 + n);
  let pos = 8 + n;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.byteLength;
  }
  return out;
}
