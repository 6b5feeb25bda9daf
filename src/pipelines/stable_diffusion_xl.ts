// StableDiffusionXLPipeline: SDXL text-to-image and image-to-image (diffusers' StableDiffusionXLPipeline
// and StableDiffusionXLImg2ImgPipeline in one). Two CLIP text encoders whose penultimate hidden states
// are concatenated (the refiner has only the second), the pooled text embedding of the second and the
// micro-conditioning time ids (original size, crop top-left, target size; the refiner's aesthetic
// score) go into the UNet's text_time added embedding. LCM-distilled UNets (time_cond_proj_dim) take the
// guidance scale as an embedding and run without classifier-free guidance.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { AutoencoderKL } from '../models/autoencoder_kl.js';
import { UNet2DConditionModel } from '../models/unet_2d_condition.js';
import type { AutoencoderTiny } from '../models/autoencoder_tiny.js';
import { CLIPTextModel, CLIPTextModelWithProjection } from '../text/clip_text_model.js';
import { CLIPTokenizer } from '../text/clip_tokenizer.js';
import {
  asDtype,
  assertFinite,
  checkEmbeds,
  checkGuidance,
  checkGuidanceRescale,
  checkImage,
  checkOutputType,
  checkLatentSize,
  createScheduler,
  decodeWithUpcast,
  denoise,
  guidedPredict,
  initialLatents,
  latentsNorm,
  resolveSeed,
  rgbaPreview,
  schedulerForCall,
  strengthTimesteps,
  toRgba,
  toUnitRange,
  vaeDecodeLatents,
  vaeEncodeLatents,
  unetDownFactor,
  type LatentsNorm,
  type LoopOptions,
  type Scheduler,
} from './common.js';
import { checkPrediction, type PipelineOutput } from './ldm.js';
import { folderTokenizer, isSingleFilePath, loadLorasInPlace, loadPipelineFolder, loadSingleFilePipeline, type PipelineLoadOptions } from './loading.js';
import type { LoraReport, LoraSpec } from '../loaders/lora.js';
import { NOISE_STREAM } from './stable_diffusion.js';
import type { IOOptions } from '../runtime/io.js';
import { ConfigReader, type Config } from '../runtime/config.js';
import type { SingleFileSource } from '../loaders/single_file.js';
import { SD15_TEXT_ENCODER, SDXL_REFINER_UNET, SDXL_SCHEDULER, SDXL_TEXT_ENCODER_2, SDXL_UNET, SDXL_VAE } from './sd_configs.js';

export interface SDXLGenerateOptions extends LoopOptions {
  prompt?: string | string[];
  /** the second text encoder's prompt (default: prompt) */
  prompt2?: string | string[];
  /** default: zeros when the pipeline has force_zeros_for_empty_prompt (SDXL base), else '' */
  negativePrompt?: string | string[];
  negativePrompt2?: string | string[];
  /** [B, L, cross_attention_dim] (instead of prompt); needs pooledPromptEmbeds */
  promptEmbeds?: Tensor;
  /** [B, projection_dim]: the second encoder's text_embeds */
  pooledPromptEmbeds?: Tensor;
  negativePromptEmbeds?: Tensor;
  negativePooledPromptEmbeds?: Tensor;
  steps?: number;
  /** default 5; <= 1 runs the UNet once per step (no classifier-free guidance); LCM UNets embed it instead */
  guidanceScale?: number;
  /** diffusers' guidance_rescale in [0, 1] (Lin et al. 2023, sec. 3.4): the guided prediction is blended
   * with itself rescaled to the conditional prediction's std per image; default 0 (off) */
  guidanceRescale?: number;
  /** the base of a base -> refiner handoff (diffusers' denoising_end, in (0, 1)): stop before the
   * timesteps below (1 - denoisingEnd) * num_train_timesteps; pair with outputType 'latent' */
  denoisingEnd?: number;
  /** the refiner of a handoff (diffusers' denoising_start, in (0, 1); needs `image`, usually the base's
   * latents): run only the timesteps below (1 - denoisingStart) * num_train_timesteps on the image
   * as it is (no noise added); strength is ignored */
  denoisingStart?: number;
  /** 'latent': skip the decode; `images` is then the final latents [B, latent_channels, H / f, W / f]
   * in the UNet's dtype, scaled as the UNet sees them (diffusers' output_type="latent": what a
   * refiner's img2img `image` takes), and `rgba` is empty; default 'image' */
  outputType?: 'image' | 'latent';
  /** image i of the batch draws all its noise from seed + i (as StableDiffusionPipeline) */
  seed?: number;
  /** text-to-image: x_T; image-to-image: the noise added to the image latents */
  latents?: Tensor | Float32Array;
  height?: number;
  width?: number;
  sampler?: string;
  /** image-to-image source: [B, 3, H, W] in [0, 1], or [B, latent_channels, h, w] latents (already scaled, as diffusers takes a 4-channel image) */
  image?: Tensor;
  /** image-to-image: the part of the schedule run on the noised image (default 0.3, diffusers' SDXL img2img default) */
  strength?: number;
  /** CLIP layers to skip: hidden_states[-(clipSkip + 2)] of both encoders, positive prompt only (as diffusers) */
  clipSkip?: number;
  /** micro-conditioning, [height, width] in pixels (defaults: the output size) */
  originalSize?: [number, number];
  cropsCoordsTopLeft?: [number, number];
  targetSize?: [number, number];
  negativeOriginalSize?: [number, number];
  negativeCropsCoordsTopLeft?: [number, number];
  negativeTargetSize?: [number, number];
  /** refiner (requires_aesthetics_score) only: defaults 6 and 2.5 as diffusers */
  aestheticScore?: number;
  negativeAestheticScore?: number;
}

