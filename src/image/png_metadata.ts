// Generation parameters inside PNG files, shared by the CLI and the demo page. Two text chunks:
// - `parameters`: the text convention of AUTOMATIC1111's web UI, which other tools (ComfyUI
//   importers, civitai, image viewers) already read:
//       <prompt>
//       Negative prompt: <negative prompt>
//       Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15
// - `ldm-webgpu`: JSON with the exact options, which is what a rerun uses (the text form loses
//   the sampler's short name and cannot say "the model's own scheduler").
// tEXt holds Latin-1 only, so text outside it goes into an uncompressed iTXt chunk (UTF-8), as
// Pillow does. No compression: the chunks are small and this keeps the module free of zlib.

export interface GenerationParameters {
  /** the model as given: "ldm-mnist" for the bundled one, else a folder path or URL */
  model: string;
  prompt?: string;
  negativePrompt?: string;
  /** class labels of a class-conditional model, one per image of the batch */
  classLabels?: number[];
  steps: number;
  /** short name or diffusers class name; absent: the model's own scheduler */
  sampler?: string;
  guidanceScale: number;
  seed: number;
  width: number;
  height: number;
  /** images generated together (the seed covers the whole batch) */
  batchSize?: number;
  /** which image of the batch this file is (0-based) */
  batchIndex?: number;
  /** f16 storage was used (false: f32) */
  f16?: boolean;
  /** LoRAs merged at load (file as given, scale) */
  loras?: { source: string; scale: number }[];
  /** image-to-image: the init image's file as given, and the strength (absent: the pipeline's default) */
  initImage?: string;
  strength?: number;
  /** SDXL base -> refiner: the refiner folder and the fraction of the schedule the base ran */
  refiner?: string;
  denoisingEnd?: number;
}

export const PARAMETERS_KEY = 'parameters';
export const JSON_KEY = 'ldm-webgpu';

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** Our sampler names as A1111 writes them (and back). */
const A1111_SAMPLERS: Record<string, string> = {
  DDIMScheduler: 'DDIM',
  PNDMScheduler: 'PLMS',
  EulerDiscreteScheduler: 'Euler',
  EulerAncestralDiscreteScheduler: 'Euler a',
  DPMSolverMultistepScheduler: 'DPM++ 2M',
  LMSDiscreteScheduler: 'LMS',
  DDPMScheduler: 'DDPM',
  LCMScheduler: 'LCM',
};
const SHORT_TO_CLASS: Record<string, string> = {
  ddim: 'DDIMScheduler',
  pndm: 'PNDMScheduler',
  plms: 'PNDMScheduler',
  euler: 'EulerDiscreteScheduler',
  'euler-a': 'EulerAncestralDiscreteScheduler',
  euler_a: 'EulerAncestralDiscreteScheduler',
  'dpm++2m': 'DPMSolverMultistepScheduler',
  dpmpp_2m: 'DPMSolverMultistepScheduler',
  lms: 'LMSDiscreteScheduler',
  ddpm: 'DDPMScheduler',
  lcm: 'LCMScheduler',
};
const A1111_TO_SHORT: Record<string, string> = { DDIM: 'ddim', PLMS: 'plms', Euler: 'euler', 'Euler a': 'euler-a', 'DPM++ 2M': 'dpm++2m', LMS: 'lms', DDPM: 'ddpm', LCM: 'lcm' };

/**
 * The sampler presets (a class with options over the model's config, src/pipelines/common.ts) as A1111
 * writes them since 1.9: the sampler and a separate "Schedule type". Trailing spacing (timesteps from
 * 999 down in equal strides, SD-Turbo's) is A1111's "SGM Uniform", the schedule its docs give for
 * SD-Turbo / SDXL-Turbo / LCM; Karras sigmas are "Karras".
 */
