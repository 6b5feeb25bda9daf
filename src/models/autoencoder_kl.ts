// AutoencoderKL (the KL-regularised first stage of Stable Diffusion): encode -> latent_dist with
// mean and clamped log-variance, seeded sampling, decode.
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { Conv2d, ParamLoader, chain, type TensorSource } from './nn.js';
import { Decoder, Encoder, vaeShape, type VaeShape } from './vae.js';
import { configBool, configNumber, type Config } from './config.js';
import { Model } from './model.js';
import { loadFromSingleFile, type SingleFileSource } from './single_file.js';
import type { FetchOptions } from '../runtime/safetensors.js';

export class AutoencoderKL extends Model {
  readonly shape!: VaeShape;
  readonly scalingFactor!: number;
  private encoder!: Encoder;
  private decoder!: Decoder;
  private quantConv!: Conv2d | null;
  private postQuantConv!: Conv2d | null;

  static readonly componentName = 'AutoencoderKL';

  /** Loads the vae part of a Stable Diffusion 1.x single-file checkpoint (CompVis key names). */
  static fromSingleFile(engine: Engine, source: SingleFileSource, opts: { config: Config } & FetchOptions): Promise<AutoencoderKL> {
    if (!opts?.config) throw new Error('AutoencoderKL.fromSingleFile: pass { config } (the diffusers config of the component)');
    return loadFromSingleFile((e, c, s) => AutoencoderKL.load(e, c, s), engine, source, 'vae', opts.config, opts);
  }

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<AutoencoderKL> {
    const name = 'AutoencoderKL';
    const s = vaeShape(config, name);
    const L = new ParamLoader(engine, source);
    const useQuant = configBool(config, 'use_quant_conv', true, name);
    const usePost = configBool(config, 'use_post_quant_conv', true, name);
    const m = new AutoencoderKL(engine, config, L);
    return m.track(async () => {
      Object.assign(m, {
        shape: s,
        scalingFactor: configNumber(config, 'scaling_factor', 0.18215, name),
        encoder: await Encoder.load(L, s, 2 * s.latentChannels),
        decoder: await Decoder.load(L, s),
        quantConv: useQuant ? await Conv2d.load(L, 'quant_conv', 2 * s.latentChannels, 2 * s.latentChannels, { kernel: 1 }) : null,
        postQuantConv: usePost ? await Conv2d.load(L, 'post_quant_conv', s.latentChannels, s.latentChannels, { kernel: 1 }) : null,
      });
    }, source);
  }

  /** Moments before clamping: quant_conv(encoder(x)), [B, 2*latent, h, w]. */
  encodeMoments(x: Tensor): Tensor {
    this.checkInput('encode', x, this.shape.inChannels);
    const h = this.encoder.forward(x);
    return this.quantConv ? chain(h, (t) => this.quantConv!.forward(t)) : h;
  }

  /** latent_dist: mean and log-variance clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution. */
  encode(x: Tensor): { mean: Tensor; logvar: Tensor } {
    const m = this.encodeMoments(x);
    const L = this.shape.latentChannels;
    const mean = ops.slice(m, 1, 0, L);
    const logvar = chain(ops.slice(m, 1, L, 2 * L), (t) => ops.clamp(t, -30, 20));
    m.dispose();
    return { mean, logvar };
  }

  /** mean + exp(0.5 logvar) * noise, noise from the seeded generator (or given). */
  sample(dist: { mean: Tensor; logvar: Tensor }, opts: { seed?: number; noise?: Tensor } = {}): Tensor {
    const noise = opts.noise ?? ops.randn(this.engine, dist.mean.shape, opts.seed ?? 0, { dtype: dist.mean.dtype });
    const std = ops.exp(dist.logvar, 0.5);
    const scaled = ops.mul(std, noise);
    std.dispose();
    if (!opts.noise) noise.dispose();
    return chain(scaled, (t) => ops.add(t, dist.mean));
  }

  decode(z: Tensor): Tensor {
    this.checkInput('decode', z, this.shape.latentChannels);
    const h = this.postQuantConv ? this.postQuantConv.forward(z) : z;
    const out = this.decoder.forward(h);
    if (h !== z) h.dispose();
    return out;
  }
}
