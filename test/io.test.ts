// runtime/io.ts: paths vs URLs, whole reads, streams, ranges, progress, and the no-progress timeout;
// plus a guard that no other src module fetches, touches node:fs or tells URLs from paths itself.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { IOError, fileExists, isUrl, joinPath, openFile, openRandomAccess, openStream, readBytes, readJson, readText, readTextIfExists, toPath } from '../src/runtime/io.js';

describe('io: names', () => {
  it('tells URLs from local paths in Node', () => {
    for (const u of ['http://x/y', 'https://h.test/a.json', 'blob:abc', 'data:text/plain,hi']) expect(isUrl(u), u).toBe(true);
    for (const p of ['/tmp/x', 'rel/dir', './a', 'C:\\models\\sd', 'C:/models', 'file:///tmp/x', 'FILE:///tmp/y']) expect(isUrl(p), p).toBe(false);
    expect(isUrl(new URL('https://h.test/'))).toBe(true);
  });

  it('turns file: URLs into paths and joins with one separator', () => {
    expect(toPath('file:///tmp/a%20b/c.json')).toBe('/tmp/a b/c.json');
    expect(toPath('/tmp/x')).toBe('/tmp/x');
    expect(joinPath('https://h.test/m/', 'unet', 'config.json')).toBe('https://h.test/m/unet/config.json');
    expect(joinPath('C:\\m\\', 'x')).toBe('C:\\m/x');
    expect(joinPath('/a//', 'b')).toBe('/a/b');
  });
});

describe('io: local files', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ldm-io-'));
    writeFileSync(join(dir, 'a.json'), '{"x": [1, 2], "é": "ü"}');
    writeFileSync(join(dir, 'arr.json'), '[1]');
    writeFileSync(join(dir, 'bad.json'), '{"x": ');
    writeFileSync(join(dir, 'bytes.bin'), Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads text, JSON and bytes from paths and file: URLs', async () => {
    expect(await readJson(join(dir, 'a.json'))).toEqual({ x: [1, 2], é: 'ü' });
    expect(await readText(pathToFileURL(join(dir, 'a.json')).href)).toContain('"é": "ü"');
    const progress: number[][] = [];
    const b = await readBytes(join(dir, 'bytes.bin'), { onProgress: (l, t) => progress.push([l, t]) });
    expect(b.byteLength).toBe(1000);
    expect(b[999]).toBe((999 * 7) & 255);
    expect(progress).toEqual([[1000, 1000]]);
    expect(await fileExists(join(dir, 'bytes.bin'))).toBe(true);
    expect(await fileExists(dir)).toBe(false);
    expect(await fileExists(join(dir, 'none'))).toBe(false);
  });

  it('fails with an IOError naming the path', async () => {
    const missing = join(dir, 'missing.json');
    await expect(readJson(missing)).rejects.toMatchObject({ name: 'IOError', kind: 'not-found', source: missing });
    expect(await readTextIfExists(missing)).toBeNull();
    expect(await readTextIfExists(join(dir, 'nodir', 'x'))).toBeNull();
    await expect(readJson(join(dir, 'bad.json'))).rejects.toThrow(/bad\.json: invalid JSON/);
    await expect(readJson(join(dir, 'arr.json'))).rejects.toThrow(/arr\.json: invalid JSON \(expected an object, got an array\)/);
    await expect(readText(dir)).rejects.toBeInstanceOf(IOError);
  });

  it('reads ranges and streams of a file', async () => {
    const f = await openFile(join(dir, 'bytes.bin'));
    expect(f.size).toBe(1000);
    expect(Array.from(await f.read(13, 3))).toEqual([13 * 7, 14 * 7, 15 * 7].map((v) => v & 255));
    await expect(f.read(998, 5)).rejects.toMatchObject({ kind: 'truncated', message: expect.stringMatching(/file ended at byte 1000/) });
    await f.close();
    await expect(f.read(0, 1)).rejects.toThrow(/closed/);
    const s = await openStream(join(dir, 'bytes.bin'));
    expect(s.length).toBe(1000);
    let n = 0;
    for (let c = await s.next(); c; c = await s.next()) n += c.byteLength;
    expect(n).toBe(1000);
    expect(await s.next()).toBeNull();
  });
});

