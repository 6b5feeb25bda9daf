// The denoising loop and what every pipeline shares: scheduler construction by class name,
// cancellation, NaN/Inf checks per step, progress callbacks with optional previews, and the
// conversion of decoded images to [0, 1] tensors and RGBA bytes.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import type { AutoencoderKL } from '../models/autoencoder_kl.js';
import {
  DDIMScheduler,
  DDPMScheduler,
  DPMSolverMultistepScheduler,
  EulerAncestralDiscreteScheduler,
  EulerDiscreteScheduler,
  LMSDiscreteScheduler,
  LCMScheduler,
  PNDMScheduler,
  type SchedulerBase,
  type SchedulerConfig,
} from '../schedulers/index.js';

export type Scheduler = SchedulerBase;

export const SCHEDULERS = {
  DDPMScheduler,
  DDIMScheduler,
  PNDMScheduler,
  EulerDiscreteScheduler,
  EulerAncestralDiscreteScheduler,
  DPMSolverMultistepScheduler,
  LMSDiscreteScheduler,
  LCMScheduler,
} as const;

export type SchedulerName = keyof typeof SCHEDULERS;

/** Short names accepted by the CLI and the demo page. */
export const SAMPLER_ALIASES: Record<string, SchedulerName> = {
  ddpm: 'DDPMScheduler',
  ddim: 'DDIMScheduler',
  pndm: 'PNDMScheduler',
  plms: 'PNDMScheduler',
  euler: 'EulerDiscreteScheduler',
  'euler-a': 'EulerAncestralDiscreteScheduler',
  euler_a: 'EulerAncestralDiscreteScheduler',
  'dpm++2m': 'DPMSolverMultistepScheduler',
  dpmpp_2m: 'DPMSolverMultistepScheduler',
  lms: 'LMSDiscreteScheduler',
  lcm: 'LCMScheduler',
};

/** Short names for a class with options of its own, set over the model's config (diffusers'
 * `Scheduler.from_config(config, timestep_spacing="trailing")`). */
export const SAMPLER_PRESETS: Record<string, { className: SchedulerName; options: SchedulerConfig }> = {
  // SD-Turbo / SDXL-Turbo: ancestral Euler from t = 999 (trailing spacing), 1-4 steps, guidance off
  euler_a_trailing: { className: 'EulerAncestralDiscreteScheduler', options: { timestep_spacing: 'trailing' } },
  'euler-a-trailing': { className: 'EulerAncestralDiscreteScheduler', options: { timestep_spacing: 'trailing' } },
  euler_trailing: { className: 'EulerDiscreteScheduler', options: { timestep_spacing: 'trailing' } },
  'dpm++2m_karras': { className: 'DPMSolverMultistepScheduler', options: { use_karras_sigmas: true } },
  euler_karras: { className: 'EulerDiscreteScheduler', options: { use_karras_sigmas: true } },
};

/** A scheduler from a diffusers scheduler_config.json (its _class_name) or another class with the
 * same training betas (diffusers' `Scheduler.from_config(pipe.scheduler.config)`). */
export function createScheduler(config: SchedulerConfig, className?: string): Scheduler {
  const own = (o: object, k: unknown) => typeof k === 'string' && Object.prototype.hasOwnProperty.call(o, k);
  const alias = className?.toLowerCase();
  if (own(SAMPLER_PRESETS, alias)) {
    const p = SAMPLER_PRESETS[alias!];
    return createScheduler({ ...config, ...p.options }, p.className);
  }
  const name = (className ? (own(SAMPLER_ALIASES, alias) ? SAMPLER_ALIASES[alias!] : className) : config._class_name) as string;
  // own properties only: 'toString' or '__proto__' must not reach Object.prototype
  const cls = own(SCHEDULERS, name) ? SCHEDULERS[name as SchedulerName] : undefined;
  if (!cls) {
    throw new Error(`unsupported scheduler ${JSON.stringify(name)} (supported: ${Object.keys(SCHEDULERS).join(', ')}; short names ${[...Object.keys(SAMPLER_ALIASES), ...Object.keys(SAMPLER_PRESETS)].join(', ')})`);
  }
  const cfg = { ...config };
  if (className && name !== config._class_name) {
    // Options that only make sense for the original class are dropped, as diffusers' from_config ignores them.
    if (name === 'PNDMScheduler') cfg.skip_prk_steps = true;
  }
  return new cls(cfg);
}

