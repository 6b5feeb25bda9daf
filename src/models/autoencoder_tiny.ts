// AutoencoderTiny (TAESD): a small convolutional encoder/decoder for diffusion-space latents,
// used for fast previews. Loads diffusers' AutoencoderTiny folders and the original
// taesd_{encoder,decoder}.safetensors (keys '0.weight', '3.conv.0.weight', ...; the decoder's
// Sequential starts with a parameter-free Clamp, so its indices are diffusers' + 1).
// Images are in [-1, 1] as in diffusers; latent channels are read from the weights, so the SDXL,
// SD3 and FLUX.1 variants load too.
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { Conv2d, ParamLoader, sequential, type Step, type TensorSource } from './nn.js';
import { ConfigReader, type Config } from '../runtime/config.js';
import { Model, buildModel } from './model.js';
import { WeightSource, type LoadOptions } from '../runtime/weights.js';

class TinyBlock {
  private constructor(private c0: Conv2d, private c1: Conv2d, private c2: Conv2d, private skip: Conv2d | null) {}
  static async load(L: ParamLoader, name: string, cin: number, cout: number): Promise<TinyBlock> {
    return new TinyBlock(
      await Conv2d.load(L, `${name}.conv.0`, cin, cout),
      await Conv2d.load(L, `${name}.conv.2`, cout, cout),
      await Conv2d.load(L, `${name}.conv.4`, cout, cout),
      cin !== cout ? await Conv2d.load(L, `${name}.skip`, cin, cout, { kernel: 1, bias: false }) : null,
    );
  }
  /** relu(conv(relu(conv(relu(conv(x))))) + skip(x)) */
  forward(x: Tensor): Tensor {
    return x.engine.scope(() => {
      const h = sequential(x, this.c0, ops.relu, this.c1, ops.relu, this.c2);
      return ops.relu(ops.add(h, this.skip ? this.skip.forward(x) : x));
    });
  }
}

export interface TinyShape {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  encoderChannels: number[];
  decoderChannels: number[];
  encoderBlocks: number[];
  decoderBlocks: number[];
  latentMagnitude: number;
}

interface AutoencoderTinyParts {
  shape: TinyShape;
  /** the encoder's / decoder's layers in order (nn.Sequential); null when the weights lack that half */
  enc: Step[] | null;
  dec: Step[] | null;
}

export class AutoencoderTiny extends Model {
  readonly shape: TinyShape;
  private readonly enc: Step[] | null;
  private readonly dec: Step[] | null;

  private constructor(engine: Engine, config: Config, L: ParamLoader, p: AutoencoderTinyParts) {
    super(engine, config, L);
    this.shape = p.shape;
    this.enc = p.enc;
    this.dec = p.dec;
  }

  /**
   * Builds from a source with diffusers names (encoder.layers.N / decoder.layers.N). Either half may be
   * missing (a decoder-only preview model); latent channels come from the weights.
   */
  static async load(engine: Engine, config: Config, source: TensorSource & { info?(n: string): { shape: number[] } | undefined }): Promise<AutoencoderTiny> {
    const name = 'AutoencoderTiny';
    const c = new ConfigReader(name, config);
    c.oneOf('act_fn', ['relu'], 'relu');
    c.oneOf('upsampling_scaling_factor', [2], 2);
    const encCh = c.intList('encoder_block_out_channels', [64, 64, 64, 64]);
    const decCh = c.intList('decoder_block_out_channels', [64, 64, 64, 64]);
    const encBlocks = c.intList('num_encoder_blocks', [1, 3, 3, 3]);
    const decBlocks = c.intList('num_decoder_blocks', [3, 3, 3, 1]);
    const inCh = c.int('in_channels', 3);
    const outCh = c.int('out_channels', 3);
    // The weights decide the latent width (4 for SD/SDXL, 16 for SD3/FLUX.1).
    const decIn = source.info?.('decoder.layers.0.weight')?.shape[1];
    const encLayers = encCh.length + encBlocks.reduce((a, b) => a + b, 0);
    const encOut = source.info?.(`encoder.layers.${encLayers}.weight`)?.shape[0];
    const latent = decIn ?? encOut ?? c.int('latent_channels', 4);
    const s: TinyShape = {
      inChannels: inCh,
      outChannels: outCh,
      latentChannels: latent,
      encoderChannels: encCh,
      decoderChannels: decCh,
      encoderBlocks: encBlocks,
      decoderBlocks: decBlocks,
      latentMagnitude: c.num('latent_magnitude', 3),
    };
    const hasEnc = source.has('encoder.layers.0.weight');
    const hasDec = source.has('decoder.layers.0.weight');
    if (!hasEnc && !hasDec) throw new Error(`${name}: neither encoder.layers.* nor decoder.layers.* weights were found`);
    return buildModel(
      engine,
      source,
      async (L): Promise<AutoencoderTinyParts> => ({
        shape: s,
        enc: hasEnc ? await AutoencoderTiny.loadEncoder(L.scope('encoder.layers.'), s) : null,
        dec: hasDec ? await AutoencoderTiny.loadDecoder(L.scope('decoder.layers.'), s) : null,
      }),
      (L, parts) => new AutoencoderTiny(engine, config, L, parts),
    );
  }

