// Diffusers pipeline folders: model_index.json names each component's class; each component sits
// in a subfolder (config.json + weights; scheduler/scheduler_config.json; tokenizer/ files).
import type { Engine } from '../runtime/engine.js';
import { isPickleName, isSafetensorsName, joinPath, readJson, type ProgressCallback } from '../runtime/io.js';
import type { LoadOptions, WeightSource } from '../runtime/weights.js';
import type { Config } from '../runtime/config.js';
import { LoraMerger, LORA_COMPONENTS, type LoraComponent, type LoraReport, type LoraSpec, type MergeTarget } from '../loaders/lora.js';
import type { IOOptions } from '../runtime/io.js';
import { fromSingleFile, openSingleFile, type SingleFileModels, type SingleFileSource } from '../loaders/single_file.js';
import { CLIPTokenizer } from '../text/clip_tokenizer.js';

export interface PipelineLoadOptions extends LoadOptions {
  /** progress over all components: (component, loadedBytes, totalBytes) */
  onComponentProgress?: (component: string, loaded: number, total: number) => void;
  /** LoRA files merged into the UNet and text encoder(s) as they load, each with its scale */
  loras?: readonly LoraSpec[];
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
  /** a reason to refuse the folder's _class_name before any weight loads (another pipeline's folder) */
  refuseClass?: (className: string) => string | null,
): Promise<{ index: Config; models: Record<string, Disposable>; schedulerConfig: Config; loraReport: LoraReport | null }> {
  const io = { ...opts, onProgress: undefined };
  const index: Config = await readJson(joinPath(base, 'model_index.json'), io);
  const refused = refuseClass?.(String(index._class_name ?? ''));
  if (refused) throw new Error(`${base}: ${refused}`);
  const models: Record<string, Disposable> = {};
  const loras = opts.loras !== undefined ? await LoraMerger.open(opts.loras, io) : null;
  try {
    for (const [name, cls] of Object.entries(classes)) {
      const entry = index[name];
      if (!Array.isArray(entry) || entry[1] === null) continue;
      const onProgress: ProgressCallback | undefined = opts.onComponentProgress ? (l, t) => opts.onComponentProgress!(name, l, t) : opts.onProgress;
      const transformWeights = loras && (LORA_COMPONENTS as readonly string[]).includes(name) ? withLoras(loras, name as LoraComponent) : undefined;
      models[name] = await cls.fromPretrained(engine, joinPath(base, name), { ...opts, onProgress, transformWeights });
    }
    const schedulerConfig: Config = await readJson(joinPath(base, 'scheduler', 'scheduler_config.json'), io);
    return { index, models, schedulerConfig, loraReport: reportLoras(loras) };
  } catch (e) {
    for (const m of Object.values(models)) m.dispose();
    throw e;
  } finally {
    await loras?.close();
  }
}

/** A folder's tokenizer subfolder `name` when model_index.json lists it, else null. */
export function folderTokenizer(base: string, index: Config, name: string, opts: IOOptions): Promise<CLIPTokenizer | null> {
  const entry = index[name];
  if (!Array.isArray(entry) || !entry[1]) return Promise.resolve(null);
  return CLIPTokenizer.fromPretrained(joinPath(base, name), { fetch: opts.fetch, signal: opts.signal, timeoutMs: opts.timeoutMs });
}

/** What a pipeline's single-file builder works with. */
export interface SingleFileLoad {
  file: WeightSource;
  /** One component of the file, the LoRAs merged into it as it loads (UNet and text encoders). */
  load<K extends keyof SingleFileModels>(component: K, config: Config): Promise<SingleFileModels[K]>;
  /** The LoRA merge report of the components loaded so far (null without `loras`). */
  loraReport(): LoraReport | null;
}

/**
 * The frame of a pipeline's fromSingleFile: opens the file, hands `build` a component loader, frees
 * every component loaded when `build` throws, and closes the LoRA files and the file (a WeightSource
 * passed in stays the caller's to close). The LoRA files open at the first component loaded, so
 * `build`'s checks of the file's keys come first.
 */
