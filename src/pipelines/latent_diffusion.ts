// LatentDiffusion: the paper's models from their original release files (CompVis latent-diffusion
// model.ckpt or .safetensors + config.yaml), sampled as the release code does: DDIM with
// timesteps range(0, T, T // S) + 1, the last step's alpha_prev = alphas_cumprod[0], classifier-free
// guidance with the batch [uncond, cond], decode(z / scale_factor), images clamp((x + 1) / 2, 0, 1).
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr } from '../runtime/tensor.js';
import type { WeightSource } from '../runtime/weights.js';
import { readText, type IOOptions } from '../runtime/io.js';
import * as ops from '../kernels/index.js';
import { UNet2DConditionModel } from '../models/unet_2d_condition.js';
import { UNet2DModel } from '../models/unet_2d.js';
import { AutoencoderKL } from '../models/autoencoder_kl.js';
import { VQModel } from '../models/vq_model.js';
import { LDMBertModel, ldmBertConfigFromCompVis, ldmBertKeyFromCompVis } from '../text/ldm_bert.js';
import { BertTokenizer } from '../text/bert_tokenizer.js';
import { openCheckpoint, type CheckpointSource } from '../loaders/ckpt.js';
import {
  OriginalConfigError,
  mappedSource,
  mapOriginalFirstStageKeys,
  mapOriginalUNetKeys,
  num,
  parseReleaseConfig,
  planFirstStage,
  planUNet,
  subConfig,
  type TargetConfig,
} from '../loaders/original.js';
import { resolveSeed, toRgba, type RgbaImage } from './common.js';

const LD_TARGET = 'ldm.models.diffusion.ddpm.LatentDiffusion';

export type ConditioningKey = 'none' | 'crossattn' | 'concat' | 'hybrid';

// ---------------------------------------------------------------- conditioning encoders (tau_theta)

/** ClassEmbedder: class label -> a one-token context [B, 1, D]. */
export class ClassEmbedder {
  readonly kind = 'class';
  constructor(
    readonly embedding: Tensor,
    readonly nClasses: number,
  ) {}
  encode(labels: readonly number[]): Tensor {
    for (const l of labels) if (!Number.isInteger(l) || l < 0 || l >= this.nClasses) throw new Error(`ClassEmbedder.encode: class ${l} is outside [0, ${this.nClasses - 1}]`);
    const e = ops.embedding(this.embedding, labels);
    const y = e.reshape([labels.length, 1, this.embedding.shape[1]]);
    e.dispose();
    return y;
  }
  dispose(): void {
    this.embedding.dispose();
  }
}

/** BERTEmbedder: WordPiece tokens (77) -> the x-transformer encoder's embeddings [B, 77, D]. */
export class BERTEmbedder {
  readonly kind = 'bert';
  constructor(
    readonly transformer: LDMBertModel,
    public tokenizer: BertTokenizer | null,
    readonly maxLength: number,
  ) {}
  /** prompts (needs a tokenizer) or token id rows (layout2img feeds its tokens directly) */
  encode(input: readonly string[] | readonly (readonly number[])[]): Tensor {
    const rows = input.map((x) => {
      if (typeof x === 'string') {
        if (!this.tokenizer) throw new Error('BERTEmbedder.encode: prompts need the bert-base-uncased tokenizer: pass { tokenizer } to fromOriginal (a BertTokenizer or its folder)');
        return this.tokenizer.encode(x);
      }
      return x as readonly number[];
    });
    return this.transformer.forward(rows).lastHiddenState;
  }
  dispose(): void {
    this.transformer.dispose();
  }
}