/** What the prompt encoder hands the UNet: [B, L, D1 + D2] and [B, projection_dim]. */
export interface SDXLPromptEmbeds {
  promptEmbeds: Tensor;
  pooledPromptEmbeds: Tensor;
}

export class StableDiffusionXLPipeline {
  readonly engine: Engine;
  readonly unet: UNet2DConditionModel;
  readonly vae: AutoencoderKL;
  readonly textEncoder: CLIPTextModel | null;
  readonly textEncoder2: CLIPTextModelWithProjection | null;
  readonly tokenizer: CLIPTokenizer | null;
  readonly tokenizer2: CLIPTokenizer | null;
  previewDecoder: AutoencoderTiny | null;
  scheduler: Scheduler;
  /** negative prompt not given -> zero embeddings (model_index.json; true for SDXL base) */
  readonly forceZerosForEmptyPrompt: boolean;
  /** the refiner's time ids: original size + crop + aesthetic score (model_index.json) */
  readonly requiresAestheticsScore: boolean;
  /** what the `loras` load option merged and left out (null when loaded without LoRAs) */
  loraReport: LoraReport | null = null;
  /** the VAE config's latents_mean / latents_std (null when it has none): latents are normalised with
   * them, as diffusers' SDXL pipelines do, instead of only scaled by scaling_factor */
  readonly latentsNorm: LatentsNorm | null;

  constructor(c: {
    vae: AutoencoderKL;
    unet: UNet2DConditionModel;
    scheduler: Scheduler;
    textEncoder?: CLIPTextModel | null;
    textEncoder2?: CLIPTextModelWithProjection | null;
    tokenizer?: CLIPTokenizer | null;
    tokenizer2?: CLIPTokenizer | null;
    previewDecoder?: AutoencoderTiny | null;
    forceZerosForEmptyPrompt?: boolean;
    requiresAestheticsScore?: boolean;
    predictionType?: string;
  }) {
    const N = 'StableDiffusionXLPipeline';
    if (!c.vae || !c.unet || !c.scheduler) throw new Error(`${N}: needs { vae, unet, scheduler }`);
    this.vae = c.vae;
    this.unet = c.unet;
    this.scheduler = c.scheduler;
    this.textEncoder = c.textEncoder ?? null;
    this.textEncoder2 = c.textEncoder2 ?? null;
    this.tokenizer = c.tokenizer ?? null;
    this.tokenizer2 = c.tokenizer2 ?? null;
    this.previewDecoder = c.previewDecoder ?? null;
    this.forceZerosForEmptyPrompt = c.forceZerosForEmptyPrompt ?? true;
    this.requiresAestheticsScore = c.requiresAestheticsScore ?? false;
    this.engine = c.unet.engine;
    const cfg = c.unet.config as Record<string, unknown>;
    if (cfg.addition_embed_type !== 'text_time') {
      throw new Error(`${N}: the UNet has addition_embed_type ${JSON.stringify(cfg.addition_embed_type ?? null)}; SDXL UNets have "text_time" (use StableDiffusionPipeline for SD 1.x/2.x)`);
    }
    const L = c.vae.shape.latentChannels;
    if (c.unet.outChannels !== L || c.unet.inChannels !== L) {
      throw new Error(`${N}: the UNet maps ${c.unet.inChannels} -> ${c.unet.outChannels} channels but the VAE latents have ${L}`);
    }
    if (this.textEncoder && !this.textEncoder2) throw new Error(`${N}: text_encoder without text_encoder_2: the pooled embedding comes from the second encoder`);
    if (!!this.textEncoder !== !!this.tokenizer || !!this.textEncoder2 !== !!this.tokenizer2) {
      throw new Error(`${N}: each text encoder needs its tokenizer (text_encoder ${!!this.textEncoder}, tokenizer ${!!this.tokenizer}, text_encoder_2 ${!!this.textEncoder2}, tokenizer_2 ${!!this.tokenizer2})`);
    }
    const width = (this.textEncoder?.shape.hidden ?? 0) + (this.textEncoder2?.shape.hidden ?? 0);
    if (this.textEncoder2 && width !== c.unet.crossAttentionDim) {
      const missing = c.unet.crossAttentionDim - width;
      // a base UNet (CLIP-L + bigG) given only the refiner's encoder: name the missing one
      if (!this.textEncoder && missing > 0) {
        throw new Error(`${N}: text_encoder_2 alone gives ${width}-wide embeddings but the UNet cross-attends to ${c.unet.crossAttentionDim}: this UNet needs text_encoder too (${missing} + ${width}; only the refiner runs on text_encoder_2 alone)`);
      }
      throw new Error(`${N}: the text encoders give ${this.textEncoder ? `${this.textEncoder.shape.hidden} + ` : ''}${this.textEncoder2.shape.hidden} = ${width}-wide embeddings but the UNet cross-attends to ${c.unet.crossAttentionDim}`);
    }
    if (this.previewDecoder && this.previewDecoder.shape.latentChannels !== L) {
      throw new Error(`${N}: the preview decoder takes ${this.previewDecoder.shape.latentChannels} latent channels, the VAE has ${L}`);
    }
    this.latentsNorm = latentsNorm(N, c.vae);
    if (this.textEncoder2) this.checkTimeIds(N, this.textEncoder2.shape.projectionDim);
    checkPrediction(c.scheduler, N, c.predictionType);
  }

