// Library builds (npm run build): `--mode browser` -> dist/browser (no Node built-ins),
// `--mode node` -> dist/node (index + the CLI), `--mode bench` -> dist/bench (the op benchmarks
// as a page script for `ldm-webgpu bench --browser`, importing the built browser library).
import { defineConfig, type Plugin, type UserConfig } from 'vite';
import { builtinModules } from 'node:module';
import { resolve } from 'node:path';
import { existsSync } from 'node:fs';

const root = import.meta.dirname;
const nodeBuiltins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);

/** In the browser build, Node-only modules become a stub that throws: the engine reaches them only
 * through dynamic imports behind runtime checks, so the stub never runs in a browser. */
function nodeOnlyStub(): Plugin {
  const prefix = '\0node-only:';
  return {
    name: 'ldm-node-only-stub',
    enforce: 'pre',
    resolveId(id) {
      if (id === 'webgpu' || nodeBuiltins.has(id)) return prefix + id;
      return null;
    },
    load(id) {
      if (!id.startsWith(prefix)) return null;
      const name = id.slice(prefix.length);
      return `const fail = () => { throw new Error(${JSON.stringify(`${name} is Node-only and not available in this browser build`)}); };\n` +
        'export const create = fail, globals = {}, existsSync = fail;\nexport default {};\n';
    },
  };
}

/** The bench page script uses the built library (dist/browser/index.js) instead of bundling src again. */
function libraryAsExternal(): Plugin {
  const index = resolve(root, 'src/index.ts');
  return {
    name: 'ldm-library-external',
    enforce: 'pre',
    async resolveId(id, importer) {
      if (!importer) return null;
      const r = await this.resolve(id, importer, { skipSelf: true });
      if (r && resolve(r.id) === index) return { id: '../browser/index.js', external: true };
      return null;
    },
  };
}

/** Modules other contributors add over time (bench/models.ts): while one is missing, its dynamic
 * import becomes a stub that says so, instead of failing the build. */
function optionalModules(): Plugin {
  const optional = [resolve(root, 'bench/models.ts')];
  return {
    name: 'ldm-optional-modules',
    enforce: 'pre',
    resolveId(id, importer) {
      if (!importer || !id.startsWith('.')) return null;
      const target = resolve(importer, '..', id).replace(/\.js$/, '.ts');
      if (optional.includes(target) && !existsSync(target)) return '\0optional:' + target;
      return null;
    },
    load(id) {
      if (!id.startsWith('\0optional:')) return null;
      return `throw new Error(${JSON.stringify(`${id.slice(10)} is not part of this build`)});\n`;
    },
  };
}

export default defineConfig(({ mode }): UserConfig => {
  if (mode === 'node') {
    return {
      plugins: [optionalModules()],
      build: {
        outDir: 'dist/node',
        emptyOutDir: true,
        target: 'node20',
        minify: false,
        sourcemap: true,
        lib: { entry: { index: resolve(root, 'src/index.ts'), cli: resolve(root, 'src/cli/main.ts') }, formats: ['es'] },
        rolldownOptions: {
          // Dependencies stay packages (installed next to the library); node built-ins stay imports.
          external: (id: string) => nodeBuiltins.has(id) || /^(webgpu|wgsl_reflect|pngjs|cli-progress|puppeteer-core|vite|onnxruntime-web|@tensorflow\/)/.test(id),
          output: { entryFileNames: '[name].js', chunkFileNames: 'chunks/[name]-[hash].js' },
        },
      },
    };
  }
  if (mode === 'bench') {
    return {
      plugins: [libraryAsExternal(), nodeOnlyStub()],
      build: {
        outDir: 'dist/bench',
        emptyOutDir: true,
        target: 'es2022',
        minify: true,
        lib: { entry: { bench: resolve(root, 'bench/browser_page.ts') }, formats: ['es'] },
        rolldownOptions: { output: { entryFileNames: '[name].js', chunkFileNames: '[name]-[hash].js' } },
      },
    };
  }
  return {
    plugins: [nodeOnlyStub()],
    build: {
      outDir: 'dist/browser',
      emptyOutDir: true,
      target: 'es2022',
      minify: true,
      sourcemap: true,
      lib: { entry: { index: resolve(root, 'src/index.ts') }, formats: ['es'] },
      // One file: the Node-only stubs would otherwise become chunks of their own.
      rolldownOptions: { output: { entryFileNames: '[name].js', codeSplitting: false } },
    },
  };
});
