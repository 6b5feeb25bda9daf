// AutoencoderKL (the KL-regularised first stage of Stable Diffusion): encode -> latent_dist with
// mean and clamped log-variance, seeded sampling, decode.
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { Conv2d, ParamLoader, sequential, type TensorSource } from './nn.js';
import { Decoder, Encoder, vaeShape, type VaeShape } from './vae.js';
import { ConfigReader, type Config } from '../runtime/config.js';
import { Model, buildModel } from './model.js';
import type { IOOptions } from '../runtime/io.js';
import { loadFromSingleFile, type SingleFileSource } from '../loaders/single_file_keys.js';

interface AutoencoderKLParts {
  shape: VaeShape;
  scalingFactor: number;
  encoder: Encoder;
  decoder: Decoder;
  quantConv: Conv2d | null;
  postQuantConv: Conv2d | null;
}

export class AutoencoderKL extends Model {
  readonly shape: VaeShape;
  readonly scalingFactor: number;
  private readonly encoder: Encoder;
  private readonly decoder: Decoder;
  private readonly quantConv: Conv2d | null;
  private readonly postQuantConv: Conv2d | null;

  private constructor(engine: Engine, config: Config, L: ParamLoader, p: AutoencoderKLParts) {
    super(engine, config, L);
    this.shape = p.shape;
    this.scalingFactor = p.scalingFactor;
    this.encoder = p.encoder;
    this.decoder = p.decoder;
    this.quantConv = p.quantConv;
    this.postQuantConv = p.postQuantConv;
  }

  static readonly componentName = 'AutoencoderKL';


  /**
   * The vae of a Stable Diffusion 1.x single-file checkpoint (CompVis key names, first_stage_model.*),
   * built with the diffusers config given (single-file checkpoints carry none).
   */
  static fromSingleFile(engine: Engine, source: SingleFileSource, opts: { config: Config } & IOOptions): Promise<AutoencoderKL> {
    if (!opts?.config) return Promise.reject(new Error('AutoencoderKL.fromSingleFile: pass { config } (the diffusers config of the component)'));
    return loadFromSingleFile(AutoencoderKL.load, engine, source, 'vae', opts.config, opts);
  }

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<AutoencoderKL> {
    const name = 'AutoencoderKL';
    const s = vaeShape(config, name);
    const c = new ConfigReader(name, config);
    // diffusers' force_upcast (default true; false in the "fp16-fix" VAEs): the SD VAE overflows in
    // f16 at 512x512, so on an f16 engine it keeps f32 weights and runs in f32 beside the f16 UNet.
    const forceUpcast = c.bool('force_upcast', true);
    const useQuant = c.bool('use_quant_conv', true);
    const usePost = c.bool('use_post_quant_conv', true);
    const scalingFactor = c.positive('scaling_factor', 0.18215);
    return buildModel(
      engine,
      source,
      async (L): Promise<AutoencoderKLParts> => ({
        shape: s,
        scalingFactor,
        encoder: await Encoder.load(L, s, 2 * s.latentChannels),
        decoder: await Decoder.load(L, s),
        quantConv: useQuant ? await Conv2d.load(L, 'quant_conv', 2 * s.latentChannels, 2 * s.latentChannels, { kernel: 1 }) : null,
        postQuantConv: usePost ? await Conv2d.load(L, 'post_quant_conv', s.latentChannels, s.latentChannels, { kernel: 1 }) : null,
      }),
      (L, parts) => new AutoencoderKL(engine, config, L, parts),
      engine.f16 && !forceUpcast ? 'f16' : 'f32',
    );
  }

  /** Moments before clamping: quant_conv(encoder(x)), [B, 2*latent, h, w]. */
  encodeMoments(x: Tensor): Tensor {
    this.checkInput('encode', x, this.shape.inChannels);
    return sequential(x, this.encoder, ...(this.quantConv ? [this.quantConv] : []));
  }

