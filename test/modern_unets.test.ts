// The modern UNet2DConditionModel configurations against diffusers 0.31 (tools/pyref/gen_modern_unets.py):
// SD 2.x-shaped (linear projection, upcast_attention, heads per block), SDXL-shaped (text_time added
// embeddings, DownBlock2D at level 0, transformer_layers_per_block [1, 2, 3]) and LCM (time_cond_proj_dim,
// per-layer transformer_layers_per_block lists). Weights are seeded from their names on both sides.
// Relative L2 <= 1e-4 in f32. Plus the SDXL single-file (sgm key) mapping and the input checks.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { UNet2DConditionModel, type Engine, type Tensor } from '../src/index.js';
import { writeSafetensors } from '../src/runtime/safetensors.js';
import { getEngine, relL2, track, reportWorst } from './helpers.js';
import type { FixtureCase, HostTensor } from './fixture.js';
import { seededValues } from './seeded.js';
import { loadModern } from './modern_fixture.js';
import { guidanceScaleEmbedding } from '../src/models/unet_common.js';

afterAll(() => reportWorst('modern UNets vs diffusers'));

const TOL = 1e-4;
let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const up = (h: HostTensor): Tensor => engine.tensor(Float32Array.from(h.data), h.shape);

async function expectClose(label: string, t: Tensor, ref: HostTensor, tol = TOL): Promise<void> {
  expect(t.shape).toEqual(ref.shape);
  const err = track(label, relL2(await t.read(), ref.data));
  t.dispose();
  expect(err, label).toBeLessThan(tol);
}

/** Runs the case's two calls (sample at one timestep, sample2 with one per item). */
async function runCase(label: string, unet: UNet2DConditionModel, c: FixtureCase, extra: (owned: Tensor[]) => object): Promise<void> {
  const owned: Tensor[] = [];
  const ctx = up(c.input('encoder_hidden_states'));
  const x = up(c.input('sample'));
  const x2 = up(c.input('sample2'));
  owned.push(ctx, x, x2);
  const opts = { encoderHiddenStates: ctx, ...extra(owned) };
  await expectClose(`${label} sample`, unet.forward(x, c.input('timestep').data[0], opts), c.output('sample'));
  await expectClose(`${label} sample2`, unet.forward(x2, Array.from(c.input('timesteps2').data), opts), c.output('sample2'));
  owned.forEach((t) => t.dispose());
}

function textTime(c: FixtureCase, owned: Tensor[], idsAsTensor: boolean) {
  const textEmbeds = up(c.input('text_embeds'));
  const ids = c.input('time_ids');
  const K = ids.shape[1];
  const rows = Array.from({ length: ids.shape[0] }, (_, b) => Array.from(ids.data.subarray(b * K, (b + 1) * K)));
  const timeIds = idsAsTensor ? up(ids) : rows;
  owned.push(textEmbeds, ...(idsAsTensor ? [timeIds as Tensor] : []));
  return { addedCondKwargs: { textEmbeds, timeIds } };
}

describe('modern UNet2DConditionModel configurations vs diffusers', () => {
  it('sd2_unet: linear projection, upcast_attention, heads per block', async () => {
    const { c, bytes } = loadModern('sd2_unet');
    expect(c.config.upcast_attention).toBe(true);
    const unet = await UNet2DConditionModel.fromConfig(engine, c.config, bytes);
    expect(unet.unexpectedWeights).toEqual([]);
    await runCase('sd2_unet', unet, c, () => ({}));
    unet.dispose();
  });

  it('sdxl_unet: text_time added embeddings (time ids as lists and as a tensor), transformer_layers_per_block [1, 2, 3]', async () => {
    const { c, bytes } = loadModern('sdxl_unet');
    const unet = await UNet2DConditionModel.fromConfig(engine, c.config, bytes);
    expect(unet.unexpectedWeights).toEqual([]);
    expect(unet.hasTextTimeEmbedding).toBe(true);
    await runCase('sdxl_unet', unet, c, (o) => textTime(c, o, false));
    await runCase('sdxl_unet (ids tensor)', unet, c, (o) => textTime(c, o, true));
    unet.dispose();
  });

  it('lcm_unet: time_cond_proj_dim with the guidance embedding made here; per-layer transformer_layers_per_block', async () => {
    const { c, bytes } = loadModern('lcm_unet');
    const unet = await UNet2DConditionModel.fromConfig(engine, c.config, bytes);
    expect(unet.unexpectedWeights).toEqual([]);
    expect(unet.timeCondProjDim).toBe(12);
    // the helper against diffusers' get_guidance_scale_embedding(guidance - 1)
    const w = unet.guidanceEmbedding(Array.from(c.input('guidance_scale').data));
    expect(w.shape).toEqual(c.input('timestep_cond').shape);
    const err = relL2(await w.read(), c.input('timestep_cond').data);
    track('lcm guidance embedding', err);
    expect(err).toBeLessThan(1e-6);
    await runCase('lcm_unet', unet, c, () => ({ timestepCond: w }));
    // the diffusers tensor itself gives the same
    await runCase('lcm_unet (diffusers w)', unet, c, (o) => {
      const t = up(c.input('timestep_cond'));
      o.push(t);
      return { timestepCond: t };
    });
    // one scale broadcast over a batch
    const w1 = unet.guidanceEmbedding(8, 2);
    const w1v = await w1.read();
    expect(Array.from(w1v.subarray(0, 12))).toEqual(Array.from(w1v.subarray(12)));
    [w, w1].forEach((t) => t.dispose());
    unet.dispose();
  });
});

