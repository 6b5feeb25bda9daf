// Diffusers pipeline folders: model_index.json names each component's class; each component sits
// in a subfolder (config.json + weights; scheduler/scheduler_config.json; tokenizer/ files).
import type { Engine } from '../runtime/engine.js';
import { joinPath, readJson, type ProgressCallback } from '../runtime/io.js';
import type { LoadOptions } from '../runtime/weights.js';
import type { Config } from '../runtime/config.js';

export interface PipelineLoadOptions extends LoadOptions {
  /** progress over all components: (component, loadedBytes, totalBytes) */
  onComponentProgress?: (component: string, loaded: number, total: number) => void;
}

interface Disposable {
  dispose(): void;
}

export type ComponentClass = { fromPretrained(engine: Engine, pathOrUrl: string, opts?: LoadOptions): Promise<Disposable> };

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
  const io = { ...opts, onProgress: undefined };
  const index: Config = await readJson(joinPath(base, 'model_index.json'), io);
  const models: Record<string, Disposable> = {};
  try {
    for (const [name, cls] of Object.entries(classes)) {
      const entry = index[name];
      if (!Array.isArray(entry) || entry[1] === null) continue;
      const onProgress: ProgressCallback | undefined = opts.onComponentProgress ? (l, t) => opts.onComponentProgress!(name, l, t) : opts.onProgress;
      models[name] = await cls.fromPretrained(engine, joinPath(base, name), { ...opts, onProgress });
    }
    const schedulerConfig: Config = await readJson(joinPath(base, 'scheduler', 'scheduler_config.json'), io);
    return { index, models, schedulerConfig };
  } catch (e) {
    for (const m of Object.values(models)) m.dispose();
    throw e;
  }
}
