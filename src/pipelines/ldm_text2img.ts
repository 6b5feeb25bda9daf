// LDMTextToImagePipeline: diffusers' port of the paper's text-to-image LDM (CompVis/ldm-text2im-large-256:
// vqvae = AutoencoderKL, bert = LDMBertModel, tokenizer = bert-base-uncased WordPiece, unet =
// UNet2DConditionModel, scheduler = DDIM). As diffusers: no attention mask, the unconditional
// embedding is bert(tokens of ""), batch [uncond, cond], latents at height / 8, decode(z / scaling_factor).
import { ConfigReader } from '../runtime/config.js';
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { AutoencoderKL } from '../models/autoencoder_kl.js';
import { UNet2DConditionModel } from '../models/unet_2d_condition.js';
import { LDMBertModel } from '../text/ldm_bert.js';
import { BertTokenizer } from '../text/bert_tokenizer.js';
import { assertFinite, checkGuidance, checkLatentSize, createScheduler, denoise, guidedPredict, initialLatents, resolveSeed, unetDownFactor, schedulerForCall, toRgba, toUnitRange, type LoopOptions, type Scheduler } from './common.js';
import { loadPipelineFolder, type PipelineLoadOptions } from './loading.js';
import { joinPath } from '../runtime/io.js';
import type { PipelineOutput } from './ldm.js';

export interface LDMText2ImgOptions extends LoopOptions {
  prompt: string | readonly string[];
  steps?: number;
  guidanceScale?: number;
  seed?: number;
  height?: number;
  width?: number;
  latents?: Tensor | Float32Array;
  sampler?: string;
}

export class LDMTextToImagePipeline {
  readonly engine: Engine;
  constructor(
    readonly components: { vqvae: AutoencoderKL; bert: LDMBertModel; tokenizer: BertTokenizer; unet: UNet2DConditionModel; scheduler: Scheduler },
  ) {
    this.engine = components.unet.engine;
  }

  static async fromPretrained(engine: Engine, pathOrUrl: string, opts: PipelineLoadOptions = {}): Promise<LDMTextToImagePipeline> {
    const c = await loadPipelineFolder(engine, pathOrUrl, { vqvae: AutoencoderKL, bert: LDMBertModel, unet: UNet2DConditionModel }, opts);
    try {
      for (const k of ['vqvae', 'bert', 'unet']) if (!c.models[k]) throw new Error(`LDMTextToImagePipeline: ${pathOrUrl} has no '${k}' component in model_index.json`);
      const tokenizer = await BertTokenizer.fromPretrained(joinPath(pathOrUrl, 'tokenizer'), { fetch: opts.fetch, signal: opts.signal, timeoutMs: opts.timeoutMs });
      return new LDMTextToImagePipeline({
        vqvae: c.models.vqvae as AutoencoderKL,
        bert: c.models.bert as LDMBertModel,
        unet: c.models.unet as UNet2DConditionModel,
        tokenizer,
        scheduler: createScheduler(c.schedulerConfig),
      });
    } catch (e) {
      for (const m of Object.values(c.models)) m.dispose();
      throw e;
    }
  }

  /** bert(tokenizer(prompts)) -> [B, 77, d_model] */
  encodePrompt(prompts: readonly string[]): Tensor {
    const ids = prompts.map((p) => this.components.tokenizer.encode(p));
    return this.engine.scope(() => this.components.bert.forward(ids).lastHiddenState);
  }

  async generate(o: LDMText2ImgOptions): Promise<PipelineOutput> {
    const { unet, vqvae } = this.components;
    const engine = this.engine;
    const prompts = typeof o.prompt === 'string' ? [o.prompt] : [...o.prompt];
    if (!prompts.length) throw new Error('LDMTextToImagePipeline.generate: prompt is empty');
    const B = prompts.length;
    const vaeScale = 2 ** (vqvae.shape.blockOutChannels.length - 1);
    const [sh, sw] = new ConfigReader('LDMTextToImagePipeline: UNet2DConditionModel', unet.config).sampleSize(32);
    const height = o.height ?? sh * vaeScale;
    const width = o.width ?? sw * vaeScale;
    for (const [k, v] of [['height', height], ['width', width]] as const) {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`LDMTextToImagePipeline.generate: ${k} must be a positive integer, got ${String(v)}`);
    }
    if (height % 8 || width % 8) throw new Error(`LDMTextToImagePipeline.generate: height and width must be multiples of 8, got ${height}x${width}`);
    checkLatentSize('LDMTextToImagePipeline.generate', 'height x width', height / 8, width / 8, unetDownFactor(unet), 8);
    const scale = checkGuidance('LDMTextToImagePipeline.generate', o.guidanceScale ?? 1);
    const guided = scale !== 1;
    const seed = resolveSeed('LDMTextToImagePipeline.generate', o.seed, B);
    const scheduler = schedulerForCall(this.components.scheduler, o.sampler);
    scheduler.setTimesteps(o.steps ?? 50);
    const dtype = engine.f16 ? 'f16' : 'f32';
    // the port hard-codes height // 8 for the latents
    const shape = [B, unet.inChannels, height / 8, width / 8];
    unet.checkFits('LDMTextToImagePipeline.generate', guided ? 2 * B : B, shape[2], shape[3]);
    return engine.scope(async (s) => {
      const ctx = s.run(() => {
        const cond = this.encodePrompt(prompts);
        // [uncond; cond], the order guidedPredict doubles the batch in
        return guided ? ops.concat([...new Array(B).fill(this.encodePrompt([''])), cond], 0) : cond;
      });
      const latents = s.run(() => initialLatents(engine, shape, { latents: o.latents, seed, initNoiseSigma: scheduler.initNoiseSigma, dtype }));
      const predict = guidedPredict({ model: (x, t) => unet.forward(x, t, { encoderHiddenStates: ctx }), guided, scale });
      const final = await s.scope(() => denoise({ scheduler, seed, latents, timesteps: scheduler.timesteps, predict, eta: o.eta, signal: o.signal, onStep: o.onStep }));
      const decoded = s.run(() => vqvae.decode(ops.scale(final, 1 / vqvae.scalingFactor)));
      await s.scope(() => assertFinite('LDMTextToImagePipeline.generate', decoded, 'the first stage (vqvae) decoder'));
      const images = s.run(() => toUnitRange(decoded));
      return { images, rgba: await toRgba(images) };
    });
  }

  dispose(): void {
    const c = this.components;
    c.vqvae.dispose();
    c.bert.dispose();
    c.unet.dispose();
    c.scheduler.reset();
  }
}
