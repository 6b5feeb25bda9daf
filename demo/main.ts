/// <reference types="vite/client" />
// The demo page, on the public API: pick a model (bundled ldm-mnist, a diffusers folder by URL or
// from local files), sample with progress, live preview and cancel, keep every image in a gallery
// with its parameters and timings, and write/read PNGs that carry those parameters.
// body[data-state] tells tests (and CSS) where the page is: starting, nogpu, ready, loading,
// generating, done, cancelled, error.
import {
  AutoencoderTiny,
  Engine,
  LDMPipeline,
  LDMTextToImagePipeline,
  StableDiffusionPipeline,
  StableDiffusionXLPipeline,
  WeightSource,
  ops,
  readGenerationParameters,
  toRgba,
  type GenerationParameters,
  type RgbaImage,
  type StepInfo,
  type Tensor,
} from '../src/index.js';
import { readJson, joinPath } from '../src/runtime/io.js';
import { cachedBytes, cachedFetch, clearModelCache, fileFetch, filesFromDrop, filesFromInput, LOCAL_BASE, type FileMap } from './loaders.js';
import { FAMILIES, FAMILY_NAMES, describeDefaults, detectFamily } from '../src/cli/families.js';
import { addToGallery, fileName, mib, ms, pngWithParameters, timingRows, type GalleryItem, type Timings } from './gallery.js';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const input = (id: string) => $<HTMLInputElement>(id);
const el = {
  gpuInfo: $('gpu-info'),
  url: input('model-url'),
  folder: input('folder-input'),
  files: input('files-input'),
  drop: $('drop-zone'),
  localSummary: $('local-summary'),
  dlProgress: $<HTMLProgressElement>('download-progress'),
  dlText: $('download-text'),
  cacheSize: $('cache-size'),
  clearCache: $<HTMLButtonElement>('clear-cache'),
  sampler: $<HTMLSelectElement>('sampler'),
  family: $<HTMLSelectElement>('family'),
  familyNote: $('family-note'),
  loraUrl: input('lora-url'),
  steps: input('steps'),
  seed: input('seed'),
  seedRandom: $<HTMLButtonElement>('seed-random'),
  seedReuse: $<HTMLButtonElement>('seed-reuse'),
  guidance: input('guidance'),
  batch: input('batch'),
  cls: $<HTMLSelectElement>('class'),
  classRow: $('class-row'),
  prompt: $<HTMLTextAreaElement>('prompt'),
  negative: $<HTMLTextAreaElement>('negative-prompt'),
  promptRow: $('prompt-row'),
  width: input('width'),
  height: input('height'),
  sizeNote: $('size-note'),
  f16: input('f16'),
  f16Note: $('f16-note'),
  generate: $<HTMLButtonElement>('generate'),
  cancel: $<HTMLButtonElement>('cancel'),
  stepProgress: $<HTMLProgressElement>('step-progress'),
  stepText: $('step-text'),
  status: $('status'),
  error: $('error'),
  preview: $<HTMLCanvasElement>('preview'),
  previewCaption: $('preview-caption'),
  result: $<HTMLCanvasElement>('result'),
  download: $<HTMLAnchorElement>('download'),
  timings: $('timings'),
  gallery: $('gallery'),
  pngInput: input('png-input'),
};

type State = 'starting' | 'nogpu' | 'ready' | 'loading' | 'generating' | 'done' | 'cancelled' | 'error';
function setState(s: State, message = ''): void {
  document.body.dataset.state = s;
  el.status.textContent = message;
  const busy = s === 'loading' || s === 'generating';
  el.generate.disabled = busy || s === 'starting' || s === 'nogpu';
  el.cancel.disabled = !busy;
  el.f16.disabled = busy || !engine?.hasShaderF16;
  el.clearCache.disabled = busy;
}

/** Input the user can fix: named field, reason, nothing else happened. */
class InputError extends Error {}

function showError(e: unknown): void {
  const msg = (e as Error)?.message ?? String(e);
  el.error.textContent = advice(msg);
  if (!(e instanceof InputError)) console.error(e);
  setState('error', 'failed');
}