describe('io: URLs', () => {
  let server: Server;
  let base: string;
  const body = Uint8Array.from({ length: 5000 }, (_, i) => (i * 13 + 1) & 255);
  const open = new Set<ServerResponse>();
  let ranged = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      open.add(res);
      res.on('close', () => open.delete(res));
      const url = req.url ?? '';
      if (url === '/data.bin') {
        res.setHeader('content-length', String(body.byteLength));
        res.write(body.subarray(0, 2000));
        setTimeout(() => res.end(body.subarray(2000)), 20);
      } else if (url === '/chunked.bin') {
        res.write(body.subarray(0, 100));
        res.end(body.subarray(100));
      } else if (url === '/ranged.bin') {
        ranged++;
        const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
        if (!m) return void res.end(body);
        const [a, b] = [Number(m[1]), Math.min(Number(m[2]), body.byteLength - 1)];
        res.statusCode = 206;
        res.setHeader('content-range', `bytes ${a}-${b}/${body.byteLength}`);
        res.end(body.subarray(a, b + 1));
      } else if (url === '/c.json') {
        res.end('{"a": 1}');
      } else if (url === '/short.bin') {
        res.setHeader('content-length', '100');
        res.write(body.subarray(0, 40));
        setTimeout(() => res.destroy(), 20);
      } else if (url === '/stall-body.bin') {
        res.setHeader('content-length', '100');
        res.write(body.subarray(0, 10)); // then nothing
      } else if (url === '/slow-drip.bin') {
        // 10 chunks 60 ms apart: slower in total than the timeout, but never idle that long
        res.setHeader('content-length', '10');
        let i = 0;
        const t = setInterval(() => {
          res.write(body.subarray(i, i + 1));
          if (++i === 10) {
            clearInterval(t);
            res.end();
          }
        }, 60);
      } else if (url === '/no-answer') {
        // never answers
      } else {
        res.statusCode = 404;
        res.end('nope');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const r of open) r.destroy();
    await new Promise((r) => server.close(r));
  });

  it('downloads with progress and reads JSON', async () => {
    const progress: number[][] = [];
    const got = await readBytes(`${base}/data.bin`, { onProgress: (l, t) => progress.push([l, t]) });
    expect(got).toEqual(body);
    expect(progress[progress.length - 1]).toEqual([5000, 5000]);
    expect(progress.every(([l, t], i) => t === 5000 && (i === 0 || l > progress[i - 1][0]))).toBe(true);
    const p2: number[][] = [];
    expect(await readBytes(`${base}/chunked.bin`, { onProgress: (l, t) => p2.push([l, t]) })).toEqual(body);
    expect(p2).toEqual([[5000, 5000]]);
    expect(await readJson(`${base}/c.json`)).toEqual({ a: 1 });
  });

  it('reads ranges of a URL with Range requests, or from one download when the server ignores them', async () => {
    const r = await openRandomAccess(`${base}/ranged.bin`);
    expect(r.size).toBe(5000);
    expect(await r.read(4000, 7)).toEqual(body.subarray(4000, 4007));
    expect(ranged).toBe(2); // the probe and one range: the rest never travelled
    await expect(r.read(4999, 2)).rejects.toMatchObject({ kind: 'truncated', message: expect.stringMatching(/outside the file \(5000 bytes\)/) });
    const w = await openRandomAccess(`${base}/data.bin`);
    expect(w.size).toBe(5000);
    expect(await w.read(123, 3)).toEqual(body.subarray(123, 126));
  });

  it('names the URL in HTTP, network and truncation errors', async () => {
    await expect(readText(`${base}/gone.json`)).rejects.toMatchObject({ name: 'IOError', kind: 'not-found', status: 404, source: `${base}/gone.json` });
    expect(await readTextIfExists(`${base}/gone.json`)).toBeNull();
    await expect(readBytes(`${base}/short.bin`)).rejects.toThrow(/short\.bin: (download truncated|download failed after 40 bytes)/);
    await expect(readText('http://127.0.0.1:1/x.json')).rejects.toMatchObject({ kind: 'network', message: expect.stringMatching(/x\.json: fetch failed/) });
  });

  it('times out when no progress is made, not when a slow download keeps moving', async () => {
    const t0 = Date.now();
    await expect(readText(`${base}/no-answer`, { timeoutMs: 150 })).rejects.toMatchObject({ name: 'IOError', kind: 'timeout', message: expect.stringMatching(/no-answer: no progress for 150 ms/) });
    await expect(readBytes(`${base}/stall-body.bin`, { timeoutMs: 150 })).rejects.toMatchObject({ kind: 'timeout', source: `${base}/stall-body.bin` });
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect((await readBytes(`${base}/slow-drip.bin`, { timeoutMs: 400 })).byteLength).toBe(10);
    // a fetch that ignores its AbortSignal still times out
    const deaf = (() => new Promise<Response>(() => {})) as unknown as typeof fetch;
    await expect(readText('https://h.test/x', { fetch: deaf, timeoutMs: 100 })).rejects.toMatchObject({ kind: 'timeout' });
  });

  it('stops on the caller\'s abort signal', async () => {
    const ac = new AbortController();
    const p = readBytes(`${base}/stall-body.bin`, { signal: ac.signal, timeoutMs: 0 });
    setTimeout(() => ac.abort(), 50);
    await expect(p).rejects.toMatchObject({ name: 'IOError', kind: 'aborted' });
    const done = new AbortController();
    done.abort();
    await expect(readText(`${base}/c.json`, { signal: done.signal })).rejects.toMatchObject({ kind: 'aborted' });
  });
});

