// Pipelines against diffusers: the LDM fixture (VQModel + UNet2DModel + DDIM) step by step, the
// bundled ldm-mnist model against its reference stage by stage, and the reliability rules:
// memory stays flat over 50 generations, cancel frees everything, NaN stops the run naming the
// step, mismatched components are refused at construction.
import { describe, it, expect, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Engine, LDMPipeline, UNet2DModel, VQModel, DDIMScheduler, WeightSource, createScheduler } from '../src/index.js';
import { getEngine, relL2, track, reportWorst, randArray } from './helpers.js';
import { loadCase, readSafetensorsFile, FIXTURES } from './fixture.js';
import { randomTensorSource } from '../bench/text_encoder.js';

afterAll(() => reportWorst('pipelines'));

async function ldmFixturePipeline(engine: Engine): Promise<{ pipe: LDMPipeline; c: ReturnType<typeof loadCase> }> {
  const c = loadCase('pipelines/ldm_uncond_vq_ddim');
  const cfg = c.config as Record<string, Record<string, unknown>>;
  const w = WeightSource.fromBytes(readFileSync(join(c.dir, 'weights.safetensors')), 'ldm fixture');
  const unet = await UNet2DModel.load(engine, cfg.unet, w.withPrefix('unet.'));
  const vqvae = await VQModel.load(engine, cfg.vqvae, w.withPrefix('vqvae.'));
  return { pipe: new LDMPipeline({ unet, vqvae, scheduler: createScheduler(cfg.scheduler) }), c };
}

describe('LDMPipeline vs diffusers (pipelines/ldm_uncond_vq_ddim)', () => {
  it('matches latents at every step, the decoder indices and the final image', async () => {
    const engine = await getEngine();
    const { pipe, c } = await ldmFixturePipeline(engine);
    const steps = c.output('latents_steps');
    const per = steps.data.length / steps.shape[0];
    const seen: number[] = [];
    const out = await pipe.generate({
      batchSize: 2,
      steps: 10,
      eta: 0,
      latents: Float32Array.from(c.input('latents_T').data),
      onStep: async ({ step, timestep, latents }) => {
        seen.push(timestep);
        const got = await latents.read();
        const ref = steps.data.subarray((step - 1) * per, step * per);
        expect(track('ldm fixture latents per step', relL2(got, ref)), `step ${step}`).toBeLessThan(1e-4);
      },
    });
    expect(seen).toEqual(Array.from(c.output('timesteps').data));
    const img = await out.images.read();
    expect(track('ldm fixture image', relL2(img, c.output('image').data))).toBeLessThan(1e-4);
    expect(out.rgba).toHaveLength(2);
    expect(out.rgba[0].width).toBe(32);
    out.images.dispose();
    pipe.dispose();
  });
});

