// Encoder and Decoder of diffusers' autoencoders (shared by AutoencoderKL and VQModel):
// DownEncoderBlock2D / UpDecoderBlock2D stacks around a UNetMidBlock2D with single-head attention.
// GroupNorm eps is 1e-6 everywhere in these, as in diffusers.
import type { Tensor } from '../runtime/tensor.js';
import { Conv2d, GroupNorm, ParamLoader, sequential, type Step } from './nn.js';
import { Downsample2D, ResnetBlock2D, SpatialAttention, Upsample2D } from './blocks.js';
import { ConfigReader, type Config } from '../runtime/config.js';

const EPS = 1e-6;

export interface VaeShape {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number;
  groups: number;
  midAttention: boolean;
  /** per level (down order): AttnDownEncoderBlock2D / AttnUpDecoderBlock2D, a 1-head attention after each resnet */
  levelAttention: boolean[];
}

export function vaeShape(config: Config, component: string): VaeShape {
  const c = new ConfigReader(component, config);
  const boc = c.intList('block_out_channels', [64]);
  const down = c.oneOfList('down_block_types', ['DownEncoderBlock2D', 'AttnDownEncoderBlock2D'], boc.map(() => 'DownEncoderBlock2D'), boc.length);
  const up = c.oneOfList('up_block_types', ['UpDecoderBlock2D', 'AttnUpDecoderBlock2D'], boc.map(() => 'UpDecoderBlock2D'), boc.length);
  // up_blocks run the levels in reverse; a level must agree on both sides (as in every released config)
  down.forEach((t, i) => {
    if ((t === 'AttnDownEncoderBlock2D') !== (up[boc.length - 1 - i] === 'AttnUpDecoderBlock2D')) {
      throw c.fail(`up_block_types[${boc.length - 1 - i}]`, up[boc.length - 1 - i], `down_block_types[${i}] and up_block_types[${boc.length - 1 - i}] disagree about attention`);
    }
  });
  c.oneOf('act_fn', ['silu'], 'silu');
  c.oneOf('norm_type', ['group'], 'group');
  return {
    inChannels: c.int('in_channels', 3),
    outChannels: c.int('out_channels', 3),
    latentChannels: c.int('latent_channels', 4),
    blockOutChannels: boc,
    layersPerBlock: c.int('layers_per_block', 1),
    groups: c.int('norm_num_groups', 32),
    midAttention: c.bool('mid_block_add_attention', true),
    levelAttention: down.map((t) => t === 'AttnDownEncoderBlock2D'),
  };
}

class MidBlock2D {
  private constructor(private r0: ResnetBlock2D, private attn: SpatialAttention | null, private r1: ResnetBlock2D) {}
  static async load(L: ParamLoader, name: string, ch: number, groups: number, attention: boolean): Promise<MidBlock2D> {
    const opts = { temb: null, groups, eps: EPS };
    return new MidBlock2D(
      await ResnetBlock2D.load(L, `${name}.resnets.0`, ch, ch, opts),
      attention ? await SpatialAttention.load(L, `${name}.attentions.0`, ch, { heads: 1, groups, eps: EPS }) : null,
      await ResnetBlock2D.load(L, `${name}.resnets.1`, ch, ch, opts),
    );
  }
  forward(x: Tensor): Tensor {
    return sequential(x, this.r0, ...(this.attn ? [this.attn] : []), this.r1);
  }
}

export class Encoder {
  private constructor(
    private convIn: Conv2d,
    private blocks: { resnets: ResnetBlock2D[]; attns: (SpatialAttention | null)[]; down: Downsample2D | null }[],
    private mid: MidBlock2D,
    private normOut: GroupNorm,
    private convOut: Conv2d,
  ) {}

