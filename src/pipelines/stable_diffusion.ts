// StableDiffusionPipeline: text-conditioned latent diffusion with classifier-free guidance (the
// unconditional and conditional halves go through the UNet as one batch), plus image-to-image
// (strength) and inpainting (9-channel inpainting UNets by concatenating mask and masked-image
// latents; latent blending for ordinary UNets). Loads a diffusers folder or a SD 1.x single file.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { AutoencoderKL } from '../models/autoencoder_kl.js';
import { UNet2DConditionModel } from '../models/unet_2d_condition.js';
import type { AutoencoderTiny } from '../models/autoencoder_tiny.js';
import { CLIPTextModel } from '../text/clip_text_model.js';
import { CLIPTokenizer } from '../text/clip_tokenizer.js';
import { asDtype, assertFinite, checkGuidance, checkLatentSize, createScheduler, decodeWithUpcast, denoise, initialLatents, resolveSeed, schedulerForCall, unetDownFactor, toRgba, toUnitRange, type LoopOptions, type Scheduler } from './common.js';
import { checkPrediction, type PipelineOutput } from './ldm.js';
import { loadPipelineFolder, type PipelineLoadOptions } from './loading.js';
import { joinPath } from '../runtime/io.js';
import { SD15_SCHEDULER, SD15_TEXT_ENCODER, SD15_UNET, SD15_VAE } from './sd_configs.js';
import { openSingleFile, type SingleFileSource } from '../loaders/single_file.js';
import { ConfigReader, type Config } from '../runtime/config.js';

export interface SDGenerateOptions extends LoopOptions {
  prompt?: string | string[];
  negativePrompt?: string | string[];
  /** [B, L, cross_attention_dim] (instead of prompt) */
  promptEmbeds?: Tensor;
  negativePromptEmbeds?: Tensor;
  steps?: number;
  guidanceScale?: number;
  /** Image i of the batch draws all its noise (initial latents, the VAE posterior sample of
   * `image`, inpainting's blend noise, ancestral samplers' per-step noise) from seed + i, so it
   * equals a single run with that seed. Default: a random seed. */
  seed?: number;
  latents?: Tensor | Float32Array;
  height?: number;
  width?: number;
  /** another scheduler for this call: 'euler', 'dpm++2m', 'DDIMScheduler', ... */
  sampler?: string;
  /** image-to-image / inpainting source image, [B, 3, H, W] in [0, 1] */
  image?: Tensor;
  /** how much of the schedule to run on the noised image (1 = from pure noise) */
  strength?: number;
  /** inpainting mask [B, 1, H, W] in [0, 1]: 1 = repaint, 0 = keep */
  maskImage?: Tensor;
  /** CLIP layers to skip from the end (diffusers' clip_skip) */
  clipSkip?: number;
}

/** Where in each image's noise stream (seed + i) the draws other than the initial latents and the
 * per-step noise start: far apart, so no two purposes share numbers (a step k draws at offset
 * (k + 1) * itemSize, far below these). */
export const NOISE_STREAM = { image: 2 ** 40, maskedImage: 2 * 2 ** 40, inpaintBlend: 3 * 2 ** 40 } as const;

export class StableDiffusionPipeline {
  readonly engine: Engine;
  readonly unet: UNet2DConditionModel;
  readonly vae: AutoencoderKL;
  readonly textEncoder: CLIPTextModel | null;
  readonly tokenizer: CLIPTokenizer | null;
  previewDecoder: AutoencoderTiny | null;
  scheduler: Scheduler;

  constructor(c: {
    vae: AutoencoderKL;
    unet: UNet2DConditionModel;
    scheduler: Scheduler;
    textEncoder?: CLIPTextModel | null;
    tokenizer?: CLIPTokenizer | null;
    previewDecoder?: AutoencoderTiny | null;
    predictionType?: string;
  }) {
    if (!c.vae || !c.unet || !c.scheduler) throw new Error('StableDiffusionPipeline: needs { vae, unet, scheduler }');
    this.vae = c.vae;
    this.unet = c.unet;
    this.scheduler = c.scheduler;
    this.textEncoder = c.textEncoder ?? null;
    this.tokenizer = c.tokenizer ?? null;
    this.previewDecoder = c.previewDecoder ?? null;
    this.engine = c.unet.engine;
    const L = c.vae.shape.latentChannels;
    if (c.unet.outChannels !== L) throw new Error(`StableDiffusionPipeline: the UNet predicts ${c.unet.outChannels} channels but the VAE latents have ${L}`);
    if (c.unet.inChannels !== L && c.unet.inChannels !== 2 * L + 1) {
      throw new Error(`StableDiffusionPipeline: the UNet takes ${c.unet.inChannels} channels; expected ${L} (text-to-image) or ${2 * L + 1} (inpainting)`);
    }
    if (this.textEncoder && this.textEncoder.shape.hidden !== c.unet.crossAttentionDim) {
      throw new Error(`StableDiffusionPipeline: the text encoder gives ${this.textEncoder.shape.hidden}-wide embeddings but the UNet cross-attends to ${c.unet.crossAttentionDim}`);
    }
    if (this.previewDecoder && this.previewDecoder.shape.latentChannels !== L) {
      throw new Error(`StableDiffusionPipeline: the preview decoder takes ${this.previewDecoder.shape.latentChannels} latent channels, the VAE has ${L}`);
    }
    checkPrediction(c.scheduler, 'StableDiffusionPipeline', c.predictionType);
  }