/** The message, plus what to change when the device's limits or memory were the problem. */
function advice(msg: string): string {
  const over = /needs (\d+) bytes, over this device's (maxStorageBufferBindingSize|maxBufferSize) \((\d+)\)/.exec(msg);
  const [w, h] = [Number(el.width.value), Number(el.height.value)];
  const f = loaded?.kind === 'sd' || loaded?.kind === 'xl' ? loaded.pipe.vaeScaleFactor : 8;
  if (over && (loaded?.kind === 'sd' || loaded?.kind === 'xl')) {
    // Activations grow with the pixel count: scale both sides by the square root of the excess.
    const k = Math.sqrt(Number(over[3]) / Number(over[1])) * 0.98;
    const fit = `${Math.max(f, Math.floor((w * k) / f) * f)}x${Math.max(f, Math.floor((h * k) / f) * f)}`;
    return `Too large for this GPU's ${over[2]} (${mib(Number(over[3]))}): ${w}x${h} with batch ${el.batch.value} needs a ${mib(Number(over[1]))} buffer. ${fit} at this batch size would fit.\n\n${msg}`;
  }
  if (/out of memory|OutOfMemory|allocation failed/i.test(msg)) {
    return `The GPU ran out of memory: try a smaller size (${Math.max(f, Math.floor(w / 2 / f) * f)}x${Math.max(f, Math.floor(h / 2 / f) * f)}) or batch size 1.\n\n${msg}`;
  }
  return msg;
}

let engine: Engine | null = null;
let adapter: GPUAdapter | null = null;
let local: FileMap | null = null;
let networkRequests = 0;
const netFetch = cachedFetch(() => networkRequests++);

// ldm: class-conditional or unconditional LDMPipeline; sd: Stable Diffusion 1.x / 2.x (SD-Turbo,
// LCM); xl: SDXL; txt: the paper's text-to-image LDM (diffusers' LDMTextToImagePipeline: LDMBert, no
// negative prompt).
type Kind = 'ldm' | 'sd' | 'xl' | 'txt';
type Loaded = { key: string; label: string } & (
  | { kind: 'ldm'; pipe: LDMPipeline }
  | { kind: 'sd'; pipe: StableDiffusionPipeline }
  | { kind: 'xl'; pipe: StableDiffusionXLPipeline }
  | { kind: 'txt'; pipe: LDMTextToImagePipeline }
);
/** Each kind's usual guidance. */
const GUIDANCE: Record<Kind, string> = { ldm: '3', sd: '7.5', xl: '5', txt: '6' };

const schedulerOf = (m: Loaded) => (m.kind === 'txt' ? m.pipe.components.scheduler : m.pipe.scheduler);

/** Latents -> images in [0, 1] with the model's own (full) decoder, for previews. */
function fullDecode(m: Loaded, z: Tensor): Tensor {
  if (m.kind !== 'txt') return m.pipe.decodeLatents(z);
  const { vqvae } = m.pipe.components;
  const h = ops.scale(z, 1 / vqvae.scalingFactor);
  const d = vqvae.decode(h);
  h.dispose();
  const u = ops.scale(d, 0.5, 0.5);
  d.dispose();
  const c = ops.clamp(u, 0, 1);
  u.dispose();
  return c;
}
let loaded: Loaded | null = null;
let running: AbortController | null = null;
let lastSeed: number | null = null;

// What the kernels use at most (256 invocations and up to 16 KiB of workgroup memory per workgroup,
// 8 storage buffers per shader): core WebGPU's defaults, which compatibility-mode adapters may lack.
const NEEDED_LIMITS = { maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupStorageSize: 16384, maxStorageBuffersPerShaderStage: 8 };

const NO_WEBGPU =
  'WebGPU is not available in this browser (navigator.gpu is missing). It works in Chrome and Edge 113+ (Windows, macOS, ChromeOS; ' +
  'on Linux start them with --enable-unsafe-webgpu --enable-features=Vulkan), Chrome 121+ on Android, Safari 26+, and Firefox 141+ on Windows ' +
  '(elsewhere set dom.webgpu.enabled in about:config). The page must come from https or localhost.';

async function init(): Promise<void> {
  if (!('gpu' in navigator) || !navigator.gpu) {
    el.error.textContent = NO_WEBGPU;
    setState('nogpu', 'no WebGPU');
    return;
  }
  adapter = await navigator.gpu.requestAdapter();
  if (!adapter) {
    el.error.textContent =
      'WebGPU is present but no adapter was returned: enable hardware acceleration (chrome://settings/system, then chrome://gpu shows WebGPU\'s status), or start Chromium with --enable-unsafe-webgpu.';
    setState('nogpu', 'no WebGPU adapter');
    return;
  }
  const limits = adapter.limits as unknown as Record<string, number>;
  const small = Object.entries(NEEDED_LIMITS).filter(([k, v]) => limits[k] < v);
  if (small.length) {
    el.error.textContent = `This GPU's WebGPU limits are too small for the engine: ${small.map(([k, v]) => `${k} is ${limits[k]}, needs ${v}`).join('; ')}.`;
    setState('nogpu', 'device limits too small');
    return;
  }
  await makeEngine(adapter.features.has('shader-f16'));
  setState('ready', 'ready');
  updateModelUi('ldm');
  void showCacheSize();
}