/** SpatialRescaler: n_stages of bilinear x0.5 (the mean of each 2x2 for even sizes), then a 1x1 conv. */
export class SpatialRescaler {
  readonly kind = 'rescaler';
  constructor(
    readonly nStages: number,
    readonly inChannels: number,
    readonly channelMapper: Tensor | null,
    private pool: Tensor,
  ) {}
  encode(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.inChannels) throw new Error(`SpatialRescaler.encode: expected [B, ${this.inChannels}, H, W], got ${shapeStr(x.shape)}`);
    let h = x;
    for (let i = 0; i < this.nStages; i++) {
      if (h.shape[2] % 2 || h.shape[3] % 2) throw new Error(`SpatialRescaler.encode: size ${h.shape[2]}x${h.shape[3]} at stage ${i} is odd; only even sizes halve exactly`);
      const y = ops.conv2d(h, this.pool, undefined, { stride: 2, padding: 0, groups: this.inChannels });
      if (h !== x) h.dispose();
      h = y;
    }
    if (this.channelMapper) {
      const y = ops.conv2d(h, this.channelMapper, undefined, { padding: 0 });
      if (h !== x) h.dispose();
      h = y;
    }
    return h === x ? ops.scale(x, 1) : h;
  }
  dispose(): void {
    this.channelMapper?.dispose();
    this.pool.dispose();
  }
}

/** torch.nn.Identity (bsr_sr: the low-resolution image is the conditioning as it is). */
export class IdentityEncoder {
  readonly kind = 'identity';
  encode(x: Tensor): Tensor {
    return ops.scale(x, 1);
  }
  dispose(): void {}
}

/**
 * `__is_first_stage__` (inpainting_big, scripts/inpaint.py): the conditioning is the first stage's
 * encoding of the masked image (VQ: pre-quantisation h; no scale_factor) concatenated with the mask,
 * in [-1, 1], resized to the latents by nearest neighbour (F.interpolate's default: the top-left pixel).
 */
export class FirstStageConditioning {
  readonly kind = 'first_stage';
  constructor(
    private firstStage: AutoencoderKL | VQModel,
    private factor: number,
    private pick: Tensor,
  ) {}
  /** image [B, 3, H, W] in [0, 1], mask [B, 1, H, W] with 1 where to fill (binary) */
  encode(input: { image: Tensor; mask: Tensor }): Tensor {
    const { image, mask } = input;
    if (image.rank !== 4 || mask.rank !== 4 || mask.shape[1] !== 1 || image.shape[0] !== mask.shape[0] || image.shape[2] !== mask.shape[2] || image.shape[3] !== mask.shape[3]) {
      throw new Error(`inpainting: image must be [B, 3, H, W] and mask [B, 1, H, W] of the same size, got ${shapeStr(image.shape)} and ${shapeStr(mask.shape)}`);
    }
    if (image.shape[2] % this.factor || image.shape[3] % this.factor) throw new Error(`inpainting: the image size must be a multiple of ${this.factor}`);
    return image.engine.scope(() => {
      const masked = ops.scale(ops.mul(ops.scale(mask, -1, 1), image), 2, -1); // (1 - mask) * image, to [-1, 1]
      const fs = this.firstStage;
      const h = fs instanceof VQModel ? fs.encode(masked) : fs.encode(masked).mean;
      const m = ops.conv2d(ops.scale(mask, 2, -1), this.pick, undefined, { stride: this.factor, padding: 0 });
      return ops.concat([h, m], 1);
    });
  }
  dispose(): void {
    this.pick.dispose();
  }
}

export type CondStage = ClassEmbedder | BERTEmbedder | SpatialRescaler | IdentityEncoder | FirstStageConditioning;

// ---------------------------------------------------------------- the model

export interface FromOriginalOptions extends IOOptions {
  /** model.ckpt / .safetensors: path (Node), URL, Blob/File, bytes, or an opened WeightSource */
  checkpoint: CheckpointSource;
  /** config.yaml: its text, a path (Node) or URL, or the parsed object */
  config: string | URL | Record<string, unknown>;
  /** for text models: a BertTokenizer or the path/URL of a folder with bert-base-uncased's vocab.txt */
  tokenizer?: BertTokenizer | string;
  /** use the UNet's EMA copy (LitEma: model_ema.diffusion_model<name without dots>) instead of
   * model.diffusion_model.*; the release scripts sample without it (default false) */
  useEma?: boolean;
}