  /** A diffusers StableDiffusionXLPipeline folder (base or refiner layout; local path or URL). */
  static async fromPretrained(engine: Engine, pathOrUrl: string, opts: PipelineLoadOptions = {}): Promise<StableDiffusionXLPipeline> {
    const c = await loadPipelineFolder(
      engine,
      pathOrUrl,
      { text_encoder: CLIPTextModel, text_encoder_2: CLIPTextModelWithProjection, unet: UNet2DConditionModel, vae: AutoencoderKL },
      opts,
      (cls) => (/^(StableDiffusion(Img2Img|Inpaint)?|LatentConsistencyModel)Pipeline$/.test(cls) ? `model_index.json names ${cls}: load it with StableDiffusionPipeline.fromPretrained` : null),
    );
    try {
      const index = c.index as Record<string, unknown>;
      const tokenizer = await folderTokenizer(pathOrUrl, c.index, 'tokenizer', opts);
      const tokenizer2 = await folderTokenizer(pathOrUrl, c.index, 'tokenizer_2', opts);
      const scheduler = createScheduler(c.schedulerConfig);
      const flag = (k: string, def: boolean) => {
        const v = index[k];
        if (v === undefined || v === null) return def;
        if (typeof v !== 'boolean') throw new Error(`model_index.json: ${k} must be true or false, got ${JSON.stringify(v)}`);
        return v;
      };
      const pipe = new StableDiffusionXLPipeline({
        vae: c.models.vae as AutoencoderKL,
        unet: c.models.unet as UNet2DConditionModel,
        textEncoder: (c.models.text_encoder as CLIPTextModel | undefined) ?? null,
        textEncoder2: (c.models.text_encoder_2 as CLIPTextModelWithProjection | undefined) ?? null,
        tokenizer,
        tokenizer2,
        scheduler,
        forceZerosForEmptyPrompt: flag('force_zeros_for_empty_prompt', true),
        requiresAestheticsScore: flag('requires_aesthetics_score', false),
        predictionType: scheduler.predictionType,
      });
      pipe.loraReport = c.loraReport;
      return pipe;
    } catch (e) {
      for (const m of Object.values(c.models)) m.dispose();
      throw e;
    }
  }

