// The demo page (npm run demo): demo/ is the root; the bundled models/ are served at /models/ by a
// middleware (dev and preview), so the page can load models/ldm-mnist like any diffusers URL.
// `npm run build:demo` writes dist/demo with relative paths (base './') and a copy of
// models/ldm-mnist beside index.html, so the folder works from any static host and sub-path.
import { defineConfig, type Plugin, type Connect } from 'vite';
import { cpSync, createReadStream, statSync } from 'node:fs';
import { extname, join, normalize, resolve } from 'node:path';

const root = import.meta.dirname;
const modelsDir = resolve(root, 'models');

function serveModels(): Plugin {
  const handler: Connect.NextHandleFunction = (req, res, next) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (!url.pathname.startsWith('/models/')) return next();
    const file = normalize(join(modelsDir, decodeURIComponent(url.pathname.slice('/models/'.length))));
    let size: number;
    try {
      if (!file.startsWith(modelsDir + '/')) throw new Error('outside');
      const st = statSync(file);
      if (!st.isFile()) throw new Error('not a file');
      size = st.size;
    } catch {
      res.statusCode = 404;
      res.end('not found');
      return;
    }
    const type = extname(file) === '.json' ? 'application/json' : 'application/octet-stream';
    res.writeHead(200, { 'content-type': type, 'content-length': String(size), 'cache-control': 'no-cache' });
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).pipe(res);
  };
  return {
    name: 'ldm-serve-models',
    configureServer(server) {
      server.middlewares.use(handler);
    },
    configurePreviewServer(server) {
      server.middlewares.use(handler);
    },
  };
}

function copyBundledModel(): Plugin {
  let outDir = '';
  return {
    name: 'ldm-copy-bundled-model',
    apply: 'build',
    configResolved(config) {
      outDir = resolve(config.root, config.build.outDir);
    },
    closeBundle() {
      // The test references stay home: the page needs the model only.
      const skip = /[\\/]reference([\\/]|$)/;
      cpSync(join(modelsDir, 'ldm-mnist'), join(outDir, 'models', 'ldm-mnist'), { recursive: true, filter: (src) => !skip.test(src) });
    },
  };
}

export default defineConfig({
  root: resolve(root, 'demo'),
  base: './',
  plugins: [serveModels(), copyBundledModel()],
  server: { host: '127.0.0.1', fs: { allow: [root] } },
  preview: { host: '127.0.0.1' },
  // The engine is one ~530 KiB chunk (140 KiB gzip): no split is wanted.
  build: { outDir: resolve(root, 'dist/demo'), emptyOutDir: true, target: 'es2022', chunkSizeWarningLimit: 1024 },
});