export interface LatentDiffusionGenerateOptions {
  classLabels?: readonly number[];
  prompt?: string | readonly string[];
  /** token id rows for BERTEmbedder models without a tokenizer (layout2img) */
  tokens?: readonly (readonly number[])[];
  /** semantic synthesis: the one-hot map [B, in_channels, H, W] at image resolution */
  segmentation?: Tensor;
  /** super-resolution: the low-resolution image in [-1, 1], [B, 3, h, w] at the latent size */
  lowRes?: Tensor;
  /** inpainting: the image [B, 3, H, W] in [0, 1] and a binary mask [B, 1, H, W] (1 = fill); the
   * result keeps the image outside the mask, as scripts/inpaint.py saves it */
  image?: Tensor;
  mask?: Tensor;
  /** unconditional models: how many images */
  batchSize?: number;
  steps?: number;
  eta?: number;
  guidanceScale?: number;
  /** image i of the batch draws its noise from seed + i (default 0) */
  seed?: number;
  /** x_T [B, C, h, w] instead of seeded noise */
  latents?: Tensor | Float32Array;
  signal?: AbortSignal;
  onStep?: (info: { step: number; total: number; timestep: number }) => void;
}

export interface LatentDiffusionOutput {
  /** [B, 3, H, W] in [0, 1] */
  images: Tensor;
  /** z_0 [B, C, h, w] before decoding */
  latents: Tensor;
  rgba: RgbaImage[];
}

export class LatentDiffusion {
  readonly engine: Engine;
  readonly unet: UNet2DConditionModel | UNet2DModel;
  readonly firstStage: AutoencoderKL | VQModel;
  readonly condStage: CondStage | null;
  readonly scaleFactor: number;
  readonly conditioningKey: ConditioningKey;
  readonly condStageKey: string;
  /** alphas_cumprod as the release stores it (float32 values) */
  readonly alphasCumprod: Float64Array;
  readonly channels: number;
  readonly config: TargetConfig;

  private constructor(init: {
    engine: Engine;
    unet: UNet2DConditionModel | UNet2DModel;
    firstStage: AutoencoderKL | VQModel;
    condStage: CondStage | null;
    scaleFactor: number;
    conditioningKey: ConditioningKey;
    condStageKey: string;
    alphasCumprod: Float64Array;
    channels: number;
    config: TargetConfig;
  }) {
    this.engine = init.engine;
    this.unet = init.unet;
    this.firstStage = init.firstStage;
    this.condStage = init.condStage;
    this.scaleFactor = init.scaleFactor;
    this.conditioningKey = init.conditioningKey;
    this.condStageKey = init.condStageKey;
    this.alphasCumprod = init.alphasCumprod;
    this.channels = init.channels;
    this.config = init.config;
  }