describe('SDXL single-file checkpoint (Stability sgm keys: model.diffusion_model.*)', () => {
  it('label_emb.0.0/0.2 and the numbered input/middle/output blocks map onto the diffusers modules', async () => {
    const { c, manifest } = loadModern('sdxl_unet');
    // the keys diffusers' convert_ldm_unet_checkpoint maps back (checked by the generator), values seeded by diffusers name
    const t: Parameters<typeof writeSafetensors>[0] = {};
    for (const e of manifest) t[`model.diffusion_model.${e.original!}`] = { dtype: 'F32', shape: e.shape, data: seededValues(e.key, e.shape) };
    expect(Object.keys(t).some((k) => k.includes('label_emb.0.2.weight'))).toBe(true);
    const unet = await UNet2DConditionModel.fromSingleFile(engine, writeSafetensors(t), { config: c.config });
    expect(unet.unexpectedWeights).toEqual([]);
    await runCase('sdxl single file', unet, c, (o) => textTime(c, o, false));
    unet.dispose();
  });
});

describe('checkFits: largestActivationBytes for the new layouts', () => {
  it('equals the largest tensor a forward allocates (SDXL layout: no attention at level 0, 3 transformer layers; SD2; LCM)', async () => {
    for (const name of ['sdxl_unet', 'sd2_unet', 'lcm_unet']) {
      const { c, bytes } = loadModern(name);
      const unet = await UNet2DConditionModel.fromConfig(engine, c.config, bytes);
      const core = (unet as unknown as { core: { largestActivationBytes(b: number, h: number, w: number, e: number): number } }).core;
      for (const [B, h, w] of [[2, 8, 8], [1, 16, 12]]) {
        const ctx = engine.tensor(new Float32Array(B * 7 * unet.crossAttentionDim).fill(0.1), [B, 7, unet.crossAttentionDim]);
        const x = engine.tensor(new Float32Array(B * 4 * h * w).fill(0.2), [B, 4, h, w]);
        const extra =
          name === 'sdxl_unet'
            ? { addedCondKwargs: { textEmbeds: engine.tensor(new Float32Array(B * 24).fill(0.3), [B, 24]), timeIds: Array.from({ length: B }, () => [h * 8, w * 8, 0, 0, h * 8, w * 8]) } }
            : name === 'lcm_unet'
              ? { timestepCond: unet.guidanceEmbedding(4, B) }
              : {};
        let largest = 0;
        const empty = engine.empty.bind(engine);
        engine.empty = (shape, dtype, op, forUpload) => {
          largest = Math.max(largest, shape.reduce((a, b) => a * b, 1) * 4);
          return empty(shape, dtype, op, forUpload);
        };
        try {
          unet.forward(x, 10, { encoderHiddenStates: ctx, ...extra }).dispose();
        } finally {
          engine.empty = empty;
        }
        expect(core.largestActivationBytes(B, h, w, 4), `${name} B${B} ${h}x${w}`).toBe(largest);
        [ctx, x].forEach((t) => t.dispose());
        Object.values(extra).forEach((v) => (v instanceof Object && 'dispose' in v ? (v as Tensor).dispose() : (v as { textEmbeds: Tensor }).textEmbeds.dispose()));
      }
      unet.dispose();
    }
  });
});

