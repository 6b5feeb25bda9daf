// LDMPipeline: unconditional and class-conditional latent diffusion (a VQModel or an
// AutoencoderKL first stage + a UNet2DModel), with classifier-free guidance for class labels
// (the null class is the last class embedding, as in DiT), and LDM super-resolution by
// concatenating the low-resolution image to the latents.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { VQModel } from '../models/vq_model.js';
import { AutoencoderKL } from '../models/autoencoder_kl.js';
import { UNet2DModel } from '../models/unet_2d.js';
import { ConfigReader } from '../runtime/config.js';
import { asDtype, assertFinite, checkGuidance, checkLatentSize, createScheduler, decodeWithUpcast, denoise, guidedPredict, initialLatents, resolveSeed, schedulerForCall, unetDownFactor, toRgba, toUnitRange, type LoopOptions, type RgbaImage, type Scheduler } from './common.js';
import { loadPipelineFolder, type PipelineLoadOptions } from './loading.js';

export interface LDMGenerateOptions extends LoopOptions {
  batchSize?: number;
  /** one per image (class-conditional models) */
  classLabels?: readonly number[];
  steps?: number;
  /** classifier-free guidance scale (1 = off); needs a class-conditional UNet */
  guidanceScale?: number;
  /** Image i of the batch draws all its noise (initial latents and the per-step noise of ancestral
   * samplers) from seed + i, so it equals a single run with that seed. Default: a random seed. */
  seed?: number;
  /** initial latents (before init_noise_sigma scaling) */
  latents?: Tensor | Float32Array;
  /** a scheduler to use instead of the pipeline's (a name such as 'euler' or a class name) */
  sampler?: string;
  /** LDM super-resolution: the low-resolution image in [0, 1], [B, C, h, w] at the latent size */
  lowResImage?: Tensor;
}

export interface PipelineOutput {
  /** [B, C, H, W] in [0, 1] */
  images: Tensor;
  rgba: RgbaImage[];
}

export class LDMPipeline {
  readonly engine: Engine;
  readonly unet: UNet2DModel;
  readonly vqvae: VQModel | null;
  readonly vae: AutoencoderKL | null;
  scheduler: Scheduler;

  /** predictionType: what the UNet was trained to predict (the folder's scheduler says); a scheduler
   * configured for another prediction type is refused. */
  constructor(components: { unet: UNet2DModel; scheduler: Scheduler; vqvae?: VQModel; vae?: AutoencoderKL; predictionType?: string }) {
    const { unet, scheduler } = components;
    this.vqvae = components.vqvae ?? null;
    this.vae = components.vae ?? null;
    if (!unet || !scheduler || (!this.vqvae && !this.vae)) throw new Error('LDMPipeline: needs { unet, scheduler } and a vqvae or a vae');
    this.unet = unet;
    this.scheduler = scheduler;
    this.engine = unet.engine;
    const latentCh = this.vqvae ? this.vqvae.embedDim : this.vae!.shape.latentChannels;
    if (unet.outChannels !== latentCh) {
      throw new Error(`LDMPipeline: the UNet predicts ${unet.outChannels} channels but the ${this.vqvae ? 'VQModel' : 'AutoencoderKL'} latents have ${latentCh}`);
    }
    if (unet.inChannels !== latentCh && unet.inChannels <= latentCh) {
      throw new Error(`LDMPipeline: the UNet takes ${unet.inChannels} input channels but the latents have ${latentCh}`);
    }
    checkPrediction(scheduler, 'LDMPipeline', components.predictionType);
  }

  /** Loads a diffusers pipeline folder or URL (model_index.json with vqvae|vae, unet, scheduler). */
  static async fromPretrained(engine: Engine, pathOrUrl: string, opts: PipelineLoadOptions = {}): Promise<LDMPipeline> {
    const c = await loadPipelineFolder(engine, pathOrUrl, { vqvae: VQModel, vae: AutoencoderKL, unet: UNet2DModel }, opts);
    try {
      const scheduler = createScheduler(c.schedulerConfig);
      return new LDMPipeline({ unet: c.models.unet as UNet2DModel, vqvae: c.models.vqvae as VQModel | undefined, vae: c.models.vae as AutoencoderKL | undefined, scheduler, predictionType: scheduler.predictionType });
    } catch (e) {
      for (const m of Object.values(c.models)) m.dispose();
      throw e;
    }
  }

  get latentChannels(): number {
    return this.unet.outChannels;
  }

  get numClasses(): number | null {
    return this.unet.numClassEmbeds;
  }

