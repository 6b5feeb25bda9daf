/// <reference types="vite/client" />
// The demo page: pick a model (bundled ldm-mnist, a URL, or local files), sample with a live
// preview and a cancel button, download the PNG. body[data-state] tells tests (and CSS) where the
// page is: starting, nogpu, ready, loading, generating, done, cancelled, error.
import { AutoencoderTiny, Engine, LDMPipeline, WeightSource, toRgba, type RgbaImage, type StepInfo, type Tensor } from '../src/index.js';
import { readJson, joinPath } from '../src/runtime/io.js';
import { cachedFetch, fileFetch, filesFromDrop, filesFromInput, LOCAL_BASE, type FileMap } from './loaders.js';

// Stable Diffusion is optional: the glob is empty while its module does not exist.
const sdModules = import.meta.glob('../src/pipelines/stable_diffusion.ts');

interface SDPipeline {
  previewDecoder: AutoencoderTiny | null;
  generate(o: Record<string, unknown>): Promise<{ images: Tensor; rgba: RgbaImage[] }>;
  dispose(): void;
}

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const el = {
  gpuInfo: $('gpu-info'),
  url: $<HTMLInputElement>('model-url'),
  folder: $<HTMLInputElement>('folder-input'),
  files: $<HTMLInputElement>('files-input'),
  drop: $('drop-zone'),
  localSummary: $('local-summary'),
  dlProgress: $<HTMLProgressElement>('download-progress'),
  dlText: $('download-text'),
  sampler: $<HTMLSelectElement>('sampler'),
  steps: $<HTMLInputElement>('steps'),
  seed: $<HTMLInputElement>('seed'),
  guidance: $<HTMLInputElement>('guidance'),
  cls: $<HTMLSelectElement>('class'),
  classRow: $('class-row'),
  prompt: $<HTMLInputElement>('prompt'),
  negative: $<HTMLInputElement>('negative-prompt'),
  promptRow: $('prompt-row'),
  width: $<HTMLInputElement>('width'),
  height: $<HTMLInputElement>('height'),
  sizeNote: $('size-note'),
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
};

type State = 'starting' | 'nogpu' | 'ready' | 'loading' | 'generating' | 'done' | 'cancelled' | 'error';
function setState(s: State, message = ''): void {
  document.body.dataset.state = s;
  el.status.textContent = message;
  const busy = s === 'loading' || s === 'generating';
  el.generate.disabled = busy || s === 'starting' || s === 'nogpu';
  el.cancel.disabled = !busy;
}

function showError(e: unknown): void {
  const err = e as Error;
  const msg = err?.message ?? String(e);
  // A tensor larger than one binding can hold: the model, not the file, is the problem on this device.
  el.error.textContent = /maxStorageBufferBindingSize|maxBufferSize/.test(msg) ? `This GPU's limits are too small for this model: ${msg}` : msg;
  console.error(e);
  setState('error', 'failed');
}

let engine: Engine | null = null;
let local: FileMap | null = null;
let networkRequests = 0;
const netFetch = cachedFetch(() => networkRequests++);

type Loaded = { key: string; kind: 'ldm'; pipe: LDMPipeline } | { key: string; kind: 'sd'; pipe: SDPipeline };
let loaded: Loaded | null = null;
let running: AbortController | null = null;

// What the kernels use at most (256 invocations and up to 16 KiB of workgroup memory per workgroup,
// 8 storage buffers per shader): core WebGPU's defaults, which compatibility-mode adapters may lack.
const NEEDED_LIMITS = { maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupStorageSize: 16384, maxStorageBuffersPerShaderStage: 8 };

async function init(): Promise<void> {
  if (!('gpu' in navigator) || !navigator.gpu) {
    el.error.textContent =
      'WebGPU is not available in this browser (navigator.gpu is missing). Use a recent Chrome or Edge (or Safari/Firefox with WebGPU enabled), served over https or from localhost.';
    setState('nogpu', 'no WebGPU');
    return;
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) {
    el.error.textContent = 'WebGPU is present but no adapter was returned: enable hardware acceleration (chrome://gpu), or start Chromium with --enable-unsafe-webgpu.';
    setState('nogpu', 'no WebGPU adapter');
    return;
  }
  const small = Object.entries(NEEDED_LIMITS).filter(([k, v]) => (adapter.limits as unknown as Record<string, number>)[k] < v);
  if (small.length) {
    el.error.textContent = `This GPU's WebGPU limits are too small for the engine: ${small
      .map(([k, v]) => `${k} is ${(adapter.limits as unknown as Record<string, number>)[k]}, needs ${v}`)
      .join('; ')}.`;
    setState('nogpu', 'device limits too small');
    return;
  }
  engine = await Engine.create({ adapter });
  const info = engine.info();
  el.gpuInfo.textContent = `WebGPU adapter: ${info.name}; shader-f16: ${info.f16 ? 'yes' : 'no'}; max storage binding ${(info.limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB`;
  setState('ready', 'ready');
  updateModelUi('ldm');
}

