// The session's images: each with the exact options that made it and its timings, a PNG that
// carries those options (src/image/png_metadata.ts, the same chunks the CLI writes), and a button
// that puts them back into the form.
import { formatParameters, withGenerationParameters, type GenerationParameters, type RgbaImage } from '../src/index.js';

export interface Timings {
  adapter: string;
  f16: boolean;
  /** prompt -> embeddings (Stable Diffusion only) */
  textMs?: number;
  /** each denoising step, preview decoding excluded where the page does it */
  stepMs: number[];
  /** live previews decoded by the page, all steps together */
  previewMs: number;
  /** final latents -> pixels on the host */
  decodeMs: number;
  peakBytes: number;
  totalMs: number;
}

export interface GalleryItem {
  params: GenerationParameters;
  /** the scheduler that ran when params.sampler is absent (the model's own) */
  ownSampler: string;
  timings: Timings;
  png: Blob;
  url: string;
}

/** RGBA pixels -> PNG bytes (the browser's encoder) with the parameters chunks added. */
export async function pngWithParameters(img: RgbaImage, params: GenerationParameters, ownSampler: string): Promise<Blob> {
  const canvas = document.createElement('canvas');
  canvas.width = img.width;
  canvas.height = img.height;
  canvas.getContext('2d')!.putImageData(new ImageData(new Uint8ClampedArray(img.data), img.width, img.height), 0, 0);
  const plain = await new Promise<Blob>((ok, bad) => canvas.toBlob((b) => (b ? ok(b) : bad(new Error('the browser could not encode a PNG'))), 'image/png'));
  const bytes = withGenerationParameters(new Uint8Array(await plain.arrayBuffer()), params, ownSampler);
  return new Blob([bytes as Uint8Array<ArrayBuffer>], { type: 'image/png' });
}

export const ms = (x: number) => (x >= 10_000 ? `${(x / 1000).toFixed(1)} s` : `${Math.round(x)} ms`);
export const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

/** The timings as label/value pairs, for the page and the gallery. */
export function timingRows(t: Timings): Array<[string, string]> {
  const steps = t.stepMs;
  const mean = steps.length ? steps.reduce((a, b) => a + b, 0) / steps.length : 0;
  const rows: Array<[string, string]> = [['adapter', `${t.adapter}${t.f16 ? ' (f16)' : ' (f32)'}`]];
  if (t.textMs !== undefined) rows.push(['text encoding', ms(t.textMs)]);
  rows.push(
    ['steps', steps.length ? `${steps.length} × ${ms(mean)} (${steps.map((s) => Math.round(s)).join(', ')} ms)` : '—'],
    ['live preview', ms(t.previewMs)],
    ['decode', ms(t.decodeMs)],
    ['peak GPU memory', mib(t.peakBytes)],
    ['total', ms(t.totalMs)],
  );
  return rows;
}

export function fileName(p: GenerationParameters): string {
  return `ldm-webgpu-${p.seed}${p.batchSize && p.batchSize > 1 ? `-${(p.batchIndex ?? 0) + 1}` : ''}.png`;
}

/** Appends one gallery entry (newest first). */
export function addToGallery(list: HTMLElement, item: GalleryItem, onReuse: (item: GalleryItem) => void): void {
  const li = document.createElement('li');
  const img = document.createElement('img');
  img.src = item.url;
  img.alt = formatParameters(item.params, item.ownSampler);
  const params = document.createElement('div');
  params.className = 'params';
  params.textContent = formatParameters(item.params, item.ownSampler);
  const t = item.timings;
  const facts = document.createElement('div');
  facts.textContent = `${ms(t.totalMs)} · ${t.stepMs.length ? ms(t.stepMs.reduce((a, b) => a + b, 0) / t.stepMs.length) : '—'}/step · peak ${mib(t.peakBytes)}`;
  facts.title = timingRows(t).map(([k, v]) => `${k}: ${v}`).join('\n');
  const row = document.createElement('div');
  row.className = 'row';
  const reuse = document.createElement('button');
  reuse.type = 'button';
  reuse.className = 'link reuse';
  reuse.textContent = 'Reuse';
  reuse.addEventListener('click', () => onReuse(item));
  const dl = document.createElement('a');
  dl.href = item.url;
  dl.download = fileName(item.params);
  dl.textContent = 'PNG';
  row.append(reuse, dl);
  li.append(img, params, facts, row);
  list.prepend(li);
}
