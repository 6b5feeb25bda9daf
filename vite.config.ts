// The demo page (npm run demo): demo/ is the root; the bundled models/ are served at /models/ by a
// middleware (dev and preview), so the page can load /models/ldm-mnist like any diffusers URL.
import { defineConfig, type Plugin, type Connect } from 'vite';
import { createReadStream, statSync } from 'node:fs';
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

export default defineConfig({
  root: resolve(root, 'demo'),
  plugins: [serveModels()],
  server: { host: '127.0.0.1', fs: { allow: [root] } },
  preview: { host: '127.0.0.1' },
  build: { outDir: resolve(root, 'dist/demo'), emptyOutDir: true, target: 'es2022' },
});