/** The scheduler one generate() call runs on: a fresh one (own timesteps, history and noise), of
 * the pipeline's class or of the `sampler` asked for, with the pipeline's training betas. */
export function schedulerForCall(base: Scheduler, sampler?: string): Scheduler {
  return sampler ? createScheduler(base.config, sampler) : base.clone();
}

/** The call's seed: the one given (checked: item i of a batch of B uses seed + i, all valid Philox
 * seeds) or a random one. */
export function resolveSeed(op: string, seed: number | undefined, B: number): number {
  if (seed === undefined) return Math.floor(Math.random() * 2 ** 32);
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0 || !Number.isSafeInteger(seed + (B - 1))) {
    throw new Error(`${op}: seed must be an integer in [0, 2^53 - batch size), got ${String(seed)}`);
  }
  return seed;
}

/** Checks prompt embeddings given instead of prompts: [B, L, dim]. */
export function checkEmbeds(op: string, name: string, t: Tensor, B: number, dim: number): void {
  if (!(t instanceof Tensor) || t.rank !== 3 || t.shape[0] !== B || t.shape[2] !== dim) {
    throw new Error(`${op}: ${name} must be [${B}, L, ${dim}], got ${t instanceof Tensor ? shapeStr(t.shape) : typeof t}`);
  }
}

/** Checks an image (or mask) input: [B, C, H, W]. */
export function checkImage(op: string, name: string, t: Tensor, B: number, C: number, H: number, W: number): void {
  if (!(t instanceof Tensor) || t.rank !== 4 || t.shape[0] !== B || t.shape[1] !== C || t.shape[2] !== H || t.shape[3] !== W) {
    throw new Error(`${op}: ${name} must be [${B}, ${C}, ${H}, ${W}] in [0, 1], got ${t instanceof Tensor ? shapeStr(t.shape) : typeof t}`);
  }
}

/**
 * Sets `steps` timesteps on `scheduler` and keeps the last strength * steps of them (diffusers'
 * img2img get_timesteps: t_start = steps - floor(steps * strength)); strength 1 keeps all.
 */
export function strengthTimesteps(op: string, scheduler: Scheduler, steps: number, strength: number): { timesteps: number[]; tStart: number } {
  scheduler.setTimesteps(steps);
  const all = [...scheduler.timesteps];
  if (strength >= 1) return { timesteps: all, tStart: 0 };
  const tStart = Math.max(steps - Math.min(Math.floor(steps * strength), steps), 0);
  const timesteps = all.slice(tStart);
  if (!timesteps.length) throw new Error(`${op}: strength ${strength} with ${steps} steps leaves no step to run`);
  return { timesteps, tStart };
}

/** A guidance scale: a finite number (NaN used to act silently as 1). */
export function checkGuidance(op: string, scale: unknown): number {
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new Error(`${op}: guidanceScale must be a finite number, got ${String(scale)}`);
  return scale;
}

/** How much a UNet shrinks its input: every block but the last downsamples by 2 (diffusers'
 * UNet2DModel / UNet2DConditionModel); latent sizes must be multiples of this. */
export function unetDownFactor(unet: { config: Record<string, unknown> }): number {
  const boc = unet.config.block_out_channels;
  return 2 ** ((Array.isArray(boc) ? boc.length : 4) - 1);
}

/** Refuses a latent size the UNet cannot take, before anything is allocated, naming sizes that work
 * (`unit` = pixels per latent, `what` = the option names). */
export function checkLatentSize(op: string, what: string, h: number, w: number, factor: number, unit = 1): void {
  if (h % factor === 0 && w % factor === 0) return;
  const m = factor * unit;
  const near = (v: number) => {
    const lo = Math.floor(v / m) * m;
    return lo > 0 ? `${lo} or ${lo + m}` : `${m}`;
  };
  throw new Error(
    `${op}: ${what} ${h * unit}x${w * unit} does not fit the UNet, which downsamples by ${factor}${unit > 1 ? ` (after the VAE's ${unit})` : ''}: ` +
      `sizes must be multiples of ${m} (${m}, ${2 * m}, ${3 * m}, ...); nearest: height ${near(h * unit)}, width ${near(w * unit)}`,
  );
}

/** Throws naming `stage` when `t` holds NaN or Inf (a corrupt weight gives a black image otherwise). */
export async function assertFinite(op: string, t: Tensor, stage: string): Promise<void> {
  const n = (await t.engine.scope(() => ops.countNonFinite(t).read()))[0];
  if (n > 0) throw new Error(`${op}: ${stage} produced ${n} NaN/Inf values in ${shapeStr(t.shape)} from finite input; check its weights`);
}

export interface StepInfo {
  /** 1-based */
  step: number;
  total: number;
  timestep: number;
  /** the current latents, valid only during the callback (do not dispose) */
  latents: Tensor;
  /** a decoded preview, when the pipeline has a preview decoder and `preview` was asked for */
  preview?: RgbaImage[];
}

export interface RgbaImage {
  width: number;
  height: number;
  /** RGBA8, row-major */
  data: Uint8ClampedArray;
}

export interface LoopOptions {
  signal?: AbortSignal;
  onStep?: (info: StepInfo) => void | Promise<void>;
  /** decode a preview each step with the pipeline's preview decoder (TAESD) */
  preview?: boolean;
  eta?: number;
}

export function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  const e = new Error(typeof reason === 'string' ? reason : 'the generation was cancelled');
  e.name = 'AbortError';
  return e;
}

