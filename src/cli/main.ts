#!/usr/bin/env node
// The `ldm-webgpu` command: `generate` writes PNGs from a diffusers pipeline folder or URL (the
// bundled models/ldm-mnist by default); `bench` runs the kernel/model benchmarks in Node (Dawn) or,
// with --browser, in headless Chromium. Bad arguments print the usage on stderr and exit with 2.
import type { GenerateArgs } from './args.js';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomInt } from 'node:crypto';
import { outputPathProblem } from './output.js';
import { adoptParentTerminal, runWithFilteredStderr, wantsFilteredStderr } from './stderr.js';
import { readGenerationParameters, type GenerationParameters } from '../image/png_metadata.js';
import { FAMILIES, FAMILY_NAMES, isFamily, withFamilyDefaults } from './families.js';
import { isPickleName, isSafetensorsName } from '../runtime/io.js';

export const USAGE = `usage:
  ldm-webgpu generate [--model <folder|url>] [--class N[,N...] | --prompt TEXT [--negative-prompt TEXT]]
                      [--family NAME] [--steps N] [--sampler NAME] [--seed N] [--guidance S] [--width W --height H]
                      [--batch N] [--out out.png] [--timeout S] [--verbose] [--lora FILE[:SCALE] ...]
                      [--init-image in.png [--strength S]] [--refiner <folder|url> [--denoising-end F]]
  ldm-webgpu generate --model model.safetensors --tokenizer DIR --prompt TEXT [--config configs.json]
                      [--prediction-type epsilon|v_prediction] [other options as above]
  ldm-webgpu generate --from image.png [--model <folder|url>] [--out out.png]
  ldm-webgpu generate --ckpt model.ckpt --config config.yaml [--class N | --prompt TEXT --tokenizer DIR]
                      [--steps N] [--eta E] [--seed N] [--guidance S] [--batch N] [--out out.png]
  ldm-webgpu bench [--browser] [--suite ops,models] [--no-tfjs] [--quick] [--filter TEXT] [--out DIR]
                   [--dtype f32,f16] [--adapter hardware|lavapipe|swiftshader]
  ldm-webgpu help

generate:
  --model            a diffusers pipeline folder or its base URL: LDMPipeline, StableDiffusionPipeline (SD 1.x,
                     2.x, SD-Turbo, LCM), StableDiffusionXLPipeline or an SDXL refiner (StableDiffusionXLImg2ImgPipeline,
                     with --init-image) (default: the bundled models/ldm-mnist)
  --init-image       a PNG to start from (image-to-image; Stable Diffusion and SDXL folders): its size is the output's
  --strength         how much of the schedule runs on the noised --init-image, in (0, 1] (default 0.3 for SDXL,
                     1 for Stable Diffusion, as diffusers)
  --refiner          an SDXL refiner folder: the SDXL base (--model) runs the first --denoising-end of the schedule
                     and hands its latents to the refiner, which runs the rest (diffusers' denoising_end/start)
  --denoising-end    the fraction of the schedule the base runs with --refiner, in (0, 1) (default 0.8)
  --class            class label(s) of a class-conditional model (ldm-mnist: the digit 0-9); a list
                     "3,1,4" makes a batch with one image per label
  --prompt, --negative-prompt
                     text for a StableDiffusionPipeline folder
  --family           the model family, whose defaults fill --steps, --guidance and --sampler when not given
                     (default: guessed from the folder and printed):
                       sd1, sd2        20 steps, guidance 7.5, the folder's scheduler
                       sdxl            20 steps, guidance 5
                       sd-turbo        1 step, guidance 0 (off), euler_a_trailing (SD-Turbo, SDXL-Turbo)
                       lcm             4 steps, guidance 8.5 (embedded by the LCM UNet: one pass per step), lcm
                       lcm-lora        4 steps, guidance 1 (off), lcm; needs --lora (the LCM-LoRA file)
                       ldm             20 steps (the paper's LDMs; also --ckpt)
  --lora             a LoRA safetensors file (path or URL; diffusers/PEFT or kohya names) merged into the UNet
                     and text encoder as they load, with its scale after a colon (default 1); repeat for several:
                     --lora style.safetensors:0.8 --lora lcm-lora.safetensors
  --steps            denoising steps (default: the family's)
  --sampler          ddim, pndm/plms, euler, euler-a, dpm++2m, lms, ddpm, lcm, or with their own options
                     euler_a_trailing, euler_trailing, euler_karras, dpm++2m_karras
                     (default: the family's, else the folder's scheduler)
  --seed             noise seed 0..4294967295 (default 0); -1 picks a random seed and prints it
  --guidance         classifier-free guidance scale (default 3 for class labels, 7.5 for prompts; 1 = off;
                     negative values are allowed: a class-conditional LDM steers away from the class,
                     Stable Diffusion treats anything <= 1 as off, as diffusers does)
  --width, --height  image size for Stable Diffusion (multiples of 64 for SD 1.x); LDM folders have a fixed size
  --batch            number of images (default 1, or the number of --class labels)
  --out              output PNG (default out.png); a batch writes out-1.png, out-2.png, ...
                     Every PNG carries its parameters: a tEXt chunk "parameters" (AUTOMATIC1111's
                     text) and an "ldm-webgpu" chunk with the exact options as JSON.
  --from             rerun the options stored in a PNG written by this command or the demo page
                     (the same bytes on the same adapter); only --model and --out may be added
  --verbose          also show the GPU driver's messages on stderr (hidden by default)
  --timeout          seconds a download may go without progress before it fails (default 30; 0 = no limit)
  --ckpt, --config   one of the paper's original releases (CompVis latent-diffusion model.ckpt or
                     .safetensors, and its config.yaml), sampled with CompVis DDIM (--steps dividing 1000)
  --tokenizer        --ckpt text models: folder with bert-base-uncased's vocab.txt; a .safetensors single
                     file: folder with CLIP's vocab.json and merges.txt (SD 2.x and SDXL's second encoder
                     pad with '!' by themselves)
  --config           with a .safetensors single file: JSON {"unet", "vae", "text_encoder", "scheduler"; SDXL
                     also "text_encoder_2"} with any of the component configs (default: SD 1.5's, SD 2.1's or
                     SDXL base / refiner's, told by the file's keys)
  --prediction-type  SD 2.x single file: v_prediction (2.0 / 2.1 768, the default) or epsilon (the 512 base
                     models); SDXL: v_prediction for v-prediction finetunes (default epsilon)
  --eta              DDIM eta for --ckpt (default 0)

bench:
  --browser          run the op benchmarks in headless Chromium (/usr/bin/chromium) on the built library
                     (npm run build first); otherwise in Node through Dawn
  --suite            ops, modelrows (the three checked whole-model rows), models (default ops; --browser runs ops only)
  --no-tfjs          skip the TensorFlow.js WebGPU comparison
  --quick            fewer/smaller model cases
  --filter           only the op cases whose name contains TEXT (e.g. "matmul")
  --out              folder for the JSON results (default bench/results; --browser: print only)
`;

