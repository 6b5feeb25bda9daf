// The one place that reads from the outside world: it tells a URL from a local path, fetches URLs
// (browser and Node) and reads local files (Node), as text, JSON, whole bytes, a chunk stream or
// random-access ranges, with progress and a timeout that fires when no progress is made.
//
// Every failure is an IOError naming the URL or path. Node's fs is reached through a dynamic import
// of a computed specifier, so bundlers leave it out of the browser build (scripts/check-dist.mjs).

/** (loadedBytes, totalBytes): called per chunk once the total is known, last with loaded === total. */
export type ProgressCallback = (loadedBytes: number, totalBytes: number) => void;

export interface IOOptions {
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
  /** a fetch to use instead of globalThis.fetch (auth headers, caching) */
  fetch?: typeof fetch;
  /**
   * Milliseconds a URL read may go without progress (no response, no new bytes) before it fails
   * with an IOError of kind 'timeout'. Default 30 000; 0 or Infinity disables it. Local files have none.
   */
  timeoutMs?: number;
}

export const DEFAULT_TIMEOUT_MS = 30_000;

export type IOErrorKind = 'not-found' | 'http' | 'network' | 'timeout' | 'aborted' | 'truncated' | 'file' | 'parse';

export class IOError extends Error {
  override readonly name = 'IOError';
  /** the URL or path that failed */
  readonly source: string;
  readonly kind: IOErrorKind;
  /** the HTTP status for kinds 'http' and 'not-found' from a server */
  readonly status?: number;