export async function loadSingleFilePipeline<T>(source: SingleFileSource, engine: Engine, opts: PipelineLoadOptions, build: (s: SingleFileLoad) => Promise<T>): Promise<T> {
  const file = await openSingleFile(source, opts);
  const loaded: Disposable[] = [];
  let loras: LoraMerger | null = null;
  let lorasOpened = false;
  const load = async <K extends keyof SingleFileModels>(component: K, config: Config): Promise<SingleFileModels[K]> => {
    if (!lorasOpened) {
      lorasOpened = true;
      loras = opts.loras !== undefined ? await LoraMerger.open(opts.loras, opts) : null;
    }
    const merger = loras as LoraMerger | null;
    const transformWeights = merger && (LORA_COMPONENTS as readonly string[]).includes(component) ? withLoras(merger, component as LoraComponent) : undefined;
    const m = await fromSingleFile(engine, file, component, { config, transformWeights });
    loaded.push(m);
    return m;
  };
  try {
    return await build({ file, load, loraReport: () => reportLoras(loras) });
  } catch (e) {
    for (const m of loaded) m.dispose();
    throw e;
  } finally {
    await (loras as LoraMerger | null)?.close();
    if (typeof source === 'string' || source instanceof Uint8Array || source instanceof ArrayBuffer) await file.close();
  }
}

/**
 * What a pipeline's `load(path)` reads: true for a .safetensors single file (any case; a URL's query
 * and fragment aside, as in `...model.safetensors?download=true`), false for a folder. Pickle
 * checkpoints are refused by name (they used to be read as folders: 'x.ckpt/model_index.json').
 */
export function isSingleFilePath(pathOrUrl: string): boolean {
  if (isPickleName(pathOrUrl)) {
    throw new Error(`${pathOrUrl}: a pickle checkpoint (.ckpt/.pt/.pth/.bin): Stable Diffusion single files load from .safetensors (convert it first); the paper's CompVis .ckpt releases load with LatentDiffusion.fromOriginal`);
  }
  return isSafetensorsName(pathOrUrl);
}


/** The transformWeights hook that merges `loras` into one component as it loads. */
export function withLoras(loras: LoraMerger, component: LoraComponent): (weights: WeightSource, config: Config) => WeightSource {
  return (weights, config) => loras.wrap(component, weights, config);
}

/** The merge report (null without LoRAs); keys left out are also said on the console. */
export function reportLoras(loras: LoraMerger | null): LoraReport | null {
  if (!loras) return null;
  const r = loras.report();
  if (r.ignored.length) console.warn(`LoRA: ${r.ignored.length} key(s) ignored: ${r.ignored.slice(0, 5).join('; ')}${r.ignored.length > 5 ? '; ...' : ''}`);
  return r;
}

/**
 * A pipeline's loadLoraWeights (diffusers' load_lora_weights + fuse_lora): merges `loras` into the
 * loaded `models` in place (LoraMerger.mergeInto: no new GPU memory; a LoRA that does not fit changes
 * nothing; a negative scale takes one out again). Refused while `running()` generate() calls are in
 * flight (checked at the call and again right before the first write): their steps would mix the old
 * and the merged weights. Models that are null (a refiner without text_encoder) are left out.
 */
export async function loadLorasInPlace(
  op: string,
  running: () => number,
  models: readonly { component: LoraComponent; model: MergeTarget | null }[],
  loras: readonly LoraSpec[],
  opts: IOOptions = {},
): Promise<LoraReport> {
  const busy = () => {
    const n = running();
    if (n) throw new Error(`${op}: ${n} generate() call(s) running; their steps would mix the old and the merged weights: wait for them`);
  };
  busy();
  const merger = await LoraMerger.open(loras, opts);
  try {
    await merger.mergeInto(
      models.flatMap((m) => (m.model ? [{ component: m.component, model: m.model }] : [])),
      busy,
    );
    return reportLoras(merger)!;
  } finally {
    await merger.close();
  }
}