describe('bundled ldm-mnist model vs its diffusers reference', () => {
  const ref = readSafetensorsFile(join(FIXTURES, '..', '..', 'models', 'ldm-mnist', 'reference', 'reference.safetensors'));
  const N = 10;
  const labels = Array.from(ref.class_labels.data);

  it('reproduces each stage: UNet at step 0, every DDIM step, codes, decoder, images', async () => {
    const engine = await getEngine();
    const pipe = await LDMPipeline.fromPretrained(engine, 'models/ldm-mnist');
    expect(pipe.numClasses).toBe(11);
    const init = engine.tensor(ref.latents_init.data as Float32Array, [N, 4, 8, 8]);
    // (1) UNet alone at t = 951, conditional and null class
    const epsC = pipe.unet.forward(init, 951, { classLabels: labels });
    expect(track('mnist eps_cond_step0', relL2(await epsC.read(), ref.eps_cond_step0.data))).toBeLessThan(1e-4);
    const epsU = pipe.unet.forward(init, 951, { classLabels: Array(N).fill(10) });
    expect(track('mnist eps_uncond_step0', relL2(await epsU.read(), ref.eps_uncond_step0.data))).toBeLessThan(1e-4);
    [epsC, epsU, init].forEach((t) => t.dispose());
    // (2) the guided DDIM loop, on the first two images (batch items are independent; the whole
    // batch of 10 takes minutes on SwiftShader)
    const K = 2;
    const per = N * 4 * 8 * 8;
    const perK = K * 4 * 8 * 8;
    const out = await pipe.generate({
      classLabels: labels.slice(0, K),
      steps: 20,
      guidanceScale: 3,
      latents: (ref.latents_init.data as Float32Array).slice(0, perK),
      onStep: async ({ step, latents }) => {
        const got = await latents.read();
        const want = ref.latents_steps.data.subarray((step - 1) * per, (step - 1) * per + perK);
        expect(track('mnist latents per step', relL2(got, want)), `step ${step}`).toBeLessThan(1e-4);
      },
    });
    // (3) codes of the reference's own final latents, excusing near-ties
    const h = engine.tensor(ref.latents_unscaled.data as Float32Array, [N, 4, 8, 8]);
    const { quantized, indices } = pipe.vqvae!.quantize(h);
    const idx = await indices.read();
    const gap = ref.code_distance_gap.data;
    let flips = 0;
    for (let i = 0; i < idx.length; i++) if (idx[i] !== ref.codebook_indices.data[i] && gap[i] >= 1e-3) flips++;
    expect(flips).toBe(0);
    expect(track('mnist quantized', relL2(await quantized.read(), ref.latents_quantized.data))).toBeLessThan(1e-4);
    // (4) the decoder on the reference's quantised latents
    const dec = pipe.vqvae!.decode(engine.tensor(ref.latents_quantized.data as Float32Array, [N, 4, 8, 8]), { forceNotQuantize: true });
    expect(track('mnist decoded_raw', relL2(await dec.read(), ref.decoded_raw.data))).toBeLessThan(1e-4);
    // (5) images end to end (a near-tie code may flip: bounded by the reference's own note, 0.117)
    const img = await out.images.read();
    const refImg = ref.images.data.subarray(0, img.length);
    let maxDiff = 0;
    for (let i = 0; i < img.length; i++) maxDiff = Math.max(maxDiff, Math.abs(img[i] - refImg[i]));
    console.log(`ldm-mnist end-to-end images (classes 0, 1): max |diff| ${maxDiff.toExponential(2)}, relL2 ${relL2(img, refImg).toExponential(2)}`);
    expect(maxDiff).toBeLessThan(0.12);
    [h, quantized, indices, dec, out.images].forEach((t) => t.dispose());
    pipe.dispose();
  });

  it('generates recognisable, class-dependent digits from a seed', async () => {
    const engine = await getEngine();
    const pipe = await LDMPipeline.fromPretrained(engine, 'models/ldm-mnist');
    const a = await pipe.generate({ classLabels: [1, 0], steps: 10, guidanceScale: 3, seed: 1234 });
    const b = await pipe.generate({ classLabels: [1, 0], steps: 10, guidanceScale: 3, seed: 1234 });
    const va = await a.images.read();
    const vb = await b.images.read();
    expect(va).toEqual(vb); // same seed, same pixels
    // a "1" lights far fewer pixels than a "0": a cheap class check that needs no classifier
    const ink = (img: ArrayLike<number>, i: number) => Array.from(img).slice(i * 1024, (i + 1) * 1024).reduce((s, v) => s + v, 0);
    expect(ink(va, 0)).toBeLessThan(ink(va, 1));
    // white digit on black: the border is dark, the centre has ink
    expect(va[0]).toBeLessThan(0.2);
    expect(ink(va, 1)).toBeGreaterThan(60);
    [a.images, b.images].forEach((t) => t.dispose());
    pipe.dispose();
  });
});

