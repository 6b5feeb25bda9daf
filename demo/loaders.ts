// Where the demo's model files come from: the network through Cache Storage (cache-first, so a
// second load makes no request), or File objects the user picked or dropped, behind a fetch-like
// function so the engine's URL loaders read them unchanged.

export const CACHE_NAME = 'ldm-webgpu-models-v1';

/** fetch with Cache Storage in front for GET requests of model files (json, safetensors, txt). */
export function cachedFetch(onNetwork?: (url: string) => void): typeof fetch {
  return async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const cacheable = method === 'GET' && /^https?:/.test(new URL(url, location.href).protocol) && typeof caches !== 'undefined';
    if (!cacheable) return fetch(input, init);
    const cache = await caches.open(CACHE_NAME);
    const hit = await cache.match(url);
    if (hit) return hit;
    onNetwork?.(url);
    const res = await fetch(input, init);
    // Only whole successful answers go in: a 404 (an optional file that is absent) is asked again.
    if (res.ok && res.status === 200) {
      try {
        await cache.put(url, res.clone());
      } catch (e) {
        console.warn(`Cache Storage: could not store ${url}: ${(e as Error).message}`);
      }
    }
    return res;
  };
}

/** Bytes the cached model files take (their content-length, else their body size). */
export async function cachedBytes(): Promise<{ files: number; bytes: number }> {
  if (typeof caches === 'undefined' || !(await caches.has(CACHE_NAME))) return { files: 0, bytes: 0 };
  const cache = await caches.open(CACHE_NAME);
  let bytes = 0;
  const keys = await cache.keys();
  for (const req of keys) {
    const res = await cache.match(req);
    const len = Number(res?.headers.get('content-length'));
    bytes += Number.isFinite(len) && len > 0 ? len : (await res?.blob())?.size ?? 0;
  }
  return { files: keys.length, bytes };
}

export async function clearModelCache(): Promise<void> {
  if (typeof caches !== 'undefined') await caches.delete(CACHE_NAME);
}

/** Picked or dropped files by their path inside the chosen folder ("unet/config.json"). */
export type FileMap = Map<string, File>;

export const LOCAL_BASE = 'local-files://model';

/** Paths below the chosen folder: "ldm-mnist/unet/config.json" -> "unet/config.json". When every
 * path shares one top folder and model_index.json is below it, that folder is dropped. */
export function normaliseFileMap(entries: Array<[string, File]>): FileMap {
  const clean = entries.map(([p, f]) => [p.replace(/^\/+/, '').replace(/\\/g, '/'), f] as [string, File]);
  const tops = new Set(clean.map(([p]) => (p.includes('/') ? p.slice(0, p.indexOf('/')) : '')));
  const strip = tops.size === 1 && !tops.has('') && !clean.some(([p]) => p === 'model_index.json');
  return new Map(clean.map(([p, f]) => [strip ? p.slice(p.indexOf('/') + 1) : p, f]));
}

export function filesFromInput(list: FileList): FileMap {
  return normaliseFileMap(Array.from(list).map((f) => [f.webkitRelativePath || f.name, f]));
}

/** Files and folders of a drop (folders through the File and Directory Entries API). */
export async function filesFromDrop(dt: DataTransfer): Promise<FileMap> {
  const out: Array<[string, File]> = [];
  const entries = Array.from(dt.items).map((i) => i.webkitGetAsEntry?.()).filter((e): e is FileSystemEntry => !!e);
  if (entries.length === 0) return normaliseFileMap(Array.from(dt.files).map((f) => [f.name, f]));
  const walk = async (entry: FileSystemEntry, prefix: string): Promise<void> => {
    if (entry.isFile) {
      const file = await new Promise<File>((ok, bad) => (entry as FileSystemFileEntry).file(ok, bad));
      out.push([prefix + entry.name, file]);
      return;
    }
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    for (;;) {
      // readEntries returns the entries in batches until an empty one.
      const batch = await new Promise<FileSystemEntry[]>((ok, bad) => reader.readEntries(ok, bad));
      if (batch.length === 0) break;
      for (const e of batch) await walk(e, `${prefix}${entry.name}/`);
    }
  };
  for (const e of entries) await walk(e, '');
  return normaliseFileMap(out);
}

/** A fetch over a FileMap for URLs under LOCAL_BASE; other URLs go to `fallback`. */
export function fileFetch(files: FileMap, fallback: typeof fetch = fetch): typeof fetch {
  return async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (!url.startsWith(LOCAL_BASE + '/')) return fallback(input, init);
    if (init?.signal?.aborted) throw init.signal.reason ?? new DOMException('aborted', 'AbortError');
    const path = decodeURIComponent(url.slice(LOCAL_BASE.length + 1));
    const file = files.get(path);
    if (!file) return new Response(`${path} is not among the chosen files`, { status: 404, statusText: 'Not Found' });
    return new Response(file, { status: 200, headers: { 'content-length': String(file.size), 'content-type': file.type || 'application/octet-stream' } });
  };
}