  /** Loads a release: the YAML decides the modules, the checkpoint gives the weights. */
  static async fromOriginal(engine: Engine, opts: FromOriginalOptions): Promise<LatentDiffusion> {
    const cfgText = typeof opts.config === 'object' && !(opts.config instanceof URL) ? null : String(opts.config);
    const root =
      cfgText === null
        ? parseReleaseConfig(JSON.stringify(opts.config))
        : parseReleaseConfig(/\n/.test(cfgText) || /^\s*model\s*:/.test(cfgText) ? cfgText : await readText(cfgText, { ...opts, onProgress: undefined }), /\n/.test(cfgText) ? 'config.yaml' : cfgText);
    if (root.target !== LD_TARGET) throw new OriginalConfigError(`model target '${root.target}' is not supported (expected ${LD_TARGET})`);
    const p = root.params;
    const where = LD_TARGET;
    const param = (k: string) => p[k];
    if ((param('parameterization') ?? 'eps') !== 'eps') throw new OriginalConfigError(`${where}: parameterization '${String(param('parameterization'))}' is not supported (eps only)`);
    if ((param('beta_schedule') ?? 'linear') !== 'linear') throw new OriginalConfigError(`${where}: beta_schedule '${String(param('beta_schedule'))}' is not supported (linear only)`);
    if (param('given_betas') != null) throw new OriginalConfigError(`${where}: given_betas is not supported`);
    const T = num(p, 'timesteps', 1000, where);
    const ls = num(p, 'linear_start', 1e-4, where);
    const le = num(p, 'linear_end', 2e-2, where);
    const unetPlan = planUNet(subConfig(p, 'unet_config', where) as TargetConfig);
    const fsCfg = subConfig(p, 'first_stage_config', where);
    if (typeof fsCfg === 'string') throw new OriginalConfigError(`${where}: first_stage_config '${fsCfg}' is not supported`);
    const fsPlan = planFirstStage(fsCfg);
    const csCfg = subConfig(p, 'cond_stage_config', where);
    let ckey: ConditioningKey;
    if (csCfg === '__is_unconditional__') ckey = 'none';
    else {
      const explicit = param('conditioning_key');
      const k = explicit ?? ((param('concat_mode') ?? true) ? 'concat' : 'crossattn');
      if (k === null) ckey = 'none';
      else if (k === 'crossattn' || k === 'concat' || k === 'hybrid') ckey = k;
      else throw new OriginalConfigError(`${where}: conditioning_key '${String(k)}' is not supported`);
    }
    if (typeof csCfg === 'string' && csCfg !== '__is_unconditional__' && csCfg !== '__is_first_stage__') throw new OriginalConfigError(`${where}: cond_stage_config '${csCfg}' is not supported`);
    if (ckey !== 'none' && (ckey === 'crossattn' || ckey === 'hybrid') !== (unetPlan.kind === 'UNet2DConditionModel')) {
      throw new OriginalConfigError(`${where}: conditioning_key '${ckey}' needs ${ckey === 'concat' ? 'a UNet without' : 'a UNet with'} use_spatial_transformer`);
    }

    const ckpt: WeightSource = await openCheckpoint(opts.checkpoint, opts);
    const made: { dispose(): void }[] = [];
    try {
      const dtype = engine.f16 ? 'f16' : 'f32';
      // UNet
      let uview = ckpt.withPrefix('model.diffusion_model.');
      if (!uview.names().length) throw new OriginalConfigError(`${ckpt.label}: no 'model.diffusion_model.*' weights: not a latent-diffusion checkpoint`);
      if (opts.useEma) {
        const fromEma = new Map(uview.names().map((k) => [`model_ema.diffusion_model${k.replace(/\./g, '')}`, k]));
        const missing = [...fromEma.keys()].filter((k) => !ckpt.has(k));
        if (missing.length) throw new OriginalConfigError(`${ckpt.label}: useEma: the checkpoint has no EMA copy of ${missing.length} UNet weight(s), e.g. '${missing[0]}'`);
        uview = ckpt.renamed((n) => fromEma.get(n) ?? null);
      }
      const usrc = mappedSource(uview, mapOriginalUNetKeys(uview.names(), unetPlan));
      const unet = unetPlan.kind === 'UNet2DConditionModel' ? await UNet2DConditionModel.load(engine, unetPlan.config, usrc) : await UNet2DModel.load(engine, unetPlan.config, usrc);
      made.push(unet);
      // first stage
      const fview = ckpt.withPrefix('first_stage_model.');
      const fsrc = mappedSource(fview, mapOriginalFirstStageKeys(fview.names(), fsPlan));
      const firstStage = fsPlan.kind === 'VQModel' ? await VQModel.load(engine, fsPlan.config, fsrc) : await AutoencoderKL.load(engine, fsPlan.config, fsrc);
      made.push(firstStage);
      // conditioning
      let condStage: CondStage | null = null;
      if (typeof csCfg === 'object') {
        const cview = ckpt.withPrefix('cond_stage_model.');
        const cp = csCfg.params;
        const cw = csCfg.target;
        if (cw === 'ldm.modules.encoders.modules.ClassEmbedder') {
          const n = num(cp, 'n_classes', 1000, cw);
          const d = num(cp, 'embed_dim', undefined, cw);
          condStage = new ClassEmbedder(await cview.upload(engine, 'embedding.weight', [n, d], { dtype }), n);
        } else if (cw === 'ldm.modules.encoders.modules.BERTEmbedder') {
          const cfg = ldmBertConfigFromCompVis({
            n_embed: num(cp, 'n_embed', undefined, cw),
            n_layer: num(cp, 'n_layer', undefined, cw),
            vocab_size: num(cp, 'vocab_size', 30522, cw),
            max_seq_len: num(cp, 'max_seq_len', 77, cw),
          });
          const src = cview.withPrefix('transformer.').renamed((k) => ldmBertKeyFromCompVis(k) ?? `unmapped:${k}`);
          const bert = await LDMBertModel.load(engine, cfg, src);
          let tok: BertTokenizer | null = null;
          if ((cp.use_tokenizer ?? true) !== false && opts.tokenizer) {
            tok = typeof opts.tokenizer === 'string' ? await BertTokenizer.fromPretrained(opts.tokenizer, { maxLength: cfg.max_position_embeddings as number, fetch: opts.fetch, signal: opts.signal, timeoutMs: opts.timeoutMs }) : opts.tokenizer;
          }
          condStage = new BERTEmbedder(bert, tok, cfg.max_position_embeddings as number);
        } else if (cw === 'ldm.modules.encoders.modules.SpatialRescaler') {
          if ((cp.method ?? 'bilinear') !== 'bilinear' || (cp.multiplier ?? 0.5) !== 0.5) throw new OriginalConfigError(`${cw}: only method bilinear with multiplier 0.5 is supported`);
          if (cp.bias === true) throw new OriginalConfigError(`${cw}: option bias: true is not supported`);
          const cin = num(cp, 'in_channels', 3, cw);
          const cout = cp.out_channels == null ? null : num(cp, 'out_channels', undefined, cw);
          const mapper = cout === null ? null : await cview.upload(engine, 'channel_mapper.weight', [cout, cin, 1, 1], { dtype });
          const pool = engine.tensor(new Float32Array(cin * 4).fill(0.25), [cin, 1, 2, 2], dtype);
          condStage = new SpatialRescaler(num(cp, 'n_stages', 1, cw), cin, mapper, pool);
        } else if (cw === 'torch.nn.Identity') {
          condStage = new IdentityEncoder();
        } else {
          throw new OriginalConfigError(`cond_stage_config target '${cw}' is not supported`);
        }
        made.push(condStage);
      } else if (csCfg === '__is_first_stage__') {
        const f = 2 ** ((fsPlan.config.block_out_channels as number[]).length - 1);
        const pick = new Float32Array(f * f);
        pick[0] = 1;
        condStage = new FirstStageConditioning(firstStage, f, engine.tensor(pick, [1, 1, f, f], dtype));
        made.push(condStage);
      }
      // scale_by_std releases learn scale_factor on the first batch and store it as a buffer
      let scaleFactor = num(p, 'scale_factor', 1, where);
      if (p.scale_by_std === true) {
        if (!ckpt.has('scale_factor')) throw new OriginalConfigError(`${ckpt.label}: scale_by_std is set but the checkpoint has no 'scale_factor'`);
        scaleFactor = (await ckpt.readF32('scale_factor'))[0];
      }
      // schedule: CompVis "linear" = linspace(sqrt(start), sqrt(end))^2 in float64, stored as float32
      const ac = new Float64Array(T);
      let prod = 1;
      for (let i = 0; i < T; i++) {
        const b = Math.sqrt(ls) + ((Math.sqrt(le) - Math.sqrt(ls)) * i) / (T - 1);
        prod *= 1 - b * b;
        ac[i] = Math.fround(prod);
      }
      await ckpt.close();
      return new LatentDiffusion({
        engine,
        unet,
        firstStage,
        condStage,
        scaleFactor,
        conditioningKey: ckey,
        condStageKey: String(p.cond_stage_key ?? ''),
        alphasCumprod: ac,
        channels: num(p, 'channels', unetPlan.config.out_channels as number, where),
        config: root,
      });
    } catch (e) {
      for (const m of made) m.dispose();
      await ckpt.close().catch(() => {});
      throw e;
    }
  }

