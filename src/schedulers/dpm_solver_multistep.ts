// DPM-Solver++ multistep (Lu et al., 2022), data-prediction form: the model output is converted to
// x0, and each step is an exponential-integrator update in lambda = log(alpha / sigma) using the
// current and (second order) previous x0 predictions.
import type { Tensor } from '../runtime/tensor.js';
import { keep } from '../runtime/scope.js';
import { schedulerStep, addNoise } from '../kernels/scheduler_step.js';
import { ConfigReader, SchedulerBase, type SchedulerConfig, type StepOptions, type StepResult } from './base.js';
import { arangeDown, checkSteps, f32, indexForTimestep, interpIndex, karrasSigmas, linspaceF64, roundHalfEven, sigmaToT, trainSigmas } from './schedule.js';

export class DPMSolverMultistepScheduler extends SchedulerBase {
  readonly solverOrder: number;
  readonly solverType: 'midpoint' | 'heun';
  readonly lowerOrderFinal: boolean;
  readonly eulerAtFinal: boolean;
  readonly useKarrasSigmas: boolean;
  readonly finalSigmasType: 'zero' | 'sigma_min';
  readonly lambdaMinClipped: number;
  sigmas: number[];
  private modelOutputs: (Tensor | null)[] = [];
  private lowerOrderNums = 0;

  constructor(config: SchedulerConfig = {}) {
    const r = new ConfigReader('DPMSolverMultistepScheduler', config);
    super('DPMSolverMultistepScheduler', r);
    this.solverOrder = r.oneOf('solver_order', [1, 2], 2);
    // diffusers maps deis to dpmsolver++ and logrho/bh1/bh2 to midpoint
    r.oneOf('algorithm_type', ['dpmsolver++'] as const, 'dpmsolver++', { deis: 'dpmsolver++' });
    this.solverType = r.oneOf('solver_type', ['midpoint', 'heun'] as const, 'midpoint', { logrho: 'midpoint', bh1: 'midpoint', bh2: 'midpoint' });
    this.lowerOrderFinal = r.bool('lower_order_final', true);
    this.eulerAtFinal = r.bool('euler_at_final', false);
    this.useKarrasSigmas = r.bool('use_karras_sigmas', false);
    r.refuseTrue('use_lu_lambdas', 'only linear and Karras sigmas are implemented');
    r.refuseTrue('use_exponential_sigmas', 'only linear and Karras sigmas are implemented');
    r.refuseTrue('use_beta_sigmas', 'only linear and Karras sigmas are implemented');
    r.refuseTrue('thresholding', 'dynamic thresholding needs a per-sample quantile');
    r.num('dynamic_thresholding_ratio', 0.995);
    r.num('sample_max_value', 1);
    this.finalSigmasType = r.oneOf('final_sigmas_type', ['zero', 'sigma_min'] as const, 'zero');
    this.lambdaMinClipped = r.num('lambda_min_clipped', -Infinity)!;
    r.oneOf('variance_type', [null], null);
    if (this.config.rescale_betas_zero_snr) this.alphasCumprod[this.numTrainTimesteps - 1] = 2 ** -24;
    this.sigmas = [...trainSigmas(this.alphasCumprod)];
    this.modelOutputs = new Array(this.solverOrder).fill(null);
  }

  protected override defaultSpacing(): 'linspace' {
    return 'linspace';
  }

  get initNoiseSigma(): number {
    return 1;
  }

  setTimesteps(n: number): void {
    const T = this.numTrainTimesteps;
    checkSteps(this.className, n, T);
    const acp = this.alphasCumprod;
    // lambda_min_clipped: drop the noisiest timesteps whose log-SNR falls below it
    let clipped = 0;
    for (let i = T - 1; i >= 0; i--) {
      const lam = Math.log(f32(Math.sqrt(acp[i]))) - Math.log(f32(Math.sqrt(f32(1 - acp[i]))));
      if (lam < this.lambdaMinClipped) clipped++;
      else break;
    }
    const last = T - clipped;
    let ts: number[] = [];
    if (this.timestepSpacing === 'linspace') {
      for (let i = n; i >= 1; i--) ts.push(roundHalfEven(linspaceF64(0, last - 1, n + 1, i)));
    } else if (this.timestepSpacing === 'leading') {
      const ratio = Math.floor(last / (n + 1));
      for (let i = n; i >= 1; i--) ts.push(i * ratio + this.stepsOffset);
    } else {
      for (const v of arangeDown(last, T / n)) ts.push(roundHalfEven(v) - 1);
    }
    const train = trainSigmas(acp);
    let sig: number[];
    if (this.useKarrasSigmas) {
      const logSigmas = train.map((s) => f32(Math.log(s)));
      sig = karrasSigmas(train[T - 1], train[0], n);
      ts = sig.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
    } else {
      sig = ts.map((t) => interpIndex(t, train));
    }
    const lastSigma = this.finalSigmasType === 'zero' ? 0 : train[0];
    this.sigmas = [...sig, lastSigma].map(f32);
    this.timesteps = ts;
    this.numInferenceSteps = ts.length;
    this.reset();
  }