  /** A diffusers StableDiffusionPipeline folder (local path or URL). */
  static async fromPretrained(engine: Engine, pathOrUrl: string, opts: PipelineLoadOptions = {}): Promise<StableDiffusionPipeline> {
    const c = await loadPipelineFolder(engine, pathOrUrl, { text_encoder: CLIPTextModel, unet: UNet2DConditionModel, vae: AutoencoderKL }, opts);
    try {
      const index = c.index as Record<string, unknown>;
      const tokenizer = Array.isArray(index.tokenizer) && index.tokenizer[1] ? await CLIPTokenizer.fromPretrained(joinPath(pathOrUrl, 'tokenizer'), { fetch: opts.fetch, signal: opts.signal, timeoutMs: opts.timeoutMs }) : null;
      const scheduler = createScheduler(c.schedulerConfig);
      return new StableDiffusionPipeline({
        vae: c.models.vae as AutoencoderKL,
        unet: c.models.unet as UNet2DConditionModel,
        textEncoder: (c.models.text_encoder as CLIPTextModel | undefined) ?? null,
        tokenizer,
        scheduler,
        predictionType: scheduler.predictionType,
      });
    } catch (e) {
      for (const m of Object.values(c.models)) m.dispose();
      throw e;
    }
  }

  /**
   * A Stable Diffusion 1.x single-file checkpoint (CompVis keys: model.diffusion_model.*,
   * first_stage_model.*, cond_stage_model.transformer.*). Configs default to SD 1.5's; the
   * tokenizer files are not in such checkpoints: pass a tokenizer folder (or use promptEmbeds).
   */
  static async fromSingleFile(
    engine: Engine,
    source: SingleFileSource,
    opts: PipelineLoadOptions & { unetConfig?: Config; vaeConfig?: Config; textEncoderConfig?: Config; schedulerConfig?: Config; tokenizer?: string | CLIPTokenizer } = {},
  ): Promise<StableDiffusionPipeline> {
    const file = await openSingleFile(source, opts);
    const loaded: { dispose(): void }[] = [];
    try {
      const unet = await UNet2DConditionModel.fromSingleFile(engine, file, { config: opts.unetConfig ?? SD15_UNET });
      loaded.push(unet);
      const vae = await AutoencoderKL.fromSingleFile(engine, file, { config: opts.vaeConfig ?? SD15_VAE });
      loaded.push(vae);
      const hasText = file.names().some((n) => n.startsWith('cond_stage_model.transformer.'));
      const textEncoder = hasText ? await CLIPTextModel.fromSingleFile(engine, file, { config: opts.textEncoderConfig ?? SD15_TEXT_ENCODER }) : null;
      if (textEncoder) loaded.push(textEncoder);
      const tokenizer = typeof opts.tokenizer === 'string' ? await CLIPTokenizer.fromPretrained(opts.tokenizer) : opts.tokenizer ?? null;
      const scheduler = createScheduler(opts.schedulerConfig ?? SD15_SCHEDULER);
      return new StableDiffusionPipeline({ vae, unet, textEncoder, tokenizer, scheduler, predictionType: scheduler.predictionType });
    } catch (e) {
      for (const m of loaded) m.dispose();
      throw e;
    } finally {
      if (typeof source === 'string' || source instanceof Uint8Array || source instanceof ArrayBuffer) await file.close();
    }
  }

