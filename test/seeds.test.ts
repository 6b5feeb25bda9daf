// The seed rules (issue 9 §2) and calls in flight together (§3), on the tiny LDM fixture pipeline
// (VQModel + UNet2DModel, 8x8x3 latents): the same options give the same bytes for every sampler;
// ancestral samplers' per-step noise follows the seed; image i of a batch is a single run with
// seed + i; two generate() calls interleaved on one pipeline equal the same calls run one by one.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Engine, LDMPipeline, UNet2DModel, VQModel, WeightSource, createScheduler } from '../src/index.js';
import { getEngine } from './helpers.js';
import { loadCase } from './fixture.js';

async function fixturePipeline(engine: Engine): Promise<LDMPipeline> {
  const c = loadCase('pipelines/ldm_uncond_vq_ddim');
  const cfg = c.config as Record<string, Record<string, unknown>>;
  const w = WeightSource.fromBytes(readFileSync(join(c.dir, 'weights.safetensors')), 'ldm fixture');
  const unet = await UNet2DModel.load(engine, cfg.unet, w.withPrefix('unet.'));
  const vqvae = await VQModel.load(engine, cfg.vqvae, w.withPrefix('vqvae.'));
  return new LDMPipeline({ unet, vqvae, scheduler: createScheduler(cfg.scheduler) });
}

const SAMPLERS = ['ddim', 'ddpm', 'euler', 'euler-a', 'pndm', 'dpm++2m', 'lms'] as const;
/** samplers that draw fresh noise each step (DDIM only with eta > 0) */
const ancestral = (s: string, eta: number) => s === 'ddpm' || s === 'euler-a' || (s === 'ddim' && eta > 0);

type Opts = Parameters<LDMPipeline['generate']>[0];

async function bytes(pipe: LDMPipeline, opts: Opts): Promise<Uint8ClampedArray[]> {
  const out = await pipe.generate(opts);
  out.images.dispose();
  return out.rgba.map((r) => r.data);
}

const same = (a: Uint8ClampedArray, b: Uint8ClampedArray) => a.length === b.length && a.every((v, i) => v === b[i]);

describe('seeds', () => {
  it('same options twice give byte-identical images, for every sampler at eta 0 and 1', async () => {
    const engine = await getEngine();
    const pipe = await fixturePipeline(engine);
    for (const sampler of SAMPLERS) {
      for (const eta of [0, 1]) {
        const o = { sampler, eta, steps: 3, seed: 11 };
        const a = await bytes(pipe, o);
        const b = await bytes(pipe, o);
        expect(same(a[0], b[0]), `${sampler} eta ${eta}`).toBe(true);
      }
    }
    // the pipeline's own scheduler too (DDIM here): eta 1 used to carry its noise position over
    const a = await bytes(pipe, { eta: 1, steps: 3, seed: 4 });
    const b = await bytes(pipe, { eta: 1, steps: 3, seed: 4 });
    expect(same(a[0], b[0])).toBe(true);
    pipe.dispose();
  });

  it('the per-step noise of ancestral samplers follows the seed (same initial latents, other seed)', async () => {
    const engine = await getEngine();
    const pipe = await fixturePipeline(engine);
    const latents = new Float32Array(3 * 8 * 8).map((_, i) => Math.sin(i * 1.7));
    for (const sampler of SAMPLERS) {
      for (const eta of [0, 1]) {
        if (sampler !== 'ddim' && eta === 1) continue;
        const a = await bytes(pipe, { sampler, eta, steps: 3, seed: 1, latents });
        const b = await bytes(pipe, { sampler, eta, steps: 3, seed: 2, latents });
        expect(same(a[0], b[0]), `${sampler} eta ${eta}`).toBe(!ancestral(sampler, eta));
      }
    }
    pipe.dispose();
  });

  it('different seeds give different images', async () => {
    const engine = await getEngine();
    const pipe = await fixturePipeline(engine);
    for (const sampler of SAMPLERS) {
      const a = await bytes(pipe, { sampler, steps: 2, seed: 1 });
      const b = await bytes(pipe, { sampler, steps: 2, seed: 2 });
      expect(same(a[0], b[0]), sampler).toBe(false);
    }
    pipe.dispose();
  });

  it('image i of a batch equals a single run with seed + i', async () => {
    const engine = await getEngine();
    const pipe = await fixturePipeline(engine);
    for (const [sampler, eta] of [['ddim', 0], ['ddim', 1], ['euler-a', 0], ['ddpm', 0], ['dpm++2m', 0]] as const) {
      const batch = await bytes(pipe, { sampler, eta, steps: 3, seed: 20, batchSize: 3 });
      for (let i = 0; i < 3; i++) {
        const single = await bytes(pipe, { sampler, eta, steps: 3, seed: 20 + i });
        expect(same(batch[i], single[0]), `${sampler} eta ${eta} item ${i}`).toBe(true);
      }
    }
    pipe.dispose();
  });

  it('refuses a seed that is not a non-negative safe integer, naming the option', async () => {
    const engine = await getEngine();
    const pipe = await fixturePipeline(engine);
    const before = engine.memory().inUseBytes;
    for (const seed of [-1, 1.5, NaN, 2 ** 53]) {
      await expect(pipe.generate({ steps: 1, seed })).rejects.toThrow(/LDMPipeline.generate: seed must be an integer/);
    }
    await expect(pipe.generate({ steps: 1, seed: 2 ** 53 - 1, batchSize: 2 })).rejects.toThrow(/seed must be an integer/);
    expect(engine.memory().inUseBytes).toBe(before);
    pipe.dispose();
  });
});