/**
 * Classifier-free guidance around a model call (diffusers' do_classifier_free_guidance): with
 * `guided`, the input goes through `model` as one doubled batch [x; x] (the model's conditioning is
 * [uncond; cond] in the same order) and eps = eps_uncond + scale (eps_cond - eps_uncond); otherwise
 * the model runs once. `extraChannels` appends channels to the input first (super-resolution's
 * low-res image, inpainting's mask and masked-image latents).
 */
export function guidedPredict(opts: {
  model: (x: Tensor, t: number) => Tensor;
  guided: boolean;
  scale: number;
  /** diffusers' guidance_rescale (0 = off): see ops.classifierFreeGuidance; guided runs only */
  rescale?: number;
  extraChannels?: () => Tensor[];
}): (x: Tensor, t: number) => Tensor {
  const { model, guided, scale, extraChannels } = opts;
  const rescale = opts.rescale ?? 0;
  return (x, t) =>
    x.engine.scope(() => {
      const input = extraChannels ? ops.concat([x, ...extraChannels()], 1) : x;
      return guided ? ops.classifierFreeGuidance(model(ops.concat([input, input], 0), t), scale, { rescale }) : model(input, t);
    });
}

/** diffusers' guidance_rescale: a number in [0, 1] (default 0: off). */
export function checkGuidanceRescale(op: string, r: unknown): number {
  if (r === undefined) return 0;
  if (typeof r !== 'number' || !Number.isFinite(r) || r < 0 || r > 1) throw new Error(`${op}: guidanceRescale must be a number in [0, 1], got ${String(r)}`);
  return r;
}

/** 'image' (the default) or 'latent' (decode skipped: the output's images are the final latents). */
export function checkOutputType(op: string, v: unknown): 'image' | 'latent' {
  if (v === undefined || v === 'image') return 'image';
  if (v === 'latent') return 'latent';
  throw new Error(`${op}: outputType must be 'image' or 'latent', got ${JSON.stringify(v)}`);
}

/**
 * Runs `scheduler` from `latents` (owned: consumed) over `timesteps`, calling `predict` for the model
 * output at each step (guidance is its business). Returns the final latents. Each step runs in its
 * own scope, so every intermediate is freed on success, error and cancellation alike; the scheduler's
 * own history is its business (it keeps and frees it).
 */
export async function denoise(args: {
  scheduler: Scheduler;
  latents: Tensor;
  /** the seed of the scheduler's own per-step noise (ancestral samplers): item i draws from seed + i */
  seed: number;
  timesteps: readonly number[];
  predict: (modelInput: Tensor, t: number) => Tensor;
  /** after each step (inpainting's latent blending): new latents from the step's */
  afterStep?: (latents: Tensor, stepIndex: number) => Tensor;
  previewDecode?: (latents: Tensor) => Promise<RgbaImage[]>;
} & LoopOptions): Promise<Tensor> {
  const { scheduler, timesteps, signal } = args;
  const stepOpts = args.eta !== undefined ? { eta: args.eta } : {};
  return args.latents.engine.scope(async (s) => {
    let x = s.track(args.latents);
    try {
      scheduler.setNoiseSeed(args.seed);
      for (let i = 0; i < timesteps.length; i++) {
        if (signal?.aborted) throw abortError(signal);
        const t = timesteps[i];
        const prev = x;
        x = s.scope(() => {
          const eps = args.predict(scheduler.scaleModelInput(prev, t), t);
          const next = scheduler.step(eps, t, prev, stepOpts).prevSample;
          return args.afterStep ? args.afterStep(next, i) : next;
        });
        prev.dispose();
        // One small read per step: it bounds the work in flight (so cancel acts within a step) and
        // stops a diverging run at the step where it happened instead of returning a black image.
        const n = (await s.scope(() => ops.countNonFinite(x).read()))[0];
        if (n > 0) throw new Error(`denoising step ${i + 1}/${timesteps.length} (timestep ${t}): ${n} NaN/Inf values in the latents ${shapeStr(x.shape)}; stopping`);
        if (args.onStep) {
          const preview = args.preview && args.previewDecode ? await args.previewDecode(x) : undefined;
          await args.onStep({ step: i + 1, total: timesteps.length, timestep: t, latents: x, preview });
        }
      }
      if (signal?.aborted) throw abortError(signal);
      return x;
    } finally {
      scheduler.reset(); // frees the history the scheduler kept (multistep samplers)
    }
  });
}