  /**
   * A first stage on its own (the zoo in models/first_stage_models: kl-f4..f32, vq-f4..f16): its
   * config.yaml (target ldm.models.autoencoder.AutoencoderKL / VQModel) and model.ckpt. Keys may
   * also carry a 'first_stage_model.' prefix (a whole latent-diffusion checkpoint).
   */
  static async firstStageFromOriginal(engine: Engine, opts: FromOriginalOptions): Promise<AutoencoderKL | VQModel> {
    const cfgText = typeof opts.config === 'object' && !(opts.config instanceof URL) ? null : String(opts.config);
    const node =
      cfgText === null
        ? parseReleaseConfig(JSON.stringify(opts.config))
        : parseReleaseConfig(/\n/.test(cfgText) || /^\s*model\s*:/.test(cfgText) ? cfgText : await readText(cfgText, opts), /\n/.test(cfgText) ? 'config.yaml' : cfgText);
    const plan = planFirstStage(node);
    const ckpt = await openCheckpoint(opts.checkpoint, opts);
    try {
      const view = ckpt.names().some((n) => n.startsWith('first_stage_model.')) ? ckpt.withPrefix('first_stage_model.') : ckpt;
      const src = mappedSource(view, mapOriginalFirstStageKeys(view.names(), plan));
      return plan.kind === 'VQModel' ? await VQModel.load(engine, plan.config, src) : await AutoencoderKL.load(engine, plan.config, src);
    } finally {
      await ckpt.close();
    }
  }