function source(): 'default' | 'url' | 'local' {
  return (document.querySelector('input[name=source]:checked') as HTMLInputElement).value as 'default' | 'url' | 'local';
}

function modelBase(): { base: string; key: string; fetch: typeof fetch } {
  const s = source();
  if (s === 'default') return { base: new URL('/models/ldm-mnist', location.href).href, key: 'default', fetch: netFetch };
  if (s === 'url') {
    const u = el.url.value.trim();
    if (!u) throw new Error('enter the URL of a diffusers pipeline folder (the folder that holds model_index.json)');
    let parsed: URL;
    try {
      parsed = new URL(u, location.href);
    } catch {
      throw new Error(`not a URL: ${u}`);
    }
    const base = parsed.href.replace(/\/model_index\.json$/, '').replace(/\/+$/, '');
    return { base, key: `url:${base}`, fetch: netFetch };
  }
  if (!local || local.size === 0) throw new Error('choose a model folder or files first (folder picker, file picker or drag and drop)');
  const sig = [...local.entries()].map(([p, f]) => `${p}:${f.size}:${f.lastModified}`).join('|');
  return { base: LOCAL_BASE, key: `local:${sig}`, fetch: fileFetch(local, netFetch) };
}

let shownKind: 'ldm' | 'sd' = 'ldm';
function updateModelUi(kind: 'ldm' | 'sd'): void {
  // Each family's usual guidance, unless the user changed it.
  if (kind !== shownKind && el.guidance.value === (shownKind === 'ldm' ? '3' : '7.5')) el.guidance.value = kind === 'ldm' ? '3' : '7.5';
  shownKind = kind;
  el.classRow.classList.toggle('hidden', kind !== 'ldm');
  el.promptRow.classList.toggle('hidden', kind !== 'sd');
  const fixed = kind === 'ldm';
  el.width.disabled = el.height.disabled = fixed;
  el.sizeNote.textContent = fixed ? 'LDM models have a fixed size (ldm-mnist: 32x32)' : '';
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);

