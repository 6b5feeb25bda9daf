// Where safetensors bytes come from: a local file (Node), read tensor by tensor through io.ts, or a
// URL streamed into memory with the header checked as soon as it arrives (a bad file fails before
// its gigabytes download). The format itself (parse, validate, convert, write) is safetensors.ts.
import { IOError, isUrl, openFile, openStream, toPath, type IOOptions } from './io.js';
import { SafetensorsError, SafetensorsFile, parseHeader, readHeaderLength } from './safetensors.js';

/**
 * Opens a safetensors file: a local path (Node; file: URLs too) reads the header now and each
 * tensor's bytes when asked (call close()); a URL downloads with a streaming fetch, where onProgress
 * gets (loaded, total) per chunk once the total is known (Content-Length, else the size the header
 * implies) and a last call with loaded === total.
 */
export async function openSafetensors(pathOrUrl: string | URL, opts: IOOptions = {}): Promise<SafetensorsFile> {
  const s = String(pathOrUrl);
  return isUrl(s) ? downloadSafetensorsFile(s, opts) : openSafetensorsFile(toPath(s));
}

/** A local file (Node): the header now, each tensor's bytes when asked. Call close(). */
export async function openSafetensorsFile(path: string): Promise<SafetensorsFile> {
  const file = await openFile(path);
  try {
    const n = readHeaderLength(await file.read(0, Math.min(8, file.size)), file.size, path);
    const header = parseHeader(await file.read(8, n), file.size - 8 - n, path);
    header.dataOffset = 8 + n;
    const base = header.dataOffset;
    return SafetensorsFile.fromReader(path, header, (b, e) => file.read(base + b, e - b), () => file.close());
  } catch (e) {
    await file.close();
    throw e;
  }
}

/** A URL, downloaded into memory (streaming fetch, header checked on arrival). */
export async function downloadSafetensorsFile(url: string | URL, opts: IOOptions = {}): Promise<SafetensorsFile> {
  const label = String(url);
  return SafetensorsFile.fromBytes(await downloadSafetensors(label, opts), label);
}

/**
 * Streams a safetensors file into one buffer. Fails early on a bad header, and on a stream that
 * ends before its Content-Length or before the end of the last tensor.
 */
async function downloadSafetensors(label: string, opts: IOOptions): Promise<Uint8Array> {
  const stream = await openStream(label, { ...opts, onProgress: undefined });
  const contentLength = stream.length;
  let buf: Uint8Array;
  try {
    buf = new Uint8Array(contentLength ?? 64 * 1024);
  } catch (e) {
    await stream.cancel();
    throw new SafetensorsError(label, `cannot hold the ${contentLength} bytes of this file in memory (${(e as Error).message})`);
  }
  let filled = 0; // bytes stored in buf
  let received = 0; // bytes that came over the wire
  let total = contentLength; // what onProgress reports as total
  let required: number | undefined; // end of the last tensor, once the header is parsed
  let lastReported = -1;

  const store = (chunk: Uint8Array) => {
    const limit = required ?? contentLength ?? Infinity;
    const n = Math.min(chunk.byteLength, Math.max(0, limit - filled));
    if (filled + n > buf.byteLength) {
      // Only while the header is incomplete and the length unknown: grow geometrically.
      const grown = new Uint8Array(Math.max(filled + n, buf.byteLength * 2));
      grown.set(buf.subarray(0, filled));
      buf = grown;
    }
    buf.set(chunk.subarray(0, n), filled);
    filled += n;
  };

  try {
    for (let value = await stream.next(); value; value = await stream.next()) {
      received += value.byteLength;
      if (contentLength !== undefined && received > contentLength) {
        throw new IOError(label, 'network', `server sent more than its Content-Length of ${contentLength} bytes`);
      }
      store(value);
      if (required === undefined && filled >= 8) {
        const n = readHeaderLength(buf.subarray(0, 8), contentLength, label);
        if (filled >= 8 + n) {
          const header = parseHeader(buf.subarray(8, 8 + n), contentLength !== undefined ? contentLength - 8 - n : undefined, label);
          required = 8 + n + header.dataEnd;
          if (contentLength === undefined) {
            // Now the size is known: move into an exact buffer; bytes past the last tensor are never used.
            total = required;
            const exact = new Uint8Array(required);
            const keep = Math.min(filled, required);
            exact.set(buf.subarray(0, keep));
            buf = exact;
            filled = keep;
          }
        }
      }
      if (total !== undefined && opts.onProgress) {
        const loaded = Math.min(received, total);
        if (loaded !== lastReported) {
          lastReported = loaded;
          opts.onProgress(loaded, total);
        }
      }
    }
  } catch (e) {
    await stream.cancel();
    throw e;
  }

  if (contentLength !== undefined && received < contentLength) {
    throw new IOError(label, 'truncated', `download truncated: received ${received} of ${contentLength} bytes`);
  }
  if (received < 8) readHeaderLength(buf.subarray(0, received), received, label);
  if (required === undefined) {
    const n = readHeaderLength(buf.subarray(0, 8), undefined, label);
    throw new IOError(label, 'truncated', `download truncated: safetensors header length ${n} goes beyond the ${received} bytes received`);
  }
  if (filled < required) {
    throw new IOError(label, 'truncated', `download truncated: received ${received} bytes, the tensors end at byte ${required}`);
  }
  if (received > required) {
    // Without a Content-Length the header tells where the file ends; more bytes break the format.
    throw new SafetensorsError(label, `${received - required} trailing bytes after the last tensor (which ends at byte ${required}) belong to no tensor`);
  }
  if (opts.onProgress && total !== undefined && lastReported !== total) opts.onProgress(total, total);
  return buf.subarray(0, filled);
}
