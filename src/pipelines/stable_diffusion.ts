// StableDiffusionPipeline: text-conditioned latent diffusion with classifier-free guidance (the
// unconditional and conditional halves go through the UNet as one batch), plus image-to-image
// (strength) and inpainting (9-channel inpainting UNets by concatenating mask and masked-image
// latents; latent blending for ordinary UNets). Loads a diffusers folder or a SD 1.x single file.
import type { Engine } from '../runtime/engine.js';
import type { IOOptions } from '../runtime/io.js';
import { Tensor, shapeStr } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { AutoencoderKL } from '../models/autoencoder_kl.js';
import { UNet2DConditionModel } from '../models/unet_2d_condition.js';
import type { AutoencoderTiny } from '../models/autoencoder_tiny.js';
import { CLIPTextModel } from '../text/clip_text_model.js';
import { CLIPTokenizer } from '../text/clip_tokenizer.js';
import { assertFinite, checkEmbeds, checkGuidance, checkGuidanceRescale, checkImage, checkOutputType, strengthTimesteps, checkLatentSize, createScheduler, decodeWithUpcast, denoise, guidedPredict, initialLatents, resolveSeed, rgbaPreview, schedulerForCall, unetDownFactor, toRgba, toUnitRange, vaeDecodeLatents, vaeEncodeLatents, type LoopOptions, type Scheduler } from './common.js';
import { checkPrediction, type PipelineOutput } from './ldm.js';
import { folderTokenizer, isSingleFilePath, loadLorasInPlace, loadPipelineFolder, loadSingleFilePipeline, type PipelineLoadOptions } from './loading.js';
import type { LoraReport, LoraSpec } from '../loaders/lora.js';
import { SD15_SCHEDULER, SD15_TEXT_ENCODER, SD15_UNET, SD15_VAE, sd2Configs, singleFileFamily } from './sd_configs.js';
import type { SingleFileSource } from '../loaders/single_file.js';
import { ConfigReader, type Config } from '../runtime/config.js';