  /**
   * An SDXL single file (Stability's sgm keys: model.diffusion_model.*, first_stage_model.*,
   * conditioner.embedders.0.transformer.* (CLIP-L) and conditioner.embedders.1.model.* (OpenCLIP-bigG);
   * the refiner has only the bigG, as conditioner.embedders.0.model.*, and gets the refiner's UNet
   * config, aesthetic-score time ids and no zero negative). Configs default to SDXL 1.0's. Such files
   * carry no tokenizer: pass `tokenizer` (a CLIP tokenizer folder or a CLIPTokenizer); `tokenizer2`
   * defaults to the same files padding with '!', as SDXL's tokenizer_2.
   */
  static async fromSingleFile(
    engine: Engine,
    source: SingleFileSource,
    opts: PipelineLoadOptions & {
      unetConfig?: Config;
      vaeConfig?: Config;
      textEncoderConfig?: Config;
      textEncoder2Config?: Config;
      schedulerConfig?: Config;
      tokenizer?: string | CLIPTokenizer;
      tokenizer2?: string | CLIPTokenizer;
    } = {},
  ): Promise<StableDiffusionXLPipeline> {
    return loadSingleFilePipeline(source, engine, opts, async ({ file, load, loraReport }) => {
      const names = file.names();
      const has = (prefix: string) => names.some((n) => n.startsWith(prefix));
      const base = has('conditioner.embedders.1.model.');
      const refiner = !base && has('conditioner.embedders.0.model.');
      if (!base && !refiner) {
        throw new Error(`${file.label}: no conditioner.embedders.1.model.* (SDXL base) or conditioner.embedders.0.model.* (SDXL refiner) text encoder: not an SDXL single file (SD 1.x/2.x files load with StableDiffusionPipeline.fromSingleFile)`);
      }
      const unet = await load('unet', opts.unetConfig ?? (refiner ? SDXL_REFINER_UNET : SDXL_UNET));
      const vae = await load('vae', opts.vaeConfig ?? SDXL_VAE);
      const textEncoder = base ? await load('text_encoder', opts.textEncoderConfig ?? SD15_TEXT_ENCODER) : null;
      const textEncoder2 = await load('text_encoder_2', opts.textEncoder2Config ?? SDXL_TEXT_ENCODER_2);
      const io = { fetch: opts.fetch, signal: opts.signal, timeoutMs: opts.timeoutMs };
      const tok = (t: string | CLIPTokenizer | undefined, pad?: string) => (typeof t === 'string' ? CLIPTokenizer.fromPretrained(t, { ...io, ...(pad ? { padToken: pad } : {}) }) : t ?? null);
      const tokenizer = base ? await tok(opts.tokenizer) : null;
      const tokenizer2 = await tok(opts.tokenizer2 ?? opts.tokenizer, opts.tokenizer2 === undefined ? '!' : undefined);
      if (!tokenizer2 || (base && !tokenizer)) throw new Error(`StableDiffusionXLPipeline.fromSingleFile: single files carry no tokenizer: pass { tokenizer } (a CLIP tokenizer folder, e.g. SDXL's tokenizer/)`);
      const scheduler = createScheduler(opts.schedulerConfig ?? SDXL_SCHEDULER);
      const pipe = new StableDiffusionXLPipeline({
        vae,
        unet,
        textEncoder,
        textEncoder2,
        tokenizer,
        tokenizer2,
        scheduler,
        forceZerosForEmptyPrompt: !refiner,
        requiresAestheticsScore: refiner,
        predictionType: scheduler.predictionType,
      });
      pipe.loraReport = loraReport();
      return pipe;
    });
  }

  /** Loads an SDXL pipeline folder (model_index.json) or a .safetensors single file. */
  static async load(engine: Engine, pathOrUrl: string, opts: PipelineLoadOptions & { tokenizer?: string; tokenizer2?: string } = {}): Promise<StableDiffusionXLPipeline> {
    if (isSingleFilePath(pathOrUrl)) return StableDiffusionXLPipeline.fromSingleFile(engine, pathOrUrl, opts);
    return StableDiffusionXLPipeline.fromPretrained(engine, pathOrUrl, opts);
  }

  get vaeScaleFactor(): number {
    return 2 ** (this.vae.shape.blockOutChannels.length - 1);
  }

  /** UNet config: the time ids' sinusoid width and the added embedding's input width. */
  private addedEmbedDims(): { timeDim: number; inputDim: number } {
    const r = new ConfigReader('StableDiffusionXLPipeline: UNet2DConditionModel', this.unet.config);
    return { timeDim: r.int('addition_time_embed_dim', 256), inputDim: r.int('projection_class_embeddings_input_dim', 2816) };
  }

  /** diffusers' _get_add_time_ids check: time ids x addition_time_embed_dim + pooled width = the added embedding's input. */
  private checkTimeIds(op: string, pooledDim: number): void {
    const { timeDim, inputDim } = this.addedEmbedDims();
    const n = this.requiresAestheticsScore ? 5 : 6;
    if (n * timeDim + pooledDim === inputDim) return;
    const other = this.requiresAestheticsScore ? 6 : 5;
    const hint = other * timeDim + pooledDim === inputDim ? ` (it fits ${other} ids: set requires_aesthetics_score ${!this.requiresAestheticsScore} in model_index.json)` : '';
    throw new Error(`${op}: the UNet's added embedding takes ${inputDim} inputs but ${n} time ids x ${timeDim} + the ${pooledDim}-wide pooled text embedding make ${n * timeDim + pooledDim}${hint}`);
  }

  /** clipSkip picks hidden_states[-(clipSkip + 2)]: at most layers - 1 of the shallower encoder. */
  private checkClipSkip(op: string, clipSkip: number): void {
    const layers = Math.min(...[this.textEncoder, this.textEncoder2].filter((e) => e !== null).map((e) => e!.shape.layers));
    const max = Number.isFinite(layers) ? layers - 1 : Infinity;
    if (!Number.isInteger(clipSkip) || clipSkip < 0 || clipSkip > max) {
      throw new Error(`${op}: clipSkip must be an integer in [0, ${max}] (the text encoders have ${layers} layers), got ${String(clipSkip)}`);
    }
  }