/** A new engine (first start, f16 switch, or after a lost device); the model loads again. */
async function makeEngine(f16: boolean): Promise<void> {
  loaded?.pipe.dispose();
  loaded = null;
  const old = engine;
  engine = null; // its device's loss below is ours, not a failure
  try {
    old?.destroy();
  } catch {
    // a lost device has nothing left to free
  }
  // A lost device cannot be asked for again: a fresh adapter each time after the first.
  if (old) adapter = (await navigator.gpu.requestAdapter()) ?? adapter;
  const e = await Engine.create({ adapter: adapter!, f16 });
  engine = e;
  e.device.lost.then((info) => {
    if (engine === e) void recoverFromLostDevice(`${info.reason ?? 'unknown'}: ${info.message || 'no message'}`);
  });
  const info = e.info();
  const features = [e.hasShaderF16 && 'shader-f16', info.features.includes('subgroups') && 'subgroups', info.timestampQuery && 'timestamp-query'].filter(Boolean);
  el.gpuInfo.textContent = `WebGPU adapter: ${info.name} · features: ${features.join(', ') || 'none of shader-f16, subgroups, timestamp-query'} · max storage binding ${(info.limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB`;
  el.f16.checked = e.f16;
  el.f16.disabled = !e.hasShaderF16;
  el.f16Note.textContent = e.hasShaderF16 ? '' : '(this adapter has no shader-f16: f32 only)';
}

async function recoverFromLostDevice(reason: string): Promise<void> {
  running?.abort();
  const lost = engine;
  engine = null;
  loaded = null; // its buffers died with the device
  el.error.textContent = `The GPU device was lost (${reason}). A new one was requested; the model loads again (from the cache) on the next Generate.`;
  setState('starting', 'recovering from a lost device');
  try {
    engine = lost; // makeEngine destroys it (a no-op for a lost device) and replaces it
    await makeEngine(el.f16.checked);
    setState('ready', 'recovered: new WebGPU device');
  } catch (e) {
    el.error.textContent += `\nRecovery failed: ${(e as Error).message}. Reload the page.`;
    setState('nogpu', 'device lost');
  }
}

function source(): 'default' | 'url' | 'local' {
  return (document.querySelector('input[name=source]:checked') as HTMLInputElement).value as 'default' | 'url' | 'local';
}

/** The family picker: each family's defaults (src/cli/families.ts, the CLI's --family) put into the form. */
function initFamilies(): void {
  for (const name of FAMILY_NAMES) {
    const o = document.createElement('option');
    o.value = name;
    o.textContent = `${FAMILIES[name].label}: ${describeDefaults(FAMILIES[name])}${name === 'ldm' ? '' : `, ${FAMILIES[name].size}px`}`;
    el.family.append(o);
  }
}

function applyFamily(name: string): void {
  const f = FAMILIES[name];
  if (!f) return;
  el.steps.value = String(f.steps);
  if (f.guidance !== undefined) el.guidance.value = String(f.guidance);
  el.sampler.value = f.sampler ?? '';
  if (name !== 'ldm') el.width.value = el.height.value = String(f.size);
  for (const b of [el.steps, el.guidance, el.width, el.height]) b.removeAttribute('aria-invalid');
  el.familyNote.textContent = f.needs === 'lora' && !el.loraUrl.value.trim() ? 'this family needs the LoRA file (its URL above) on top of its base model' : '';
  checkSize();
}

/** LoRA to merge at load: the URL box (scale 1). */
function lorasOf(): { source: string; scale: number }[] | undefined {
  const u = el.loraUrl.value.trim();
  if (!u) return undefined;
  try {
    return [{ source: new URL(u, location.href).href, scale: 1 }];
  } catch {
    throw new InputError(`not a URL for the LoRA: ${u}`);
  }
}

