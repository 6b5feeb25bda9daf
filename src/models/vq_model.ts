// VQModel (the VQ-regularised first stage of LDM): the diffusion model works on the continuous
// pre-quantisation latents; decode() snaps them to the codebook first (quantisation absorbed into
// the decoder) unless forceNotQuantize.
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { Conv2d, ParamLoader, sequential, type TensorSource } from './nn.js';
import { Decoder, Encoder, vaeShape, type VaeShape } from './vae.js';
import { ConfigReader, type Config } from '../runtime/config.js';
import { Model, buildModel } from './model.js';

interface VQModelParts {
  shape: VaeShape;
  scalingFactor: number;
  embedDim: number;
  numEmbeddings: number;
  encoder: Encoder;
  decoder: Decoder;
  quantConv: Conv2d;
  postQuantConv: Conv2d;
  codebook: Tensor;
}

export class VQModel extends Model {
  readonly shape: VaeShape;
  readonly scalingFactor: number;
  readonly embedDim: number;
  readonly numEmbeddings: number;
  private readonly encoder: Encoder;
  private readonly decoder: Decoder;
  private readonly quantConv: Conv2d;
  private readonly postQuantConv: Conv2d;
  /** [K, embedDim] */
  readonly codebook: Tensor;

  private constructor(engine: Engine, config: Config, L: ParamLoader, p: VQModelParts) {
    super(engine, config, L);
    this.shape = p.shape;
    this.scalingFactor = p.scalingFactor;
    this.embedDim = p.embedDim;
    this.numEmbeddings = p.numEmbeddings;
    this.encoder = p.encoder;
    this.decoder = p.decoder;
    this.quantConv = p.quantConv;
    this.postQuantConv = p.postQuantConv;
    this.codebook = p.codebook;
  }

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<VQModel> {
    const name = 'VQModel';
    const c = new ConfigReader(name, config);
    const s = vaeShape(config, name);
    c.oneOf('lookup_from_codebook', [false], false);
    const embedDim = c.int('vq_embed_dim', s.latentChannels);
    const K = c.int('num_vq_embeddings', 256);
    const scalingFactor = c.positive('scaling_factor', 0.18215);
    return buildModel(
      engine,
      source,
      async (L): Promise<VQModelParts> => ({
        shape: s,
        embedDim,
        numEmbeddings: K,
        scalingFactor,
        encoder: await Encoder.load(L, s, s.latentChannels),
        quantConv: await Conv2d.load(L, 'quant_conv', s.latentChannels, embedDim, { kernel: 1 }),
        codebook: await L.get('quantize.embedding.weight', [K, embedDim]),
        postQuantConv: await Conv2d.load(L, 'post_quant_conv', embedDim, s.latentChannels, { kernel: 1 }),
        decoder: await Decoder.load(L, s),
      }),
      (L, parts) => new VQModel(engine, config, L, parts),
    );
  }

  /** Pre-quantisation latents h = quant_conv(encoder(x)). */
  encode(x: Tensor): Tensor {
    this.checkInput('encode', x, this.shape.inChannels);
    return sequential(x, this.encoder, this.quantConv);
  }

  /** Nearest codebook entry per position: { quantized, indices (flat over b, h, w) }. */
  quantize(h: Tensor): { quantized: Tensor; indices: Tensor } {
    this.checkInput('quantize', h, this.embedDim);
    return ops.vqLookup(h, this.codebook);
  }

  decode(h: Tensor, opts: { forceNotQuantize?: boolean } = {}): Tensor {
    this.checkInput('decode', h, this.embedDim);
    const quantize = (x: Tensor) => this.quantize(x).quantized; // the indices die with the step's scope
    return sequential(h, ...(opts.forceNotQuantize ? [] : [quantize]), this.postQuantConv, this.decoder);
  }
}
