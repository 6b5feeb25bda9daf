// PNDM (Liu et al., 2022): pseudo Runge-Kutta warm-up (3 groups of 4 model evaluations) then a
// 4th-order linear multistep (PLMS) on epsilon; with skip_prk_steps the warm-up is replaced by
// evaluating the second timestep twice. Both follow diffusers' PNDMScheduler step for step.
import type { Tensor } from '../runtime/tensor.js';
import { keep } from '../runtime/scope.js';
import { schedulerStep, addNoise } from '../kernels/scheduler_step.js';
import { ConfigReader, SchedulerBase, type SchedulerConfig, type StepOptions, type StepResult } from './base.js';
import { discreteTimesteps, f32 } from './schedule.js';

// Adams-Bashforth weights on the last 1..4 model outputs, newest first
const AB: readonly (readonly number[])[] = [[1], [3 / 2, -1 / 2], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24]];

export class PNDMScheduler extends SchedulerBase {
  readonly finalAlphaCumprod: number;
  readonly skipPrkSteps: boolean;
  private ets: Tensor[] = [];
  private curSample: Tensor | null = null;
  private counter = 0;
  private prkTimesteps: number[] = [];
  /** the model outputs of the current Runge-Kutta group */
  private prkOutputs: Tensor[] = [];

  constructor(config: SchedulerConfig = {}) {
    const r = new ConfigReader('PNDMScheduler', config);
    super('PNDMScheduler', r);
    if (this.predictionType === 'sample') throw r.unsupported('prediction_type', 'sample', ['epsilon', 'v_prediction']);
    this.skipPrkSteps = r.bool('skip_prk_steps', false);
    this.finalAlphaCumprod = r.bool('set_alpha_to_one', false) ? 1 : this.alphasCumprod[0];
  }

  get initNoiseSigma(): number {
    return 1;
  }

  setTimesteps(n: number): void {
    const base = discreteTimesteps(this.className, this.timestepSpacing, this.numTrainTimesteps, n, this.stepsOffset).reverse();
    // base is ascending
    if (this.skipPrkSteps) {
      // PLMS runs it backwards with the second-to-last entry repeated
      this.prkTimesteps = [];
      this.timesteps = [...base.slice(0, -1), ...base.slice(-2, -1), ...base.slice(-1)].reverse();
    } else {
      if (n < 4) throw new Error(`${this.className}.setTimesteps: the Runge-Kutta warm-up needs at least 4 steps, got ${n}`);
      // each of the 4 noisiest timesteps and its half-step, every inner one twice: RK's 4 evaluations per step
      const half = Math.floor(Math.floor(this.numTrainTimesteps / n) / 2);
      const pts: number[] = [];
      for (const t of base.slice(-4)) pts.push(t, t + half);
      const twice = pts.slice(0, -1).flatMap((t) => [t, t]).slice(1, -1);
      this.prkTimesteps = twice.reverse();
      this.timesteps = [...this.prkTimesteps, ...base.slice(0, -3).reverse()];
    }
    this.numInferenceSteps = n;
    this.reset();
  }

  override reset(): void {
    super.reset();
    for (const e of this.ets) e.dispose();
    this.ets = [];
    this.curSample?.dispose();
    this.curSample = null;
    for (const e of this.prkOutputs) e.dispose();
    this.prkOutputs = [];
    this.counter = 0;
  }

  scaleModelInput(sample: Tensor, _t?: number): Tensor {
    return sample.reshape(sample.shape);
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, _opts: StepOptions = {}): StepResult {
    this.requireTimesteps('step');
    this.checkPair('step', modelOutput, sample, 'modelOutput', 'sample');
    if (!this.skipPrkSteps && this.counter < this.prkTimesteps.length) return this.stepPrk(modelOutput, t, sample);
    if (!this.skipPrkSteps && this.ets.length < 3) throw new Error(`${this.className}.step: the PLMS phase needs the 12 Runge-Kutta steps first (call setTimesteps and run from the first timestep)`);
    const ratio = Math.floor(this.numTrainTimesteps / this.numInferenceSteps!);
    let prevT = t - ratio;
    // views keep the history alive when the caller disposes its handles
    if (this.counter !== 1) {
      while (this.ets.length > 3) this.ets.shift()!.dispose();
      this.ets.push(keep(modelOutput.reshape(modelOutput.shape)));
    } else {
      prevT = t;
      t = t + ratio;
    }
    let x = sample;
    // model outputs combined, newest first: [tensor, weight]
    let terms: [Tensor, number][];
    const E = this.ets;
    if (E.length === 1 && this.counter === 0) {
      terms = [[modelOutput, 1]];
      this.curSample = keep(sample.reshape(sample.shape));
    } else if (E.length === 1 && this.counter === 1) {
      terms = [[modelOutput, 0.5], [E[0], 0.5]];
      x = this.curSample!;
    } else {
      const w = AB[Math.min(E.length, 4) - 1];
      terms = w.map((wk, k) => [E[E.length - 1 - k], wk]);
    }
    const prevSample = this.prevSample(x, terms, t, prevT);
    if (this.counter === 1) {
      this.curSample!.dispose();
      this.curSample = null;
    }
    this.counter++;
    this._stepIndex = this.counter;
    return { prevSample };
  }