/** t in `dtype`: t itself when it already is, else a cast copy. */
export function asDtype(t: Tensor, dtype: 'f32' | 'f16' | string): Tensor {
  return t.dtype === dtype ? t : ops.cast(t, dtype as 'f32' | 'f16');
}

/**
 * Runs a first-stage decode; when the model is f16 and the result holds NaN/Inf (the SD VAE
 * overflows in f16), upcasts the model's weights to f32 in place and decodes again, as diffusers
 * does for force_upcast VAEs. The raw decode is checked before any clamping hides an Inf.
 */
export function decodeWithUpcast(model: { engine: Engine; dtype: string; upcast(): void }, decode: () => Tensor, label: string): Promise<Tensor> {
  return model.engine.scope(async (s) => {
    const out = s.run(decode);
    if (model.dtype !== 'f16') return out;
    const n = (await s.scope(() => ops.countNonFinite(out).read()))[0];
    if (n === 0) return out;
    out.dispose();
    console.warn(`${label}: the f16 decode overflowed (${n} NaN/Inf values); upcasting the decoder to f32 and decoding again`);
    model.upcast();
    return s.run(decode);
  });
}

/**
 * [B, 3, H, W] in [0, 1] -> the VAE posterior's sample * scaling_factor, in `dtype` (the UNet's): item i
 * with the noise of seed + i from `offset` of its stream. The VAE may run in f32 beside an f16 UNet
 * (force_upcast): in and out through its own dtype.
 */
export function vaeEncodeLatents(vae: AutoencoderKL, image: Tensor, seed: number, offset: number, dtype: string, norm: LatentsNorm | null = null): Tensor {
  return vae.engine.scope(() => {
    const dist = vae.encode(ops.scale(asDtype(image, vae.dtype), 2, -1));
    const noise = ops.randnItems(vae.engine, dist.mean.shape, seed, { offset, dtype: dist.mean.dtype });
    const z = vae.sample(dist, { noise });
    const sf = vae.scalingFactor;
    // diffusers' SDXL img2img: (z - mean) * sf / std per channel when the VAE config has both
    const scaled = norm ? channelAffine(z, norm.std.map((s) => sf / s), norm.mean.map((m, c) => (-m * sf) / norm.std[c])) : ops.scale(z, sf);
    return asDtype(scaled, dtype);
  });
}

/** Latents -> the VAE decoder's output in [-1, 1], unclamped, in the VAE's own dtype. */
export function vaeDecodeLatents(vae: AutoencoderKL, z: Tensor, norm: LatentsNorm | null = null): Tensor {
  return vae.engine.scope(() => {
    const x = asDtype(z, vae.dtype);
    const sf = vae.scalingFactor;
    // diffusers' SDXL pipelines: z * std / sf + mean per channel when the VAE config has both
    return vae.decode(norm ? channelAffine(x, norm.std.map((s) => s / sf), norm.mean) : ops.scale(x, 1 / sf));
  });
}

/** A VAE config's latents_mean / latents_std (per latent channel; some SDXL-family VAEs carry them). */
export interface LatentsNorm {
  mean: number[];
  std: number[];
}

/** The VAE config's latents_mean / latents_std, checked (both or neither, one finite value per latent
 * channel, std > 0), or null when it has neither. */