  async generate(opts: LDMGenerateOptions = {}): Promise<PipelineOutput> {
    const engine = this.engine;
    const B = opts.classLabels?.length ?? opts.batchSize ?? 1;
    if (!Number.isInteger(B) || B < 1) throw new Error(`LDMPipeline.generate: batch size ${B} must be a positive integer`);
    if (opts.batchSize !== undefined && opts.classLabels && opts.batchSize !== opts.classLabels.length) {
      throw new Error(`LDMPipeline.generate: batchSize ${opts.batchSize} disagrees with ${opts.classLabels.length} class labels`);
    }
    const steps = opts.steps ?? 50;
    const scale = checkGuidance('LDMPipeline.generate', opts.guidanceScale ?? 1);
    const numClasses = this.unet.numClassEmbeds;
    let labels: number[] | undefined;
    if (numClasses) {
      labels = opts.classLabels ? [...opts.classLabels] : Array(B).fill(numClasses - 1);
      for (const c of labels) if (!Number.isInteger(c) || c < 0 || c >= numClasses) throw new Error(`LDMPipeline.generate: class label ${c} outside 0..${numClasses - 1}`);
    } else if (opts.classLabels) {
      throw new Error('LDMPipeline.generate: classLabels given but the UNet is unconditional');
    }
    const guided = scale !== 1 && !!numClasses;
    const seed = resolveSeed('LDMPipeline.generate', opts.seed, B);
    // each call owns its scheduler: calls in flight together do not share timesteps or state
    const scheduler = schedulerForCall(this.scheduler, opts.sampler);
    const [sh, sw] = new ConfigReader('LDMPipeline: UNet2DModel', this.unet.config).sampleSize(64);
    const latentCh = this.latentChannels;
    const dtype = this.unet.dtype as 'f32' | 'f16';
    const lr = opts.lowResImage;
    let shape = [B, latentCh, sh, sw];
    if (lr) {
      if (lr.rank !== 4 || lr.shape[0] !== B || lr.shape[1] + latentCh !== this.unet.inChannels) {
        throw new Error(`LDMPipeline.generate: lowResImage must be [${B}, ${this.unet.inChannels - latentCh}, h, w], got ${shapeStr(lr.shape)}`);
      }
      shape = [B, latentCh, lr.shape[2], lr.shape[3]];
      checkLatentSize('LDMPipeline.generate', 'lowResImage size', lr.shape[2], lr.shape[3], unetDownFactor(this.unet));
    } else if (this.unet.inChannels !== latentCh) {
      throw new Error(`LDMPipeline.generate: this UNet takes ${this.unet.inChannels} channels (super-resolution): pass lowResImage`);
    } else {
      checkLatentSize('LDMPipeline.generate', "the UNet's sample_size", sh, sw, unetDownFactor(this.unet));
    }
    // refuse a batch or size the device cannot hold before allocating anything
    this.unet.checkFits('LDMPipeline.generate', guided ? 2 * B : B, shape[2], shape[3]);
    scheduler.setTimesteps(steps);
    return engine.scope(async (s) => {
      const lowRes = lr ? s.run(() => ops.scale(lr, 2, -1)) : null;
      const latents = s.run(() => initialLatents(engine, shape, { latents: opts.latents, seed, initNoiseSigma: scheduler.initNoiseSigma, dtype }));
      const nullLabels = numClasses ? Array(B).fill(numClasses - 1) : [];
      const cond = guided ? { classLabels: [...nullLabels, ...labels!] } : labels ? { classLabels: labels } : {};
      const predict = guidedPredict({
        model: (x, t) => this.unet.forward(x, t, cond),
        guided,
        scale,
        extraChannels: lowRes ? () => [lowRes] : undefined,
      });
      const final = await s.scope(() => denoise({ scheduler, seed, latents, timesteps: scheduler.timesteps, predict, eta: opts.eta, signal: opts.signal, onStep: opts.onStep }));
      // an f16 first stage that overflows is upcast to f32 and run again
      const decoded = await s.scope(() => decodeWithUpcast(this.vqvae ?? this.vae!, () => this.decodeRaw(final), 'LDMPipeline'));
      // the loop checked the latents; a NaN here comes from the first stage's weights
      await s.scope(() => assertFinite('LDMPipeline.generate', decoded, `the ${this.vqvae ? 'VQModel' : 'AutoencoderKL'} decoder`));
      const images = s.run(() => toUnitRange(decoded));
      return { images, rgba: await toRgba(images) };
    });
  }

  /** Diffusion latents -> images in [0, 1] (the VQ decoder quantises first). */
  decodeLatents(z: Tensor): Tensor {
    return this.engine.scope(() => toUnitRange(this.decodeRaw(z)));
  }

  /** Diffusion latents -> the first stage's output in [-1, 1], unclamped, in the first stage's own dtype. */
  private decodeRaw(z: Tensor): Tensor {
    const first = this.vqvae ?? this.vae!;
    return this.engine.scope(() => first.decode(ops.scale(asDtype(z, first.dtype), 1 / first.scalingFactor)));
  }

  dispose(): void {
    this.unet.dispose();
    this.vqvae?.dispose();
    this.vae?.dispose();
    this.scheduler.reset();
  }
}

export function checkPrediction(scheduler: Scheduler, who: string, expected?: string): void {
  if (expected && scheduler.predictionType !== expected) {
    throw new Error(`${who}: the scheduler is configured for prediction_type '${scheduler.predictionType}' but the UNet predicts '${expected}'`);
  }
}
