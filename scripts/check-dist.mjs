// After `npm run build`: the browser bundle must not import Node built-ins or the `webgpu` package
// (Node's Dawn binding), and every entry must exist. Prints the bundle sizes (raw and gzip).
import { readFileSync, readdirSync, existsSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const need = ['dist/browser/index.js', 'dist/node/index.js', 'dist/node/cli.js', 'dist/types/index.d.ts', 'dist/bench/bench.js'];
const problems = need.filter((f) => !existsSync(f)).map((f) => `${f} is missing`);

const jsFiles = (dir) => (existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith('.js')).map((f) => join(dir, f)) : []);
const importRe = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s*)["'`]([^"'`]+)["'`]/g;
for (const file of [...jsFiles('dist/browser'), ...jsFiles('dist/bench')]) {
  const src = readFileSync(file, 'utf8');
  for (const m of src.matchAll(importRe)) {
    const spec = m[1];
    if (spec.startsWith('node:') || spec === 'webgpu' || /^(fs|path|url|os|module|child_process)$/.test(spec)) problems.push(`${file} imports ${spec}`);
  }
  if (/dawn\.node|createRequire\(/.test(src)) problems.push(`${file} contains Node's Dawn binding or createRequire`);
}
// npm makes bin files executable on install; this makes ./dist/node/cli.js runnable in a checkout too.
if (existsSync('dist/node/cli.js')) chmodSync('dist/node/cli.js', 0o755);
const cli = existsSync('dist/node/cli.js') ? readFileSync('dist/node/cli.js', 'utf8') : '';
if (cli && !cli.startsWith('#!/usr/bin/env node')) problems.push('dist/node/cli.js has no #!/usr/bin/env node line');

const size = (files) => {
  let raw = 0;
  let gz = 0;
  for (const f of files) {
    const b = readFileSync(f);
    raw += b.byteLength;
    gz += gzipSync(b, { level: 9 }).byteLength;
  }
  return `${(raw / 1024).toFixed(1)} KiB raw, ${(gz / 1024).toFixed(1)} KiB gzip`;
};
console.log(`dist/browser (all .js): ${size(jsFiles('dist/browser'))}`);
console.log(`dist/node (all .js):    ${size(jsFiles('dist/node'))}`);
if (problems.length) {
  console.error(`check-dist: ${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('check-dist: ok (the browser bundle imports no Node built-ins and does not bundle webgpu)');