export function latentsNorm(op: string, vae: AutoencoderKL): LatentsNorm | null {
  const cfg = vae.config as Record<string, unknown>;
  const mean = cfg.latents_mean ?? null;
  const std = cfg.latents_std ?? null;
  if (mean === null && std === null) return null;
  const C = vae.shape.latentChannels;
  const list = (name: string, v: unknown, positive: boolean): number[] => {
    if (!Array.isArray(v) || v.length !== C || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0))) {
      throw new Error(`${op}: the VAE config's ${name} must be ${C} finite${positive ? ' positive' : ''} numbers (one per latent channel), got ${JSON.stringify(v)}`);
    }
    return v as number[];
  };
  if (mean === null || std === null) throw new Error(`${op}: the VAE config has ${mean === null ? 'latents_std without latents_mean' : 'latents_mean without latents_std'}; both or neither`);
  return { mean: list('latents_mean', mean, false), std: list('latents_std', std, true) };
}

/** x [B, C, H, W] -> x * a[c] + b[c]. */
function channelAffine(x: Tensor, a: number[], b: number[]): Tensor {
  const C = x.shape[1];
  const up = (v: number[]) => asDtype(x.engine.tensor(Float32Array.from(v), [1, C, 1, 1]), x.dtype);
  return ops.add(ops.mul(x, up(a)), up(b));
}

/** decoded in [-1, 1] -> clamp(decoded / 2 + 0.5, 0, 1). */
export function toUnitRange(decoded: Tensor): Tensor {
  return decoded.engine.scope(() => ops.clamp(ops.scale(decoded, 0.5, 0.5), 0, 1));
}

/** A pipeline's preview decoder as denoise() wants it: latents -> decode -> RGBA, freeing its tensors. */
export function rgbaPreview(decode: (latents: Tensor) => Tensor): (latents: Tensor) => Promise<RgbaImage[]> {
  return (latents) => latents.engine.scope(async (s) => toRgba(s.run(() => toUnitRange(decode(latents)))));
}

/** [B, C, H, W] in [0, 1] (C = 1 grey, 3 RGB, 4 RGBA) -> one RGBA8 image per batch item. */
export async function toRgba(images: Tensor): Promise<RgbaImage[]> {
  if (images.rank !== 4) throw new Error(`toRgba: expected [B, C, H, W], got ${shapeStr(images.shape)}`);
  const [B, C, H, W] = images.shape;
  const v = await images.read();
  const out: RgbaImage[] = [];
  const plane = H * W;
  for (let b = 0; b < B; b++) {
    const data = new Uint8ClampedArray(plane * 4);
    const base = b * C * plane;
    for (let p = 0; p < plane; p++) {
      const r = v[base + p];
      const g = C >= 3 ? v[base + plane + p] : r;
      const bl = C >= 3 ? v[base + 2 * plane + p] : r;
      const a = C === 4 ? v[base + 3 * plane + p] : 1;
      // round half up like torchvision's to_pil_image (x * 255 + 0.5 truncated)
      data[4 * p] = Math.floor(r * 255 + 0.5);
      data[4 * p + 1] = Math.floor(g * 255 + 0.5);
      data[4 * p + 2] = Math.floor(bl * 255 + 0.5);
      data[4 * p + 3] = Math.floor(a * 255 + 0.5);
    }
    out.push({ width: W, height: H, data });
  }
  return out;
}

/** Initial latents: given (host array or tensor, copied) or seeded Gaussian noise, times init_noise_sigma. */
export function initialLatents(engine: Engine, shape: number[], opts: { latents?: Tensor | Float32Array; seed?: number; initNoiseSigma: number; dtype: 'f32' | 'f16' }): Tensor {
  const given = opts.latents;
  if (given instanceof Tensor && shapeStr(given.shape) !== shapeStr(shape)) throw new Error(`latents must be ${shapeStr(shape)}, got ${shapeStr(given.shape)}`);
  const n = shape.reduce((a, b) => a * b, 1);
  if (given instanceof Float32Array && given.length !== n) throw new Error(`latents must have ${n} values for ${shapeStr(shape)}, got ${given.length}`);
  return engine.scope(() => {
    let base: Tensor;
    if (given) {
      const t = given instanceof Tensor ? given : engine.tensor(given, shape);
      base = t.dtype === opts.dtype ? ops.scale(t, 1) : ops.cast(t, opts.dtype); // a copy: the caller's stays theirs
    } else {
      const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 32);
      base = ops.randnItems(engine, shape, seed, { dtype: opts.dtype }); // item i from seed + i
    }
    return opts.initNoiseSigma === 1 ? base : ops.scale(base, opts.initNoiseSigma);
  });
}