export class UsageError extends Error {}

/** The package root: two levels above this file both in src/cli/ and in dist/node/. */
export function packageRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  let dir = here;
  for (let i = 0; i < 4; i++) {
    if (existsSync(resolve(dir, 'package.json')) && existsSync(resolve(dir, 'models'))) return dir;
    dir = dirname(dir);
  }
  return resolve(here, '..', '..');
}

export function defaultModel(): string {
  return resolve(packageRoot(), 'models', 'ldm-mnist');
}

/**
 * `--seed -1` -> `--seed=-1` for options that take a value: node's parseArgs calls a value that
 * starts with '-' ambiguous, but a negative number after such an option can only be its value.
 */
export function joinNegativeValues(args: readonly string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const name = a.startsWith('--') && !a.includes('=') ? a.slice(2) : undefined;
    const next = args[i + 1];
    if (name && options[name]?.type === 'string' && next !== undefined && /^-(\d|\.\d|inf)/i.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T) {
  try {
    return parseArgs({ args: joinNegativeValues(args, options), options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function intArg(name: string, v: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v.trim())) throw new UsageError(`--${name} must be an integer, got ${JSON.stringify(v)}`);
  const n = Number(v);
  if (n < min || n > max) throw new UsageError(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function numArg(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got ${JSON.stringify(v)}`);
  return n;
}

export type { GenerateArgs } from './args.js';

export const BUNDLED_MODEL = 'ldm-mnist';

export function parseGenerateArgs(args: string[]): GenerateArgs {
  const v = parse(args, {
    model: { type: 'string' },
    class: { type: 'string' },
    prompt: { type: 'string' },
    'negative-prompt': { type: 'string' },
    steps: { type: 'string' },
    sampler: { type: 'string' },
    seed: { type: 'string' },
    guidance: { type: 'string' },
    width: { type: 'string' },
    height: { type: 'string' },
    batch: { type: 'string' },
    out: { type: 'string' },
    from: { type: 'string' },
    verbose: { type: 'boolean' },
    timeout: { type: 'string' },
    ckpt: { type: 'string' },
    config: { type: 'string' },
    tokenizer: { type: 'string' },
    eta: { type: 'string' },
    family: { type: 'string' },
    lora: { type: 'string', multiple: true },
    'prediction-type': { type: 'string' },
    'init-image': { type: 'string' },
    strength: { type: 'string' },
    refiner: { type: 'string' },
    'denoising-end': { type: 'string' },
  });
  delete v.verbose; // handled before parsing (src/cli/stderr.ts)
  const timeoutMs = timeoutArg(v.timeout);
  delete v.timeout;
  if (v.from !== undefined) {
    const extra = Object.keys(v).filter((k) => !['from', 'model', 'out'].includes(k));
    if (extra.length) throw new UsageError(`--from reruns the options stored in the PNG; only --model and --out may be added (got --${extra.join(', --')})`);
    return { ...argsFromPng(v.from, v.model, v.out ?? 'out.png'), timeoutMs };
  }
  if (v.class !== undefined && v.prompt !== undefined) throw new UsageError('give either --class or --prompt, not both');
  // a Stable Diffusion single file (--model x.safetensors) takes --tokenizer, --config (its component configs as
  // JSON) and --prediction-type; a paper release takes --ckpt with its config.yaml
  const single = v.model !== undefined && isSafetensorsName(v.model);
  if (v.model !== undefined && isPickleName(v.model)) {
    throw new UsageError(`--model ${v.model}: a pickle checkpoint; Stable Diffusion single files load from .safetensors (convert it first), the paper's CompVis releases with --ckpt model.ckpt --config config.yaml`);
  }
  if (v.ckpt === undefined && v.config !== undefined && !single) throw new UsageError('--ckpt and --config go together (a release model.ckpt and its config.yaml), or --config configs.json goes with --model <single file>.safetensors');
  if (v.ckpt !== undefined && v.config === undefined) throw new UsageError('--ckpt and --config go together (a release model.ckpt and its config.yaml)');
  if (v.ckpt !== undefined && v.model !== undefined) throw new UsageError('give either --model or --ckpt/--config, not both');
  if (v.ckpt === undefined && !single && v.tokenizer !== undefined) throw new UsageError('--tokenizer applies to --ckpt models and to --model <single file>.safetensors');
  if (v.ckpt === undefined && v.eta !== undefined) throw new UsageError('--eta applies to --ckpt models');
  if (v['prediction-type'] !== undefined && !single) throw new UsageError('--prediction-type applies to --model <single file>.safetensors (SD 2.x: epsilon for the base models)');
  if (v['prediction-type'] !== undefined && v['prediction-type'] !== 'epsilon' && v['prediction-type'] !== 'v_prediction') {
    throw new UsageError(`--prediction-type must be epsilon or v_prediction, got ${JSON.stringify(v['prediction-type'])}`);
  }
  if (single && v.class !== undefined) throw new UsageError('a .safetensors single file is a Stable Diffusion model: give --prompt, not --class');
  if (v['negative-prompt'] !== undefined && v.prompt === undefined) throw new UsageError('--negative-prompt needs --prompt');
  if (v.lora !== undefined && (v.ckpt !== undefined || v.class !== undefined)) throw new UsageError('--lora applies to Stable Diffusion folders (--prompt), not to --class or --ckpt models');
  const loras = v.lora?.map(loraArg);
  for (const k of ['init-image', 'refiner'] as const) {
    if (v[k] !== undefined && (v.ckpt !== undefined || v.class !== undefined)) throw new UsageError(`--${k} applies to Stable Diffusion / SDXL folders (--prompt), not to --class or --ckpt models`);
  }
  if (v.strength !== undefined && v['init-image'] === undefined) throw new UsageError('--strength needs --init-image');
  if (v['denoising-end'] !== undefined && v.refiner === undefined) throw new UsageError('--denoising-end needs --refiner');
  const strength = numArg('strength', v.strength);
  if (strength !== undefined && !(strength > 0 && strength <= 1)) throw new UsageError(`--strength must be in (0, 1], got ${strength}`);
  const denoisingEnd = numArg('denoising-end', v['denoising-end']);
  if (denoisingEnd !== undefined && !(denoisingEnd > 0 && denoisingEnd < 1)) throw new UsageError(`--denoising-end must be in (0, 1), got ${denoisingEnd}`);
  if (v.family !== undefined) {
    if (!isFamily(v.family)) throw new UsageError(`--family must be one of ${FAMILY_NAMES.join(', ')}; got ${JSON.stringify(v.family)}`);
    if (FAMILIES[v.family].needs === 'lora' && v.lora === undefined) {
      throw new UsageError(`--family ${v.family} needs --lora <file> (the LCM-LoRA weights for the base model)`);
    }
    if (v.ckpt !== undefined && v.family !== 'ldm') throw new UsageError(`--ckpt/--config load the paper's LDM releases: --family ldm, not ${v.family}`);
  }
  let classLabels: number[] | undefined;
  if (v.class !== undefined) {
    classLabels = v.class.split(',').map((s) => intArg('class', s, 0)!);
  }
  const batch = intArg('batch', v.batch, 1, 64);
  if (classLabels && batch !== undefined) {
    if (classLabels.length === 1) classLabels = Array(batch).fill(classLabels[0]);
    else if (classLabels.length !== batch) throw new UsageError(`--batch ${batch} disagrees with ${classLabels.length} --class labels`);
  }
  const out = v.out ?? 'out.png';
  if (!/\.png$/i.test(out)) throw new UsageError(`--out must name a .png file, got ${JSON.stringify(out)}`);
  const parsed: GenerateArgs = {
    model: v.model ?? defaultModel(),
    modelLabel: v.model ?? BUNDLED_MODEL,
    classLabels,
    prompt: v.prompt,
    negativePrompt: v['negative-prompt'],
    steps: intArg('steps', v.steps, 1, 1000),
    sampler: v.sampler,
    family: v.family,
    ...(loras ? { loras } : {}),
    ...seedArg(v.seed),
    timeoutMs,
    guidance: numArg('guidance', v.guidance),
    width: intArg('width', v.width, 8, 4096),
    height: intArg('height', v.height, 8, 4096),
    batch,
    out,
    ...(v['init-image'] !== undefined ? { initImage: v['init-image'], strength } : {}),
    ...(v.refiner !== undefined ? { refiner: v.refiner, denoisingEnd: denoisingEnd ?? 0.8 } : {}),
    ...(v.ckpt !== undefined ? { ckpt: v.ckpt, config: v.config, tokenizer: v.tokenizer, eta: numArg('eta', v.eta), modelLabel: v.ckpt } : {}),
    ...(single ? { config: v.config, tokenizer: v.tokenizer, predictionType: v['prediction-type'] as 'epsilon' | 'v_prediction' | undefined } : {}),
  };
  // a family named on the command line sets its defaults now; otherwise generate guesses it from the folder
  return parsed.family ? withFamilyDefaults(parsed, parsed.family) : parsed;
}

/** GenerateArgs from the `ldm-webgpu` JSON chunk of a PNG (this CLI's or the demo page's). */
export function argsFromPng(file: string, model: string | undefined, out: string): GenerateArgs {
  if (!/\.png$/i.test(out)) throw new UsageError(`--out must name a .png file, got ${JSON.stringify(out)}`);
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    throw new UsageError(`--from ${file}: ${(e as Error).message}`);
  }
  let found: ReturnType<typeof readGenerationParameters>;
  try {
    found = readGenerationParameters(bytes);
  } catch (e) {
    throw new UsageError(`--from ${file}: ${(e as Error).message}`);
  }
  if (!found) throw new UsageError(`--from ${file}: the PNG has no generation parameters (no "parameters" or "ldm-webgpu" text chunk)`);
  if (!found.exact) throw new UsageError(`--from ${file}: only the A1111 "parameters" text is there, which does not say where the model is; give the options as flags`);
  const p = found.params;
  const bad = (what: string) => new UsageError(`--from ${file}: the stored options have ${what}`);
  const int = (k: keyof GenerationParameters, min: number) => {
    const x = p[k];
    if (x === undefined) return undefined;
    if (typeof x !== 'number' || !Number.isInteger(x) || x < min) throw bad(`a bad ${k} (${JSON.stringify(x)})`);
    return x;
  };
  if (typeof p.model !== 'string' || !p.model) throw bad('no model');
  if (typeof p.guidanceScale !== 'number' || !Number.isFinite(p.guidanceScale)) throw bad('no guidanceScale');
  if (p.classLabels !== undefined && !(Array.isArray(p.classLabels) && p.classLabels.every((c) => Number.isInteger(c) && c >= 0))) throw bad('bad classLabels');
  for (const k of ['prompt', 'negativePrompt', 'sampler'] as const) if (p[k] !== undefined && typeof p[k] !== 'string') throw bad(`a bad ${k}`);
  const isLdm = p.prompt === undefined;
  return {
    model: model ?? (p.model === BUNDLED_MODEL ? defaultModel() : p.model),
    modelLabel: model ?? p.model,
    classLabels: p.classLabels,
    prompt: p.prompt,
    negativePrompt: p.negativePrompt,
    steps: int('steps', 1) ?? 20,
    sampler: p.sampler,
    seed: int('seed', 0) ?? 0,
    guidance: p.guidanceScale,
    width: isLdm ? undefined : int('width', 8),
    height: isLdm ? undefined : int('height', 8),
    batch: p.classLabels ? undefined : int('batchSize', 1),
    out,
    f16: p.f16 === false ? false : undefined,
    ...(p.loras !== undefined ? { loras: pngLoras(p.loras, bad) } : {}),
    ...(typeof p.initImage === 'string' ? { initImage: p.initImage, strength: typeof p.strength === 'number' ? p.strength : undefined } : {}),
    ...(typeof p.refiner === 'string' ? { refiner: p.refiner, denoisingEnd: typeof p.denoisingEnd === 'number' ? p.denoisingEnd : 0.8 } : {}),
    batchIndex: int('batchIndex', 0) ?? 0,
    exact: true,
  };
}

function pngLoras(v: unknown, bad: (what: string) => Error): { source: string; scale: number }[] {
  const ok = (l: unknown) => !!l && typeof (l as { source?: unknown }).source === 'string' && Number.isFinite((l as { scale?: unknown }).scale);
  if (!Array.isArray(v) || !v.every(ok)) throw bad('bad loras');
  return v.map((l: { source: string; scale: number }) => ({ source: l.source, scale: l.scale }));
}

/** --lora FILE[:SCALE]: the scale is what follows the last colon when it is a number (so URLs and
 * Windows drive letters keep their colons). */
export function loraArg(v: string): { source: string; scale: number } {
  const m = /^(.+):([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)$/i.exec(v);
  const source = m ? m[1] : v;
  const scale = m ? Number(m[2]) : 1;
  if (!source.trim()) throw new UsageError(`--lora needs a file: FILE or FILE:SCALE, got ${JSON.stringify(v)}`);
  if (!Number.isFinite(scale)) throw new UsageError(`--lora ${v}: the scale must be a finite number`);
  return { source, scale };
}

/** --timeout in seconds (default 30; 0 waits forever) -> the loaders' no-progress timeoutMs. */
function timeoutArg(v: string | undefined): number {
  if (v === undefined) return 30_000;
  const s = numArg('timeout', v)!;
  if (s < 0) throw new UsageError(`--timeout must be 0 (no limit) or a number of seconds, got ${v}`);
  return s * 1000;
}

function seedArg(v: string | undefined): { seed: number; seedWasRandom?: boolean } {
  if (v !== undefined && v.trim() === '-1') return { seed: randomInt(0, 2 ** 32 - 1), seedWasRandom: true };
  if (v !== undefined && /^\s*-\d+\s*$/.test(v)) throw new UsageError(`--seed must be 0..4294967295, or -1 for a random seed, got ${v.trim()}`);
  const seed = intArg('seed', v, 0, 2 ** 32 - 1) ?? 0;
  return { seed };
}

export interface BenchArgs {
  browser: boolean;
  suite: string[];
  tfjs: boolean;
  quick: boolean;
  filter?: string;
  out?: string;
  /** storage dtypes of the Node runs (default f32) */
  dtypes?: ('f32' | 'f16')[];
  adapter?: 'hardware' | 'lavapipe' | 'swiftshader';
}

export function parseBenchArgs(args: string[]): BenchArgs {
  const v = parse(args, {
    browser: { type: 'boolean', default: false },
    suite: { type: 'string', default: 'ops' },
    'no-tfjs': { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    filter: { type: 'string' },
    out: { type: 'string' },
    verbose: { type: 'boolean' },
    dtype: { type: 'string', default: 'f32' },
    adapter: { type: 'string' },
  });
  const suite = v.suite!.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of suite) if (s !== 'ops' && s !== 'models' && s !== 'modelrows') throw new UsageError(`--suite takes ops, modelrows and/or models, got ${JSON.stringify(s)}`);
  if (suite.length === 0) throw new UsageError('--suite is empty');
  const dtypes = v.dtype!.split(',').map((d) => d.trim());
  for (const d of dtypes) if (d !== 'f32' && d !== 'f16') throw new UsageError(`--dtype takes f32 and/or f16, got ${JSON.stringify(d)}`);
  const adapter = v.adapter;
  if (adapter !== undefined && adapter !== 'hardware' && adapter !== 'lavapipe' && adapter !== 'swiftshader') {
    throw new UsageError(`--adapter takes hardware, lavapipe or swiftshader, got ${JSON.stringify(adapter)}`);
  }
  return { browser: v.browser!, suite, tfjs: !v['no-tfjs'], quick: v.quick!, filter: v.filter, out: v.out, dtypes: dtypes as ('f32' | 'f16')[], adapter };
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === 'generate') {
      const args = parseGenerateArgs(rest);
      const problem = outputPathProblem(args.out);
      if (problem) throw new UsageError(problem);
      const { runGenerate } = await import('./generate.js');
      return await runGenerate(args);
    }
    if (cmd === 'bench') {
      const args = parseBenchArgs(rest);
      if (args.browser) {
        const { runBrowserBench } = await import('../../bench/browser.js');
        await runBrowserBench({ tfjs: args.tfjs, root: packageRoot(), out: args.out, filter: args.filter });
      } else {
        const { runBench } = await import('../../bench/run.js');
        // bench/results in a checkout; ./bench-results where the package is installed without bench/.
        const out = args.out ?? (existsSync(resolve(packageRoot(), 'bench')) ? resolve(packageRoot(), 'bench', 'results') : resolve('bench-results'));
        await runBench({ suite: args.suite, tfjs: args.tfjs, quick: args.quick, filter: args.filter, out, dtypes: args.dtypes, adapter: args.adapter });
      }
      return 0;
    }
    if (cmd === 'help' || cmd === '--help' || cmd === '-h') {
      process.stdout.write(USAGE);
      return 0;
    }
    throw new UsageError(cmd === undefined ? 'no command given' : `unknown command ${JSON.stringify(cmd)}`);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`ldm-webgpu: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
}

const invokedDirectly = (() => {
  if (!process.argv[1]) return false;
  try {
    const self = fileURLToPath(import.meta.url);
    const arg = resolve(process.argv[1]);
    return self === arg || self.replace(/\.[cm]?[jt]s$/, '') === arg.replace(/\.[cm]?[jt]s$/, '') || /[\\/]ldm-webgpu$/.test(arg);
  } catch {
    return false;
  }
})();

if (invokedDirectly && wantsFilteredStderr(process.argv.slice(2))) {
  runWithFilteredStderr(process.argv[1], process.argv.slice(2)).then((code) => process.exit(code));
} else if (invokedDirectly) {
  adoptParentTerminal();
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      const err = e as Error;
      if (err.name === 'AbortError') {
        process.stderr.write('\nldm-webgpu: cancelled\n');
        process.exit(130);
      }
      process.stderr.write(`\nldm-webgpu: ${err.message}\n`);
      if (process.env.LDM_DEBUG) process.stderr.write(`${err.stack}\n`);
      process.exit(1);
    },
  );
}