  /** Loads a pipeline folder whose model_index.json names StableDiffusionPipeline, or a .safetensors single file. */
  static async load(engine: Engine, pathOrUrl: string, opts: PipelineLoadOptions & { tokenizer?: string } = {}): Promise<StableDiffusionPipeline> {
    if (pathOrUrl.endsWith('.safetensors')) return StableDiffusionPipeline.fromSingleFile(engine, pathOrUrl, opts);
    return StableDiffusionPipeline.fromPretrained(engine, pathOrUrl, opts);
  }

  get vaeScaleFactor(): number {
    return 2 ** (this.vae.shape.blockOutChannels.length - 1);
  }

  /** Prompt text -> [B, 77, hidden] embeddings with the pipeline's tokenizer and text encoder. */
  encodePrompt(prompts: readonly string[], clipSkip?: number): Tensor {
    if (!this.tokenizer || !this.textEncoder) {
      throw new Error('StableDiffusionPipeline: this pipeline has no tokenizer/text encoder; pass promptEmbeds (and negativePromptEmbeds)');
    }
    const ids = prompts.map((p) => this.tokenizer!.encode(p));
    const out = this.textEncoder.forward(ids, clipSkip ? { clipSkip } : {});
    out.poolerOutput.dispose();
    out.hiddenStates?.forEach((t) => t.dispose());
    return out.lastHiddenState;
  }