export interface SDGenerateOptions extends LoopOptions {
  prompt?: string | string[];
  negativePrompt?: string | string[];
  /** [B, L, cross_attention_dim] (instead of prompt) */
  promptEmbeds?: Tensor;
  negativePromptEmbeds?: Tensor;
  steps?: number;
  guidanceScale?: number;
  /** diffusers' guidance_rescale in [0, 1] (Lin et al. 2023, sec. 3.4; for zero-terminal-SNR models
   * such as some SD 2.x fine-tunes): the guided prediction blended with itself rescaled to the
   * conditional prediction's std per image; default 0 (off) */
  guidanceRescale?: number;
  /** 'latent': skip the decode; `images` is then the final latents [B, latent_channels, H / f, W / f]
   * in the UNet's dtype, scaled as the UNet sees them (diffusers' output_type="latent": what a
   * refiner's img2img `image` takes), and `rgba` is empty; default 'image' */
  outputType?: 'image' | 'latent';
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
  /** what the `loras` load option merged and left out (null when loaded without LoRAs) */
  loraReport: LoraReport | null = null;

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
    // first: an SDXL UNet fails every later check too, for this reason
    if ((c.unet.config as Record<string, unknown>).addition_embed_type === 'text_time') {
      throw new Error('StableDiffusionPipeline: this is an SDXL UNet (addition_embed_type "text_time"): load it with StableDiffusionXLPipeline');
    }
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
    const c = await loadPipelineFolder(engine, pathOrUrl, { text_encoder: CLIPTextModel, unet: UNet2DConditionModel, vae: AutoencoderKL }, opts, (cls) =>
      cls.startsWith('StableDiffusionXL') ? `model_index.json names ${cls}: load it with StableDiffusionXLPipeline.fromPretrained` : null,
    );
    try {
      const tokenizer = await folderTokenizer(pathOrUrl, c.index, 'tokenizer', opts);
      const scheduler = createScheduler(c.schedulerConfig);
      return withReport(c.loraReport, new StableDiffusionPipeline({
        vae: c.models.vae as AutoencoderKL,
        unet: c.models.unet as UNet2DConditionModel,
        textEncoder: (c.models.text_encoder as CLIPTextModel | undefined) ?? null,
        tokenizer,
        scheduler,
        predictionType: scheduler.predictionType,
      }));
    } catch (e) {
      for (const m of Object.values(c.models)) m.dispose();
      throw e;
    }
  }

  /**
   * A Stable Diffusion 1.x or 2.x single-file checkpoint (CompVis keys: model.diffusion_model.*,
   * first_stage_model.*, and cond_stage_model.transformer.* (SD 1.x CLIP) or cond_stage_model.model.*
   * (SD 2.x OpenCLIP)). The family is told by the keys; configs default to SD 1.5's or SD 2.1's
   * (768, v_prediction; pass predictionType 'epsilon' for the 512 base models). The tokenizer files
   * are not in such checkpoints: pass a tokenizer folder (or use promptEmbeds); for SD 2.x it pads
   * with '!' whatever the folder says (SD 1.x's CLIP-L folder has the same vocabulary).
   */
  static async fromSingleFile(
    engine: Engine,
    source: SingleFileSource,
    opts: PipelineLoadOptions & {
      unetConfig?: Config;
      vaeConfig?: Config;
      textEncoderConfig?: Config;
      schedulerConfig?: Config;
      tokenizer?: string | CLIPTokenizer;
      /** SD 2.x: 'v_prediction' (2.0 / 2.1, the default) or 'epsilon' (the base models) */
      predictionType?: 'epsilon' | 'v_prediction';
      /** SD 2.x: the size the configs default to (768 for v_prediction, 512 for epsilon) */
      imageSize?: number;
    } = {},
  ): Promise<StableDiffusionPipeline> {
    return loadSingleFilePipeline(source, engine, opts, async ({ file, load, loraReport }) => {
      const names = file.names();
      if (names.some((n) => n.startsWith('conditioner.embedders.'))) {
        throw new Error(`${file.label}: this is an SDXL single file (conditioner.embedders.*): load it with StableDiffusionXLPipeline.fromSingleFile`);
      }
      const family = singleFileFamily(names, (n) => file.info(n)?.shape);
      if (family === 'sd1' && (opts.predictionType !== undefined || opts.imageSize !== undefined)) {
        throw new Error('StableDiffusionPipeline.fromSingleFile: predictionType and imageSize choose between SD 2.x models; this is an SD 1.x checkpoint (pass schedulerConfig / unetConfig instead)');
      }
      const defaults = family === 'sd2' ? sd2Configs(opts) : { unet: SD15_UNET, vae: SD15_VAE, textEncoder: SD15_TEXT_ENCODER, scheduler: SD15_SCHEDULER };
      const unet = await load('unet', opts.unetConfig ?? defaults.unet);
      const vae = await load('vae', opts.vaeConfig ?? defaults.vae);
      const textPrefix = family === 'sd2' ? 'cond_stage_model.model.' : 'cond_stage_model.transformer.';
      const hasText = names.some((n) => n.startsWith(textPrefix));
      const textEncoder = hasText ? await load('text_encoder', opts.textEncoderConfig ?? defaults.textEncoder) : null;
      const tokenizer =
        typeof opts.tokenizer === 'string'
          ? await CLIPTokenizer.fromPretrained(opts.tokenizer, { fetch: opts.fetch, signal: opts.signal, timeoutMs: opts.timeoutMs, ...(family === 'sd2' ? { padToken: '!' } : {}) })
          : opts.tokenizer ?? null;
      const scheduler = createScheduler(opts.schedulerConfig ?? defaults.scheduler);
      return withReport(loraReport(), new StableDiffusionPipeline({ vae, unet, textEncoder, tokenizer, scheduler, predictionType: scheduler.predictionType }));
    });
  }

  /** Loads a pipeline folder whose model_index.json names StableDiffusionPipeline, or a .safetensors single file. */
  static async load(engine: Engine, pathOrUrl: string, opts: PipelineLoadOptions & { tokenizer?: string } = {}): Promise<StableDiffusionPipeline> {
    if (isSingleFilePath(pathOrUrl)) return StableDiffusionPipeline.fromSingleFile(engine, pathOrUrl, opts);
    return StableDiffusionPipeline.fromPretrained(engine, pathOrUrl, opts);
  }

  /**
   * Merges LoRAs into the loaded UNet and text encoder in place (diffusers' load_lora_weights +
   * fuse_lora): each weight is read back, the deltas added on the host and written into the same
   * buffer. A LoRA that does not fit changes nothing (LoraError); a negative scale takes one out again
   * (exactly up to rounding in f32; in f16 each merge rounds to f16). Merging at load (`loras`) keeps
   * the base weights' full precision and reads nothing back: prefer it when the LoRAs are known then.
   */
  loadLoraWeights(loras: readonly LoraSpec[], opts: IOOptions = {}): Promise<LoraReport> {
    return loadLorasInPlace('StableDiffusionPipeline.loadLoraWeights', () => this.generating, [
      { component: 'unet', model: this.unet },
      { component: 'text_encoder', model: this.textEncoder },
    ], loras, opts);
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
    return this.engine.scope(() => this.textEncoder!.forward(ids, clipSkip ? { clipSkip } : {}).lastHiddenState);
  }

  async generate(opts: SDGenerateOptions = {}): Promise<PipelineOutput> {
    this.generating++; // loadLoraWeights waits for none to be running
    try {
      return await this.generateOnce(opts);
    } finally {
      this.generating--;
    }
  }

  private generating = 0;

  private async generateOnce(opts: SDGenerateOptions): Promise<PipelineOutput> {
    const op = 'StableDiffusionPipeline.generate';
    const engine = this.engine;
    const scale = checkGuidance(op, opts.guidanceScale ?? 7.5);
    const rescale = checkGuidanceRescale(op, opts.guidanceRescale);
    const outputType = checkOutputType(op, opts.outputType);
    // an LCM-distilled UNet (time_cond_proj_dim) takes the scale as an embedding, without
    // classifier-free guidance (diffusers' do_classifier_free_guidance)
    const lcm = this.unet.timeCondProjDim !== null;
    const guided = scale > 1 && !lcm;
    const steps = opts.steps ?? 50;
    const dtype = this.unet.dtype as 'f32' | 'f16';

    // ---- everything that can be checked before allocating
    const prompts = typeof opts.prompt === 'string' ? [opts.prompt] : opts.prompt ?? [''];
    if (Array.isArray(prompts) && !prompts.length && !opts.promptEmbeds) throw new Error(`${op}: prompt is an empty list (one prompt per image)`);
    const B = opts.promptEmbeds ? opts.promptEmbeds.shape[0] : prompts.length;
    if (opts.promptEmbeds) checkEmbeds(op, 'promptEmbeds', opts.promptEmbeds, B, this.unet.crossAttentionDim);
    const noiseSeed = resolveSeed(op, opts.seed, B);
    const negatives = typeof opts.negativePrompt === 'string' ? Array(B).fill(opts.negativePrompt) : opts.negativePrompt ?? Array(B).fill('');
    if (guided && !opts.negativePromptEmbeds) {
      if (opts.promptEmbeds && !this.textEncoder) throw new Error(`${op}: guidance needs negativePromptEmbeds when the pipeline has no text encoder`);
      if (negatives.length !== B) throw new Error(`${op}: ${negatives.length} negative prompts for ${B} prompts`);
    }
    if (guided && opts.negativePromptEmbeds) checkEmbeds(op, 'negativePromptEmbeds', opts.negativePromptEmbeds, B, this.unet.crossAttentionDim);
    const f = this.vaeScaleFactor;
    const [sh, sw] = new ConfigReader('StableDiffusionPipeline: UNet2DConditionModel', this.unet.config).sampleSize(64);
    const H = opts.height ?? opts.image?.shape[2] ?? sh * f;
    const W = opts.width ?? opts.image?.shape[3] ?? sw * f;
    for (const [k, v] of [['height', H], ['width', W]] as const) {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`${op}: ${k} must be a positive integer, got ${String(v)}`);
    }
    if (H % f || W % f) throw new Error(`${op}: height and width must be multiples of ${f}, got ${H}x${W}`);
    checkLatentSize(op, 'height x width', H / f, W / f, unetDownFactor(this.unet), f);
    const Lc = this.vae.shape.latentChannels;
    const shape = [B, Lc, H / f, W / f];
    const inpaintUNet = this.unet.inChannels === 2 * Lc + 1;
    const strength = opts.strength ?? 1;
    if (!(strength > 0 && strength <= 1)) throw new Error(`${op}: strength must be in (0, 1], got ${strength}`);
    if (opts.maskImage && !opts.image) throw new Error(`${op}: maskImage needs image`);
    if (inpaintUNet && !opts.maskImage) throw new Error(`${op}: this is an inpainting UNet (${this.unet.inChannels} channels): pass image and maskImage`);
    if (opts.image) checkImage(op, 'image', opts.image, B, 3, H, W);
    if (opts.maskImage) checkImage(op, 'maskImage', opts.maskImage, B, 1, H, W);
    this.unet.checkFits(op, guided ? 2 * B : B, H / f, W / f);
    // each call owns its scheduler: calls in flight together do not share timesteps or state
    const scheduler = schedulerForCall(this.scheduler, opts.sampler);
    const { timesteps, tStart } = strengthTimesteps(op, scheduler, steps, opts.image ? strength : 1);

    return engine.scope(async (s) => {
      // ---- conditioning: [uncond; cond] when guided, the order guidedPredict doubles the batch in
      const cond = opts.promptEmbeds ?? s.run(() => this.encodePrompt(prompts, opts.clipSkip));
      let emb = cond;
      if (guided) {
        const uncond = opts.negativePromptEmbeds ?? s.run(() => this.encodePrompt(negatives, opts.clipSkip));
        if (uncond.shape[1] !== cond.shape[1]) throw new Error(`${op}: negative and positive embeddings differ in length (${uncond.shape[1]} vs ${cond.shape[1]})`);
        emb = s.run(() => ops.concat([uncond, cond], 0));
      }

      const timestepCond = lcm ? s.run(() => this.unet.guidanceEmbedding(scale, B)) : undefined;

      // ---- image conditioning
      const imageLatents = opts.image ? s.run(() => this.encodeImage(opts.image!, noiseSeed)) : null;
      let maskLatent: Tensor | null = null;
      let maskedImageLatents: Tensor | null = null;
      if (opts.maskImage) {
        const m = await prepareMask(opts.maskImage, opts.image!, f);
        s.run(() => {
          maskLatent = upload(engine, m.mask, [B, 1, H / f, W / f], dtype);
          if (inpaintUNet) maskedImageLatents = this.encodeImage(upload(engine, m.masked, [B, 3, H, W], dtype), noiseSeed, NOISE_STREAM.maskedImage);
        });
      }

      // ---- initial latents
      const latents = s.run(() => {
        if (!(imageLatents && strength < 1)) return initialLatents(engine, shape, { latents: opts.latents, seed: noiseSeed, initNoiseSigma: scheduler.initNoiseSigma, dtype });
        scheduler.setBeginIndex(tStart);
        // the noise: `latents` when given (a tensor or host values), else seeded
        const noise = initialLatents(engine, shape, { latents: opts.latents, seed: noiseSeed, initNoiseSigma: 1, dtype });
        return scheduler.addNoise(imageLatents, noise, Array(B).fill(timesteps[0]));
      });

      // ---- the loop
      const predict = guidedPredict({
        model: (x, t) => this.unet.forward(x, t, { encoderHiddenStates: emb, timestepCond }),
        guided,
        scale,
        rescale,
        extraChannels: inpaintUNet ? () => [maskLatent!, maskedImageLatents!] : undefined,
      });
      // Ordinary UNets inpaint by keeping the known region at the noise level of the next step:
      // x = known + mask (x - known).
      const blendNoise = maskLatent && !inpaintUNet ? s.run(() => ops.randnItems(engine, shape, noiseSeed, { offset: NOISE_STREAM.inpaintBlend, dtype })) : null;
      const afterStep = blendNoise
        ? (x: Tensor, i: number): Tensor => {
            const next = timesteps[i + 1];
            const known = next !== undefined ? scheduler.addNoise(imageLatents!, blendNoise, Array(B).fill(next)) : imageLatents!;
            return ops.add(known, ops.mul(ops.sub(x, known), maskLatent!));
          }
        : undefined;
      const previewDecode = this.previewDecoder ? rgbaPreview((x) => this.previewDecoder!.decode(x)) : undefined;
      const final = await s.scope(() =>
        denoise({ scheduler, seed: noiseSeed, latents, timesteps, predict, afterStep, previewDecode, eta: opts.eta, signal: opts.signal, onStep: opts.onStep, preview: opts.preview }),
      );
      if (outputType === 'latent') return { images: final, rgba: [] }; // as diffusers' output_type="latent"
      // an f16 VAE (force_upcast off) that overflows is upcast to f32 and run again
      const decoded = await s.scope(() => decodeWithUpcast(this.vae, () => this.decodeRaw(final), 'StableDiffusionPipeline'));
      // the loop checked the latents; a NaN here comes from the VAE decoder's weights
      await s.scope(() => assertFinite(op, decoded, 'the AutoencoderKL decoder'));
      const images = s.run(() => toUnitRange(decoded));
      return { images, rgba: await toRgba(images) };
    });
  }

  /** [B, 3, H, W] in [0, 1] -> latents * scaling_factor, sampled from the posterior: item i with
   * the noise of seed + i at `stream` (generate() uses NOISE_STREAM.image for its `image`). */
  encodeImage(image: Tensor, seed: number, stream: number = NOISE_STREAM.image): Tensor {
    return vaeEncodeLatents(this.vae, image, seed, stream, this.unet.dtype);
  }

  decodeLatents(z: Tensor): Tensor {
    return this.engine.scope(() => toUnitRange(this.decodeRaw(z)));
  }

  /** Latents -> the VAE decoder's output in [-1, 1], unclamped, in the VAE's own dtype. */
  private decodeRaw(z: Tensor): Tensor {
    return vaeDecodeLatents(this.vae, z);
  }

  dispose(): void {
    this.unet.dispose();
    this.vae.dispose();
    this.textEncoder?.dispose();
    this.previewDecoder?.dispose();
    this.scheduler.reset();
  }
}

/** Binarised mask at latent size (nearest, as diffusers' interpolate) and the image with the
 * masked region zeroed in [-1, 1] space (image * (mask < 0.5)), i.e. mid-grey in [0, 1]. Done on the host: it runs once per generation. */
async function prepareMask(maskT: Tensor, imageT: Tensor, f: number): Promise<{ mask: Float32Array; masked: Float32Array }> {
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
  return { mask: small, masked };
}

/** Host values -> a tensor of the engine's dtype (the f32 upload is freed by the caller's scope). */
function upload(engine: Engine, a: Float32Array, shape: number[], dtype: 'f32' | 'f16'): Tensor {
  const t = engine.tensor(a, shape);
  return dtype === 'f32' ? t : ops.cast(t, dtype);
}

function withReport(report: LoraReport | null, pipe: StableDiffusionPipeline): StableDiffusionPipeline {
  pipe.loraReport = report;
  return pipe;
}
