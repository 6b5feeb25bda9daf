// Model parity with diffusers: every fixture case of autoencoder_kl, vq_model, unet2d,
// unet2d_condition and original_layout, within relative L2 1e-4 in f32.
import { fromSingleFile } from '../src/loaders/single_file.js';
import { describe, it, expect, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AutoencoderKL, VQModel, UNet2DModel, UNet2DConditionModel, type Engine, type Tensor } from '../src/index.js';
import { getEngine, relL2, track, reportWorst } from './helpers.js';
import { loadCase, FIXTURES, type HostTensor } from './fixture.js';

afterAll(() => reportWorst('models'));

const TOL = 1e-4;

function up(engine: Engine, h: HostTensor): Tensor {
  return engine.tensor(Float32Array.from(h.data), h.shape);
}

async function expectClose(label: string, t: Tensor, ref: HostTensor): Promise<void> {
  expect(t.shape).toEqual(ref.shape);
  const got = await t.read();
  const err = track(label, relL2(got, ref.data));
  expect(err, label).toBeLessThan(TOL);
  t.dispose();
}

function weightsBytes(name: string): Uint8Array {
  return readFileSync(join(FIXTURES, name, 'weights.safetensors'));
}

describe('AutoencoderKL vs diffusers', () => {
  for (const name of ['autoencoder_kl/small', 'autoencoder_kl/sd_layout']) {
    it(name, async () => {
      const engine = await getEngine();
      const c = loadCase(name);
      const base = engine.memory().inUseBytes;
      const vae = await AutoencoderKL.fromConfig(engine, c.config, weightsBytes(name));
      expect(vae.unexpectedWeights).toEqual([]);
      expect(engine.memory().inUseBytes - base).toBeGreaterThanOrEqual(vae.parameterBytes);
      const x = up(engine, c.input('x'));
      await expectClose(`${name} encoder_moments`, vae.encodeMoments(x), c.output('encoder_moments'));
      const { mean, logvar } = vae.encode(x);
      await expectClose(`${name} latent_mean`, mean, c.output('latent_mean'));
      await expectClose(`${name} latent_logvar`, logvar, c.output('latent_logvar'));
      const z = up(engine, c.input('z'));
      await expectClose(`${name} decode`, vae.decode(z), c.output('decode'));
      // tiled decoding: one tile covering the latents is exact; smaller tiles stitch the right shape
      await expectClose(`${name} decode one tile`, vae.decode(z, { tile: 64 }), c.output('decode'));
      const tiled = vae.decode(z, { tile: z.shape[2] / 2, overlap: 2 });
      expect(tiled.shape).toEqual(c.output('decode').shape);
      expect(relL2(await tiled.read(), c.output('decode').data)).toBeLessThan(0.5);
      tiled.dispose();
      [x, z].forEach((t) => t.dispose());
      vae.dispose();
      // disposing the model (and the test's tensors) returns every byte to the pool
      expect(engine.memory().inUseBytes).toBe(base);
    });
  }
});

describe('VQModel vs diffusers', () => {
  it('vq_model/small', async () => {
    const engine = await getEngine();
    const name = 'vq_model/small';
    const c = loadCase(name);
    const vq = await VQModel.fromConfig(engine, c.config, weightsBytes(name));
    const x = up(engine, c.input('x'));
    const h = vq.encode(x);
    const hv = await h.read();
    expect(track(`${name} latents`, relL2(hv, c.output('latents').data))).toBeLessThan(TOL);
    const { quantized, indices } = vq.quantize(h);
    const idx = await indices.read();
    const refIdx = c.output('indices').data;
    let mismatches = 0;
    for (let i = 0; i < refIdx.length; i++) if (idx[i] !== refIdx[i]) mismatches++;
    expect(mismatches).toBe(0);
    indices.dispose();
    await expectClose(`${name} quantized`, quantized, c.output('quantized'));
    await expectClose(`${name} decode`, vq.decode(h), c.output('decode'));
    await expectClose(`${name} decode_force_not_quantize`, vq.decode(h, { forceNotQuantize: true }), c.output('decode_force_not_quantize'));
    [x, h].forEach((t) => t.dispose());
    vq.dispose();
  });
});

