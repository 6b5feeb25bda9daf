// The SD-shaped UNet (the bench's 1/4-width SD 1.5 UNet: every block type, 8 heads, 77 cross-
// attention tokens of width 768) with a CFG batch of 2, run in f16 for 20 PNDM steps at guidance
// 7.5 (weights drawn from a seed at test time, scaled like a trained network's): no NaN or Inf
// anywhere. Latents are 16x16 by default: the size of each activation value (what overflows f16)
// does not grow with the image, while the cost does (a 64x64 forward is ~16x the attention work).
// LDM_F16_SD_LATENT=64 runs SD's own 64x64 latents (minutes per step on a CPU adapter). denoise()
// counts non-finite latents after every step and stops with an error naming the step; every step's
// latents are read and checked here too.
import { describe, it, expect } from 'vitest';
import { ops, UNet2DConditionModel, createScheduler, SD15_SCHEDULER, type Tensor } from '../../src/index.js';
import { denoise } from '../../src/pipelines/common.js';
import { getF16Engine } from '../helpers.js';
import { seededSource, UNET_QUARTER } from './seeded.js';

const STEPS = Number(process.env.LDM_F16_SD_STEPS ?? 20);
const SIZE = Number(process.env.LDM_F16_SD_LATENT ?? 16);

describe('SD-shaped UNet in f16', () => {
  it(`1/4-width SD 1.5 UNet, ${SIZE}x${SIZE} latents, CFG batch 2: ${STEPS} steps without NaN/Inf`, async () => {
    const e = await getF16Engine();
    expect(e.f16).toBe(true);
    const unet = await UNet2DConditionModel.load(e, UNET_QUARTER, seededSource(3));
    expect(unet.dtype).toBe('f16');
    // [uncond; cond] text embeddings of CLIP's scale (LayerNorm output: ~unit variance)
    const emb = ops.randn(e, [2, 77, 768], 11, { dtype: 'f16' });
    const scheduler = createScheduler(SD15_SCHEDULER);
    scheduler.setTimesteps(STEPS);
    const latents = ops.randn(e, [1, 4, SIZE, SIZE], 12, { dtype: 'f16' });
    let worstEps = 0;
    let badEps = 0;
    const t0 = performance.now();
    const stepMs: number[] = [];
    let last = t0;
    const final = await denoise({
      scheduler,
      latents,
      seed: 0,
      timesteps: scheduler.timesteps,
      predict: (x: Tensor, t: number) => {
        const both = ops.concat([x, x], 0);
        const out = unet.forward(both, t, { encoderHiddenStates: emb });
        both.dispose();
        const g = ops.classifierFreeGuidance(out, 7.5);
        out.dispose();
        return g;
      },
      onStep: async ({ latents: x }) => {
        const v = (await x.read()) as Float32Array;
        for (const a of v) {
          if (!Number.isFinite(a)) badEps++;
          else worstEps = Math.max(worstEps, Math.abs(a));
        }
        const now = performance.now();
        stepMs.push(now - last);
        last = now;
      },
    });
    const total = performance.now() - t0;
    const cnt = ops.countNonFinite(final);
    expect((await cnt.read())[0]).toBe(0);
    expect(badEps).toBe(0);
    console.log(
      `[f16] SD-shaped UNet (1/4 width, ${(unet.parameterCount / 1e6).toFixed(0)}M params) ${SIZE}x${SIZE} latents, CFG batch 2, ${STEPS} PNDM steps in f16: ` +
        `no NaN/Inf, largest |latent| ${worstEps.toFixed(2)}; ${(total / 1000).toFixed(1)} s (${(stepMs.reduce((a, b) => a + b, 0) / stepMs.length / 1000).toFixed(2)} s per step)`,
    );
    // real-sized: the latents moved and stayed in a sane range
    expect(worstEps).toBeGreaterThan(0.5);
    expect(worstEps).toBeLessThan(1e3);
    [cnt, final, emb].forEach((t) => t.dispose());
    unet.dispose();
  }, 1_800_000);
});