  /**
   * Prompts -> SDXL conditioning: the encoders' hidden_states[-(clipSkip + 2)] (no final LayerNorm)
   * concatenated along the width, and the second encoder's text_embeds. `prompts2` defaults to `prompts`.
   */
  encodePrompt(prompts: readonly string[], prompts2: readonly string[] = prompts, clipSkip = 0): SDXLPromptEmbeds {
    const op = 'StableDiffusionXLPipeline.encodePrompt';
    const enc2 = this.textEncoder2;
    const tok2 = this.tokenizer2;
    if (!enc2 || !tok2) throw new Error(`${op}: this pipeline has no text encoders; pass promptEmbeds and pooledPromptEmbeds`);
    if (!prompts.length) throw new Error(`${op}: no prompts`);
    if (prompts2.length !== prompts.length) throw new Error(`${op}: ${prompts2.length} second prompts for ${prompts.length} prompts`);
    this.checkClipSkip(op, clipSkip);
    return this.engine.scope(() => {
      const parts: Tensor[] = [];
      if (this.textEncoder) parts.push(this.textEncoder.hiddenState(prompts.map((p) => this.tokenizer!.encode(p)), -(clipSkip + 2)));
      // the refiner (one encoder) feeds it the first prompt, as diffusers zips prompts with encoders
      const second = enc2.forward((this.textEncoder ? prompts2 : prompts).map((p) => tok2.encode(p)), { hiddenStateIndex: -(clipSkip + 2) });
      parts.push(second.hiddenState!);
      return { promptEmbeds: parts.length > 1 ? ops.concat(parts, 2) : parts[0], pooledPromptEmbeds: second.textEmbeds };
    });
  }

  /**
   * Merges LoRAs into the loaded UNet and text encoders in place, as StableDiffusionPipeline's
   * loadLoraWeights does (pipelines/loading.ts loadLorasInPlace): no new GPU memory, a LoRA that does
   * not fit changes nothing, a negative scale takes one out again, refused while a generate() runs.
   */
  loadLoraWeights(loras: readonly LoraSpec[], opts: IOOptions = {}): Promise<LoraReport> {
    return loadLorasInPlace('StableDiffusionXLPipeline.loadLoraWeights', () => this.generating, [
      { component: 'unet', model: this.unet },
      { component: 'text_encoder', model: this.textEncoder },
      { component: 'text_encoder_2', model: this.textEncoder2 },
    ], loras, opts);
  }

  private generating = 0;

  async generate(opts: SDXLGenerateOptions = {}): Promise<PipelineOutput> {
    this.generating++; // loadLoraWeights waits for none to be running
    try {
      return await this.generateOnce(opts);
    } finally {
      this.generating--;
    }
  }