const A1111_PRESETS: Record<string, [sampler: string, schedule: string]> = {
  euler_a_trailing: ['Euler a', 'SGM Uniform'],
  'euler-a-trailing': ['Euler a', 'SGM Uniform'],
  euler_trailing: ['Euler', 'SGM Uniform'],
  'dpm++2m_karras': ['DPM++ 2M', 'Karras'],
  euler_karras: ['Euler', 'Karras'],
};
const PRESET_FROM_A1111: Record<string, string> = {
  'Euler a|SGM Uniform': 'euler_a_trailing',
  'Euler|SGM Uniform': 'euler_trailing',
  'DPM++ 2M|Karras': 'dpm++2m_karras',
  'Euler|Karras': 'euler_karras',
};

/** "Euler a" for "euler-a" or "EulerAncestralDiscreteScheduler"; unknown names pass through. */
export function a1111SamplerName(sampler: string): string {
  return a1111Sampler(sampler).sampler;
}

/** The A1111 sampler and schedule type of one of ours ("dpm++2m_karras" -> DPM++ 2M, Karras);
 * schedule is absent where the model's own schedule runs (A1111's "Automatic", which it omits). */
export function a1111Sampler(sampler: string): { sampler: string; schedule?: string } {
  const preset = A1111_PRESETS[sampler.toLowerCase()];
  if (preset) return { sampler: preset[0], schedule: preset[1] };
  const cls = SHORT_TO_CLASS[sampler.toLowerCase()] ?? sampler;
  return { sampler: A1111_SAMPLERS[cls] ?? sampler };
}

/** Ours for an A1111 sampler and schedule type, either as two fields (1.9+) or in the older combined
 * name ("DPM++ 2M Karras"); a schedule we have no preset for leaves the sampler as it is. */
function samplerFromA1111(sampler: string, schedule?: string): string {
  let name = sampler;
  let sched = schedule;
  const combined = /^(.*) (Karras|SGM Uniform)$/.exec(sampler);
  if (!sched && combined) [name, sched] = [combined[1], combined[2]];
  if (sched && sched !== 'Automatic') {
    const preset = PRESET_FROM_A1111[`${name}|${sched}`];
    if (preset) return preset;
    if (combined && !schedule) return sampler;
  }
  return A1111_TO_SHORT[name] ?? sampler;
}