function modelBase(): { base: string; key: string; label: string; fetch: typeof fetch } {
  const s = source();
  if (s === 'default') return { base: new URL('models/ldm-mnist', document.baseURI).href, key: 'default', label: 'ldm-mnist', fetch: netFetch };
  if (s === 'url') {
    const u = el.url.value.trim();
    if (!u) throw new InputError('enter the URL of a diffusers pipeline folder (the folder that holds model_index.json)');
    let parsed: URL;
    try {
      parsed = new URL(u, location.href);
    } catch {
      throw new InputError(`not a URL: ${u}`);
    }
    const base = parsed.href.replace(/\/model_index\.json$/, '').replace(/\/+$/, '');
    return { base, key: `url:${base}`, label: base, fetch: netFetch };
  }
  if (!local || local.size === 0) throw new InputError('choose a model folder or files first (folder picker, file picker or drag and drop)');
  const sig = [...local.entries()].map(([p, f]) => `${p}:${f.size}:${f.lastModified}`).join('|');
  return { base: LOCAL_BASE, key: `local:${sig}`, label: 'local files', fetch: fileFetch(local, netFetch) };
}

let shownKind: Kind = 'ldm';
function updateModelUi(kind: Kind): void {
  // Each family's usual guidance, unless the user changed it.
  if (kind !== shownKind && el.guidance.value === GUIDANCE[shownKind]) el.guidance.value = GUIDANCE[kind];
  shownKind = kind;
  el.classRow.classList.toggle('hidden', kind !== 'ldm');
  el.promptRow.classList.toggle('hidden', kind === 'ldm');
  el.negative.disabled = kind === 'txt';
  el.negative.placeholder = kind === 'txt' ? 'this model takes no negative prompt' : '';
  el.width.disabled = el.height.disabled = kind === 'ldm';
  if (kind === 'ldm') el.width.value = el.height.value = String(loaded?.kind === 'ldm' ? ldmSize(loaded.pipe) : 32);
  checkSize();
}

/** LDM folders make one size: the UNet's sample_size times the first stage's factor. */
function ldmSize(pipe: LDMPipeline): number {
  const first = (pipe.vqvae ?? pipe.vae)!;
  const levels = (first.config.block_out_channels as number[] | undefined)?.length ?? 3;
  return ((pipe.unet.config.sample_size as number | undefined) ?? 64) * 2 ** (levels - 1);
}

/** Width/height: the multiple the model allows, else the reason and the nearest sizes that work. */
function checkSize(): string | null {
  let problem: string | null = null;
  if (shownKind === 'ldm') {
    el.sizeNote.textContent = `LDM models have one size (ldm-mnist: 32x32)`;
  } else {
    const f = loaded?.kind === 'sd' || loaded?.kind === 'xl' ? loaded.pipe.vaeScaleFactor : 8;
    for (const [name, box] of [['width', el.width], ['height', el.height]] as const) {
      const v = Number(box.value);
      const bad = !Number.isInteger(v) || v < f || v % f !== 0;
      box.setAttribute('aria-invalid', String(bad));
      if (bad && !problem) {
        const lo = Math.max(f, Math.floor(v / f) * f);
        problem = `${name} ${box.value || '(empty)'} is not a positive multiple of ${f} (the VAE shrinks images ${f}x into latents): use ${lo}${lo + f !== lo ? ` or ${lo + f}` : ''}`;
      }
    }
    const unet = loaded?.kind === 'sd' || loaded?.kind === 'xl' ? loaded.pipe.unet : loaded?.kind === 'txt' ? loaded.pipe.components.unet : null;
    el.sizeNote.textContent = problem ?? `multiples of ${f}; ${unet ? `the model was trained at ${(unet.config.sample_size as number) * f}px` : 'the model decides'}`;
  }
  return problem;
}

async function showCacheSize(): Promise<void> {
  try {
    const { files, bytes } = await cachedBytes();
    el.cacheSize.textContent = `cache: ${files} file(s), ${mib(bytes)}`;
  } catch (e) {
    el.cacheSize.textContent = `cache: unavailable (${(e as Error).message})`;
  }
}

/** A lone .safetensors (no model_index.json): checked here so a corrupt file gets its own message. */
async function checkLoneSafetensors(files: FileMap): Promise<never> {
  const names = [...files.keys()];
  const st = names.filter((n) => n.endsWith('.safetensors'));
  if (st.length !== 1) {
    throw new Error(`no model_index.json among the chosen files (${names.slice(0, 6).join(', ')}${names.length > 6 ? ', ...' : ''}): choose a diffusers pipeline folder`);
  }
  const file = files.get(st[0])!;
  const src = WeightSource.fromBytes(new Uint8Array(await file.arrayBuffer()), file.name);
  throw new Error(`${file.name}: a safetensors file with ${src.names().length} tensors but no model_index.json; the demo loads diffusers pipeline folders (choose the whole folder)`);
}

