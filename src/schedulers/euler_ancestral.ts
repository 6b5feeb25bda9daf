// Euler ancestral sampler: an Euler step down to sigma_down, then fresh noise of std sigma_up.
import type { Tensor } from '../runtime/tensor.js';
import { schedulerStep } from '../kernels/scheduler_step.js';
import { ConfigReader, type SchedulerConfig, type StepOptions, type StepResult } from './base.js';
import { f32, interpIndex, sigmaTimesteps, trainSigmas } from './schedule.js';
import { SigmaScheduler } from './sigma_base.js';

export class EulerAncestralDiscreteScheduler extends SigmaScheduler {
  constructor(config: SchedulerConfig = {}) {
    const r = new ConfigReader('EulerAncestralDiscreteScheduler', config);
    super('EulerAncestralDiscreteScheduler', r);
    // diffusers' EulerAncestralDiscreteScheduler refuses it too
    if (this.predictionType === 'sample') throw r.unsupported('prediction_type', 'sample', ['epsilon', 'v_prediction']);
  }

  setTimesteps(n: number): void {
    const ts = sigmaTimesteps(this.className, this.timestepSpacing, this.numTrainTimesteps, n, this.stepsOffset);
    const train = trainSigmas(this.alphasCumprod);
    this.sigmas = [...ts.map((t) => f32(interpIndex(t, train))), 0];
    this.timesteps = ts;
    this.numInferenceSteps = n;
    this.reset();
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, opts: StepOptions = {}): StepResult {
    this.requireTimesteps('step');
    this.checkPair('step', modelOutput, sample, 'modelOutput', 'sample');
    const i = this.initStepIndex(t);
    if (i + 1 >= this.sigmas.length) throw new Error(`${this.className}.step: no step left (step index ${i}); call setTimesteps again`);
    const sigma = this.sigmas[i];
    const to = this.sigmas[i + 1];
    const up = Math.sqrt((to * to * (sigma * sigma - to * to)) / (sigma * sigma));
    const down = Math.sqrt(Math.max(0, to * to - up * up));
    const dt = down - sigma;
    const x0 = this.x0Weights(sigma);
    const nz = this.noiseFor('step', sample, opts);
    const out = this.predictionType === 'epsilon' ? [1, dt, up, 0] : [1 + dt / sigma, 0, up, -dt / sigma];
    const [prevSample, predOriginalSample] = schedulerStep({ inputs: [sample, modelOutput, nz.noise], x0: [x0[0], x0[1], 0], out, outputs: 2 });
    if (nz.owned) nz.noise.dispose();
    this._stepIndex = i + 1;
    return { prevSample, predOriginalSample };
  }
}
