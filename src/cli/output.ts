// Output files of `generate`: the folder is checked before anything is loaded (a typo in --out
// should not cost a whole generation), and each PNG is written to a temporary file in the same
// folder and renamed over the target, so a crash or Ctrl-C never leaves a half-written image.
// Also the PNG encoding and the output names of a batch.
import { accessSync, constants, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { PNG } from 'pngjs';
import type { RgbaImage } from '../pipelines/common.js';

/** An error message when `out` cannot be written (missing folder, not a folder, read-only), else null. */
export function outputPathProblem(out: string): string | null {
  const dir = dirname(resolve(out));
  let st;
  try {
    st = statSync(dir);
  } catch {
    return `--out ${out}: the folder ${dir} does not exist (create it first)`;
  }
  if (!st.isDirectory()) return `--out ${out}: ${dir} is not a folder`;
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    return `--out ${out}: the folder ${dir} is not writable`;
  }
  try {
    if (statSync(out).isDirectory()) return `--out ${out}: is a folder, give a file name ending in .png`;
  } catch {
    // does not exist yet: fine
  }
  return null;
}

let counter = 0;

/** Writes bytes to `path` atomically: a temporary file beside it, then a rename over it. */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${counter++}.tmp`);
  try {
    writeFileSync(tmp, bytes);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new Error(`cannot write ${path}: ${(e as Error).message}`);
  }
}

/** RGBA8 -> PNG bytes (8-bit RGBA, no interlace). */
export function encodePng(img: RgbaImage): Uint8Array {
  const png = new PNG({ width: img.width, height: img.height });
  png.data = Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength);
  return PNG.sync.write(png);
}

/** out.png for one image; out-1.png, out-2.png, ... for a batch. */
export function outputNames(out: string, n: number): string[] {
  if (n === 1) return [out];
  const stem = out.replace(/\.png$/i, '');
  return Array.from({ length: n }, (_, i) => `${stem}-${i + 1}.png`);
}