// A1111 quotes a value that holds a comma, colon or quote, as JSON does.
const quote = (v: string) => (/[,:"\n]/.test(v) ? JSON.stringify(v) : v);

/**
 * The A1111 text. `defaultSampler` names the scheduler that ran when `p.sampler` is absent
 * (the model's own, e.g. "PNDMScheduler").
 */
export function formatParameters(p: GenerationParameters, defaultSampler?: string): string {
  const lines: string[] = [];
  if (p.prompt) lines.push(p.prompt);
  if (p.negativePrompt) lines.push(`Negative prompt: ${p.negativePrompt}`);
  const sampler = p.sampler ?? defaultSampler;
  const named = sampler ? a1111Sampler(sampler) : undefined;
  const fields: Array<[string, string | number | undefined]> = [
    ['Steps', p.steps],
    ['Sampler', named?.sampler],
    ['Schedule type', named?.schedule],
    ['CFG scale', p.guidanceScale],
    ['Seed', p.seed],
    ['Size', `${p.width}x${p.height}`],
    ['Model', modelName(p.model)],
    ['Class', p.classLabels?.join(' ')],
    ['Batch size', p.batchSize && p.batchSize > 1 ? p.batchSize : undefined],
    ['Batch pos', p.batchSize && p.batchSize > 1 ? p.batchIndex ?? 0 : undefined],
  ];
  lines.push(fields.filter(([, v]) => v !== undefined && v !== '').map(([k, v]) => `${k}: ${quote(String(v))}`).join(', '));
  return lines.join('\n');
}

/** "ldm-mnist" for ".../models/ldm-mnist/" or "https://host/x/ldm-mnist". */
export function modelName(model: string): string {
  return model.replace(/[\\/]+$/, '').split(/[\\/]/).pop() || model;
}

/** Reads the A1111 text back (what it holds: the model is a name, not a location). */
export function parseParameters(text: string): Partial<GenerationParameters> & { fields: Record<string, string> } {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  let last = lines.length - 1;
  while (last > 0 && lines[last].trim() === '') last--;
  const fields: Record<string, string> = {};
  // The last line is "Key: value, Key: value" when it starts with a key A1111 always writes.
  const hasFields = /^\s*Steps:/.test(lines[last]);
  if (hasFields) {
    const re = /\s*([\w ]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)/g;
    for (let m = re.exec(lines[last]); m && m[0] !== ''; m = re.exec(lines[last])) {
      fields[m[1].trim()] = m[2].startsWith('"') ? (JSON.parse(m[2]) as string) : m[2].trim();
    }
  }
  const body = lines.slice(0, hasFields ? last : last + 1);
  const negAt = body.findIndex((l) => l.startsWith('Negative prompt:'));
  const prompt = (negAt < 0 ? body : body.slice(0, negAt)).join('\n').trim();
  const negativePrompt = negAt < 0 ? '' : body.slice(negAt).join('\n').slice('Negative prompt:'.length).trim();
  const out: Partial<GenerationParameters> & { fields: Record<string, string> } = { fields };
  if (prompt) out.prompt = prompt;
  if (negativePrompt) out.negativePrompt = negativePrompt;
  const int = (k: string) => (fields[k] !== undefined && /^-?\d+$/.test(fields[k]) ? Number(fields[k]) : undefined);
  out.steps = int('Steps');
  out.seed = int('Seed');
  if (fields['CFG scale'] !== undefined && Number.isFinite(Number(fields['CFG scale']))) out.guidanceScale = Number(fields['CFG scale']);
  if (fields.Sampler) out.sampler = samplerFromA1111(fields.Sampler, fields['Schedule type']);
  const size = /^(\d+)x(\d+)$/.exec(fields.Size ?? '');
  if (size) [out.width, out.height] = [Number(size[1]), Number(size[2])];
  if (fields.Model) out.model = fields.Model;
  if (fields.Class) out.classLabels = fields.Class.split(/\s+/).map(Number);
  out.batchSize = int('Batch size');
  out.batchIndex = int('Batch pos');
  for (const k of Object.keys(out) as Array<keyof typeof out>) if (out[k] === undefined) delete out[k];
  return out;
}

// ---------------------------------------------------------------- PNG chunks

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

interface Chunk {
  type: string;
  /** offset of the length field */
  start: number;
  /** offset just past the CRC */
  end: number;
  data: Uint8Array;
}

/** The chunks of a PNG; a file that is not one, or is cut short, is refused with the reason. */
export function pngChunks(png: Uint8Array): Chunk[] {
  if (png.length < 8 || PNG_SIGNATURE.some((b, i) => png[i] !== b)) throw new Error('not a PNG file (the 8-byte PNG signature is missing)');
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const chunks: Chunk[] = [];
  let pos = 8;
  while (pos < png.length) {
    if (pos + 12 > png.length) throw new Error(`truncated PNG: a chunk header at byte ${pos} runs past the end (${png.length} bytes)`);
    const len = view.getUint32(pos);
    const type = String.fromCharCode(...png.subarray(pos + 4, pos + 8));
    const end = pos + 12 + len;
    if (end > png.length) throw new Error(`truncated PNG: chunk ${type} at byte ${pos} needs ${len} bytes, the file ends first`);
    chunks.push({ type, start: pos, end, data: png.subarray(pos + 8, pos + 8 + len) });
    pos = end;
    if (type === 'IEND') break;
  }
  if (chunks[0]?.type !== 'IHDR') throw new Error('not a PNG file: the first chunk is not IHDR');
  return chunks;
}

const latin1 = (s: string) => /^[\x00-\xff]*$/.test(s);
const utf8 = new TextEncoder();

function makeChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** A tEXt chunk when key and text are Latin-1, else an uncompressed iTXt chunk (UTF-8). */
export function textChunk(key: string, text: string): Uint8Array {
  if (!/^[\x20-\x7e\xa1-\xff]{1,79}$/.test(key) || /^ | $|  /.test(key)) throw new Error(`PNG text key ${JSON.stringify(key)}: 1-79 Latin-1 characters without leading, trailing or double spaces`);
  const k = Uint8Array.from(key, (c) => c.charCodeAt(0));
  if (latin1(text)) {
    return makeChunk('tEXt', Uint8Array.from([...k, 0, ...Array.from(text, (c) => c.charCodeAt(0))]));
  }
  // keyword \0 compression-flag(0) compression-method(0) language-tag \0 translated-keyword \0 text
  return makeChunk('iTXt', Uint8Array.from([...k, 0, 0, 0, 0, 0, ...utf8.encode(text)]));
}

/** The tEXt and (uncompressed) iTXt chunks by key; the first of a key wins. */
export function readTextChunks(png: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  const dec = new TextDecoder('utf-8', { fatal: false });
  for (const c of pngChunks(png)) {
    if (c.type !== 'tEXt' && c.type !== 'iTXt') continue;
    const z = c.data.indexOf(0);
    if (z < 1) continue;
    const key = String.fromCharCode(...c.data.subarray(0, z));
    if (key in out) continue;
    if (c.type === 'tEXt') {
      let s = '';
      for (const b of c.data.subarray(z + 1)) s += String.fromCharCode(b);
      out[key] = s;
    } else {
      if (c.data[z + 1] !== 0) continue; // compressed iTXt: not written by us
      const lang = c.data.indexOf(0, z + 3);
      const tkey = lang < 0 ? -1 : c.data.indexOf(0, lang + 1);
      if (tkey < 0) continue;
      out[key] = dec.decode(c.data.subarray(tkey + 1));
    }
  }
  return out;
}

/** A copy of `png` with these text chunks right after IHDR; chunks of the same keys are replaced. */
export function withTextChunks(png: Uint8Array, texts: Record<string, string>): Uint8Array {
  const chunks = pngChunks(png);
  const keys = new Set(Object.keys(texts));
  const keep = chunks.filter((c) => {
    if (c.type !== 'tEXt' && c.type !== 'iTXt' && c.type !== 'zTXt') return true;
    const z = c.data.indexOf(0);
    return !keys.has(String.fromCharCode(...c.data.subarray(0, Math.max(z, 0))));
  });
  const parts: Uint8Array[] = [png.subarray(0, 8), png.subarray(keep[0].start, keep[0].end)];
  for (const [k, v] of Object.entries(texts)) parts.push(textChunk(k, v));
  for (const c of keep.slice(1)) parts.push(png.subarray(c.start, c.end));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The PNG with both chunks: `parameters` (A1111 text) and `ldm-webgpu` (JSON of `p`). */
export function withGenerationParameters(png: Uint8Array, p: GenerationParameters, defaultSampler?: string): Uint8Array {
  return withTextChunks(png, { [PARAMETERS_KEY]: formatParameters(p, defaultSampler), [JSON_KEY]: JSON.stringify(p) });
}

/**
 * The parameters stored in a PNG: the exact JSON when present (exact: true), else what the A1111
 * text says (exact: false; the model is then a name only), else null.
 */
export function readGenerationParameters(png: Uint8Array): { params: Partial<GenerationParameters>; exact: boolean; text?: string } | null {
  const t = readTextChunks(png);
  if (t[JSON_KEY] !== undefined) {
    let params: unknown;
    try {
      params = JSON.parse(t[JSON_KEY]);
    } catch (e) {
      throw new Error(`the PNG's ${JSON_KEY} chunk is not valid JSON: ${(e as Error).message}`);
    }
    if (!params || typeof params !== 'object' || Array.isArray(params)) throw new Error(`the PNG's ${JSON_KEY} chunk is not a JSON object`);
    return { params: params as Partial<GenerationParameters>, exact: true, text: t[PARAMETERS_KEY] };
  }
  if (t[PARAMETERS_KEY] !== undefined) {
    const { fields: _f, ...params } = parseParameters(t[PARAMETERS_KEY]);
    return { params, exact: false, text: t[PARAMETERS_KEY] };
  }
  return null;
}