describe('calls in flight together', () => {
  it('a 4-step and a 2-step call interleaved on one pipeline equal the sequential results, both orders', async () => {
    const engine = await getEngine();
    const pipe = await fixturePipeline(engine);
    const cfg = pipe.scheduler.config;
    // the fixture's DDIM, a multistep scheduler with history (PNDM) and an ancestral one (Euler a)
    for (const name of ['DDIMScheduler', 'PNDMScheduler', 'EulerAncestralDiscreteScheduler']) {
      pipe.scheduler = createScheduler(cfg, name);
      const long = { steps: 4, seed: 3, eta: 1 };
      const short = { steps: 2, seed: 8, eta: 1 };
      const seqLong = await bytes(pipe, long);
      const seqShort = await bytes(pipe, short);
      const stepsSeen: number[] = [];
      const [a, b] = await Promise.all([bytes(pipe, { ...long, onStep: ({ step }) => void stepsSeen.push(step) }), bytes(pipe, short)]);
      const ref = pipe.scheduler.clone();
      ref.setTimesteps(4);
      expect(stepsSeen, name).toEqual(ref.timesteps.map((_, i) => i + 1));
      const [d, c] = await Promise.all([bytes(pipe, short), bytes(pipe, long)]);
      expect(same(a[0], seqLong[0]), `${name}: long first, long`).toBe(true);
      expect(same(b[0], seqShort[0]), `${name}: long first, short`).toBe(true);
      expect(same(c[0], seqLong[0]), `${name}: short first, long`).toBe(true);
      expect(same(d[0], seqShort[0]), `${name}: short first, short`).toBe(true);
    }
    pipe.dispose();
  });
});

describe("a scheduler's own noise", () => {
  it('is a pure function of (seed, item, step): setTimesteps restarts it, item i draws from seed + i', async () => {
    const { DDIMScheduler, EulerAncestralDiscreteScheduler } = await import('../src/index.js');
    const engine = await getEngine();
    const x = engine.tensor(new Float32Array(2 * 3 * 5).map((_, i) => Math.cos(i)), [2, 3, 5]);
    const run = async (s: InstanceType<typeof DDIMScheduler> | InstanceType<typeof EulerAncestralDiscreteScheduler>, sample: typeof x) => {
      s.setTimesteps(3);
      let cur = sample;
      for (const t of s.timesteps) {
        const r = s.step(sample, t, cur, { eta: 1 });
        r.predOriginalSample?.dispose();
        if (cur !== sample) cur.dispose();
        cur = r.prevSample;
      }
      const v = await cur.read();
      cur.dispose();
      return v;
    };
    for (const C of [DDIMScheduler, EulerAncestralDiscreteScheduler]) {
      const s = new C({});
      s.setNoiseSeed(7);
      const a = await run(s, x);
      const b = await run(s, x); // no reseeding: setTimesteps restarts the stream
      expect(Array.from(b), C.name).toEqual(Array.from(a));
      // item 1 of the batch == a batch of one with seed 8
      const one = engine.tensor((await x.read()).slice(15), [1, 3, 5]);
      const s1 = new C({});
      s1.setNoiseSeed(8);
      const c = await run(s1, one);
      expect(Array.from(c), C.name).toEqual(Array.from(a.slice(15)));
      one.dispose();
    }
    x.dispose();
  });
});