describe('UNet2DModel vs diffusers', () => {
  for (const name of ['unet2d/uncond', 'unet2d/class_cond']) {
    it(name, async () => {
      const engine = await getEngine();
      const c = loadCase(name);
      const unet = await UNet2DModel.fromConfig(engine, c.config, weightsBytes(name));
      const x = up(engine, c.input('sample'));
      const labels = name.includes('class') ? Array.from(c.input('class_labels').data) : undefined;
      const opts = labels ? { classLabels: labels } : {};
      const scalars = Array.from(c.input('timesteps_scalar').data);
      for (const t of scalars) await expectClose(`${name} t${t}`, unet.forward(x, t, opts), c.output(`sample_t${t}`));
      await expectClose(`${name} tbatch`, unet.forward(x, Array.from(c.input('timesteps_batch').data), opts), c.output('sample_tbatch'));
      x.dispose();
      unet.dispose();
    });
  }
});

describe('UNet2DConditionModel vs diffusers', () => {
  for (const name of ['unet2d_condition/conv_proj', 'unet2d_condition/linear_proj']) {
    it(name, async () => {
      const engine = await getEngine();
      const c = loadCase(name);
      const unet = await UNet2DConditionModel.fromConfig(engine, c.config, weightsBytes(name));
      expect(unet.unexpectedWeights).toEqual([]);
      const ctx = up(engine, c.input('encoder_hidden_states'));
      const x = up(engine, c.input('sample'));
      await expectClose(`${name} sample`, unet.forward(x, c.input('timestep').data[0], { encoderHiddenStates: ctx }), c.output('sample'));
      const x2 = up(engine, c.input('sample2'));
      await expectClose(`${name} sample2`, unet.forward(x2, Array.from(c.input('timesteps2').data), { encoderHiddenStates: ctx }), c.output('sample2'));
      [ctx, x, x2].forEach((t) => t.dispose());
      unet.dispose();
    });
  }
});

describe('Stable Diffusion single-file checkpoint (CompVis keys)', () => {
  it('original_layout/sd_single_file maps onto the diffusers modules', async () => {
    const engine = await getEngine();
    const name = 'original_layout/sd_single_file';
    const c = loadCase(name);
    const cfg = c.config as { unet: Record<string, unknown>; vae: Record<string, unknown> };
    const bytes = weightsBytes(name);
    const unet = await fromSingleFile(engine, bytes, 'unet', { config: cfg.unet });
    expect(unet.unexpectedWeights).toEqual([]);
    const ctx = up(engine, c.input('unet.encoder_hidden_states'));
    const x = up(engine, c.input('unet.sample'));
    await expectClose(`${name} unet`, unet.forward(x, c.input('unet.timestep').data[0], { encoderHiddenStates: ctx }), c.output('unet.sample'));
    const vae = await fromSingleFile(engine, bytes, 'vae', { config: cfg.vae });
    expect(vae.unexpectedWeights).toEqual([]);
    const vx = up(engine, c.input('vae.x'));
    const { mean, logvar } = vae.encode(vx);
    logvar.dispose();
    await expectClose(`${name} vae mean`, mean, c.output('vae.latent_mean'));
    const z = up(engine, c.input('vae.z'));
    await expectClose(`${name} vae decode`, vae.decode(z), c.output('vae.decode'));
    // The same through the models' own statics (DESIGN.md's API), which share the mapping.
    const unet2 = await UNet2DConditionModel.fromSingleFile(engine, bytes, { config: cfg.unet });
    await expectClose(`${name} unet (static)`, unet2.forward(x, c.input('unet.timestep').data[0], { encoderHiddenStates: ctx }), c.output('unet.sample'));
    const vae2 = await AutoencoderKL.fromSingleFile(engine, bytes, { config: cfg.vae });
    await expectClose(`${name} vae decode (static)`, vae2.decode(z), c.output('vae.decode'));
    await expect(UNet2DConditionModel.fromSingleFile(engine, bytes, undefined as never)).rejects.toThrow(/config/);
    [ctx, x, vx, z].forEach((t) => t.dispose());
    unet.dispose();
    vae.dispose();
    unet2.dispose();
    vae2.dispose();
  });
});