  /** eps_theta(x_t, t, cond) as DiffusionWrapper computes it; cond is the encoder output. */
  applyModel(x: Tensor, t: number | readonly number[], cond: Tensor | null | { concat?: Tensor; crossattn?: Tensor }): Tensor {
    const c = cond instanceof Tensor ? (this.conditioningKey === 'concat' ? { concat: cond } : { crossattn: cond }) : (cond ?? {});
    const key = this.conditioningKey;
    if (key === 'none') return (this.unet as UNet2DModel).forward(x, t);
    let input = x;
    if (key === 'concat' || key === 'hybrid') {
      if (!c.concat) throw new Error(`LatentDiffusion.applyModel: conditioning_key '${key}' needs a concat conditioning tensor`);
      input = ops.concat([x, c.concat], 1);
    }
    try {
      if (key === 'concat') return (this.unet as UNet2DModel).forward(input, t);
      if (!c.crossattn) throw new Error(`LatentDiffusion.applyModel: conditioning_key '${key}' needs a crossattn context`);
      return (this.unet as UNet2DConditionModel).forward(input, t, { encoderHiddenStates: c.crossattn });
    } finally {
      if (input !== x) input.dispose();
    }
  }

  /** decode_first_stage: decode(z / scale_factor); VQ models quantise first. */
  decodeFirstStage(z: Tensor): Tensor {
    const s = ops.scale(z, 1 / this.scaleFactor);
    try {
      return this.firstStage instanceof VQModel ? this.firstStage.decode(s) : this.firstStage.decode(s);
    } finally {
      s.dispose();
    }
  }

  /** The first-stage encoding the diffusion model works on (VQ: pre-quant h; KL: the mean), times scale_factor. */
  encodeFirstStage(x: Tensor): Tensor {
    let z: Tensor;
    if (this.firstStage instanceof VQModel) z = this.firstStage.encode(x);
    else {
      const d = this.firstStage.encode(x);
      d.logvar.dispose();
      z = d.mean;
    }
    const y = ops.scale(z, this.scaleFactor);
    z.dispose();
    return y;
  }

  /** CompVis DDIM timesteps for S steps ('uniform'): range(0, T, T // S) + 1. */
  ddimTimesteps(steps: number): number[] {
    const T = this.alphasCumprod.length;
    if (!Number.isInteger(steps) || steps < 1 || steps > T) throw new Error(`LatentDiffusion: steps must be an integer in [1, ${T}], got ${steps}`);
    const c = Math.floor(T / steps);
    const ts: number[] = [];
    for (let i = 0; i < T; i += c) ts.push(i + 1);
    if (ts[ts.length - 1] >= T) {
      throw new Error(`LatentDiffusion: with steps=${steps} CompVis DDIM's timesteps range(0, ${T}, ${c}) + 1 reach ${ts[ts.length - 1]}, past the ${T}-step schedule (the original code fails too); choose steps dividing ${T}`);
    }
    return ts;
  }

