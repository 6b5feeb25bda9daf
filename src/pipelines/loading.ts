// Diffusers pipeline folders: model_index.json names each component's class; each component sits
// in a subfolder (config.json + weights; scheduler/scheduler_config.json; tokenizer/ files).
import type { Engine } from '../runtime/engine.js';
import { nodeFs, type ProgressCallback } from '../runtime/safetensors.js';
import type { LoadOptions } from '../runtime/weights.js';
import type { Config } from '../models/config.js';

export interface PipelineLoadOptions extends LoadOptions {
  /** progress over all components: (component, loadedBytes, totalBytes) */
  onComponentProgress?: (component: string, loaded: number, total: number) => void;
}

interface Disposable {
  dispose(): void;
}

export type ComponentClass = { fromPretrained(engine: Engine, pathOrUrl: string, opts?: LoadOptions): Promise<Disposable> };

export function isUrl(s: string): boolean {
  const inNode = typeof process !== 'undefined' && !!(process as { versions?: { node?: string } }).versions?.node;
  if (!inNode) return true;
  return /^[a-z][a-z0-9+.-]+:/i.test(s) && !/^[a-z]:[\\/]/i.test(s) && !s.startsWith('file:');
}

export function joinPath(base: string, ...parts: string[]): string {
  let out = base.replace(/\/+$/, '');
  for (const p of parts) out += '/' + p;
  return out;
}

export async function readJson(pathOrUrl: string, opts: { fetch?: typeof fetch; signal?: AbortSignal } = {}): Promise<Config> {
  let text: string;
  if (isUrl(pathOrUrl)) {
    const f = opts.fetch ?? globalThis.fetch;
    let res: Response;
    try {
      res = await f(pathOrUrl, { signal: opts.signal });
    } catch (e) {
      throw new Error(`${pathOrUrl}: fetch failed: ${(e as Error).message}`);
    }
    if (!res.ok) throw new Error(`${pathOrUrl}: HTTP ${res.status}`);
    text = await res.text();
  } else {
    const fs = await nodeFs();
    try {
      text = await fs.readFile(pathOrUrl.startsWith('file:') ? decodeURIComponent(new URL(pathOrUrl).pathname) : pathOrUrl, 'utf8');
    } catch (e) {
      throw new Error(`${pathOrUrl}: cannot read (${(e as Error).message})`);
    }
  }
  try {
    const v = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Config;
  } catch (e) {
    throw new Error(`${pathOrUrl}: invalid JSON (${(e as Error).message})`);
  }
}

/**
 * Loads the components of a pipeline folder whose model_index.json names classes from `classes`
 * (keyed by component name). Components listed but not in `classes` (safety_checker,
 * feature_extractor, text parts loaded by the caller) are skipped. On failure everything loaded is freed.
 */
export async function loadPipelineFolder(
  engine: Engine,
  base: string,
  classes: Record<string, ComponentClass>,
  opts: PipelineLoadOptions = {},
): Promise<{ index: Config; models: Record<string, Disposable>; schedulerConfig: Config }> {
  const index = await readJson(joinPath(base, 'model_index.json'), opts);
  const models: Record<string, Disposable> = {};
  try {
    for (const [name, cls] of Object.entries(classes)) {
      const entry = index[name];
      if (!Array.isArray(entry) || entry[1] === null) continue;
      const onProgress: ProgressCallback | undefined = opts.onComponentProgress ? (l, t) => opts.onComponentProgress!(name, l, t) : opts.onProgress;
      models[name] = await cls.fromPretrained(engine, joinPath(base, name), { ...opts, onProgress });
    }
    const schedulerConfig = await readJson(joinPath(base, 'scheduler', 'scheduler_config.json'), opts);
    return { index, models, schedulerConfig };
  } catch (e) {
    for (const m of Object.values(models)) m.dispose();
    throw e;
  }
}
