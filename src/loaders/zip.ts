// Random-access byte sources (memory, a local file, a Blob/File, a URL with Range requests) and a
// read-only ZIP directory over them: enough for PyTorch's torch.save archives (stored entries,
// zip64 when large). Nothing is read until asked, so a multi-GB checkpoint is never held whole.
// Every offset and size from the archive is checked against the source size before it is used.

import { openRandomAccess, type IOOptions, type RandomAccessFile } from '../runtime/io.js';

/** A malformed, hostile or unsupported checkpoint; the message names the file and what is wrong. */
export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

export interface ByteReader {
  readonly label: string;
  readonly size: number;
  /** bytes [pos, pos + len); may be a view of memory (do not modify) */
  read(pos: number, len: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

export type ByteSource = string | URL | Uint8Array | ArrayBuffer | Blob;

function checkRange(r: { label: string; size: number }, pos: number, len: number): void {
  if (!Number.isSafeInteger(pos) || !Number.isSafeInteger(len) || pos < 0 || len < 0 || pos + len > r.size) {
    throw new CheckpointError(`${r.label}: read of ${len} bytes at ${pos} is outside the file (${r.size} bytes): truncated or corrupt`);
  }
}

export function readerFromBytes(bytes: Uint8Array | ArrayBuffer, label = 'checkpoint bytes'): ByteReader {
  const u8 = bytes instanceof Uint8Array ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : new Uint8Array(bytes);
  const r: ByteReader = {
    label,
    size: u8.byteLength,
    read: async (pos, len) => {
      checkRange(r, pos, len);
      return u8.subarray(pos, pos + len);
    },
    close: async () => {},
  };
  return r;
}

export function readerFromBlob(blob: Blob, label = (blob as { name?: string }).name ?? 'checkpoint blob'): ByteReader {
  const r: ByteReader = {
    label,
    size: blob.size,
    read: async (pos, len) => {
      checkRange(r, pos, len);
      return new Uint8Array(await blob.slice(pos, pos + len).arrayBuffer());
    },
    close: async () => {},
  };
  return r;
}

/** A reader over a local file or a URL (HTTP Range requests when the server honours them). */
function readerFromRandomAccess(f: RandomAccessFile): ByteReader {
  const r: ByteReader = {
    label: f.source,
    size: f.size,
    read: async (pos, len) => {
      checkRange(r, pos, len);
      return f.read(pos, len);
    },
    close: () => f.close(),
  };
  return r;
}

/** A reader for a path (Node), URL, Blob/File or bytes. */
export async function openByteSource(source: ByteSource, opts: IOOptions & { label?: string } = {}): Promise<ByteReader> {
  if (source instanceof Uint8Array || source instanceof ArrayBuffer) return readerFromBytes(source, opts.label);
  if (typeof Blob !== 'undefined' && source instanceof Blob) return readerFromBlob(source, opts.label);
  return readerFromRandomAccess(await openRandomAccess(source as string | URL, opts));
}

// ---------------------------------------------------------------- zip directory

export interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

const MAX_ENTRIES = 1_000_000;
const MAX_DIRECTORY_BYTES = 256 * 1024 * 1024;
const utf8 = new TextDecoder('utf-8');

export class ZipArchive {
  readonly reader: ByteReader;
  readonly entries: Map<string, ZipEntry>;
  private dataOffsets = new Map<string, number>();

  private constructor(reader: ByteReader, entries: Map<string, ZipEntry>) {
    this.reader = reader;
    this.entries = entries;
  }

  get label(): string {
    return this.reader.label;
  }

  static async open(reader: ByteReader): Promise<ZipArchive> {
    const label = reader.label;
    const bad = (what: string) => new CheckpointError(`${label}: not a valid zip archive: ${what}`);
    if (reader.size < 22) throw bad(`${reader.size} bytes is too short`);
    const tailLen = Math.min(reader.size, 22 + 65535 + 20);
    const tailStart = reader.size - tailLen;
    const tail = await reader.read(tailStart, tailLen);
    const tv = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (tv.getUint32(i, true) === 0x06054b50 && i + 22 + tv.getUint16(i + 20, true) <= tailLen) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw bad('no end-of-central-directory record');
    let count = tv.getUint16(eocd + 10, true);
    let cdSize = tv.getUint32(eocd + 12, true);
    let cdOffset = tv.getUint32(eocd + 16, true);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      // zip64: the locator sits right before the classic record
      const loc = eocd - 20;
      if (loc < 0 || tv.getUint32(loc, true) !== 0x07064b50) throw bad('zip64 sizes without a zip64 locator');
      const z64 = u64(tv, loc + 8, label);
      checkRange(reader, z64, 56);
      const rec = await reader.read(z64, 56);
      const rv = new DataView(rec.buffer, rec.byteOffset, 56);
      if (rv.getUint32(0, true) !== 0x06064b50) throw bad('zip64 end-of-central-directory record missing');
      count = u64(rv, 32, label);
      cdSize = u64(rv, 40, label);
      cdOffset = u64(rv, 48, label);
    }
    if (count > MAX_ENTRIES) throw bad(`${count} entries (limit ${MAX_ENTRIES})`);
    if (cdSize > MAX_DIRECTORY_BYTES || cdOffset + cdSize > reader.size) throw bad(`central directory (${cdSize} bytes at ${cdOffset}) is outside the file`);
    const cd = await reader.read(cdOffset, cdSize);
    const cv = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
    const entries = new Map<string, ZipEntry>();
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cdSize || cv.getUint32(p, true) !== 0x02014b50) throw bad(`central directory entry ${i} is malformed`);
      const flags = cv.getUint16(p + 8, true);
      const method = cv.getUint16(p + 10, true);
      let compressedSize = cv.getUint32(p + 20, true);
      let size = cv.getUint32(p + 24, true);
      const nameLen = cv.getUint16(p + 28, true);
      const extraLen = cv.getUint16(p + 30, true);
      const commentLen = cv.getUint16(p + 32, true);
      let localOffset = cv.getUint32(p + 42, true);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > cdSize) throw bad(`central directory entry ${i} runs past the directory`);
      const name = utf8.decode(cd.subarray(p + 46, p + 46 + nameLen));
      // zip64 extra field: the 0xffffffff fields, in the order size, compressed size, offset
      let q = p + 46 + nameLen;
      const extraEnd = q + extraLen;
      while (q + 4 <= extraEnd) {
        const id = cv.getUint16(q, true);
        const len = cv.getUint16(q + 2, true);
        if (q + 4 + len > extraEnd) throw bad(`entry '${name}' has a malformed extra field`);
        if (id === 0x0001) {
          let r = q + 4;
          const take = () => {
            if (r + 8 > q + 4 + len) throw bad(`entry '${name}' has a short zip64 extra field`);
            const v = u64(cv, r, label);
            r += 8;
            return v;
          };
          if (size === 0xffffffff) size = take();
          if (compressedSize === 0xffffffff) compressedSize = take();
          if (localOffset === 0xffffffff) localOffset = take();
        }
        q += 4 + len;
      }
      if (entries.has(name)) throw bad(`entry '${name}' appears twice`);
      if (localOffset + 30 > reader.size || localOffset + compressedSize > reader.size) throw bad(`entry '${name}' lies outside the file`);
      entries.set(name, { name, method, flags, compressedSize, size, localOffset });
      p = end;
    }
    return new ZipArchive(reader, entries);
  }

  /** The file offset of an entry's data (from its local header, whose extra field may differ). */
  async dataOffset(name: string): Promise<number> {
    const known = this.dataOffsets.get(name);
    if (known !== undefined) return known;
    const e = this.entry(name);
    const h = await this.reader.read(e.localOffset, 30);
    const hv = new DataView(h.buffer, h.byteOffset, 30);
    if (hv.getUint32(0, true) !== 0x04034b50) throw new CheckpointError(`${this.label}: zip entry '${name}' has no local header at ${e.localOffset}`);
    const off = e.localOffset + 30 + hv.getUint16(26, true) + hv.getUint16(28, true);
    if (off + e.compressedSize > this.reader.size) throw new CheckpointError(`${this.label}: zip entry '${name}' (${e.compressedSize} bytes at ${off}) runs past the end of the file`);
    this.dataOffsets.set(name, off);
    return off;
  }

  entry(name: string): ZipEntry {
    const e = this.entries.get(name);
    if (!e) throw new CheckpointError(`${this.label}: the archive has no entry '${name}'`);
    if (e.flags & 1) throw new CheckpointError(`${this.label}: zip entry '${name}' is encrypted`);
    if (e.method !== 0) throw new CheckpointError(`${this.label}: zip entry '${name}' is compressed (method ${e.method}); torch.save archives store entries uncompressed`);
    if (e.size !== e.compressedSize) throw new CheckpointError(`${this.label}: stored zip entry '${name}' has different sizes (${e.compressedSize} vs ${e.size})`);
    return e;
  }

  /** bytes [begin, begin + len) of an entry's data */
  async read(name: string, begin = 0, len?: number): Promise<Uint8Array> {
    const e = this.entry(name);
    const n = len ?? e.size - begin;
    if (begin < 0 || n < 0 || begin + n > e.size) throw new CheckpointError(`${this.label}: read of ${n} bytes at ${begin} is outside zip entry '${name}' (${e.size} bytes)`);
    return this.reader.read((await this.dataOffset(name)) + begin, n);
  }
}

function u64(v: DataView, at: number, label: string): number {
  const lo = v.getUint32(at, true);
  const hi = v.getUint32(at + 4, true);
  if (hi >= 0x200000) throw new CheckpointError(`${label}: zip64 field ${hi * 2 ** 32 + lo} is beyond 2^53`);
  return hi * 2 ** 32 + lo;
}