  private async generateOnce(opts: SDXLGenerateOptions): Promise<PipelineOutput> {
    const op = 'StableDiffusionXLPipeline.generate';
    const engine = this.engine;
    const scale = checkGuidance(op, opts.guidanceScale ?? 5);
    const rescale = checkGuidanceRescale(op, opts.guidanceRescale);
    const outputType = checkOutputType(op, opts.outputType);
    const lcm = this.unet.timeCondProjDim !== null;
    // an LCM UNet takes the scale as an embedding and runs without classifier-free guidance (diffusers)
    const guided = scale > 1 && !lcm;
    const steps = opts.steps ?? 50;
    const dtype = this.unet.dtype as 'f32' | 'f16';
    const cross = this.unet.crossAttentionDim;

    // ---- everything that can be checked before allocating
    const list = (v: string | string[] | undefined, name: string, B?: number): string[] | undefined => {
      if (v === undefined) return undefined;
      const a = typeof v === 'string' ? (B === undefined ? [v] : Array(B).fill(v)) : v;
      if (!Array.isArray(a) || a.some((p) => typeof p !== 'string')) throw new Error(`${op}: ${name} must be a string or an array of strings`);
      if (B !== undefined && a.length !== B) throw new Error(`${op}: ${a.length} ${name} for ${B} prompts`);
      return a;
    };
    const prompts = list(opts.prompt, 'prompt') ?? [''];
    if (!prompts.length) throw new Error(`${op}: prompt is an empty list (one prompt per image)`);
    const B = opts.promptEmbeds ? opts.promptEmbeds.shape?.[0] : prompts.length;
    const prompts2 = list(opts.prompt2, 'prompt2', B) ?? prompts;
    if (opts.promptEmbeds) {
      checkEmbeds(op, 'promptEmbeds', opts.promptEmbeds, B, cross);
      if (!(opts.pooledPromptEmbeds instanceof Tensor)) throw new Error(`${op}: promptEmbeds needs pooledPromptEmbeds (the second text encoder's text_embeds)`);
    } else if (!this.textEncoder2) throw new Error(`${op}: this pipeline has no text encoders; pass promptEmbeds and pooledPromptEmbeds`);
    const negatives = list(opts.negativePrompt, 'negativePrompt', B);
    const negatives2 = list(opts.negativePrompt2, 'negativePrompt2', B) ?? negatives;
    const zeroNegative = opts.negativePrompt === undefined && this.forceZerosForEmptyPrompt;
    if (guided && opts.negativePromptEmbeds) {
      checkEmbeds(op, 'negativePromptEmbeds', opts.negativePromptEmbeds, B, cross);
      if (!(opts.negativePooledPromptEmbeds instanceof Tensor)) throw new Error(`${op}: negativePromptEmbeds needs negativePooledPromptEmbeds`);
    } else if (guided && !zeroNegative && !this.textEncoder2) {
      throw new Error(`${op}: guidance needs negativePromptEmbeds and negativePooledPromptEmbeds when the pipeline has no text encoders`);
    }
    const clipSkip = opts.clipSkip ?? 0;
    if (!opts.promptEmbeds) this.checkClipSkip(op, clipSkip);
    else if (!Number.isInteger(clipSkip) || clipSkip < 0) throw new Error(`${op}: clipSkip must be a non-negative integer, got ${String(opts.clipSkip)}`);
    const noiseSeed = resolveSeed(op, opts.seed, B);
    const f = this.vaeScaleFactor;
    const Lc = this.vae.shape.latentChannels;
    const img = opts.image;
    const imageIsLatent = img instanceof Tensor && img.rank === 4 && img.shape[1] === Lc;
    const [sh, sw] = new ConfigReader('StableDiffusionXLPipeline: UNet2DConditionModel', this.unet.config).sampleSize(128);
    const H = opts.height ?? (img ? img.shape[2] * (imageIsLatent ? f : 1) : sh * f);
    const W = opts.width ?? (img ? img.shape[3] * (imageIsLatent ? f : 1) : sw * f);
    for (const [k, v] of [['height', H], ['width', W]] as const) {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`${op}: ${k} must be a positive integer, got ${String(v)}`);
    }
    if (H % f || W % f) throw new Error(`${op}: height and width must be multiples of ${f}, got ${H}x${W}`);
    checkLatentSize(op, 'height x width', H / f, W / f, unetDownFactor(this.unet), f);
    const shape = [B, Lc, H / f, W / f];
    if (img) {
      if (imageIsLatent) checkImage(op, 'image (latents)', img, B, Lc, H / f, W / f);
      else checkImage(op, 'image', img, B, 3, H, W);
    }
    // checked with or without an image (as StableDiffusionPipeline): text-to-image runs it as 1
    const given = opts.strength ?? 0.3;
    if (!(typeof given === 'number' && given > 0 && given <= 1)) throw new Error(`${op}: strength must be in (0, 1], got ${String(opts.strength)}`);
    const strength = img ? given : 1;
    const fraction = (name: string, v: unknown) => {
      if (v !== undefined && !(typeof v === 'number' && v > 0 && v < 1)) throw new Error(`${op}: ${name} must be a number in (0, 1), got ${String(v)}`);
      return v as number | undefined;
    };
    const denoisingStart = fraction('denoisingStart', opts.denoisingStart);
    const denoisingEnd = fraction('denoisingEnd', opts.denoisingEnd);
    if (denoisingStart !== undefined && !img) throw new Error(`${op}: denoisingStart needs image (the latents a base run with denoisingEnd returned)`);
    if (denoisingStart !== undefined && opts.latents !== undefined) throw new Error(`${op}: latents (the noise added to the image) is not used with denoisingStart, which adds none`);
    if (denoisingStart !== undefined && denoisingEnd !== undefined && denoisingStart >= denoisingEnd) {
      throw new Error(`${op}: denoisingStart ${denoisingStart} must be below denoisingEnd ${denoisingEnd}`);
    }
    const pooledDim = opts.pooledPromptEmbeds?.shape[1] ?? this.textEncoder2!.shape.projectionDim;
    this.checkTimeIds(op, pooledDim);
    for (const [name, t] of [['pooledPromptEmbeds', opts.pooledPromptEmbeds], ['negativePooledPromptEmbeds', guided ? opts.negativePooledPromptEmbeds : undefined]] as const) {
      if (t && (!(t instanceof Tensor) || t.rank !== 2 || t.shape[0] !== B || t.shape[1] !== pooledDim)) {
        throw new Error(`${op}: ${name} must be [${B}, ${pooledDim}], got ${t instanceof Tensor ? shapeStr(t.shape) : typeof t}`);
      }
    }
    const [addIds, negIds] = this.timeIds(op, opts, H, W);
    this.unet.checkFits(op, guided ? 2 * B : B, H / f, W / f);
    const scheduler = schedulerForCall(this.scheduler, opts.sampler);
    const { timesteps, tStart } = denoisingStart !== undefined ? startTimesteps(op, scheduler, steps, denoisingStart) : strengthTimesteps(op, scheduler, steps, strength);
    if (denoisingEnd !== undefined) {
      // diffusers' denoising_end: keep the timesteps at or above the cutoff
      const cutoff = roundHalfEven(scheduler.numTrainTimesteps - denoisingEnd * scheduler.numTrainTimesteps);
      const keep = timesteps.filter((t) => t >= cutoff).length;
      if (!keep) throw new Error(`${op}: denoisingEnd ${denoisingEnd} with ${steps} steps leaves no step to run (every timestep is below ${cutoff})`);
      timesteps.length = keep;
    }

