// DDIM (Song et al., 2021): deterministic for eta = 0, DDPM-like variance for eta = 1.
import type { Tensor } from '../runtime/tensor.js';
import { ConfigReader, ClippedAlphaScheduler, type SchedulerConfig, type StepOptions, type StepResult } from './base.js';
import { alphaPredictions, f32 } from './schedule.js';

export interface DDIMStepOptions extends StepOptions {
  /** re-derive epsilon from the clipped x0 (GLIDE) */
  useClippedModelOutput?: boolean;
}

export class DDIMScheduler extends ClippedAlphaScheduler {
  readonly finalAlphaCumprod: number;

  constructor(config: SchedulerConfig = {}) {
    const r = new ConfigReader('DDIMScheduler', config);
    super('DDIMScheduler', r);
    this.finalAlphaCumprod = r.bool('set_alpha_to_one', true) ? 1 : this.alphasCumprod[0];
  }

  private alphaAt(t: number): number {
    return t >= 0 ? this.alphasCumprod[t] : this.finalAlphaCumprod;
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, opts: DDIMStepOptions = {}): StepResult {
    this.requireTimesteps('step');
    this.checkT('step', t);
    this.checkPair('step', modelOutput, sample, 'modelOutput', 'sample');
    const eta = opts.eta ?? 0;
    if (!(eta >= 0)) throw new Error(`${this.className}.step: eta must be >= 0, got ${eta}`);
    const prevT = t - Math.floor(this.numTrainTimesteps / this.numInferenceSteps!);
    const a = this.alphasCumprod[t];
    const aPrev = this.alphaAt(prevT);
    const { x0, eps } = alphaPredictions(this.predictionType, a);
    const variance = (f32(1 - aPrev) / f32(1 - a)) * (1 - a / aPrev);
    const std = eta * Math.sqrt(variance);
    // epsilon as (x, e, x0) weights: the clipped-x0 variant re-derives it from x0
    let epsW: [number, number, number] = [eps[0], eps[1], 0];
    if (opts.useClippedModelOutput) {
      const sa = f32(Math.sqrt(a));
      const sb = f32(Math.sqrt(f32(1 - a)));
      epsW = [1 / sb, 0, -sa / sb];
    }
    const dir = Math.sqrt(Math.max(0, 1 - aPrev - std * std));
    return this.posteriorStep(sample, modelOutput, opts, x0, [dir * epsW[0], dir * epsW[1]], eta > 0 ? std : null, Math.sqrt(aPrev) + dir * epsW[2]);
  }
}