/** An optional TAESD in a taesd/ subfolder (a diffusers AutoencoderTiny folder or the original
 * taesd_decoder.safetensors) for the live preview. Absent is fine; broken goes to the console. */
async function loadPreviewDecoder(base: string, f: typeof fetch, signal: AbortSignal): Promise<AutoencoderTiny | null> {
  const absent = (e: unknown) => /HTTP 404|not among the chosen files/.test((e as Error).message);
  const isLocal = base === LOCAL_BASE;
  const tries = [
    [!isLocal || !!local?.has('taesd/config.json'), () => AutoencoderTiny.fromPretrained(engine!, joinPath(base, 'taesd'), { fetch: f, signal })],
    [!isLocal || !!local?.has('taesd/taesd_decoder.safetensors'), () => AutoencoderTiny.fromTaesd(engine!, { decoder: joinPath(base, 'taesd', 'taesd_decoder.safetensors') }, { fetch: f, signal })],
  ] as const;
  for (const [worth, load] of tries) {
    if (!worth) continue;
    try {
      return await load();
    } catch (e) {
      if (!absent(e)) {
        console.warn(`preview decoder not loaded: ${(e as Error).message}`);
        return null;
      }
    }
  }
  return null;
}

async function ensureModel(signal: AbortSignal): Promise<Loaded> {
  const { base, key: modelKey, label, fetch: f } = modelBase();
  const loras = lorasOf();
  const key = loras ? `${modelKey}+lora:${loras[0].source}` : modelKey;
  if (loaded?.key === key) return loaded;
  loaded?.pipe.dispose();
  loaded = null;
  setState('loading', 'loading the model');
  if (source() === 'local' && !local!.has('model_index.json')) await checkLoneSafetensors(local!);
  el.dlProgress.value = 0;
  const index = await readJson(joinPath(base, 'model_index.json'), { fetch: f, signal });
  const cls = String(index._class_name ?? '');
  // Bytes and ETA from the rate so far (all components together).
  const t0 = performance.now();
  let total = 0;
  let current = '';
  let currentDone = 0;
  const onComponentProgress = (component: string, done: number, size: number) => {
    if (component !== current) [current, currentDone] = [component, 0];
    total += done - currentDone;
    currentDone = done;
    const rate = total / Math.max((performance.now() - t0) / 1000, 1e-3);
    el.dlProgress.max = Math.max(size, 1);
    el.dlProgress.value = done;
    el.dlText.textContent = `${component}: ${mib(done)} / ${mib(size)} · ${mib(rate)}/s · ${done < size ? `${Math.ceil((size - done) / rate)} s left` : 'done'}`;
  };
  const opts = { fetch: f, signal, onComponentProgress };
  const sdLike = cls === 'StableDiffusionPipeline' || cls === 'LatentConsistencyModelPipeline' || cls === 'StableDiffusionXLPipeline';
  if (loras && !sdLike) throw new InputError(`a LoRA merges into Stable Diffusion / SDXL models; this folder is a ${cls}: clear the LoRA URL`);
  let l: Loaded;
  if (cls === 'StableDiffusionPipeline' || cls === 'LatentConsistencyModelPipeline') {
    // an LCM folder is SD's components with an LCM-distilled UNet, which StableDiffusionPipeline runs
    const pipe = await StableDiffusionPipeline.fromPretrained(engine!, base, { ...opts, loras });
    pipe.previewDecoder ??= await loadPreviewDecoder(base, f, signal);
    l = { key, label, kind: 'sd', pipe };
  } else if (cls === 'StableDiffusionXLPipeline') {
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine!, base, { ...opts, loras });
    l = { key, label, kind: 'xl', pipe };
  } else if (cls === 'LDMTextToImagePipeline') {
    l = { key, label, kind: 'txt', pipe: await LDMTextToImagePipeline.fromPretrained(engine!, base, opts) };
  } else if (cls === 'LDMPipeline') {
    l = { key, label, kind: 'ldm', pipe: await LDMPipeline.fromPretrained(engine!, base, opts) };
  } else {
    throw new Error(`model_index.json names ${JSON.stringify(cls)}; the demo runs LDMPipeline, LDMTextToImagePipeline, StableDiffusionPipeline, LatentConsistencyModelPipeline and StableDiffusionXLPipeline folders`);
  }
  // which family the folder looks like (as the CLI guesses it); the picker sets its defaults
  const guess = detectFamily(index, schedulerOf(l).config, l.kind === 'ldm' ? null : l.kind === 'txt' ? l.pipe.components.unet.config : l.pipe.unet.config);
  el.familyNote.textContent = `this model looks like ${FAMILIES[guess].label} (${describeDefaults(FAMILIES[guess])})${el.family.value === guess ? '' : ': pick that family above to use its defaults'}`;
  el.dlProgress.value = el.dlProgress.max;
  el.dlText.textContent = `loaded ${mib(total)} in ${ms(performance.now() - t0)} (${networkRequests} network requests so far)`;
  loaded = l;
  updateModelUi(l.kind);
  void showCacheSize();
  return l;
}