describe('LDM super-resolution (low-resolution image concatenated to the latents)', () => {
  it('conditions a 6-channel UNet on the low-resolution image', async () => {
    const engine = await getEngine();
    const { pipe: base } = await ldmFixturePipeline(engine);
    const c = loadCase('unet2d/uncond');
    const unet = await UNet2DModel.load(engine, { ...(c.config as Record<string, unknown>), in_channels: 6, out_channels: 3 }, randomTensorSource(4));
    const pipe = new LDMPipeline({ unet, vqvae: base.vqvae!, scheduler: base.scheduler });
    const lowA = engine.tensor(randArray(3 * 8 * 8, 1, 0, 1), [1, 3, 8, 8]);
    const lowB = engine.tensor(randArray(3 * 8 * 8, 2, 0, 1), [1, 3, 8, 8]);
    // compare the latents: the VQ decoder's quantisation may hide small differences in the images
    let latA: ArrayLike<number> = [];
    let latB: ArrayLike<number> = [];
    const a = await pipe.generate({ lowResImage: lowA, steps: 2, seed: 5, onStep: async ({ latents }) => void (latA = await latents.read()) });
    const b = await pipe.generate({ lowResImage: lowB, steps: 2, seed: 5, onStep: async ({ latents }) => void (latB = await latents.read()) });
    expect(a.images.shape).toEqual([1, 3, 32, 32]); // VQ f = 4: 8x8 -> 32x32
    expect(relL2(latA, latB)).toBeGreaterThan(1e-6);
    await expect(pipe.generate({ steps: 2 })).rejects.toThrow(/super-resolution\): pass lowResImage/);
    [lowA, lowB, a.images, b.images].forEach((t) => t.dispose());
    unet.dispose();
    base.dispose();
  });
});

describe('pipeline reliability', () => {
  it('50 consecutive generations leave engine.memory() where it was after the first', async () => {
    const engine = await Engine.create({ f16: false }); // its own engine: nothing else allocates meanwhile
    const { pipe } = await ldmFixturePipeline(engine);
    const run = async (seed: number) => {
      const out = await pipe.generate({ batchSize: 1, steps: 2, seed });
      out.images.dispose();
    };
    await run(0);
    const after1 = engine.memory();
    for (let i = 1; i < 50; i++) await run(i);
    const after50 = engine.memory();
    expect(after50.inUseBytes).toBe(after1.inUseBytes);
    expect(after50.heldBytes).toBe(after1.heldBytes);
    pipe.dispose();
    engine.destroy();
  });

  it('cancelling mid-run rejects with AbortError, frees every buffer, and the next run works', async () => {
    const engine = await getEngine();
    const { pipe } = await ldmFixturePipeline(engine);
    const base = engine.memory().inUseBytes;
    const ac = new AbortController();
    let steps = 0;
    const p = pipe.generate({ batchSize: 2, steps: 10, seed: 3, signal: ac.signal, onStep: ({ step }) => {
      steps = step;
      if (step === 3) ac.abort();
    } });
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    expect(steps).toBe(3);
    expect(engine.memory().inUseBytes).toBe(base);
    const out = await pipe.generate({ batchSize: 2, steps: 3, seed: 3 });
    expect(out.images.shape).toEqual([2, 3, 32, 32]);
    out.images.dispose();
    pipe.dispose();
  });

  it('a NaN in the latents stops the run with an error naming the step', async () => {
    const engine = await getEngine();
    const { pipe } = await ldmFixturePipeline(engine);
    const base = engine.memory().inUseBytes;
    const lat = new Float32Array(2 * 3 * 8 * 8).fill(0.5);
    lat[17] = NaN;
    await expect(pipe.generate({ batchSize: 2, steps: 4, latents: lat })).rejects.toThrow(/step 1\/4 .*NaN\/Inf/);
    expect(engine.memory().inUseBytes).toBe(base);
    pipe.dispose();
  });

  it('refuses a scheduler or UNet that does not fit, at construction', async () => {
    const engine = await getEngine();
    const { pipe } = await ldmFixturePipeline(engine);
    const mnist = await VQModel.fromPretrained(engine, 'models/ldm-mnist/vqvae');
    expect(() => new LDMPipeline({ unet: pipe.unet, vqvae: mnist, scheduler: pipe.scheduler })).toThrow(/predicts 3 channels but the VQModel latents have 4/);
    expect(() => new LDMPipeline({ unet: pipe.unet, vqvae: pipe.vqvae!, scheduler: new DDIMScheduler({ prediction_type: 'v_prediction' }), predictionType: 'epsilon' })).toThrow(
      /prediction_type 'v_prediction' but the UNet predicts 'epsilon'/,
    );
    expect(() => createScheduler({ _class_name: 'FlowMatchEulerDiscreteScheduler' })).toThrow(/unsupported scheduler/);
    mnist.dispose();
    pipe.dispose();
  });
});


