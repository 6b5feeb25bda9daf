// The import graph of src/: cycles, and arrows that point up the layers (docs/ARCHITECTURE.md).
// Usage: node tools/import_graph.mjs [--types]   (--types also follows `import type`)
// Exit 1 when a cycle or an upward arrow exists. test/layout.test.ts runs the same checks.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/** Rooms from the bottom up: a module may import its own room and the rooms listed before it. */
export const LAYERS = ['runtime', 'kernels', 'models', 'text', 'schedulers', 'loaders', 'pipelines', 'image', 'index.ts', 'cli'];
// Exceptions, each with its reason: text encoders are models (CLIPTextModel and LDMBert build on
// models/nn and models/model), and the models' public fromSingleFile statics (DESIGN.md's API) reach
// loaders only for the single-file key mapping, a module that imports no model (so no cycle).
const EXTRA = { text: ['models'] };
const EXTRA_FILES = new Set(['loaders/single_file_keys.ts']);

const root = resolve(dirname(new URL(import.meta.url).pathname), '..', 'src');

export function importGraph(withTypes = false) {
  const files = readdirSync(root, { recursive: true }).map(String).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
  const graph = new Map();
  const re = /^\s*(?:import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?['"](\.[^'"]+)['"]/gm;
  for (const f of files) {
    const src = readFileSync(join(root, f), 'utf8');
    const deps = new Set();
    for (const m of src.matchAll(re)) {
      if (m[1] && !withTypes) continue;
      // `import { type A, type B }` is type-only too
      if (!withTypes && /^\s*import\s+\{\s*type\s[^}]*\}/.test(m[0]) && !/\{[^}]*(^|,)\s*(?!type\s)\w+[^}]*\}/.test(m[0].replace(/type\s+\w+/g, ''))) continue;
      const target = relative(root, resolve(dirname(join(root, f)), m[2].replace(/\.js$/, '.ts')));
      if (!target.startsWith('..')) deps.add(target);
    }
    graph.set(f, deps);
  }
  return graph;
}

export function cycles(graph) {
  const out = [];
  const state = new Map();
  const stack = [];
  const visit = (n) => {
    state.set(n, 1);
    stack.push(n);
    for (const d of graph.get(n) ?? []) {
      if (state.get(d) === 1) out.push([...stack.slice(stack.indexOf(d)), d]);
      else if (!state.has(d)) visit(d);
    }
    stack.pop();
    state.set(n, 2);
  };
  for (const n of [...graph.keys()].sort()) if (!state.has(n)) visit(n);
  return out;
}

const room = (f) => (f.includes('/') ? f.split('/')[0] : f);

export function upwardArrows(graph) {
  const out = [];
  for (const [f, deps] of graph) {
    const from = LAYERS.indexOf(room(f));
    for (const d of deps) {
      const to = LAYERS.indexOf(room(d));
      if (from < 0 || to < 0 || to <= from || (EXTRA[room(f)] ?? []).includes(room(d)) || EXTRA_FILES.has(d)) continue;
      out.push(`${f} -> ${d}`);
    }
  }
  return out.sort();
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  const g = importGraph(process.argv.includes('--types'));
  const c = cycles(g);
  const u = upwardArrows(g);
  for (const x of c) console.log('cycle: ' + x.join(' -> '));
  for (const x of u) console.log('upward: ' + x);
  console.log(`${g.size} modules, ${c.length} cycles, ${u.length} upward arrows`);
  process.exit(c.length || u.length ? 1 : 0);
}