  private stepPrk(modelOutput: Tensor, t: number, sample: Tensor): StepResult {
    const ratio = Math.floor(this.numTrainTimesteps / this.numInferenceSteps!);
    const phase = this.counter % 4;
    const prevT = t - (this.counter % 2 ? 0 : Math.floor(ratio / 2));
    const from = this.prkTimesteps[this.counter - phase];
    let terms: [Tensor, number][] = [[modelOutput, 1]];
    if (phase === 0) {
      this.ets.push(keep(modelOutput.reshape(modelOutput.shape)));
      this.curSample?.dispose();
      this.curSample = keep(sample.reshape(sample.shape));
    }
    if (phase < 3) {
      this.prkOutputs.push(keep(modelOutput.reshape(modelOutput.shape)));
    } else {
      const [k1, k2, k3] = this.prkOutputs;
      terms = [[k1, 1 / 6], [k2, 1 / 3], [k3, 1 / 3], [modelOutput, 1 / 6]];
    }
    const prevSample = this.prevSample(this.curSample!, terms, from, prevT);
    if (phase === 3) {
      for (const e of this.prkOutputs) e.dispose();
      this.prkOutputs = [];
      this.curSample!.dispose();
      this.curSample = null;
    }
    this.counter++;
    this._stepIndex = this.counter;
    return { prevSample };
  }

  /** diffusers' _get_prev_sample (PNDM paper eq. 9) with epsilon = sum of weighted model outputs */
  private prevSample(x: Tensor, terms: [Tensor, number][], t: number, prevT: number): Tensor {
    if (t < 0 || t >= this.numTrainTimesteps || !Number.isInteger(t)) throw new Error(`${this.className}.step: timestep ${t} is out of range`);
    const a = this.alphasCumprod[t];
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const b = f32(1 - a);
    const bPrev = f32(1 - aPrev);
    const sampleCoeff = Math.sqrt(aPrev / a);
    const denom = a * Math.sqrt(bPrev) + Math.sqrt(a * b * aPrev);
    const epsCoeff = -(aPrev - a) / denom;
    // v_prediction: epsilon = sqrt(a) * v + sqrt(1 - a) * x
    const vScale = this.predictionType === 'v_prediction' ? f32(Math.sqrt(a)) : 1;
    const xFromV = this.predictionType === 'v_prediction' ? f32(Math.sqrt(b)) : 0;
    const inputs: Tensor[] = [x];
    const out: number[] = [sampleCoeff + epsCoeff * xFromV];
    for (const [tensor, w] of terms) {
      inputs.push(tensor);
      out.push(epsCoeff * vScale * w);
    }
    out.push(0);
    return schedulerStep({ inputs, x0: inputs.map(() => 0), out, outputs: 1 })[0];
  }

  addNoise(x0: Tensor, noise: Tensor, timesteps: readonly number[]): Tensor {
    this.checkAddNoise(x0, noise, timesteps);
    for (const t of timesteps) {
      if (!Number.isInteger(t) || t < 0 || t >= this.numTrainTimesteps) throw new Error(`${this.className}.addNoise: timestep ${t} is not an integer in [0, ${this.numTrainTimesteps})`);
    }
    const a = timesteps.map((t) => this.alphasCumprod[t]);
    return addNoise(x0, noise, a.map((v) => f32(Math.sqrt(v))), a.map((v) => f32(Math.sqrt(f32(1 - v)))));
  }
}
