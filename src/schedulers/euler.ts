// Euler sampler over sigmas (Karras et al., 2022, Algorithm 2 with s_churn = 0).
import type { Tensor } from '../runtime/tensor.js';
import { schedulerStep } from '../kernels/scheduler_step.js';
import { ConfigReader, type SchedulerConfig, type StepOptions, type StepResult } from './base.js';
import { f32, interpIndex, karrasSigmas, linspaceF32, sigmaTimesteps, sigmaToT, trainSigmas } from './schedule.js';
import { SigmaScheduler } from './sigma_base.js';

export class EulerDiscreteScheduler extends SigmaScheduler {
  readonly useKarrasSigmas: boolean;
  readonly interpolationType: 'linear' | 'log_linear';
  readonly finalSigmasType: 'zero' | 'sigma_min';
  readonly timestepType: 'discrete' | 'continuous';
  private readonly sigmaMin: number | null;
  private readonly sigmaMax: number | null;

  constructor(config: SchedulerConfig = {}) {
    const r = new ConfigReader('EulerDiscreteScheduler', config);
    super('EulerDiscreteScheduler', r);
    this.interpolationType = r.oneOf('interpolation_type', ['linear', 'log_linear'] as const, 'linear');
    this.useKarrasSigmas = r.bool('use_karras_sigmas', false);
    r.refuseTrue('use_exponential_sigmas', 'only linear, log_linear and Karras sigmas are implemented');
    r.refuseTrue('use_beta_sigmas', 'only linear, log_linear and Karras sigmas are implemented');
    this.sigmaMin = r.num('sigma_min', null);
    this.sigmaMax = r.num('sigma_max', null);
    this.timestepType = r.oneOf('timestep_type', ['discrete', 'continuous'] as const, 'discrete');
    this.finalSigmasType = r.oneOf('final_sigmas_type', ['zero', 'sigma_min'] as const, 'zero');
  }

  setTimesteps(n: number): void {
    const T = this.numTrainTimesteps;
    let ts = sigmaTimesteps(this.className, this.timestepSpacing, T, n, this.stepsOffset);
    const train = trainSigmas(this.alphasCumprod);
    const logSigmas = train.map((s) => f32(Math.log(s)));
    let sig: number[];
    if (this.interpolationType === 'linear') sig = ts.map((t) => interpIndex(t, train));
    else sig = Array.from(linspaceF32(Math.log(train[T - 1]), Math.log(train[0]), n + 1), (v) => f32(Math.exp(v)));
    if (this.useKarrasSigmas) {
      sig = karrasSigmas(this.sigmaMax ?? sig[0], this.sigmaMin ?? sig[sig.length - 1], n);
      ts = sig.map((s) => f32(sigmaToT(s, logSigmas)));
    }
    const last = this.finalSigmasType === 'zero' ? 0 : train[0];
    this.sigmas = [...sig, last].map(f32);
    if (this.timestepType === 'continuous' && this.predictionType === 'v_prediction') {
      ts = this.sigmas.slice(0, -1).map((s) => f32(0.25 * Math.log(s)));
    }
    this.timesteps = ts;
    this.numInferenceSteps = n;
    this.reset();
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, _opts: StepOptions = {}): StepResult {
    this.requireTimesteps('step');
    this.checkPair('step', modelOutput, sample, 'modelOutput', 'sample');
    const i = this.initStepIndex(t);
    if (i + 1 >= this.sigmas.length) throw new Error(`${this.className}.step: no step left (step index ${i}); call setTimesteps again`);
    const sigma = this.sigmas[i];
    const dt = this.sigmas[i + 1] - sigma;
    const x0 = this.x0Weights(sigma);
    // prev = x + dt * (x - x0) / sigma; for epsilon that is x + dt * e exactly
    const out = this.predictionType === 'epsilon' ? [1, dt, 0] : [1 + dt / sigma, 0, -dt / sigma];
    const [prevSample, predOriginalSample] = schedulerStep({ inputs: [sample, modelOutput], x0, out, outputs: 2 });
    this._stepIndex = i + 1;
    return { prevSample, predOriginalSample };
  }
}
