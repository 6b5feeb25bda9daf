// The diffusers module cases of fixtures/ops run through the engine's blocks: attention (self,
// cross, spatial with residual), GEGLU feed-forward, Timesteps + TimestepEmbedding, ResnetBlock2D
// (UNet and VAE), Transformer2DModel (conv and linear projections), Upsample2D with conv.
import { describe, it, expect, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WeightSource, ops, type Tensor } from '../src/index.js';
import { ParamLoader } from '../src/models/nn.js';
import { CrossAttention, FeedForwardGEGLU, ResnetBlock2D, SpatialAttention, TimestepEmbedding, Transformer2DModel, Upsample2D } from '../src/models/blocks.js';
import { getEngine, relL2, track, reportWorst } from './helpers.js';
import { loadCase, type HostTensor } from './fixture.js';

afterAll(() => reportWorst('blocks'));

type Cfg = Record<string, unknown>;

async function setup(name: string) {
  const engine = await getEngine();
  const c = loadCase(`ops/${name}`);
  // every module's weights sit under 'm.' so the blocks' name-prefixed loaders can address them
  const src = WeightSource.fromBytes(readFileSync(join(c.dir, 'weights.safetensors')), name);
  const L = new ParamLoader(engine, name === 'timestep_embedding_mlp' ? src : src.renamed((n) => `m.${n}`));
  const up = (h: HostTensor): Tensor => engine.tensor(Float32Array.from(h.data), h.shape);
  return { engine, c, L, cfg: c.config as Cfg, up };
}

async function check(label: string, t: Tensor, ref: HostTensor, L: ParamLoader, inputs: Tensor[]): Promise<void> {
  expect(t.shape).toEqual(ref.shape);
  expect(track(label, relL2(await t.read(), ref.data))).toBeLessThan(1e-5);
  t.dispose();
  inputs.forEach((x) => x.dispose());
  L.params.forEach((p) => p.dispose());
}

describe('diffusers module fixtures through the engine blocks', () => {
  it('attention_self and attention_cross', async () => {
    for (const name of ['attention_self', 'attention_cross']) {
      const { c, L, cfg, up } = await setup(name);
      const attn = await CrossAttention.load(L, 'm', cfg.query_dim as number, (cfg.cross_attention_dim as number) ?? (cfg.query_dim as number), cfg.heads as number, cfg.dim_head as number);
      const x = up(c.input('x'));
      const ctx = name === 'attention_cross' ? up(c.input('context')) : undefined;
      await check(name, attn.forward(x, ctx), c.output('y'), L, ctx ? [x, ctx] : [x]);
    }
  });

  it('attention_spatial_residual (GroupNorm + biased q/k/v + residual)', async () => {
    const { c, L, cfg, up } = await setup('attention_spatial_residual');
    const attn = await SpatialAttention.load(L, 'm', cfg.query_dim as number, { heads: cfg.heads as number, groups: cfg.norm_num_groups as number, eps: cfg.eps as number });
    const x = up(c.input('x'));
    await check('attention_spatial_residual', attn.forward(x), c.output('y'), L, [x]);
  });

  it('feedforward_geglu', async () => {
    const { c, L, cfg, up } = await setup('feedforward_geglu');
    const ff = await FeedForwardGEGLU.load(L, 'm', cfg.dim as number, (cfg.dim as number) * (cfg.mult as number));
    const x = up(c.input('x'));
    await check('feedforward_geglu', ff.forward(x), c.output('y'), L, [x]);
  });

  it('timestep_embedding_mlp', async () => {
    const { c, L, cfg } = await setup('timestep_embedding_mlp');
    const te = cfg.time_embedding as Cfg;
    const tp = cfg.time_proj as Cfg;
    const m = await TimestepEmbedding.load(L, 'time_embedding', te.in_channels as number, te.time_embed_dim as number, { flipSinToCos: tp.flip_sin_to_cos as boolean, freqShift: tp.downscale_freq_shift as number });
    await check('timestep_embedding_mlp', m.forward(Array.from(c.input('timesteps').data)), c.output('emb'), L, []);
  });

  it('resnet_block2d_temb and resnet_block2d_vae', async () => {
    for (const name of ['resnet_block2d_temb', 'resnet_block2d_vae']) {
      const { c, L, cfg, up } = await setup(name);
      const r = await ResnetBlock2D.load(L, 'm', cfg.in_channels as number, cfg.out_channels as number, { temb: (cfg.temb_channels as number | null) ?? null, groups: cfg.groups as number, eps: cfg.eps as number });
      const x = up(c.input('x'));
      let tembAct: Tensor | undefined;
      if (cfg.temb_channels) {
        const t = up(c.input('temb'));
        tembAct = ops.silu(t);
        t.dispose();
      }
      await check(name, r.forward(x, tembAct), c.output('y'), L, tembAct ? [x, tembAct] : [x]);
    }
  });

  it('transformer2d_conv_proj and transformer2d_linear_proj', async () => {
    for (const name of ['transformer2d_conv_proj', 'transformer2d_linear_proj']) {
      const { c, L, cfg, up } = await setup(name);
      const t = await Transformer2DModel.load(L, 'm', cfg.in_channels as number, {
        heads: cfg.num_attention_heads as number,
        dimHead: cfg.attention_head_dim as number,
        crossDim: cfg.cross_attention_dim as number,
        layers: 1,
        linearProjection: cfg.use_linear_projection as boolean,
        groups: cfg.norm_num_groups as number,
      });
      const x = up(c.input('x'));
      const ctx = up(c.input('context'));
      await check(name, t.forward(x, ctx), c.output('y'), L, [x, ctx]);
    }
  });

  it('upsample2d_conv', async () => {
    const { c, L, cfg, up } = await setup('upsample2d_conv');
    const u = await Upsample2D.load(L, 'm', cfg.channels as number);
    const x = up(c.input('x'));
    await check('upsample2d_conv', u.forward(x), c.output('y'), L, [x]);
  });
});