  private static async loadEncoder(L: ParamLoader, s: TinyShape): Promise<Step[]> {
    const layers: Step[] = [];
    let idx = 0;
    let ch = s.inChannels;
    for (let i = 0; i < s.encoderBlocks.length; i++) {
      const c = s.encoderChannels[i];
      layers.push(await Conv2d.load(L, `${idx++}`, ch, c, i === 0 ? {} : { stride: 2, bias: false }));
      ch = c;
      for (let b = 0; b < s.encoderBlocks[i]; b++) layers.push(await TinyBlock.load(L, `${idx++}`, c, c));
    }
    layers.push(await Conv2d.load(L, `${idx++}`, ch, s.latentChannels));
    return layers;
  }

  private static async loadDecoder(L: ParamLoader, s: TinyShape): Promise<Step[]> {
    const layers: Step[] = [];
    let idx = 0;
    const ch = s.decoderChannels;
    layers.push(await Conv2d.load(L, `${idx++}`, s.latentChannels, ch[0]));
    layers.push(ops.relu);
    idx++;
    for (let i = 0; i < s.decoderBlocks.length; i++) {
      const final = i === s.decoderBlocks.length - 1;
      for (let b = 0; b < s.decoderBlocks[i]; b++) layers.push(await TinyBlock.load(L, `${idx++}`, ch[i], ch[i]));
      if (!final) {
        layers.push(ops.upsampleNearest2x);
        idx++;
      }
      layers.push(await Conv2d.load(L, `${idx++}`, ch[i], final ? s.outChannels : ch[i], { bias: final }));
    }
    return layers;
  }

  /** Loads the original taesd_encoder / taesd_decoder safetensors files (paths, URLs or bytes). */
  static async fromTaesd(engine: Engine, files: { encoder?: string | Uint8Array; decoder?: string | Uint8Array }, opts: LoadOptions = {}): Promise<AutoencoderTiny> {
    const open = (f: string | Uint8Array, label: string) => (typeof f === 'string' ? WeightSource.open(f, opts) : Promise.resolve(WeightSource.fromBytes(f, label)));
    const parts: WeightSource[] = [];
    if (files.encoder) parts.push((await open(files.encoder, 'taesd encoder')).renamed((n) => `encoder.layers.${n}`));
    if (files.decoder) {
      // The original decoder starts with a parameter-free Clamp at index 0.
      parts.push(
        (await open(files.decoder, 'taesd decoder')).renamed((n) => {
          const m = /^(\d+)\.(.*)$/.exec(n);
          return m ? `decoder.layers.${Number(m[1]) - 1}.${m[2]}` : n;
        }),
      );
    }
    if (!parts.length) throw new Error('AutoencoderTiny.fromTaesd: give an encoder and/or a decoder file');
    const source = WeightSource.merge(parts);
    try {
      return await AutoencoderTiny.load(engine, {}, source);
    } finally {
      await source.close();
    }
  }

  /** Image in [-1, 1] -> diffusion-space latents. */
  encode(x: Tensor): Tensor {
    if (!this.enc) throw new Error('AutoencoderTiny.encode: this model has no encoder weights');
    this.checkInput('encode', x, this.shape.inChannels);
    return sequential(x, (t) => ops.scale(t, 0.5, 0.5), ...this.enc);
  }

  /** Diffusion-space latents -> image in [-1, 1]. */
  decode(z: Tensor): Tensor {
    if (!this.dec) throw new Error('AutoencoderTiny.decode: this model has no decoder weights');
    this.checkInput('decode', z, this.shape.latentChannels);
    return sequential(z, (t) => ops.softClamp(t, this.shape.latentMagnitude), ...this.dec, (t) => ops.scale(t, 2, -1));
  }
}