  /** outChannels: 2 * latent for KL (double_z), latent for VQ */
  static async load(L: ParamLoader, s: VaeShape, outChannels: number): Promise<Encoder> {
    const E = L.scope('encoder.');
    const boc = s.blockOutChannels;
    const convIn = await Conv2d.load(E, 'conv_in', s.inChannels, boc[0]);
    const blocks = [];
    let ch = boc[0];
    for (let i = 0; i < boc.length; i++) {
      const resnets = [];
      const attns = [];
      for (let j = 0; j < s.layersPerBlock; j++) {
        resnets.push(await ResnetBlock2D.load(E, `down_blocks.${i}.resnets.${j}`, j === 0 ? ch : boc[i], boc[i], { temb: null, groups: s.groups, eps: EPS }));
        attns.push(s.levelAttention[i] ? await SpatialAttention.load(E, `down_blocks.${i}.attentions.${j}`, boc[i], { heads: 1, groups: s.groups, eps: EPS }) : null);
      }
      ch = boc[i];
      const down = i < boc.length - 1 ? await Downsample2D.load(E, `down_blocks.${i}.downsamplers.0`, ch, 0) : null;
      blocks.push({ resnets, attns, down });
    }
    const mid = await MidBlock2D.load(E, 'mid_block', ch, s.groups, s.midAttention);
    return new Encoder(convIn, blocks, mid, await GroupNorm.load(E, 'conv_norm_out', ch, s.groups, EPS), await Conv2d.load(E, 'conv_out', ch, outChannels));
  }

  forward(x: Tensor): Tensor {
    const blocks = this.blocks.flatMap((b): Step[] => [...b.resnets.flatMap((r, j): Step[] => (b.attns[j] ? [r, b.attns[j]!] : [r])), ...(b.down ? [b.down] : [])]);
    return sequential(x, this.convIn, ...blocks, this.mid, this.normOut.thenSilu, this.convOut);
  }
}

export class Decoder {
  private constructor(
    private convIn: Conv2d,
    private mid: MidBlock2D,
    private blocks: { resnets: ResnetBlock2D[]; attns: (SpatialAttention | null)[]; up: Upsample2D | null }[],
    private normOut: GroupNorm,
    private convOut: Conv2d,
  ) {}

  /** Bytes of the largest activation the decoder makes for latents [B, *, h, w] (an upsampler's
   * output: the previous block's channels at the next resolution, or the last block at full size). */
  static largestActivationBytes(s: VaeShape, B: number, h: number, w: number, bytesPerElement: number): number {
    const rev = [...s.blockOutChannels].reverse();
    let best = rev[0] * h * w;
    let scale = 1;
    for (let i = 0; i < rev.length; i++) {
      best = Math.max(best, rev[i] * h * w * scale * scale);
      if (i < rev.length - 1) {
        scale *= 2;
        best = Math.max(best, rev[i] * h * w * scale * scale);
      }
    }
    return best * B * bytesPerElement;
  }

  static async load(L: ParamLoader, s: VaeShape): Promise<Decoder> {
    const D = L.scope('decoder.');
    const rev = [...s.blockOutChannels].reverse();
    const convIn = await Conv2d.load(D, 'conv_in', s.latentChannels, rev[0]);
    const mid = await MidBlock2D.load(D, 'mid_block', rev[0], s.groups, s.midAttention);
    const blocks = [];
    let ch = rev[0];
    for (let i = 0; i < rev.length; i++) {
      const resnets = [];
      const attns = [];
      const attn = s.levelAttention[rev.length - 1 - i];
      for (let j = 0; j < s.layersPerBlock + 1; j++) {
        resnets.push(await ResnetBlock2D.load(D, `up_blocks.${i}.resnets.${j}`, j === 0 ? ch : rev[i], rev[i], { temb: null, groups: s.groups, eps: EPS }));
        attns.push(attn ? await SpatialAttention.load(D, `up_blocks.${i}.attentions.${j}`, rev[i], { heads: 1, groups: s.groups, eps: EPS }) : null);
      }
      ch = rev[i];
      const up = i < rev.length - 1 ? await Upsample2D.load(D, `up_blocks.${i}.upsamplers.0`, ch) : null;
      blocks.push({ resnets, attns, up });
    }
    return new Decoder(convIn, mid, blocks, await GroupNorm.load(D, 'conv_norm_out', ch, s.groups, EPS), await Conv2d.load(D, 'conv_out', ch, s.outChannels));
  }

  forward(z: Tensor): Tensor {
    const blocks = this.blocks.flatMap((b): Step[] => [...b.resnets.flatMap((r, j): Step[] => (b.attns[j] ? [r, b.attns[j]!] : [r])), ...(b.up ? [b.up] : [])]);
    return sequential(z, this.convIn, this.mid, ...blocks, this.normOut.thenSilu, this.convOut);
  }
}
