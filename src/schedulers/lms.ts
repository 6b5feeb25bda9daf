// Linear multistep (k-diffusion's LMS): prev = x + sum_k c_k d_{i-k}, with c_k the integral over
// [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial through the last `order` sigmas. The
// integrals are exact here (Gauss-Legendre, 4 nodes, on polynomials of degree <= 3); diffusers uses
// scipy's adaptive quadrature to the same values.
import type { Tensor } from '../runtime/tensor.js';
import { keep } from '../runtime/scope.js';
import { schedulerStep } from '../kernels/scheduler_step.js';
import { ConfigReader, type SchedulerConfig, type StepOptions, type StepResult } from './base.js';
import { f32, interpIndex, karrasSigmas, sigmaTimesteps, sigmaToT, trainSigmas } from './schedule.js';
import { SigmaScheduler } from './sigma_base.js';

const GL_X = [-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526];
const GL_W = [0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538];

export interface LMSStepOptions extends StepOptions {
  /** multistep order, 1..4 (default 4) */
  order?: number;
}

export class LMSDiscreteScheduler extends SigmaScheduler {
  readonly useKarrasSigmas: boolean;
  private derivatives: Tensor[] = [];

  constructor(config: SchedulerConfig = {}) {
    const r = new ConfigReader('LMSDiscreteScheduler', config);
    super('LMSDiscreteScheduler', r);
    this.useKarrasSigmas = r.bool('use_karras_sigmas', false);
    r.refuseTrue('use_exponential_sigmas', 'only linear and Karras sigmas are implemented');
    r.refuseTrue('use_beta_sigmas', 'only linear and Karras sigmas are implemented');
  }

  setTimesteps(n: number): void {
    let ts = sigmaTimesteps(this.className, this.timestepSpacing, this.numTrainTimesteps, n, this.stepsOffset);
    const train = trainSigmas(this.alphasCumprod);
    let sig = ts.map((t) => interpIndex(t, train));
    if (this.useKarrasSigmas) {
      const logSigmas = train.map((s) => f32(Math.log(s)));
      sig = karrasSigmas(sig[0], sig[sig.length - 1], n);
      ts = sig.map((s) => f32(sigmaToT(s, logSigmas)));
    }
    this.sigmas = [...sig, 0].map(f32);
    this.timesteps = ts;
    this.numInferenceSteps = n;
    this.reset();
  }

  override reset(): void {
    super.reset();
    for (const d of this.derivatives) d.dispose();
    this.derivatives = [];
  }

  /** integral over [sigma_i, sigma_{i+1}] of the Lagrange basis for node i - cur among i, ..., i - order + 1 */
  lmsCoefficient(order: number, i: number, cur: number): number {
    const s = this.sigmas;
    const basis = (tau: number) => {
      let p = 1;
      for (let k = 0; k < order; k++) {
        if (k === cur) continue;
        p *= (tau - s[i - k]) / (s[i - cur] - s[i - k]);
      }
      return p;
    };
    const a = s[i];
    const b = s[i + 1];
    const half = (b - a) / 2;
    const mid = (a + b) / 2;
    let sum = 0;
    for (let q = 0; q < 4; q++) sum += GL_W[q] * basis(mid + half * GL_X[q]);
    return sum * half;
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, opts: LMSStepOptions = {}): StepResult {
    this.requireTimesteps('step');
    this.checkPair('step', modelOutput, sample, 'modelOutput', 'sample');
    const maxOrder = opts.order ?? 4;
    if (!Number.isInteger(maxOrder) || maxOrder < 1 || maxOrder > 4) throw new Error(`${this.className}.step: order must be 1..4, got ${maxOrder}`);
    const i = this.initStepIndex(t);
    if (i + 1 >= this.sigmas.length) throw new Error(`${this.className}.step: no step left (step index ${i}); call setTimesteps again`);
    const sigma = this.sigmas[i];
    const x0 = this.x0Weights(sigma);
    // derivative d = (x - x0) / sigma as (x, e, x0) weights; for epsilon it is e exactly
    const dW = this.predictionType === 'epsilon' ? [0, 1, 0] : [1 / sigma, 0, -1 / sigma];
    // history kept: the derivatives of the last maxOrder - 1 steps
    while (this.derivatives.length > maxOrder - 1) this.derivatives.shift()!.dispose();
    const order = Math.min(i + 1, maxOrder, this.derivatives.length + 1);
    const c: number[] = [];
    for (let k = 0; k < order; k++) c.push(this.lmsCoefficient(order, i, k));
    const hist = this.derivatives.slice(this.derivatives.length - (order - 1)).reverse(); // newest first
    const inputs = [sample, modelOutput, ...hist];
    const out = [1 + c[0] * dW[0], c[0] * dW[1], ...hist.map((_, k) => c[k + 1]), c[0] * dW[2]];
    const aux = [dW[0], dW[1], ...hist.map(() => 0), dW[2]];
    const [prevSample, predOriginalSample, derivative] = schedulerStep({
      inputs,
      x0: [x0[0], x0[1], ...hist.map(() => 0)],
      out,
      aux,
      outputs: 3,
    });
    this.derivatives.push(keep(derivative));
    this._stepIndex = i + 1;
    return { prevSample, predOriginalSample };
  }
}