describe('modern UNet input and config checks', () => {
  it('text_time: missing or misshapen addedCondKwargs are clear errors and leak nothing', async () => {
    const { c, bytes } = loadModern('sdxl_unet');
    const unet = await UNet2DConditionModel.fromConfig(engine, c.config, bytes);
    const ctx = up(c.input('encoder_hidden_states'));
    const x = up(c.input('sample'));
    const te = up(c.input('text_embeds'));
    const ids = [
      [1024, 1024, 0, 0, 1024, 1024],
      [1024, 1024, 0, 0, 1024, 1024],
    ];
    const base = engine.memory().inUseBytes;
    const bad: [object, RegExp][] = [
      [{}, /addition_embed_type "text_time" \(SDXL\): pass addedCondKwargs/],
      [{ addedCondKwargs: { textEmbeds: ctx, timeIds: ids } }, /textEmbeds must be a Tensor \[2, P\]/],
      [{ addedCondKwargs: { textEmbeds: te, timeIds: [ids[0]] } }, /timeIds must be 2 lists of 6 numbers/],
      [{ addedCondKwargs: { textEmbeds: te, timeIds: [ids[0], [1, 2, 3]] } }, /timeIds must be 2 lists of 6 numbers .* got a row \[1,2,3\]/],
      [{ addedCondKwargs: { textEmbeds: te, timeIds: [ids[0], [1, 2, 3, 4, 5, NaN]] } }, /not a finite number/],
      [{ addedCondKwargs: { textEmbeds: te, timeIds: x } }, /timeIds must be .* Tensor \[2, 6\], got a Tensor \[2, 4, 8, 8\]/],
      [{ addedCondKwargs: { textEmbeds: te, timeIds: ids }, timestepCond: te }, /no time_cond_proj_dim/],
    ];
    for (const [extra, re] of bad) expect(() => unet.forward(x, 500, { encoderHiddenStates: ctx, ...extra })).toThrow(re);
    // pooled width that leaves no whole number of time ids
    const te5 = engine.tensor(new Float32Array(2 * 5).fill(0.5), [2, 5]);
    expect(() => unet.forward(x, 500, { encoderHiddenStates: ctx, addedCondKwargs: { textEmbeds: te5, timeIds: ids } })).toThrow(/projection_class_embeddings_input_dim 72 leaves 67/);
    te5.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
    // a UNet without text_time refuses them
    const sd2 = loadModern('sd2_unet');
    const plain = await UNet2DConditionModel.fromConfig(engine, sd2.c.config, sd2.bytes);
    const ctx2 = up(sd2.c.input('encoder_hidden_states'));
    expect(() => plain.forward(x, 1, { encoderHiddenStates: ctx2, addedCondKwargs: { textEmbeds: te, timeIds: ids } })).toThrow(/no addition_embed_type "text_time"/);
    expect(() => plain.guidanceEmbedding(2)).toThrow(/no time_cond_proj_dim/);
    [ctx, x, te, ctx2].forEach((t) => t.dispose());
    unet.dispose();
    plain.dispose();
  });

  it('guidanceScaleEmbedding: diffusers formula in float64 (sin first, divisor half - 1), odd dims zero-padded', async () => {
    const ws = [0, 6.5, 0.25];
    const dim = 9;
    const t = guidanceScaleEmbedding(engine, ws, dim);
    const got = await t.read();
    t.dispose();
    const half = 4;
    ws.forEach((w, b) => {
      for (let j = 0; j < half; j++) {
        const arg = w * 1000 * Math.exp((-j * Math.log(10000)) / (half - 1));
        // arguments up to 6500 rad: float32 rounding of the frequency moves the sine by up to ~1e-3
        expect(Math.abs(got[b * dim + j] - Math.sin(arg))).toBeLessThan(2e-3);
        expect(Math.abs(got[b * dim + half + j] - Math.cos(arg))).toBeLessThan(2e-3);
      }
      expect(got[b * dim + 8]).toBe(0);
    });
    expect(() => guidanceScaleEmbedding(engine, [NaN], 8)).toThrow(/not a finite number/);
  });

  it('LCM: timestepCond must be [B, time_cond_proj_dim]', async () => {
    const { c, bytes } = loadModern('lcm_unet');
    const unet = await UNet2DConditionModel.fromConfig(engine, c.config, bytes);
    const ctx = up(c.input('encoder_hidden_states'));
    const x = up(c.input('sample'));
    const w = unet.guidanceEmbedding(4, 1);
    expect(() => unet.forward(x, 500, { encoderHiddenStates: ctx, timestepCond: w })).toThrow(/timestepCond must be \[2, 12\], got \[1, 12\]/);
    [ctx, x, w].forEach((t) => t.dispose());
    unet.dispose();
  });

  it('config: asymmetrical transformer_layers_per_block needs its reverse list; unsupported addition types are named', async () => {
    const { c, bytes } = loadModern('lcm_unet');
    const base = engine.memory().inUseBytes;
    await expect(UNet2DConditionModel.fromConfig(engine, { ...c.config, reverse_transformer_layers_per_block: null }, bytes)).rejects.toThrow(
      /'reverse_transformer_layers_per_block' is required when transformer_layers_per_block lists layers per block/,
    );
    await expect(UNet2DConditionModel.fromConfig(engine, { ...c.config, reverse_transformer_layers_per_block: [[1], [2]] }, bytes)).rejects.toThrow(
      /'reverse_transformer_layers_per_block\[0\]' must list 2 integers/,
    );
    await expect(UNet2DConditionModel.fromConfig(engine, { ...c.config, addition_embed_type: 'text_image' }, bytes)).rejects.toThrow(/unsupported value "text_image" for config key 'addition_embed_type'/);
    const sdxl = loadModern('sdxl_unet');
    await expect(UNet2DConditionModel.fromConfig(engine, { ...sdxl.c.config, addition_time_embed_dim: null }, sdxl.bytes)).rejects.toThrow(/'addition_time_embed_dim' is required/);
    expect(engine.memory().inUseBytes).toBe(base);
  });
});