  /** latent_dist: mean and log-variance clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution. */
  encode(x: Tensor): { mean: Tensor; logvar: Tensor } {
    return this.engine.scope(() => {
      const m = this.encodeMoments(x);
      const L = this.shape.latentChannels;
      return { mean: ops.slice(m, 1, 0, L), logvar: ops.clamp(ops.slice(m, 1, L, 2 * L), -30, 20) };
    });
  }

  /** mean + exp(0.5 logvar) * noise, noise from the seeded generator (or given). */
  sample(dist: { mean: Tensor; logvar: Tensor }, opts: { seed?: number; noise?: Tensor } = {}): Tensor {
    return this.engine.scope(() => {
      const noise = opts.noise ?? ops.randn(this.engine, dist.mean.shape, opts.seed ?? 0, { dtype: dist.mean.dtype });
      return ops.add(ops.mul(ops.exp(dist.logvar, 0.5), noise), dist.mean);
    });
  }

  /**
   * Latents -> image. When an activation would exceed the device's storage binding limit (SD's
   * 512x512 decoder makes 256 MB tensors in f32), the batch is decoded one item at a time and, if
   * that is still too big, in overlapping spatial tiles whose centres are stitched together (like
   * diffusers' tiled decoding, an approximation: GroupNorm sees each tile's own statistics).
   */
  decode(z: Tensor, opts: { tile?: number; overlap?: number } = {}): Tensor {
    this.checkInput('decode', z, this.shape.latentChannels);
    const [B, , h, w] = z.shape;
    const bytes = z.dtype === 'f16' ? 2 : 4;
    const limit = this.engine.limits.maxStorageBufferBindingSize;
    const fits = (b: number, hh: number, ww: number) => Decoder.largestActivationBytes(this.shape, b, hh, ww, bytes) <= limit;
    return this.engine.scope(() => {
      if (!opts.tile && fits(B, h, w)) return this.decodeWhole(z);
      if (!opts.tile && B > 1 && fits(1, h, w)) {
        return ops.concat(
          Array.from({ length: B }, (_, b) => this.engine.scope(() => this.decodeWhole(ops.slice(z, 0, b, b + 1)))),
          0,
        );
      }
      let tile = opts.tile ?? Math.min(h, w);
      while (!fits(1, tile, tile) && tile > 8) tile = Math.floor(tile / 2);
      return this.decodeTiled(z, tile, opts.overlap ?? Math.max(2, Math.floor(tile / 4)));
    });
  }

  private decodeWhole(z: Tensor): Tensor {
    return sequential(z, ...(this.postQuantConv ? [this.postQuantConv] : []), this.decoder);
  }

  /** Decodes tiles of `tile` latent pixels with `overlap` of context on each inner side, keeping centres. */
  private decodeTiled(z: Tensor, tile: number, overlap: number): Tensor {
    const [, , h, w] = z.shape;
    const f = 2 ** (this.shape.blockOutChannels.length - 1);
    const rows: Tensor[] = [];
    for (let y0 = 0; y0 < h; y0 += tile) {
      const y1 = Math.min(h, y0 + tile);
      const cols: Tensor[] = [];
      for (let x0 = 0; x0 < w; x0 += tile) {
        const x1 = Math.min(w, x0 + tile);
        // context around the tile, clipped at the borders; only the tile's centre is kept
        const cy0 = Math.max(0, y0 - overlap);
        const cy1 = Math.min(h, y1 + overlap);
        const cx0 = Math.max(0, x0 - overlap);
        const cx1 = Math.min(w, x1 + overlap);
        cols.push(
          this.engine.scope(() => {
            const dec = this.decodeWhole(ops.slice(ops.slice(z, 2, cy0, cy1), 3, cx0, cx1));
            return ops.slice(ops.slice(dec, 2, (y0 - cy0) * f, (y1 - cy0) * f), 3, (x0 - cx0) * f, (x1 - cx0) * f);
          }),
        );
      }
      rows.push(cols.length === 1 ? cols[0] : ops.concat(cols, 3));
      if (cols.length > 1) cols.forEach((t) => t.dispose()); // early: the whole image would be held twice
    }
    return rows.length === 1 ? rows[0] : ops.concat(rows, 2);
  }
}