function draw(canvas: HTMLCanvasElement, img: RgbaImage): void {
  canvas.width = img.width;
  canvas.height = img.height;
  canvas.classList.toggle('smooth', img.width >= 256);
  canvas.getContext('2d')!.putImageData(new ImageData(new Uint8ClampedArray(img.data), img.width, img.height), 0, 0);
}

function int(box: HTMLInputElement, name: string, min: number, max: number): number {
  const v = Number(box.value);
  const bad = box.value.trim() === '' || !Number.isInteger(v) || v < min || v > max;
  box.setAttribute('aria-invalid', String(bad));
  if (bad) throw new InputError(`${name} must be a whole number from ${min} to ${max}, got "${box.value}"`);
  return v;
}

/** The form as generation parameters (model, size and labels filled in once the model is known). */
function readForm(): Omit<GenerationParameters, 'model' | 'width' | 'height'> & { batch: number } {
  const g = Number(el.guidance.value);
  if (el.guidance.value.trim() === '' || !Number.isFinite(g) || g < 0) throw new InputError(`guidance must be a number >= 0, got "${el.guidance.value}"`);
  return {
    steps: int(el.steps, 'steps', 1, 1000),
    seed: int(el.seed, 'seed', 0, 2 ** 32 - 1),
    guidanceScale: g,
    batch: int(el.batch, 'batch size', 1, 16),
    sampler: el.sampler.value || undefined,
  };
}