  override reset(): void {
    super.reset();
    for (const m of this.modelOutputs) m?.dispose();
    this.modelOutputs = new Array(this.solverOrder).fill(null);
    this.lowerOrderNums = 0;
  }

  scaleModelInput(sample: Tensor, _t?: number): Tensor {
    return sample.reshape(sample.shape);
  }

  private alphaSigma(sigma: number): { alpha: number; sigmaT: number; lambda: number } {
    const alpha = 1 / Math.sqrt(sigma * sigma + 1);
    const sigmaT = sigma * alpha;
    return { alpha, sigmaT, lambda: Math.log(alpha) - Math.log(sigmaT) };
  }

  step(modelOutput: Tensor, t: number, sample: Tensor, _opts: StepOptions = {}): StepResult {
    this.requireTimesteps('step');
    this.checkPair('step', modelOutput, sample, 'modelOutput', 'sample');
    if (this._stepIndex === null) this._stepIndex = this.beginIndex ?? indexForTimestep(this.className, this.timesteps, t, true);
    const i = this._stepIndex;
    const n = this.timesteps.length;
    if (i >= n) throw new Error(`${this.className}.step: no step left (step index ${i}); call setTimesteps again`);
    const lowerFinal = i === n - 1 && (this.eulerAtFinal || (this.lowerOrderFinal && n < 15) || this.finalSigmasType === 'zero');
    const cur = this.alphaSigma(this.sigmas[i]);
    const next = this.alphaSigma(this.sigmas[i + 1]);
    // x0 prediction from (sample, model output)
    let x0: [number, number];
    if (this.predictionType === 'epsilon') x0 = [1 / cur.alpha, -cur.sigmaT / cur.alpha];
    else if (this.predictionType === 'sample') x0 = [0, 1];
    else x0 = [cur.alpha, -cur.sigmaT];
    const h = next.lambda - cur.lambda;
    const em1 = Math.expm1(-h); // exp(-h) - 1
    const first = this.solverOrder === 1 || this.lowerOrderNums < 1 || lowerFinal;
    // (diffusers' lower_order_second only matters for a third-order solver, which is not offered)
    let inputs: Tensor[];
    let out: number[];
    const cx = next.sigmaT / cur.sigmaT;
    if (first) {
      inputs = [sample, modelOutput];
      // x_t = (sigma_t / sigma_s) x - alpha_t (e^-h - 1) D0
      out = [cx, 0, -next.alpha * em1];
    } else {
      const prev = this.alphaSigma(this.sigmas[i - 1]);
      const r0 = (cur.lambda - prev.lambda) / h;
      const m1 = this.modelOutputs[this.solverOrder - 1]!;
      inputs = [sample, modelOutput, m1];
      // D1 = (m0 - m1) / r0
      const c1 = this.solverType === 'midpoint' ? -0.5 * next.alpha * em1 : next.alpha * (em1 / h + 1);
      out = [cx, 0, -c1 / r0, -next.alpha * em1 + c1 / r0];
    }
    const [prevSample, x0Pred] = schedulerStep({ inputs, x0: inputs.length === 3 ? [x0[0], x0[1], 0] : x0, out, outputs: 2 });
    // shift the history of x0 predictions
    this.modelOutputs[0]?.dispose();
    for (let k = 0; k < this.solverOrder - 1; k++) this.modelOutputs[k] = this.modelOutputs[k + 1];
    this.modelOutputs[this.solverOrder - 1] = keep(x0Pred);
    if (this.lowerOrderNums < this.solverOrder) this.lowerOrderNums++;
    this._stepIndex = i + 1;
    return { prevSample };
  }

  addNoise(x0: Tensor, noise: Tensor, timesteps: readonly number[]): Tensor {
    this.checkAddNoise(x0, noise, timesteps);
    const idx =
      this.beginIndex === null
        ? timesteps.map((t) => indexForTimestep(this.className, this.timesteps, t, true))
        : timesteps.map(() => this._stepIndex ?? this.beginIndex!);
    const as = idx.map((i) => this.alphaSigma(this.sigmas[i]));
    return addNoise(x0, noise, as.map((a) => a.alpha), as.map((a) => a.sigmaT));
  }
}