    return engine.scope(async (s) => {
      // ---- conditioning, [uncond; cond] when guided (the order guidedPredict doubles the batch in)
      const cond = opts.promptEmbeds
        ? { promptEmbeds: opts.promptEmbeds, pooledPromptEmbeds: opts.pooledPromptEmbeds! }
        : s.run(() => this.encodePrompt(prompts, prompts2, clipSkip));
      let emb = asDtypeIn(s, cond.promptEmbeds, dtype);
      let pooled = asDtypeIn(s, cond.pooledPromptEmbeds, dtype);
      let timeIds: number[][] = Array(B).fill(addIds);
      if (guided) {
        const uncond = opts.negativePromptEmbeds
          ? { promptEmbeds: opts.negativePromptEmbeds, pooledPromptEmbeds: opts.negativePooledPromptEmbeds! }
          : zeroNegative
            ? s.run(() => ({ promptEmbeds: zerosLike(engine, emb), pooledPromptEmbeds: zerosLike(engine, pooled) }))
            : s.run(() => this.encodePrompt(negatives ?? Array(B).fill(''), negatives2 ?? negatives ?? Array(B).fill('')));
        if (uncond.promptEmbeds.shape[1] !== emb.shape[1]) throw new Error(`${op}: negative and positive embeddings differ in length (${uncond.promptEmbeds.shape[1]} vs ${emb.shape[1]})`);
        emb = s.run(() => ops.concat([asDtype(uncond.promptEmbeds, dtype), emb], 0));
        pooled = s.run(() => ops.concat([asDtype(uncond.pooledPromptEmbeds, dtype), pooled], 0));
        timeIds = [...Array(B).fill(negIds), ...timeIds];
      }
      const timestepCond = lcm ? s.run(() => this.unet.guidanceEmbedding(scale, B)) : undefined;

      // ---- initial latents: noise, or the image's latents noised to the first timestep
      const latents = s.run(() => {
        if (!img) return initialLatents(engine, shape, { latents: opts.latents, seed: noiseSeed, initNoiseSigma: scheduler.initNoiseSigma, dtype });
        const x0 = imageIsLatent ? asDtype(img, dtype) : this.encodeImage(img, noiseSeed);
        scheduler.setBeginIndex(tStart);
        // denoisingStart: the image is already noised to the first timestep (a base run's latents)
        if (denoisingStart !== undefined) return x0 === img ? ops.scale(x0, 1) : x0;
        // the noise: `latents` when given, else seeded (initialLatents with sigma 1 is exactly that)
        const noise = initialLatents(engine, shape, { latents: opts.latents, seed: noiseSeed, initNoiseSigma: 1, dtype });
        return scheduler.addNoise(x0, noise, Array(B).fill(timesteps[0]));
      });

      const predict = guidedPredict({
        model: (x, t) => this.unet.forward(x, t, { encoderHiddenStates: emb, addedCondKwargs: { textEmbeds: pooled, timeIds }, timestepCond }),
        guided,
        scale,
        rescale,
      });
      const previewDecode = this.previewDecoder ? rgbaPreview((x) => this.previewDecoder!.decode(x)) : undefined;
      const final = await s.scope(() =>
        denoise({ scheduler, seed: noiseSeed, latents, timesteps, predict, previewDecode, eta: opts.eta, signal: opts.signal, onStep: opts.onStep, preview: opts.preview }),
      );
      if (outputType === 'latent') return { images: final, rgba: [] }; // as diffusers' output_type="latent"
      // force_upcast VAEs load in f32 beside an f16 UNet; an f16 one that overflows is upcast and rerun
      const decoded = await s.scope(() => decodeWithUpcast(this.vae, () => this.decodeRaw(final), 'StableDiffusionXLPipeline'));
      await s.scope(() => assertFinite(op, decoded, 'the AutoencoderKL decoder'));
      const images = s.run(() => toUnitRange(decoded));
      return { images, rgba: await toRgba(images) };
    });
  }

  /**
   * The time ids of one image and of its negative: diffusers' _get_add_time_ids (text-to-image) and
   * the img2img pipeline's aesthetic-score form when the model requires it (the refiner).
   */
  private timeIds(op: string, o: SDXLGenerateOptions, H: number, W: number): [number[], number[]] {
    const pair = (name: string, v: [number, number] | undefined, def: [number, number]): [number, number] => {
      if (v === undefined) return def;
      if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
        throw new Error(`${op}: ${name} must be [height, width] (two finite numbers), got ${JSON.stringify(v)}`);
      }
      return [v[0], v[1]];
    };
    const num = (name: string, v: number | undefined, def: number) => {
      if (v === undefined) return def;
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${op}: ${name} must be a finite number, got ${String(v)}`);
      return v;
    };
    const orig = pair('originalSize', o.originalSize, [H, W]);
    const crops = pair('cropsCoordsTopLeft', o.cropsCoordsTopLeft, [0, 0]);
    const target = pair('targetSize', o.targetSize, [H, W]);
    const negOrig = pair('negativeOriginalSize', o.negativeOriginalSize, orig);
    const negCrops = pair('negativeCropsCoordsTopLeft', o.negativeCropsCoordsTopLeft, [0, 0]);
    const negTarget = pair('negativeTargetSize', o.negativeTargetSize, target);
    // diffusers' rules, which differ between its two pipelines:
    if (this.requiresAestheticsScore) {
      // img2img with aesthetic scores (the refiner)
      return [
        [...orig, ...crops, num('aestheticScore', o.aestheticScore, 6)],
        [...negOrig, ...negCrops, num('negativeAestheticScore', o.negativeAestheticScore, 2.5)],
      ];
    }
    if (o.aestheticScore !== undefined || o.negativeAestheticScore !== undefined) {
      throw new Error(`${op}: aestheticScore is for refiner models (requires_aesthetics_score in model_index.json); this UNet takes sizes only`);
    }
    const add = [...orig, ...crops, ...target];
    // img2img: the negative sizes (defaults: the positive ones) with the positive crop
    if (o.image) return [add, [...negOrig, ...crops, ...negTarget]];
    // text-to-image: its own ids only when both negative sizes are given, else the positive ids
    return [add, o.negativeOriginalSize && o.negativeTargetSize ? [...negOrig, ...negCrops, ...negTarget] : add];
  }

  /** [B, 3, H, W] in [0, 1] -> latents * scaling_factor, sampled from the posterior with the noise of seed + i. */
  encodeImage(image: Tensor, seed: number, stream: number = NOISE_STREAM.image): Tensor {
    return vaeEncodeLatents(this.vae, image, seed, stream, this.unet.dtype, this.latentsNorm);
  }

  decodeLatents(z: Tensor): Tensor {
    return this.engine.scope(() => toUnitRange(this.decodeRaw(z)));
  }

  /** Latents -> the VAE decoder's output in [-1, 1], unclamped, in the VAE's own dtype. */
  private decodeRaw(z: Tensor): Tensor {
    return vaeDecodeLatents(this.vae, z, this.latentsNorm);
  }

  dispose(): void {
    this.unet.dispose();
    this.vae.dispose();
    this.textEncoder?.dispose();
    this.textEncoder2?.dispose();
    this.previewDecoder?.dispose();
    this.scheduler.reset();
  }
}

function asDtypeIn(s: { run<T>(fn: () => T): T }, t: Tensor, dtype: 'f32' | 'f16'): Tensor {
  return t.dtype === dtype ? t : s.run(() => asDtype(t, dtype));
}

function zerosLike(engine: Engine, t: Tensor): Tensor {
  const z = engine.tensor(new Float32Array(t.shape.reduce((a, b) => a * b, 1)), [...t.shape]);
  return t.dtype === 'f32' ? z : engine.scope(() => ops.cast(z, t.dtype as 'f16'));
}

/** Python's round() (half to even), as diffusers' int(round(...)) cutoffs use. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * diffusers' SDXL img2img get_timesteps with denoising_start: the timesteps below the cutoff
 * (1 - start) * num_train_timesteps (one more for second-order schedulers when their count is even,
 * so no step is cut between its two evaluations), from the end of the schedule.
 */
function startTimesteps(op: string, scheduler: Scheduler, steps: number, start: number): { timesteps: number[]; tStart: number } {
  scheduler.setTimesteps(steps);
  const all = [...scheduler.timesteps];
  const cutoff = roundHalfEven(scheduler.numTrainTimesteps - start * scheduler.numTrainTimesteps);
  let n = all.filter((t) => t < cutoff).length;
  if (scheduler.order === 2 && n % 2 === 0) n = Math.min(n + 1, all.length);
  if (!n) throw new Error(`${op}: denoisingStart ${start} with ${steps} steps leaves no step to run (no timestep below ${cutoff})`);
  const tStart = all.length - n;
  return { timesteps: all.slice(tStart), tStart };
}
