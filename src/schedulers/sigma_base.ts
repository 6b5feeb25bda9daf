// Shared by the k-diffusion style schedulers (Euler, Euler ancestral, LMS): sigma tables, the
// sqrt(sigma^2 + 1) input scaling, step-index bookkeeping and sigma-based add_noise.
import type { Tensor } from '../runtime/tensor.js';
import { schedulerStep, addNoise } from '../kernels/scheduler_step.js';
import { ConfigReader, SchedulerBase } from './base.js';
import { f32, indexForTimestep, trainSigmas, type TimestepSpacing } from './schedule.js';

export abstract class SigmaScheduler extends SchedulerBase {
  /** sigmas of the schedule, float32 values, with the final sigma appended */
  sigmas: number[];

  protected constructor(className: string, reader: ConfigReader) {
    super(className, reader);
    // zero terminal SNR would make the largest sigma infinite; diffusers nudges it as here
    if (this.config.rescale_betas_zero_snr) this.alphasCumprod[this.numTrainTimesteps - 1] = 2 ** -24;
    const s = Array.from(trainSigmas(this.alphasCumprod)).reverse();
    this.sigmas = [...s, 0];
    this.timesteps = this.timesteps.map((t) => f32(t));
  }

  protected override defaultSpacing(): TimestepSpacing {
    return 'linspace';
  }

  get initNoiseSigma(): number {
    let m = 0;
    for (const s of this.sigmas) m = Math.max(m, s);
    if (this.timestepSpacing === 'linspace' || this.timestepSpacing === 'trailing') return m;
    return f32(Math.sqrt(f32(f32(m * m) + 1)));
  }

  protected initStepIndex(t: number): number {
    if (this._stepIndex === null) this._stepIndex = this.beginIndex ?? indexForTimestep(this.className, this.timesteps, t);
    return this._stepIndex;
  }

  /** sample / sqrt(sigma^2 + 1) */
  scaleModelInput(sample: Tensor, t: number): Tensor {
    const i = this.initStepIndex(t);
    const sigma = this.sigmas[i];
    const s = 1 / f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
    return schedulerStep({ inputs: [sample], x0: [0], out: [s, 0], outputs: 1 })[0];
  }

  /** x0 as (sample, model output) weights at sigma */
  protected x0Weights(sigma: number): [number, number] {
    if (this.predictionType === 'epsilon') return [1, -sigma];
    if (this.predictionType === 'sample') return [0, 1];
    const s2 = f32(f32(sigma * sigma) + 1);
    return [1 / s2, -sigma / f32(Math.sqrt(s2))];
  }

  addNoise(x0: Tensor, noise: Tensor, timesteps: readonly number[]): Tensor {
    this.checkAddNoise(x0, noise, timesteps);
    const idx =
      this.beginIndex === null
        ? timesteps.map((t) => indexForTimestep(this.className, this.timesteps, t))
        : timesteps.map(() => this._stepIndex ?? this.beginIndex!);
    return addNoise(x0, noise, idx.map(() => 1), idx.map((i) => this.sigmas[i]));
  }
}