async function generate(): Promise<void> {
  if (!engine) return;
  const eng = engine;
  el.error.textContent = '';
  const abort = new AbortController();
  running = abort;
  let stepNow = 0;
  let total = 0;
  const owned: Tensor[] = [];
  try {
    const form = readForm();
    const m = await ensureModel(abort.signal);
    const n = form.batch;
    let p: GenerationParameters;
    if (m.kind === 'ldm') {
      const size = ldmSize(m.pipe);
      const classes = m.pipe.numClasses;
      p = { model: m.label, classLabels: classes ? Array(n).fill(Number(el.cls.value)) : undefined, steps: form.steps, sampler: form.sampler, guidanceScale: classes ? form.guidanceScale : 1, seed: form.seed, width: size, height: size };
    } else {
      const bad = checkSize();
      if (bad) throw new InputError(bad);
      p = { model: m.label, prompt: el.prompt.value, negativePrompt: (m.kind !== 'txt' && el.negative.value) || undefined, steps: form.steps, sampler: form.sampler, guidanceScale: form.guidanceScale, seed: form.seed, width: Number(el.width.value), height: Number(el.height.value) };
    }
    p = { ...p, batchSize: n, f16: eng.f16 };
    const ownSampler = schedulerOf(m).className;

    setState('generating', 'generating');
    el.previewCaption.textContent = 'live preview';
    el.stepProgress.max = p.steps;
    el.stepProgress.value = 0;
    el.stepText.textContent = `step 0 / ${p.steps}`;
    const memBefore = eng.memory().inUseBytes;
    eng.resetPeakMemory();
    const t0 = performance.now();
    const timings: Timings = { adapter: eng.info().name, f16: eng.f16, stepMs: [], previewMs: 0, decodeMs: 0, peakBytes: 0, totalMs: 0 };

    // Stable Diffusion: the prompt is encoded here (the same calls generate() makes) so its time
    // is measured on its own; a small read waits for the GPU.
    let embeds: { promptEmbeds: Tensor; negativePromptEmbeds?: Tensor } | null = null;
    if (m.kind === 'sd') {
      const cond = m.pipe.encodePrompt(Array(n).fill(p.prompt));
      owned.push(cond);
      const uncond = p.guidanceScale > 1 ? m.pipe.encodePrompt(Array(n).fill(p.negativePrompt ?? '')) : undefined;
      if (uncond) owned.push(uncond);
      await (uncond ?? cond).read();
      timings.textMs = performance.now() - t0;
      embeds = { promptEmbeds: cond, negativePromptEmbeds: uncond };
    }

    let mark = performance.now();
    const onStep = async (s: StepInfo) => {
      timings.stepMs.push(performance.now() - mark);
      stepNow = s.step;
      total = s.total;
      const mean = timings.stepMs.reduce((a, b) => a + b, 0) / timings.stepMs.length;
      el.stepProgress.max = s.total;
      el.stepProgress.value = s.step;
      el.stepText.textContent = `step ${s.step} / ${s.total} · ${(1000 / mean).toFixed(2)} it/s · ETA ${ms(mean * (s.total - s.step))}`;
      const tPreview = performance.now();
      // TAESD's preview when the pipeline made one; else the full decoder: every step for the
      // small ldm-mnist, about five times a run for the others (never on the last step, which
      // the final decode follows).
      const every = m.kind === 'ldm' ? 1 : Math.max(1, Math.round(s.total / 5));
      if (s.preview?.[0]) {
        draw(el.preview, s.preview[0]);
      } else if (s.step % every === 0 && (m.kind === 'ldm' || s.step < s.total)) {
        if (m.kind !== 'ldm') el.previewCaption.textContent = `live preview (full decoder every ${every} step${every > 1 ? 's' : ''}: no taesd/ in this model)`;
        const img = fullDecode(m, s.latents);
        try {
          draw(el.preview, (await toRgba(img))[0]);
        } finally {
          img.dispose();
        }
      }
      mark = performance.now();
      timings.previewMs += mark - tPreview;
    };
    const common = { steps: p.steps, seed: p.seed, guidanceScale: p.guidanceScale, sampler: p.sampler, signal: abort.signal, onStep };
    const out =
      m.kind === 'ldm'
        ? await m.pipe.generate({ ...common, classLabels: p.classLabels, batchSize: p.classLabels ? undefined : n })
        : m.kind === 'sd'
          ? await m.pipe.generate({ ...common, ...embeds!, width: p.width, height: p.height, preview: true })
          : m.kind === 'xl'
            ? await m.pipe.generate({ ...common, prompt: Array(n).fill(p.prompt), negativePrompt: p.negativePrompt === undefined ? undefined : Array(n).fill(p.negativePrompt), width: p.width, height: p.height, preview: true })
            : await m.pipe.generate({ ...common, prompt: Array(n).fill(p.prompt), width: p.width, height: p.height });
    out.images.dispose();
    timings.decodeMs = performance.now() - mark;
    timings.totalMs = performance.now() - t0;
    timings.peakBytes = eng.memory().peakInUseBytes;

    draw(el.result, out.rgba[0]);
    showTimings(timings);
    lastSeed = p.seed;
    el.seedReuse.disabled = false;
    for (let i = 0; i < out.rgba.length; i++) {
      const params = { ...p, batchIndex: i };
      const png = await pngWithParameters(out.rgba[i], params, ownSampler);
      const item: GalleryItem = { params, ownSampler, timings, png, url: URL.createObjectURL(png) };
      addToGallery(el.gallery, item, (it) => applyParameters(it.params, 'the gallery'));
      if (i === 0) {
        el.download.href = item.url;
        el.download.download = fileName(params);
        el.download.classList.remove('hidden');
      }
    }
    setState('done', `done in ${ms(timings.totalMs)}; GPU memory in use ${mib(eng.memory().inUseBytes)} (before the run ${mib(memBefore)})`);
  } catch (e) {
    if ((e as Error).name === 'AbortError' || abort.signal.aborted) {
      // After a lost device the recovery owns the page's state.
      if (engine === eng) setState('cancelled', `${total ? `cancelled at step ${stepNow} / ${total}` : 'cancelled'}; GPU memory in use ${mib(eng.memory().inUseBytes)}`);
    } else {
      showError(e);
    }
  } finally {
    for (const t of owned) t.dispose();
    if (running === abort) running = null;
  }
}

function showTimings(t: Timings): void {
  el.timings.replaceChildren(
    ...timingRows(t).flatMap(([k, v]) => {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v;
      return [dt, dd];
    }),
  );
}