  /** Builds (cond, uncond) for the options; uncond is null without guidance. */
  private conditioning(o: LatentDiffusionGenerateOptions, guided: boolean): { cond: Tensor | null; uncond: Tensor | null; B: number } {
    const cs = this.condStage;
    if (this.conditioningKey === 'none') {
      const B = o.batchSize ?? 1;
      if (guided) throw new Error('LatentDiffusion.generate: an unconditional model has no guidance (guidanceScale must be 1)');
      return { cond: null, uncond: null, B };
    }
    if (cs instanceof ClassEmbedder) {
      if (!o.classLabels?.length) throw new Error('LatentDiffusion.generate: this model is class-conditional: pass classLabels');
      const B = o.classLabels.length;
      if (!guided) return { cond: cs.encode(o.classLabels), uncond: null, B };
      // cin256-v2: 1001 classes, the last is the unconditional one (its sampling notebook)
      if (cs.nClasses !== 1001) throw new Error(`LatentDiffusion.generate: guidance needs a null class; this ClassEmbedder has ${cs.nClasses} classes and no unconditional class`);
      const cond = cs.encode(o.classLabels);
      return { cond, uncond: cs.encode(new Array(B).fill(cs.nClasses - 1)), B };
    }
    if (cs instanceof BERTEmbedder) {
      const rows: (string | readonly number[])[] = o.tokens ? [...o.tokens] : o.prompt !== undefined ? (typeof o.prompt === 'string' ? [o.prompt] : [...o.prompt]) : [];
      if (!rows.length) throw new Error('LatentDiffusion.generate: this model is text-conditional: pass prompt (or tokens)');
      const B = rows.length;
      const cond = cs.encode(rows as string[]);
      if (!guided) return { cond, uncond: null, B };
      if (o.tokens && !cs.tokenizer) {
        cond.dispose();
        throw new Error('LatentDiffusion.generate: guidance with tokens needs the tokenizer for the empty prompt');
      }
      const u1 = cs.encode(['']);
      const uncond = B === 1 ? u1 : ops.concat(new Array(B).fill(u1), 0);
      if (uncond !== u1) u1.dispose();
      return { cond, uncond, B };
    }
    if (guided) throw new Error(`LatentDiffusion.generate: guidance is not defined for this conditioning (${this.condStageKey}); use guidanceScale 1`);
    if (cs instanceof FirstStageConditioning) {
      if (!(o.image instanceof Tensor) || !(o.mask instanceof Tensor)) throw new Error('LatentDiffusion.generate: this is an inpainting model: pass image and mask (Tensors)');
      return { cond: cs.encode({ image: o.image, mask: o.mask }), uncond: null, B: o.image.shape[0] };
    }
    const input = cs instanceof SpatialRescaler ? o.segmentation : o.lowRes;
    if (!(input instanceof Tensor)) throw new Error(`LatentDiffusion.generate: this model is conditioned on '${this.condStageKey}': pass ${cs instanceof SpatialRescaler ? 'segmentation' : 'lowRes'} (a Tensor)`);
    return { cond: cs!.encode(input), uncond: null, B: input.shape[0] };
  }