  constructor(source: string, kind: IOErrorKind, message: string, opts: { status?: number; cause?: unknown } = {}) {
    super(`${source}: ${message}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.source = source;
    this.kind = kind;
    this.status = opts.status;
  }
}

// ---------------------------------------------------------------- names

/** True under Node (also in Node test runners); false in browsers and workers. */
export function isNode(): boolean {
  return typeof process !== 'undefined' && !!(process as { versions?: { node?: string } }).versions?.node;
}

/**
 * Whether `s` is fetched rather than read from disk. In a browser everything is a URL (relative
 * ones included). In Node only scheme-qualified strings other than file: are; the scheme needs two
 * or more letters, so Windows drive paths (C:\x, C:/x) stay paths.
 */
export function isUrl(s: string | URL): boolean {
  if (!isNode()) return true;
  const str = String(s);
  return /^[a-z][a-z0-9+.-]+:/i.test(str) && !/^file:/i.test(str);
}

/** A local path for `s`: file: URLs are decoded, anything else is returned as is. */
export function toPath(s: string | URL): string {
  const str = String(s);
  return /^file:/i.test(str) ? decodeURIComponent(new URL(str).pathname) : str;
}

/** `base` + '/' + each part, with the trailing separators of `base` removed first. */
const bareName = (p: string) => p.replace(/[?#].*$/, '');
/** A .safetensors path or URL (any case; a URL's query and fragment aside: `...x.safetensors?download=true`). */
export const isSafetensorsName = (p: string): boolean => /\.safetensors$/i.test(bareName(p));
/** A pickle checkpoint's name (.ckpt/.pt/.pth/.bin), same rules. */
export const isPickleName = (p: string): boolean => /\.(ckpt|pt|pth|bin)$/i.test(bareName(p));

export function joinPath(base: string | URL, ...parts: string[]): string {
  let out = String(base).replace(/[/\\]+$/, '');
  for (const p of parts) out += '/' + p;
  return out;
}

// ---------------------------------------------------------------- Node fs

type NodeFs = typeof import('node:fs/promises');
let fsPromise: Promise<NodeFs> | null = null;

function nodeFs(source: string): Promise<NodeFs> {
  if (!isNode()) return Promise.reject(new IOError(source, 'file', 'local files can only be read in Node; give a URL'));
  // A computed specifier: bundlers do not follow it, so browser builds never include node:fs.
  const spec = 'node:fs/promises';
  fsPromise ??= import(/* @vite-ignore */ spec) as Promise<NodeFs>;
  return fsPromise;
}

function isMissing(e: unknown): boolean {
  const code = (e as { code?: string })?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function fileError(path: string, e: unknown): IOError {
  if (e instanceof IOError) return e;
  return new IOError(path, isMissing(e) ? 'not-found' : 'file', `cannot read (${(e as Error)?.message ?? String(e)})`, { cause: e });
}

/** Whether a local path names a regular file (Node). URLs and browsers: false. */
export async function fileExists(path: string): Promise<boolean> {
  if (!isNode() || isUrl(path)) return false;
  const fs = await nodeFs(path);
  try {
    return (await fs.stat(toPath(path))).isFile();
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- the no-progress timer

/**
 * Aborts a fetch when no progress happens for timeoutMs, or when the caller's signal aborts. Every
 * await of the fetch goes through race(), so a fetch that ignores its signal still times out.
 */
class Watchdog {
  readonly controller = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private failed: Promise<never>;
  private fail!: (e: IOError) => void;
  private onAbort = () => this.stop(new IOError(this.source, 'aborted', 'aborted', { cause: this.signal?.reason }));

  constructor(
    private readonly source: string,
    private readonly timeoutMs: number,
    private readonly signal?: AbortSignal,
  ) {
    this.failed = new Promise<never>((_, reject) => (this.fail = reject));
    this.failed.catch(() => {}); // observed through race()
    if (signal?.aborted) this.onAbort();
    else signal?.addEventListener('abort', this.onAbort, { once: true });
    this.kick();
  }

  /** Progress was made: restart the clock. */
  kick(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (!(this.timeoutMs > 0 && Number.isFinite(this.timeoutMs))) return;
    this.timer = setTimeout(() => this.stop(new IOError(this.source, 'timeout', `no progress for ${this.timeoutMs} ms (timeoutMs), gave up`)), this.timeoutMs);
  }

  race<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.failed]);
  }

  private stop(e: IOError): void {
    this.done();
    this.fail(e);
    this.controller.abort(e);
  }

  done(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.signal?.removeEventListener('abort', this.onAbort);
  }
}

// ---------------------------------------------------------------- streams

/** Sequential bytes of a URL or a file. */
export interface ByteStream {
  readonly source: string;
  /** the announced size (Content-Length without a Content-Encoding, or the file size), if known */
  readonly length: number | undefined;
  /** the next chunk, or null at the end; rejects with an IOError */
  next(): Promise<Uint8Array | null>;
  /** stops early and releases the connection or file handle */
  cancel(): Promise<void>;
}

function contentLength(res: Response): number | undefined {
  // With a Content-Encoding the header counts compressed bytes, while the body stream is decoded.
  const enc = res.headers.get('content-encoding');
  if (enc && enc.toLowerCase() !== 'identity') return undefined;
  const cl = res.headers.get('content-length');
  if (cl === null || !/^\d+$/.test(cl.trim())) return undefined;
  const n = Number(cl);
  return Number.isSafeInteger(n) ? n : undefined;
}

async function fetchResponse(url: string, opts: IOOptions, dog: Watchdog, headers?: Record<string, string>): Promise<Response> {
  const f = opts.fetch ?? globalThis.fetch;
  if (typeof f !== 'function') throw new IOError(url, 'network', 'no fetch() in this environment');
  let res: Response;
  try {
    res = await dog.race(f(url, headers ? { headers, signal: dog.controller.signal } : { signal: dog.controller.signal }));
  } catch (e) {
    if (e instanceof IOError) throw e;
    throw new IOError(url, 'network', `fetch failed: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  }
  if (!res.ok) {
    res.body?.cancel().catch(() => {});
    const kind = res.status === 404 || res.status === 410 ? 'not-found' : 'http';
    throw new IOError(url, kind, `HTTP ${res.status} ${res.statusText ?? ''}`.trimEnd(), { status: res.status });
  }
  dog.kick();
  return res;
}

function urlStream(url: string, res: Response, dog: Watchdog): ByteStream {
  const length = contentLength(res);
  const body = res.body;
  let received = 0;
  if (!body) {
    // No stream (some fetch polyfills): one chunk.
    let done = false;
    return {
      source: url,
      length,
      async next() {
        if (done) return null;
        done = true;
        try {
          const ab = await dog.race(res.arrayBuffer());
          return new Uint8Array(ab);
        } catch (e) {
          throw streamError(url, e, 0);
        } finally {
          dog.done();
        }
      },
      async cancel() {
        done = true;
        dog.done();
      },
    };
  }
  const reader = body.getReader();
  let finished = false;
  const finish = () => {
    finished = true;
    dog.done();
  };
  return {
    source: url,
    length,
    async next() {
      if (finished) return null;
      try {
        for (;;) {
          const { done, value } = await dog.race(reader.read());
          if (done) {
            finish();
            return null;
          }
          if (!value || value.byteLength === 0) continue;
          received += value.byteLength;
          dog.kick();
          return value;
        }
      } catch (e) {
        finish();
        reader.cancel().catch(() => {});
        throw streamError(url, e, received);
      }
    },
    async cancel() {
      if (finished) return;
      finish();
      await reader.cancel().catch(() => {});
    },
  };
}

function streamError(url: string, e: unknown, received: number): IOError {
  if (e instanceof IOError) return e;
  return new IOError(url, 'network', `download failed after ${received} bytes: ${(e as Error)?.message ?? String(e)}`, { cause: e });
}

const FILE_CHUNK = 4 << 20;

async function fileStream(path: string): Promise<ByteStream> {
  const file = await openFile(path);
  let pos = 0;
  let open = true;
  const close = async () => {
    if (open) {
      open = false;
      await file.close();
    }
  };
  return {
    source: path,
    length: file.size,
    async next() {
      if (!open) return null;
      if (pos >= file.size) {
        await close();
        return null;
      }
      const n = Math.min(FILE_CHUNK, file.size - pos);
      try {
        const chunk = await file.read(pos, n);
        pos += n;
        return chunk;
      } catch (e) {
        await close();
        throw e;
      }
    },
    cancel: close,
  };
}

/** Opens `source` (URL or local path) for sequential reading; the caller reads to the end or cancels. */
export async function openStream(source: string | URL, opts: IOOptions = {}): Promise<ByteStream> {
  const s = String(source);
  if (!isUrl(s)) return fileStream(s);
  return (await request(s, opts)).stream;
}

async function request(url: string, opts: IOOptions, headers?: Record<string, string>): Promise<{ res: Response; stream: ByteStream }> {
  const dog = new Watchdog(url, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, opts.signal);
  try {
    const res = await fetchResponse(url, opts, dog, headers);
    return { res, stream: urlStream(url, res, dog) };
  } catch (e) {
    dog.done();
    throw e;
  }
}

// ---------------------------------------------------------------- whole reads

/**
 * All bytes of a URL or a local path. A download that ends before its Content-Length, or sends more,
 * fails. onProgress follows the download once its size is known.
 */
export async function readBytes(source: string | URL, opts: IOOptions = {}): Promise<Uint8Array> {
  const s = String(source);
  if (!isUrl(s)) {
    const fs = await nodeFs(s);
    let b: Uint8Array;
    try {
      b = await fs.readFile(toPath(s));
    } catch (e) {
      throw fileError(s, e);
    }
    opts.onProgress?.(b.byteLength, b.byteLength);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }
  return drain((await request(s, opts)).stream, opts.onProgress);
}

/** Reads a stream to its end into one buffer, checking its announced length. */
async function drain(stream: ByteStream, onProgress?: ProgressCallback): Promise<Uint8Array> {
  const s = stream.source;
  const total = stream.length;
  let buf: Uint8Array;
  try {
    buf = new Uint8Array(total ?? 64 * 1024);
  } catch (e) {
    await stream.cancel();
    throw new IOError(s, 'file', `cannot hold the ${total} bytes of this file in memory (${(e as Error).message})`);
  }
  let filled = 0;
  try {
    for (let chunk = await stream.next(); chunk; chunk = await stream.next()) {
      if (total !== undefined && filled + chunk.byteLength > total) {
        throw new IOError(s, 'network', `server sent more than its Content-Length of ${total} bytes`);
      }
      if (filled + chunk.byteLength > buf.byteLength) {
        const grown = new Uint8Array(Math.max(filled + chunk.byteLength, buf.byteLength * 2));
        grown.set(buf.subarray(0, filled));
        buf = grown;
      }
      buf.set(chunk, filled);
      filled += chunk.byteLength;
      if (total !== undefined) onProgress?.(filled, total);
    }
  } catch (e) {
    await stream.cancel();
    throw e;
  }
  if (total !== undefined && filled < total) throw new IOError(s, 'truncated', `download truncated: received ${filled} of ${total} bytes`);
  if (total === undefined) onProgress?.(filled, filled);
  return buf.subarray(0, filled);
}

/** UTF-8 text of a URL or a local path. */
export async function readText(source: string | URL, opts: IOOptions = {}): Promise<string> {
  return new TextDecoder().decode(await readBytes(source, opts));
}

/** Like readText, but null when the file does not exist (ENOENT, HTTP 404/410). */
export async function readTextIfExists(source: string | URL, opts: IOOptions = {}): Promise<string | null> {
  try {
    return await readText(source, opts);
  } catch (e) {
    if (e instanceof IOError && e.kind === 'not-found') return null;
    throw e;
  }
}

/** A JSON object (not an array or a scalar) read from a URL or a local path. */
export async function readJson(source: string | URL, opts: IOOptions = {}): Promise<Record<string, unknown>> {
  return parseJsonObject(await readText(source, opts), String(source));
}

/** Parses text that must hold a JSON object; errors name `source`. */
export function parseJsonObject(text: string, source: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new IOError(source, 'parse', `invalid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new IOError(source, 'parse', `invalid JSON (expected an object, got ${Array.isArray(v) ? 'an array' : v === null ? 'null' : typeof v})`);
  return v as Record<string, unknown>;
}

// ---------------------------------------------------------------- writes (Node)

/** Writes UTF-8 text to a local file (Node), creating its folder; for caches the library keeps. */
export async function writeText(path: string, text: string): Promise<void> {
  const fs = await nodeFs(path);
  const p = toPath(path);
  try {
    const dir = p.slice(0, Math.max(p.lastIndexOf('/'), p.lastIndexOf('\\')));
    if (dir) await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(p, text);
  } catch (e) {
    throw new IOError(path, 'file', `cannot write (${(e as Error)?.message ?? String(e)})`, { cause: e });
  }
}

/** `~/.cache/ldm-webgpu/<name>` (Node): where the library keeps what it learns about this machine. */
export async function userCachePath(name: string): Promise<string> {
  if (!isNode()) throw new IOError(name, 'file', 'there is no user cache folder outside Node');
  const spec = 'node:os';
  const os = (await import(/* @vite-ignore */ spec)) as typeof import('node:os');
  return `${os.homedir()}/.cache/ldm-webgpu/${name}`;
}

// ---------------------------------------------------------------- random access

export interface RandomAccessFile {
  /** the path or URL */
  readonly source: string;
  readonly size: number;
  /** exactly `length` bytes at `position`; a file that got shorter fails */
  read(position: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** Opens a local file (Node) for reads at any offset. Call close(). */
export async function openFile(path: string): Promise<RandomAccessFile> {
  const fs = await nodeFs(path);
  let fh: Awaited<ReturnType<NodeFs['open']>>;
  let size: number;
  try {
    fh = await fs.open(toPath(path), 'r');
  } catch (e) {
    throw fileError(path, e);
  }
  try {
    size = (await fh.stat()).size;
  } catch (e) {
    await fh.close().catch(() => {});
    throw fileError(path, e);
  }
  let closed = false;
  return {
    source: path,
    size,
    async read(position: number, length: number): Promise<Uint8Array> {
      if (closed) throw new IOError(path, 'file', 'file is closed');
      const buf = new Uint8Array(length);
      let got = 0;
      while (got < length) {
        let bytesRead: number;
        try {
          ({ bytesRead } = await fh.read(buf, got, length - got, position + got));
        } catch (e) {
          throw fileError(path, e);
        }
        if (bytesRead === 0) {
          throw new IOError(path, 'truncated', `file ended at byte ${position + got} while reading ${length} bytes at ${position} (truncated or changed while open)`);
        }
        got += bytesRead;
      }
      return buf;
    },
    async close() {
      if (closed) return;
      closed = true;
      await fh.close();
    },
  };
}

/**
 * Random access to a local path (Node) or a URL. A URL is read with HTTP Range requests when the
 * server honours them (206 with a Content-Range total), so only the bytes asked for travel;
 * otherwise its whole body is downloaded once and served from memory. The no-progress timeout
 * applies to every request.
 */
export async function openRandomAccess(source: string | URL, opts: IOOptions = {}): Promise<RandomAccessFile> {
  const url = String(source);
  if (!isUrl(url)) return openFile(url);
  const io: IOOptions = { ...opts, onProgress: undefined };
  const probe = await request(url, io, { Range: 'bytes=0-0' });
  const total = /\/(\d+)\s*$/.exec(probe.res.headers.get('content-range') ?? '');
  if (probe.res.status !== 206 || !total) {
    const all = await drain(probe.stream, opts.onProgress);
    return {
      source: url,
      size: all.byteLength,
      async read(position, length) {
        if (position < 0 || position + length > all.byteLength) throw rangeError(url, position, length, all.byteLength);
        return all.subarray(position, position + length);
      },
      async close() {},
    };
  }
  await drain(probe.stream);
  const size = Number(total[1]);
  return {
    source: url,
    size,
    async read(position, length) {
      if (position < 0 || position + length > size) throw rangeError(url, position, length, size);
      if (length === 0) return new Uint8Array(0);
      const r = await request(url, io, { Range: `bytes=${position}-${position + length - 1}` });
      const body = await drain(r.stream);
      if (r.res.status !== 206 || body.byteLength !== length) {
        throw new IOError(url, 'truncated', `range request for ${length} bytes at ${position} returned ${body.byteLength} bytes (status ${r.res.status})`);
      }
      return body;
    },
    async close() {},
  };
}

function rangeError(source: string, position: number, length: number, size: number): IOError {
  return new IOError(source, 'truncated', `read of ${length} bytes at ${position} is outside the file (${size} bytes)`);
}
