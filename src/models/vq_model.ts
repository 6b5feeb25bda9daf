// VQModel (the VQ-regularised first stage of LDM): the diffusion model works on the continuous
// pre-quantisation latents; decode() snaps them to the codebook first (quantisation absorbed into
// the decoder) unless forceNotQuantize.
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { Conv2d, ParamLoader, chain, type TensorSource } from './nn.js';
import { Decoder, Encoder, vaeShape, type VaeShape } from './vae.js';
import { configNumber, requireValues, type Config } from './config.js';
import { Model } from './model.js';

export class VQModel extends Model {
  readonly shape!: VaeShape;
  readonly scalingFactor!: number;
  readonly embedDim!: number;
  readonly numEmbeddings!: number;
  private encoder!: Encoder;
  private decoder!: Decoder;
  private quantConv!: Conv2d;
  private postQuantConv!: Conv2d;
  /** [K, embedDim] */
  codebook!: Tensor;

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<VQModel> {
    const name = 'VQModel';
    const s = vaeShape(config, name);
    requireValues(name, 'lookup_from_codebook', config.lookup_from_codebook ?? false, [false]);
    const embedDim = configNumber(config, 'vq_embed_dim', s.latentChannels, name);
    const K = configNumber(config, 'num_vq_embeddings', 256, name);
    const L = new ParamLoader(engine, source);
    const m = new VQModel(engine, config, L);
    return m.track(async () => {
      Object.assign(m, {
        shape: s,
        embedDim,
        numEmbeddings: K,
        scalingFactor: configNumber(config, 'scaling_factor', 0.18215, name),
        encoder: await Encoder.load(L, s, s.latentChannels),
        quantConv: await Conv2d.load(L, 'quant_conv', s.latentChannels, embedDim, { kernel: 1 }),
        codebook: await L.get('quantize.embedding.weight', [K, embedDim]),
        postQuantConv: await Conv2d.load(L, 'post_quant_conv', embedDim, s.latentChannels, { kernel: 1 }),
        decoder: await Decoder.load(L, s),
      });
    }, source);
  }

  /** Pre-quantisation latents h = quant_conv(encoder(x)). */
  encode(x: Tensor): Tensor {
    this.checkInput('encode', x, this.shape.inChannels);
    return chain(this.encoder.forward(x), (t) => this.quantConv.forward(t));
  }

  /** Nearest codebook entry per position: { quantized, indices (flat over b, h, w) }. */
  quantize(h: Tensor): { quantized: Tensor; indices: Tensor } {
    this.checkInput('quantize', h, this.embedDim);
    return ops.vqLookup(h, this.codebook);
  }

  decode(h: Tensor, opts: { forceNotQuantize?: boolean } = {}): Tensor {
    this.checkInput('decode', h, this.embedDim);
    let q = h;
    if (!opts.forceNotQuantize) {
      const r = this.quantize(h);
      r.indices.dispose();
      q = r.quantized;
    }
    const p = this.postQuantConv.forward(q);
    if (q !== h) q.dispose();
    return chain(p, (t) => this.decoder.forward(t));
  }
}