  async generate(opts: SDGenerateOptions = {}): Promise<PipelineOutput> {
    const op = 'StableDiffusionPipeline.generate';
    const engine = this.engine;
    const scale = checkGuidance(op, opts.guidanceScale ?? 7.5);
    const guided = scale > 1;
    const steps = opts.steps ?? 50;
    const dtype = this.unet.dtype as 'f32' | 'f16';
    const owned: Tensor[] = [];
    const own = <T extends Tensor>(t: T): T => (owned.push(t), t);
    try {
      // ---- geometry first: a size the UNet cannot take fails before any model runs
      const f = this.vaeScaleFactor;
      const [sh, sw] = new ConfigReader('StableDiffusionPipeline: UNet2DConditionModel', this.unet.config).sampleSize(64);
      const H = opts.height ?? opts.image?.shape[2] ?? sh * f;
      const W = opts.width ?? opts.image?.shape[3] ?? sw * f;
      for (const [k, v] of [['height', H], ['width', W]] as const) {
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`${op}: ${k} must be a positive integer, got ${String(v)}`);
      }
      if (H % f || W % f) throw new Error(`${op}: height and width must be multiples of ${f}, got ${H}x${W}`);
      checkLatentSize(op, 'height x width', H / f, W / f, unetDownFactor(this.unet), f);
      // ---- conditioning
      let cond: Tensor;
      let B: number;
      if (opts.promptEmbeds) {
        cond = opts.promptEmbeds;
        B = cond.shape[0];
      } else {
        const prompts = typeof opts.prompt === 'string' ? [opts.prompt] : opts.prompt ?? [''];
        B = prompts.length;
        cond = own(this.encodePrompt(prompts, opts.clipSkip));
      }
      checkEmbeds(op, 'promptEmbeds', cond, B, this.unet.crossAttentionDim);
      const noiseSeed = resolveSeed(op, opts.seed, B);
      let emb = cond;
      if (guided) {
        let uncond: Tensor;
        if (opts.negativePromptEmbeds) uncond = opts.negativePromptEmbeds;
        else if (opts.promptEmbeds && !this.textEncoder) throw new Error(`${op}: guidance needs negativePromptEmbeds when the pipeline has no text encoder`);
        else {
          const neg = typeof opts.negativePrompt === 'string' ? Array(B).fill(opts.negativePrompt) : opts.negativePrompt ?? Array(B).fill('');
          if (neg.length !== B) throw new Error(`${op}: ${neg.length} negative prompts for ${B} prompts`);
          uncond = own(this.encodePrompt(neg, opts.clipSkip));
        }
        checkEmbeds(op, 'negativePromptEmbeds', uncond, B, this.unet.crossAttentionDim);
        if (uncond.shape[1] !== cond.shape[1]) throw new Error(`${op}: negative and positive embeddings differ in length (${uncond.shape[1]} vs ${cond.shape[1]})`);
        emb = own(ops.concat([uncond, cond], 0));
      }

      // ---- geometry and schedule
      const Lc = this.vae.shape.latentChannels;
      const shape = [B, Lc, H / f, W / f];
      // each call owns its scheduler: calls in flight together do not share timesteps or state
      const scheduler = schedulerForCall(this.scheduler, opts.sampler);
      scheduler.setTimesteps(steps);
      let timesteps = scheduler.timesteps;
      const inpaintUNet = this.unet.inChannels === 2 * Lc + 1;
      const strength = opts.strength ?? 1;
      if (!(strength > 0 && strength <= 1)) throw new Error(`${op}: strength must be in (0, 1], got ${strength}`);
      if (opts.maskImage && !opts.image) throw new Error(`${op}: maskImage needs image`);
      if (inpaintUNet && !opts.maskImage) throw new Error(`${op}: this is an inpainting UNet (${this.unet.inChannels} channels): pass image and maskImage`);

      // ---- image conditioning
      let imageLatents: Tensor | null = null;
      let maskLatent: Tensor | null = null;
      let maskedImageLatents: Tensor | null = null;
      if (opts.image) {
        checkImage(op, 'image', opts.image, B, 3, H, W);
        imageLatents = own(this.encodeImage(opts.image, noiseSeed));
      }
      if (opts.maskImage) {
        checkImage(op, 'maskImage', opts.maskImage, B, 1, H, W);
        const { mask, masked } = await prepareMask(opts.maskImage, opts.image!, f);
        maskLatent = own(mask);
        if (inpaintUNet) {
          maskedImageLatents = own(this.encodeImage(masked, noiseSeed, NOISE_STREAM.maskedImage));
        }
        masked.dispose();
      }

      // ---- initial latents
      let latents: Tensor;
      if (imageLatents && strength < 1) {
        const init = Math.min(Math.floor(steps * strength), steps);
        const tStart = Math.max(steps - init, 0);
        timesteps = timesteps.slice(tStart);
        if (!timesteps.length) throw new Error(`${op}: strength ${strength} with ${steps} steps leaves no step to run`);
        scheduler.setBeginIndex(tStart);
        const noise = own(opts.latents instanceof Tensor ? ops.scale(opts.latents, 1) : ops.randnItems(engine, shape, noiseSeed, { dtype }));
        latents = scheduler.addNoise(imageLatents, noise, Array(B).fill(timesteps[0]));
      } else {
        latents = initialLatents(engine, shape, { latents: opts.latents, seed: noiseSeed, initNoiseSigma: scheduler.initNoiseSigma, dtype });
      }

      // ---- the loop
      const blendNoise = maskLatent && !inpaintUNet ? own(ops.randnItems(engine, shape, noiseSeed, { offset: NOISE_STREAM.inpaintBlend, dtype })) : null;
      const predict = (x: Tensor, t: number): Tensor => {
        let inp = x;
        if (inpaintUNet) inp = ops.concat([x, maskLatent!, maskedImageLatents!], 1);
        try {
          if (!guided) return this.unet.forward(inp, t, { encoderHiddenStates: emb });
          const both = ops.concat([inp, inp], 0);
          const out = this.unet.forward(both, t, { encoderHiddenStates: emb });
          both.dispose();
          const g = ops.classifierFreeGuidance(out, scale);
          out.dispose();
          return g;
        } finally {
          if (inp !== x) inp.dispose();
        }
      };
      // Ordinary UNets inpaint by keeping the known region at the noise level of the next step.
      const afterStep =
        maskLatent && !inpaintUNet
          ? (x: Tensor, i: number): Tensor => {
              const next = timesteps[i + 1];
              const known = next !== undefined ? scheduler.addNoise(imageLatents!, blendNoise!, Array(B).fill(next)) : ops.scale(imageLatents!, 1);
              const diff = ops.sub(x, known);
              const md = ops.mul(diff, maskLatent!);
              diff.dispose();
              const out = ops.add(known, md);
              [known, md, x].forEach((t) => t.dispose());
              return out;
            }
          : undefined;
      const previewDecode = this.previewDecoder
        ? async (x: Tensor) => {
            const d = toUnitRange(this.previewDecoder!.decode(x));
            try {
              return await toRgba(d);
            } finally {
              d.dispose();
            }
          }
        : undefined;
      const final = await denoise({ scheduler, seed: noiseSeed, latents, timesteps, predict, afterStep, previewDecode, eta: opts.eta, signal: opts.signal, onStep: opts.onStep, preview: opts.preview });
      let decoded: Tensor;
      try {
        // an f16 VAE (force_upcast off) that overflows is upcast to f32 and run again
        decoded = await decodeWithUpcast(this.vae, () => this.decodeRaw(final), 'StableDiffusionPipeline');
      } finally {
        final.dispose();
      }
      try {
        // the loop checked the latents; a NaN here comes from the VAE decoder's weights
        await assertFinite(op, decoded, 'the AutoencoderKL decoder');
      } catch (e) {
        decoded.dispose();
        throw e;
      }
      const images = toUnitRange(decoded);
      return { images, rgba: await toRgba(images) };
    } finally {
      for (const t of owned) t.dispose();
    }
  }

  /** [B, 3, H, W] in [0, 1] -> latents * scaling_factor, sampled from the posterior: item i with
   * the noise of seed + i at `stream` (generate() uses NOISE_STREAM.image for its `image`). */
  encodeImage(image: Tensor, seed: number, stream: number = NOISE_STREAM.image): Tensor {
    // the VAE may run in f32 beside an f16 UNet (force_upcast): in and out through its own dtype
    const img = asDtype(image, this.vae.dtype);
    const x = ops.scale(img, 2, -1);
    if (img !== image) img.dispose();
    const dist = this.vae.encode(x);
    x.dispose();
    let noise: Tensor | null = null;
    let z: Tensor;
    try {
      noise = ops.randnItems(this.engine, dist.mean.shape, seed, { offset: stream, dtype: dist.mean.dtype });
      z = this.vae.sample(dist, { noise });
    } finally {
      noise?.dispose();
    }
    dist.mean.dispose();
    dist.logvar.dispose();
    const s = ops.scale(z, this.vae.scalingFactor);
    z.dispose();
    const out = asDtype(s, this.unet.dtype);
    if (out !== s) s.dispose();
    return out;
  }

  /** Diffusion latents -> images in [0, 1] (in the VAE's dtype). */
  decodeLatents(z: Tensor): Tensor {
    return toUnitRange(this.decodeRaw(z));
  }

  /** Latents -> the VAE decoder's output in [-1, 1], unclamped, in the VAE's own dtype. */
  private decodeRaw(z: Tensor): Tensor {
    const zs = asDtype(z, this.vae.dtype);
    const h = ops.scale(zs, 1 / this.vae.scalingFactor);
    if (zs !== z) zs.dispose();
    const d = this.vae.decode(h);
    h.dispose();
    return d;
  }

  dispose(): void {
    this.unet.dispose();
    this.vae.dispose();
    this.textEncoder?.dispose();
    this.previewDecoder?.dispose();
    this.scheduler.reset();
  }
}

