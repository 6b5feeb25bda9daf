// Latent Consistency Model sampling (Luo et al., 2023), diffusers' LCMScheduler: the timesteps are
// a subset of an `original_inference_steps`-long schedule (the distillation's), each step maps the
// model output to x0, applies the consistency boundary condition denoised = c_skip x + c_out x0, and
// re-noises to the next timestep, except at the last step, which returns denoised itself.
// timestep_spacing and steps_offset are read (diffusers keeps them in the config) but not used.
import type { Tensor } from '../runtime/tensor.js';
import { schedulerStep } from '../kernels/scheduler_step.js';
import { ConfigReader, ClippedAlphaScheduler, type SchedulerConfig, type StepOptions, type StepResult } from './base.js';
import { alphaPredictions, checkSteps, f32, indexForTimestep } from './schedule.js';

/** sigma_data of the consistency parameterisation (diffusers hard-codes 0.5) */
const SIGMA_DATA = 0.5;

export class LCMScheduler extends ClippedAlphaScheduler {
  readonly originalInferenceSteps: number;
  readonly timestepScaling: number;

  constructor(config: SchedulerConfig = {}) {
    // LCM's defaults differ from DDPM's: the SD 1.5 scaled_linear betas and no clipping
    const r = new ConfigReader('LCMScheduler', { beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', ...config });
    super('LCMScheduler', r, false);
    this.originalInferenceSteps = r.int('original_inference_steps', 50, { min: 1 });
    this.timestepScaling = r.num('timestep_scaling', 10)!;
    r.bool('set_alpha_to_one', true);
  }

  /** `n` timesteps taken evenly (by index) from the descending original schedule
   * (k - 1, 2k - 1, ..., original * k - 1 with k = T // original). */
  override setTimesteps(n: number, originalInferenceSteps = this.originalInferenceSteps): void {
    const T = this.numTrainTimesteps;
    checkSteps(this.className, n, T);
    const orig = originalInferenceSteps;
    if (!Number.isInteger(orig) || orig < 1 || orig > T) throw new Error(`${this.className}.setTimesteps: original_inference_steps must be an integer in [1, ${T}], got ${orig}`);
    if (n > orig) throw new Error(`${this.className}.setTimesteps: ${n} steps exceed original_inference_steps ${orig} (the schedule is a subset of that one)`);
    const k = Math.floor(T / orig);
    const origin: number[] = [];
    for (let i = orig; i >= 1; i--) origin.push(i * k - 1);
    // numpy.floor(numpy.linspace(0, orig, n, endpoint=False))
    this.timesteps = Array.from({ length: n }, (_, i) => origin[Math.floor(i * (orig / n))]);
    this.numInferenceSteps = n;
    this.reset();
  }

  /** c_skip and c_out at timestep t, float32 as diffusers computes them */
  boundaryScalings(t: number): { cSkip: number; cOut: number } {
    const st = f32(t * this.timestepScaling);
    const d = f32(f32(st * st) + SIGMA_DATA * SIGMA_DATA);
    return { cSkip: f32((SIGMA_DATA * SIGMA_DATA) / d), cOut: f32(st / f32(Math.sqrt(d))) };
  }

  /** Returns prevSample and, as predOriginalSample, the denoised sample (diffusers' `denoised`). */
  step(modelOutput: Tensor, t: number, sample: Tensor, opts: StepOptions = {}): StepResult {
    this.requireTimesteps('step');
    this.checkT('step', t);
    this.checkPair('step', modelOutput, sample, 'modelOutput', 'sample');
    if (this._stepIndex === null) this._stepIndex = this.beginIndex ?? indexForTimestep(this.className, this.timesteps, t);
    const i = this._stepIndex;
    const prevT = i + 1 < this.timesteps.length ? this.timesteps[i + 1] : t;
    const a = this.alphasCumprod[t];
    const aPrev = this.alphasCumprod[prevT];
    const { x0 } = alphaPredictions(this.predictionType, a);
    const { cSkip, cOut } = this.boundaryScalings(t);
    const last = i === this.numInferenceSteps! - 1;
    const r = this.clipSample ? this.clipSampleRange : 0;
    const clip = this.clipSample ? ([-r, r] as const) : undefined;
    let prevSample: Tensor;
    let denoised: Tensor;
    if (last) {
      // no new noise at the last step (nor in one-step sampling): prev_sample = denoised
      const d = [cSkip, 0, cOut];
      const outs = schedulerStep({ inputs: [sample, modelOutput], x0, out: d, aux: d, clip, outputs: 3 });
      outs[1].dispose();
      [prevSample, denoised] = [outs[0], outs[2]];
    } else {
      const nz = this.noiseFor('step', sample, opts);
      const sa = f32(Math.sqrt(aPrev));
      const sb = f32(Math.sqrt(f32(1 - aPrev)));
      try {
        const outs = schedulerStep({
          inputs: [sample, modelOutput, nz.noise],
          x0: [x0[0], x0[1], 0],
          out: [sa * cSkip, 0, sb, sa * cOut],
          aux: [cSkip, 0, 0, cOut],
          clip,
          outputs: 3,
        });
        outs[1].dispose();
        [prevSample, denoised] = [outs[0], outs[2]];
      } finally {
        if (nz.owned) nz.noise.dispose();
      }
    }
    this._stepIndex = i + 1;
    return { prevSample, predOriginalSample: denoised };
  }
}