  /** Samples with CompVis DDIM. */
  async generate(o: LatentDiffusionGenerateOptions = {}): Promise<LatentDiffusionOutput> {
    const engine = this.engine;
    const steps = o.steps ?? 50;
    const eta = o.eta ?? 0;
    const scale = o.guidanceScale ?? 1;
    if (!Number.isFinite(eta) || eta < 0) throw new Error(`LatentDiffusion.generate: eta must be >= 0, got ${eta}`);
    const ts = this.ddimTimesteps(steps);
    const ac = this.alphasCumprod;
    const guided = scale !== 1;
    const { cond, uncond, B } = this.conditioning(o, guided);
    const owned: Tensor[] = [cond, uncond].filter((t): t is Tensor => t !== null);
    let cin: Tensor | null = null;
    let x: Tensor | null = null;
    try {
      const latentSize = this.latentSize(cond);
      const shape = [B, this.channels, latentSize[0], latentSize[1]];
      // the engine's seed rule: image i draws all its noise from seed + i (see LDMPipeline)
      const seed = resolveSeed('LatentDiffusion.generate', o.seed ?? 0, B);
      if (o.latents instanceof Tensor) {
        if (shapeStr(o.latents.shape) !== shapeStr(shape)) throw new Error(`LatentDiffusion.generate: latents must be ${shapeStr(shape)}, got ${shapeStr(o.latents.shape)}`);
        x = ops.scale(o.latents, 1);
      } else if (o.latents) x = engine.tensor(o.latents, shape, engine.f16 ? 'f16' : 'f32');
      else x = ops.randnItems(engine, shape, seed, { dtype: engine.f16 ? 'f16' : 'f32' });
      cin = guided ? ops.concat([uncond!, cond!], 0) : cond;
      const n = shape.slice(1).reduce((a, b) => a * b, 1); // per image
      for (let i = ts.length - 1, step = 0; i >= 0; i--, step++) {
        if (o.signal?.aborted) throw new Error('LatentDiffusion.generate: aborted');
        const t = ts[i];
        const a = ac[t];
        const aPrev = i > 0 ? ac[ts[i - 1]] : ac[0];
        const sigma = eta * Math.sqrt(((1 - aPrev) / (1 - a)) * (1 - a / aPrev));
        let e: Tensor;
        if (guided) {
          const xin = ops.concat([x, x], 0);
          const out = this.applyModel(xin, t, cin);
          xin.dispose();
          e = ops.classifierFreeGuidance(out, scale);
          out.dispose();
        } else e = this.applyModel(x, t, cin);
        // x_prev = sqrt(a_prev) * (x - sqrt(1 - a) e) / sqrt(a) + sqrt(1 - a_prev - sigma^2) e + sigma z
        const c1 = Math.sqrt(aPrev) / Math.sqrt(a);
        const c2 = Math.sqrt(1 - aPrev - sigma * sigma) - (Math.sqrt(aPrev) * Math.sqrt(1 - a)) / Math.sqrt(a);
        const xs = ops.scale(x, c1);
        const es = ops.scale(e, c2);
        e.dispose();
        let next = ops.add(xs, es);
        xs.dispose();
        es.dispose();
        if (sigma > 0) {
          const z = ops.randnItems(engine, shape, seed, { offset: n * (step + 1), dtype: x.dtype });
          const zs = ops.scale(z, sigma);
          z.dispose();
          const y = ops.add(next, zs);
          zs.dispose();
          next.dispose();
          next = y;
        }
        x.dispose();
        x = next;
        o.onStep?.({ step: step + 1, total: ts.length, timestep: t });
        await engine.sync();
      }
      const decoded = this.decodeFirstStage(x);
      const s = ops.scale(decoded, 0.5, 0.5);
      decoded.dispose();
      let images = ops.clamp(s, 0, 1);
      s.dispose();
      if (this.condStage instanceof FirstStageConditioning && o.image && o.mask) {
        // inpainted = (1 - mask) * image + mask * predicted
        const { image, mask } = o;
        const pred = images;
        images = engine.scope(() => ops.add(ops.mul(ops.scale(mask, -1, 1), image), ops.mul(mask, pred)));
        pred.dispose();
      }
      const latents = x;
      x = null;
      return { images, latents, rgba: await toRgba(images) };
    } finally {
      x?.dispose();
      if (cin && cin !== cond) cin.dispose();
      for (const t of owned) t.dispose();
    }
  }

  /** latent size: from a concat conditioning, else the config's image_size. */
  private latentSize(cond: Tensor | null): [number, number] {
    if (cond && (this.conditioningKey === 'concat' || this.conditioningKey === 'hybrid')) return [cond.shape[2], cond.shape[3]];
    const s = num(this.config.params, 'image_size', undefined, LD_TARGET);
    return [s, s];
  }

  dispose(): void {
    this.unet.dispose();
    this.firstStage.dispose();
    this.condStage?.dispose();
  }
}