function checkEmbeds(op: string, name: string, t: Tensor, B: number, dim: number): void {
  if (!(t instanceof Tensor) || t.rank !== 3 || t.shape[0] !== B || t.shape[2] !== dim) {
    throw new Error(`${op}: ${name} must be [${B}, L, ${dim}], got ${t instanceof Tensor ? shapeStr(t.shape) : typeof t}`);
  }
}

function checkImage(op: string, name: string, t: Tensor, B: number, C: number, H: number, W: number): void {
  if (!(t instanceof Tensor) || t.rank !== 4 || t.shape[0] !== B || t.shape[1] !== C || t.shape[2] !== H || t.shape[3] !== W) {
    throw new Error(`${op}: ${name} must be [${B}, ${C}, ${H}, ${W}] in [0, 1], got ${t instanceof Tensor ? shapeStr(t.shape) : typeof t}`);
  }
}

/** Binarised mask at latent size (nearest, as diffusers' interpolate) and the image with the
 * masked region zeroed in [-1, 1] space (image * (mask < 0.5)), i.e. mid-grey in [0, 1]. Done on the host: it runs once per generation. */
async function prepareMask(maskT: Tensor, imageT: Tensor, f: number): Promise<{ mask: Tensor; masked: Tensor }> {
  const engine = maskT.engine;
  const [B, , H, W] = maskT.shape;
  const m = await maskT.read();
  const img = await imageT.read();
  const h = H / f;
  const w = W / f;
  const small = new Float32Array(B * h * w);
  for (let b = 0; b < B; b++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) small[(b * h + y) * w + x] = m[(b * H + y * f) * W + x * f] >= 0.5 ? 1 : 0;
    }
  }
  const masked = new Float32Array(img.length);
  const plane = H * W;
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < plane; p++) masked[(b * 3 + c) * plane + p] = m[b * plane + p] >= 0.5 ? 0.5 : img[(b * 3 + c) * plane + p];
    }
  }
  const dtype = maskT.dtype;
  const up = (a: Float32Array, shape: number[]) => {
    const t = engine.tensor(a, shape);
    if (dtype === 'f32') return t;
    const c = ops.cast(t, dtype);
    t.dispose();
    return c;
  };
  return { mask: up(small, [B, 1, h, w]), masked: up(masked, [B, 3, H, W]) };
}