/** Puts stored parameters back into the form (a gallery entry or a dropped PNG). */
function applyParameters(p: Partial<GenerationParameters>, from: string): void {
  const notes: string[] = [];
  const set = (box: HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement, v: unknown) => {
    if (v === undefined || v === null) return;
    box.value = String(v);
    box.removeAttribute('aria-invalid');
  };
  const pick = (value: string) => ((document.querySelector(`input[name=source][value=${value}]`) as HTMLInputElement).checked = true);
  if (p.model === 'ldm-mnist') pick('default');
  else if (p.model && /^https?:/.test(p.model)) {
    pick('url');
    el.url.value = p.model;
  } else if (p.model) notes.push(`the model was "${p.model}": choose it under Model`);
  document.body.dataset.source = source();
  set(el.steps, p.steps);
  set(el.seed, p.seed);
  set(el.guidance, p.guidanceScale);
  el.sampler.value = p.sampler && Array.from(el.sampler.options).some((o) => o.value === p.sampler) ? p.sampler : '';
  if (p.sampler && el.sampler.value !== p.sampler) notes.push(`sampler "${p.sampler}" is not offered here`);
  set(el.batch, p.batchSize ?? 1);
  if (p.classLabels?.length) {
    set(el.cls, p.classLabels[p.batchIndex ?? 0]);
    if (new Set(p.classLabels).size > 1) notes.push(`the batch mixed classes ${p.classLabels.join(' ')}; the form sets one class for all`);
  }
  if (p.prompt !== undefined) {
    set(el.prompt, p.prompt);
    set(el.negative, p.negativePrompt ?? '');
    set(el.width, p.width);
    set(el.height, p.height);
  }
  if (p.f16 !== undefined && engine && p.f16 !== engine.f16) notes.push(`it was made with ${p.f16 ? 'f16' : 'f32'}; switch the f16 box to match`);
  el.error.textContent = '';
  el.status.textContent = `parameters restored from ${from}${notes.length ? ` (${notes.join('; ')})` : ''}`;
  checkSize();
}

async function restoreFromPng(file: File): Promise<void> {
  const found = readGenerationParameters(new Uint8Array(await file.arrayBuffer()));
  if (!found) throw new InputError(`${file.name} carries no generation parameters (no "parameters" or "ldm-webgpu" text chunk)`);
  applyParameters(found.params, file.name);
}

function setLocal(files: FileMap): void {
  local = files;
  (document.querySelector('input[name=source][value=local]') as HTMLInputElement).checked = true;
  document.body.dataset.source = 'local';
  el.localSummary.textContent = `${files.size} file(s): ${[...files.keys()].slice(0, 8).join(', ')}${files.size > 8 ? ', ...' : ''}`;
}

el.generate.addEventListener('click', () => void generate());
el.family.addEventListener('change', () => applyFamily(el.family.value));
el.cancel.addEventListener('click', () => running?.abort());
el.seedRandom.addEventListener('click', () => (el.seed.value = String(crypto.getRandomValues(new Uint32Array(1))[0])));
el.seedReuse.addEventListener('click', () => lastSeed !== null && (el.seed.value = String(lastSeed)));
el.width.addEventListener('input', () => checkSize());
el.height.addEventListener('input', () => checkSize());
el.f16.addEventListener('change', () => {
  setState('starting', `switching to ${el.f16.checked ? 'f16' : 'f32'}`);
  makeEngine(el.f16.checked).then(() => setState('ready', `${engine!.f16 ? 'f16' : 'f32'}: the model loads again on the next Generate`), showError);
});
el.clearCache.addEventListener('click', () => void clearModelCache().then(showCacheSize));
document.querySelectorAll('input[name=source]').forEach((r) => r.addEventListener('change', () => (document.body.dataset.source = source())));
el.folder.addEventListener('change', () => el.folder.files && setLocal(filesFromInput(el.folder.files)));
el.files.addEventListener('change', () => el.files.files && setLocal(filesFromInput(el.files.files)));
el.pngInput.addEventListener('change', () => el.pngInput.files?.[0] && restoreFromPng(el.pngInput.files[0]).catch(showError));
// Drops: a folder or model files onto the drop zone; a PNG anywhere restores its parameters.
document.addEventListener('dragover', (e) => {
  e.preventDefault();
  el.drop.classList.toggle('over', el.drop.contains(e.target as Node));
});
document.addEventListener('dragleave', () => el.drop.classList.remove('over'));
document.addEventListener('drop', (e) => {
  e.preventDefault();
  el.drop.classList.remove('over');
  const dt = e.dataTransfer;
  if (!dt) return;
  const files = Array.from(dt.files);
  if (!el.drop.contains(e.target as Node) && files.length === 1 && /\.png$/i.test(files[0].name)) {
    restoreFromPng(files[0]).catch(showError);
  } else {
    filesFromDrop(dt).then(setLocal, showError);
  }
});

// For tests and the console: what the page has done.
(globalThis as { ldmDemo?: unknown }).ldmDemo = {
  get networkRequests() {
    return networkRequests;
  },
  get engine() {
    return engine;
  },
};

document.body.dataset.source = source();
initFamilies();
init().catch(showError);
