// UNet2DModel: the LDM denoiser without text conditioning (unconditional or class-conditional via
// num_class_embeds, the class embedding added to the time embedding). attention_head_dim here is
// channels per head (heads = C / attention_head_dim).
import type { Engine } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import * as ops from '../kernels/index.js';
import { Conv2d, GroupNorm, ParamLoader, chain, type TensorSource } from './nn.js';
import { TimestepEmbedding } from './blocks.js';
import { DownBlock, MidBlock, UpBlock, spatialAttention } from './unet_blocks.js';
import { configBool, configList, configNumber, configOptionalNumber, requireValues, type Config } from './config.js';
import { Model } from './model.js';
import { timestepList, checkClassLabels } from './unet_common.js';

export class UNet2DModel extends Model {
  readonly inChannels!: number;
  readonly outChannels!: number;
  readonly numClassEmbeds!: number | null;
  private convIn!: Conv2d;
  private time!: TimestepEmbedding;
  private classEmbedding!: Tensor | null;
  private down!: DownBlock[];
  private mid!: MidBlock;
  private up!: UpBlock[];
  private normOut!: GroupNorm;
  private convOut!: Conv2d;
  private centerInput!: boolean;

  static async load(engine: Engine, config: Config, source: TensorSource): Promise<UNet2DModel> {
    const name = 'UNet2DModel';
    const boc = configList(config, 'block_out_channels', [224, 448, 672, 896], name);
    const downTypes = configList<string>(config, 'down_block_types', undefined, name);
    const upTypes = configList<string>(config, 'up_block_types', undefined, name);
    if (downTypes.length !== boc.length || upTypes.length !== boc.length) throw new Error(`${name}: down_block_types and up_block_types need one entry per block_out_channels`);
    downTypes.forEach((t, i) => requireValues(name, `down_block_types[${i}]`, t, ['DownBlock2D', 'AttnDownBlock2D']));
    upTypes.forEach((t, i) => requireValues(name, `up_block_types[${i}]`, t, ['UpBlock2D', 'AttnUpBlock2D']));
    requireValues(name, 'time_embedding_type', config.time_embedding_type ?? 'positional', ['positional']);
    requireValues(name, 'act_fn', config.act_fn ?? 'silu', ['silu']);
    requireValues(name, 'resnet_time_scale_shift', config.resnet_time_scale_shift ?? 'default', ['default']);
    requireValues(name, 'class_embed_type', config.class_embed_type ?? null, [null]);
    requireValues(name, 'downsample_type', config.downsample_type ?? 'conv', ['conv']);
    requireValues(name, 'upsample_type', config.upsample_type ?? 'conv', ['conv']);
    const lpb = configNumber(config, 'layers_per_block', 2, name);
    const groups = configNumber(config, 'norm_num_groups', 32, name);
    const eps = configNumber(config, 'norm_eps', 1e-5, name);
    const headDim = configOptionalNumber(config, 'attention_head_dim', name);
    const attnGroups = configOptionalNumber(config, 'attn_norm_num_groups', name) ?? groups;
    const inCh = configNumber(config, 'in_channels', 3, name);
    const outCh = configNumber(config, 'out_channels', 3, name);
    const numClass = configOptionalNumber(config, 'num_class_embeds', name);
    const tembDim = boc[0] * 4;
    const r = { temb: tembDim, groups, eps };
    const attn = spatialAttention(headDim, attnGroups, eps);
    const L = new ParamLoader(engine, source);
    const m = new UNet2DModel(engine, config, L);
    return m.track(async () => {
      const down: DownBlock[] = [];
      let ch = boc[0];
      for (let i = 0; i < boc.length; i++) {
        const final = i === boc.length - 1;
        down.push(await DownBlock.load(L, `down_blocks.${i}`, ch, boc[i], lpb, r, downTypes[i] === 'AttnDownBlock2D' ? attn : null, final ? null : { padding: configNumber(config, 'downsample_padding', 1, name) }));
        ch = boc[i];
      }
      const mid = await MidBlock.load(L, 'mid_block', ch, r, configBool(config, 'add_attention', true, name) ? spatialAttention(headDim ?? ch, attnGroups, eps) : null);
      const rev = [...boc].reverse();
      const up: UpBlock[] = [];
      let prev = rev[0];
      for (let i = 0; i < rev.length; i++) {
        const skipIn = rev[Math.min(i + 1, rev.length - 1)];
        up.push(await UpBlock.load(L, `up_blocks.${i}`, prev, rev[i], skipIn, lpb + 1, r, upTypes[i] === 'AttnUpBlock2D' ? attn : null, i < rev.length - 1));
        prev = rev[i];
      }
      Object.assign(m, {
        inChannels: inCh,
        outChannels: outCh,
        numClassEmbeds: numClass,
        centerInput: configBool(config, 'center_input_sample', false, name),
        convIn: await Conv2d.load(L, 'conv_in', inCh, boc[0]),
        time: await TimestepEmbedding.load(L, 'time_embedding', boc[0], tembDim, {
          flipSinToCos: configBool(config, 'flip_sin_to_cos', true, name),
          freqShift: configNumber(config, 'freq_shift', 0, name),
        }),
        classEmbedding: numClass ? await L.get('class_embedding.weight', [numClass, tembDim]) : null,
        down,
        mid,
        up,
        normOut: await GroupNorm.load(L, 'conv_norm_out', boc[0], configOptionalNumber(config, 'norm_num_groups', name) ?? Math.min(boc[0] / 4, 32), eps),
        convOut: await Conv2d.load(L, 'conv_out', boc[0], outCh),
      });
    }, source);
  }

  /** The noise (or v / sample) prediction. timestep: one for the batch or one per item. */
  forward(sample: Tensor, timestep: number | readonly number[], opts: { classLabels?: readonly number[] } = {}): Tensor {
    this.checkInput('forward', sample, this.inChannels);
    const B = sample.shape[0];
    const ts = timestepList('UNet2DModel.forward', timestep, B);
    let emb = this.time.forward(ts);
    if (this.classEmbedding) {
      const labels = checkClassLabels('UNet2DModel.forward', opts.classLabels, B, this.numClassEmbeds!);
      const ce = ops.embedding(this.classEmbedding, labels);
      emb = chain(emb, (e) => ops.add(e, ce));
      ce.dispose();
    } else if (opts.classLabels) {
      throw new Error('UNet2DModel.forward: classLabels given but the model has no class embedding (num_class_embeds is null)');
    }
    const tembAct = chain(emb, (e) => ops.silu(e));
    const x = this.centerInput ? ops.scale(sample, 2, -1) : sample;
    const skips: Tensor[] = [];
    let h = this.convIn.forward(x);
    if (x !== sample) x.dispose();
    skips.push(h);
    for (const d of this.down) h = d.forward(h, tembAct, skips);
    h = this.mid.forward(h, tembAct);
    for (const u of this.up) h = u.forward(h, tembAct, skips);
    tembAct.dispose();
    h = chain(h, (t) => this.normOut.forward(t, true));
    return chain(h, (t) => this.convOut.forward(t));
  }
}
