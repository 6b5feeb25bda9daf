// DDPM ancestral sampling (Ho et al., 2020), posterior q(x_{t-1} | x_t, x0) with a fixed variance.
import type { Tensor } from '../runtime/tensor.js';
import { ConfigReader, ClippedAlphaScheduler, type SchedulerConfig, type StepOptions, type StepResult } from './base.js';
import { alphaPredictions, f32 } from './schedule.js';

type VarianceType = 'fixed_small' | 'fixed_small_log' | 'fixed_large';

export class DDPMScheduler extends ClippedAlphaScheduler {
  readonly varianceType: VarianceType;

  constructor(config: SchedulerConfig = {}) {
    const r = new ConfigReader('DDPMScheduler', config);
    super('DDPMScheduler', r);
    // learned / learned_range need the model's extra variance channels; fixed_large_log yields NaN in diffusers
    this.varianceType = r.oneOf('variance_type', ['fixed_small', 'fixed_small_log', 'fixed_large'] as const, 'fixed_small');
  }

  /** the next timestep of the schedule (-1 after the last), as diffusers' previous_timestep */
  previousTimestep(t: number): number {
    if (this.numInferenceSteps === null) return t - 1;
    const i = this.timesteps.indexOf(t);
    if (i < 0) throw new Error(`${this.className}: timestep ${t} is not in the schedule [${this.timesteps.join(', ')}]`);
    return i === this.timesteps.length - 1 ? -1 : this.timesteps[i + 1];
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, opts: StepOptions = {}): StepResult {
    this.requireTimesteps('step');
    this.checkPair('step', modelOutput, sample, 'modelOutput', 'sample');
    const prevT = this.previousTimestep(t);
    const a = this.alphasCumprod[t];
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : 1;
    const b = f32(1 - a);
    const bPrev = f32(1 - aPrev);
    const curAlpha = a / aPrev;
    const curBeta = 1 - curAlpha;
    const { x0 } = alphaPredictions(this.predictionType, a);
    const cX0 = (Math.sqrt(aPrev) * curBeta) / b;
    const cX = (Math.sqrt(curAlpha) * bPrev) / b;
    let std: number | null = null;
    if (t > 0) std = this.varianceType === 'fixed_large' ? Math.sqrt(curBeta) : Math.sqrt(Math.max((bPrev / b) * curBeta, 1e-20));
    return this.posteriorStep(sample, modelOutput, opts, x0, [cX, 0], std, cX0);
  }
}