async function loadSd(engine: Engine, base: string, opts: Record<string, unknown>): Promise<SDPipeline> {
  const loader = Object.values(sdModules)[0];
  if (!loader) throw new Error('this build has no StableDiffusionPipeline (src/pipelines/stable_diffusion.ts): only LDMPipeline folders such as ldm-mnist run here');
  const mod = (await loader()) as { StableDiffusionPipeline?: { fromPretrained(e: Engine, b: string, o: unknown): Promise<SDPipeline> } };
  if (!mod.StableDiffusionPipeline) throw new Error('stable_diffusion.ts does not export StableDiffusionPipeline');
  return mod.StableDiffusionPipeline.fromPretrained(engine, base, opts);
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

/** An optional TAESD in a taesd/ subfolder next to the components, as a diffusers AutoencoderTiny
 * folder (config.json + weights) or the original taesd_decoder.safetensors: the live preview decodes
 * with it each step. Absent is fine; broken is reported in the console. */
async function loadPreviewDecoder(base: string, f: typeof fetch, signal: AbortSignal): Promise<AutoencoderTiny | null> {
  const absent = (e: unknown) => /HTTP 404|not among the chosen files/.test((e as Error).message);
  const isLocal = base === LOCAL_BASE;
  try {
    if (!isLocal || local?.has('taesd/config.json')) {
      try {
        return await AutoencoderTiny.fromPretrained(engine!, joinPath(base, 'taesd'), { fetch: f, signal });
      } catch (e) {
        if (!absent(e)) throw e;
      }
    }
    if (!isLocal || local?.has('taesd/taesd_decoder.safetensors')) {
      try {
        return await AutoencoderTiny.fromTaesd(engine!, { decoder: joinPath(base, 'taesd', 'taesd_decoder.safetensors') }, { fetch: f, signal });
      } catch (e) {
        if (!absent(e)) throw e;
      }
    }
  } catch (e) {
    console.warn(`preview decoder not loaded: ${(e as Error).message}`);
  }
  return null;
}

async function ensureModel(signal: AbortSignal): Promise<Loaded> {
  const { base, key, fetch: f } = modelBase();
  if (loaded?.key === key) return loaded;
  loaded?.pipe.dispose();
  loaded = null;
  setState('loading', 'loading the model');
  if (source() === 'local' && !local!.has('model_index.json')) await checkLoneSafetensors(local!);
  el.dlProgress.value = 0;
  const index = await readJson(joinPath(base, 'model_index.json'), { fetch: f, signal });
  const cls = String(index._class_name ?? '');
  const onComponentProgress = (component: string, done: number, total: number) => {
    el.dlProgress.max = Math.max(total, 1);
    el.dlProgress.value = done;
    el.dlText.textContent = `${component}: ${mib(done)} / ${mib(total)} MiB`;
  };
  const opts = { fetch: f, signal, onComponentProgress };
  let l: Loaded;
  if (cls === 'StableDiffusionPipeline') {
    const pipe = await loadSd(engine!, base, opts);
    pipe.previewDecoder ??= await loadPreviewDecoder(base, f, signal);
    l = { key, kind: 'sd', pipe };
  } else if (cls === 'LDMPipeline') {
    l = { key, kind: 'ldm', pipe: await LDMPipeline.fromPretrained(engine!, base, opts) };
  } else {
    throw new Error(`model_index.json names ${JSON.stringify(cls)}; the demo runs LDMPipeline and StableDiffusionPipeline folders`);
  }
  el.dlProgress.value = el.dlProgress.max;
  el.dlText.textContent = `loaded (${networkRequests} network requests so far)`;
  updateModelUi(l.kind);
  loaded = l;
  return l;
}

function draw(canvas: HTMLCanvasElement, img: RgbaImage): void {
  canvas.width = img.width;
  canvas.height = img.height;
  const ctx = canvas.getContext('2d')!;
  ctx.putImageData(new ImageData(new Uint8ClampedArray(img.data), img.width, img.height), 0, 0);
}

function num(input: HTMLInputElement, name: string, min: number): number {
  const v = Number(input.value);
  if (input.value.trim() === '' || !Number.isFinite(v) || v < min) throw new Error(`${name} must be a number >= ${min}`);
  return v;
}

async function generate(): Promise<void> {
  if (!engine) return;
  el.error.textContent = '';
  el.download.classList.add('hidden');
  const abort = new AbortController();
  running = abort;
  let stepNow = 0;
  let total = 0;
  try {
    const steps = Math.round(num(el.steps, 'steps', 1));
    const seed = Math.round(num(el.seed, 'seed', 0));
    const guidanceScale = num(el.guidance, 'guidance', 0);
    const sampler = el.sampler.value || undefined;
    const m = await ensureModel(abort.signal);
    setState('generating', 'generating');
    el.previewCaption.textContent = 'live preview';
    el.stepProgress.max = steps;
    el.stepProgress.value = 0;
    el.stepText.textContent = `0 / ${steps}`;
    const t0 = performance.now();
    const onStep = async (s: StepInfo) => {
      stepNow = s.step;
      total = s.total;
      el.stepProgress.max = s.total;
      el.stepProgress.value = s.step;
      el.stepText.textContent = `step ${s.step} / ${s.total} (t = ${s.timestep})`;
      if (m.kind === 'ldm') {
        // The ldm-mnist decoder is small: decoding every step costs little next to the UNet.
        const img = m.pipe.decodeLatents(s.latents);
        try {
          draw(el.preview, (await toRgba(img))[0]);
        } finally {
          img.dispose();
        }
      } else if (s.preview?.[0]) {
        draw(el.preview, s.preview[0]);
      } else if (s.step === 1) {
        el.previewCaption.textContent = 'live preview (none: this model has no taesd/ preview decoder)';
      }
    };
    let out: { images: Tensor; rgba: RgbaImage[] };
    if (m.kind === 'ldm') {
      out = await m.pipe.generate({ classLabels: m.pipe.numClasses ? [Number(el.cls.value)] : undefined, steps, seed, guidanceScale, sampler, signal: abort.signal, onStep });
    } else {
      out = await m.pipe.generate({
        prompt: el.prompt.value,
        negativePrompt: el.negative.value || undefined,
        steps,
        seed,
        guidanceScale,
        sampler,
        width: Math.round(num(el.width, 'width', 8)),
        height: Math.round(num(el.height, 'height', 8)),
        signal: abort.signal,
        onStep,
        preview: true,
      });
    }
    out.images.dispose();
    draw(el.result, out.rgba[0]);
    el.result.toBlob((blob) => {
      if (!blob) return;
      if (el.download.href) URL.revokeObjectURL(el.download.href);
      el.download.href = URL.createObjectURL(blob);
      el.download.classList.remove('hidden');
    }, 'image/png');
    setState('done', `done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    if ((e as Error).name === 'AbortError' || abort.signal.aborted) {
      setState('cancelled', total ? `cancelled at step ${stepNow} / ${total}` : 'cancelled');
    } else {
      showError(e);
    }
  } finally {
    if (running === abort) running = null;
  }
}

function setLocal(files: FileMap): void {
  local = files;
  (document.querySelector('input[name=source][value=local]') as HTMLInputElement).checked = true;
  el.localSummary.textContent = `${files.size} file(s): ${[...files.keys()].slice(0, 8).join(', ')}${files.size > 8 ? ', ...' : ''}`;
}

el.generate.addEventListener('click', () => void generate());
el.cancel.addEventListener('click', () => running?.abort());
el.folder.addEventListener('change', () => el.folder.files && setLocal(filesFromInput(el.folder.files)));
el.files.addEventListener('change', () => el.files.files && setLocal(filesFromInput(el.files.files)));
el.drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  el.drop.classList.add('over');
});
el.drop.addEventListener('dragleave', () => el.drop.classList.remove('over'));
el.drop.addEventListener('drop', (e) => {
  e.preventDefault();
  el.drop.classList.remove('over');
  if (e.dataTransfer) filesFromDrop(e.dataTransfer).then(setLocal, showError);
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

init().catch(showError);