describe('io: the only door', () => {
  // Everything that fetches, opens files or decides "URL or path?" goes through runtime/io.ts, so
  // that timeouts, progress and error messages behave the same everywhere. The CLI (a Node app, not
  // the library) may write its output files with node:fs and wrap fetch to announce slow servers.
  const root = join(__dirname, '..', 'src');
  const files = (readdirSync(root, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).map((f) => join(root, f));
  const rules: [RegExp, string][] = [
    [/\bglobalThis\.fetch\b|\bopts?\.fetch\s*\?\?|\bawait\s+fetch\s*\(/, 'fetch'],
    [/['"]node:fs(\/promises)?['"]|from\s+['"]fs['"]|\bnodeFs\b|\breadFile(Sync)?\s*\(/, 'node:fs'],
    [/\[a-z\]\[a-z0-9\+\.-\]|startsWith\(['"](file|https?):|function\s+isUrl\b|const\s+isUrl\b/, 'an isUrl-like check'],
  ];
  it('no src module but runtime/io.ts fetches, reads files or tells URLs from paths', () => {
    const bad: string[] = [];
    for (const f of files) {
      const rel = relative(root, f).replace(/\\/g, '/');
      if (rel === 'runtime/io.ts') continue;
      const src = readFileSync(f, 'utf8');
      for (const [re, what] of rules) {
        if ((what === 'node:fs' || what === 'fetch') && rel.startsWith('cli/')) continue;
        // WGSL generators name a local helper fetch(); only a file without one may not call fetch(
        const ownsFetch = /\b(function|const|let)\s+fetch\b/.test(src);
        if (re.test(src) || (what === 'fetch' && !ownsFetch && /(^|[^.\w])fetch\(/.test(src))) bad.push(`${rel} uses ${what}`);
      }
    }
    expect(bad).toEqual([]);
    expect(files.length).toBeGreaterThan(50);
  });

  it('the guard catches each kind of use', () => {
    const snippets = ["const r = await fetch(url);", "import { readFile } from 'node:fs/promises';", "const u = /^[a-z][a-z0-9+.-]+:/i.test(s);", "if (s.startsWith('https:')) x();"];
    for (const s of snippets) expect(rules.some(([re]) => re.test(s)) || /(^|[^.\w])fetch\(/.test(s), s).toBe(true);
  });
});
