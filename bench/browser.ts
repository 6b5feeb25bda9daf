// `ldm-webgpu bench --browser`: the op benchmarks inside headless Chromium. A small http server on
// 127.0.0.1 serves the built library (dist/browser) and the page script (dist/bench); the table
// and the JSON are printed, and the JSON is written next to the Node results.
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { extname, join, normalize, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { launchChromium } from './chromium.js';
import type { OpRow } from './ops.js';

const TYPES: Record<string, string> = { '.js': 'text/javascript', '.map': 'application/json', '.html': 'text/html', '.json': 'application/json' };

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>ldm-webgpu bench</title><link rel="icon" href="data:,"></head>
<body><script type="module" src="/bench/bench.js"></script></body></html>`;

/** Serves `<root>/dist/*` and the bench page on 127.0.0.1 at a free port. */
export async function serveDist(root: string): Promise<{ server: Server; url: string }> {
  const dist = resolve(root, 'dist');
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (path === '/' || path === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
      return;
    }
    const file = normalize(join(dist, path));
    if (!file.startsWith(dist + '/')) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'content-length': body.byteLength }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` };
}

function table(rows: OpRow[]): string {
  const lines = [
    `${'op'.padEnd(42)} ${'ours ms'.padStart(10)} ${'GFLOP/s'.padStart(9)} ${'GB/s'.padStart(8)} ${'tfjs ms'.padStart(10)} ${'speedup'.padStart(8)}`,
  ];
  for (const r of rows) {
    lines.push(
      `${r.name.padEnd(42)} ${r.ours.medianMs.toFixed(3).padStart(10)} ${r.ours.gflops.toFixed(2).padStart(9)} ${r.ours.gbps.toFixed(2).padStart(8)} ` +
        `${(r.tfjs ? r.tfjs.medianMs.toFixed(3) : '-').padStart(10)} ${(r.speedup ? `x${r.speedup.toFixed(2)}` : '-').padStart(8)}`,
    );
  }
  return lines.join('\n');
}

export async function runBrowserBench(opts: { tfjs: boolean; root: string; out?: string; filter?: string }): Promise<unknown> {
  for (const f of ['dist/browser/index.js', 'dist/bench/bench.js']) {
    if (!existsSync(resolve(opts.root, f))) throw new Error(`${f} is missing: run \`npm run build\` first`);
  }
  const { server, url } = await serveDist(opts.root);
  const chrome = await launchChromium();
  try {
    const page = await chrome.browser.newPage();
    page.on('console', (m) => process.stderr.write(`[chromium] ${m.text()}\n`));
    page.on('pageerror', (e) => process.stderr.write(`[chromium] page error: ${(e as Error).message}\n`));
    await page.goto(url);
    await page.waitForFunction(() => typeof (globalThis as { ldmBench?: unknown }).ldmBench === 'function', { timeout: 60_000 });
    const result = (await page.evaluate(
      (o) => (globalThis as unknown as { ldmBench: (o: { tfjs: boolean; filter?: string }) => Promise<unknown> }).ldmBench(o),
      { tfjs: opts.tfjs, filter: opts.filter },
    )) as {
      adapter: string;
      userAgent: string;
      tfjs: string | null;
      rows: OpRow[];
    };
    const json = { ...result, suite: 'ops', backend: 'browser (Chromium, headless)', date: new Date().toISOString(), node: process.version };
    console.log(`\nbrowser: ${result.userAgent}\nadapter: ${result.adapter}${result.tfjs ? `, TF.js ${result.tfjs}` : ''}\n`);
    console.log(table(result.rows));
    console.log(JSON.stringify(json, null, 2));
    if (opts.out) {
      mkdirSync(opts.out, { recursive: true });
      const file = join(opts.out, 'browser-ops.json');
      writeFileSync(file, JSON.stringify(json, null, 2));
      console.error(`wrote ${file}`);
    }
    return json;
  } finally {
    await chrome.close();
    server.close();
  }
}
