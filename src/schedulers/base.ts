// The scheduler class base: config parsing with diffusers' keys, the beta/alpha tables built from
// the pure math in schedule.ts, the step counter, the seeded noise stream, and the DDPM/DDIM base.
import type { Tensor } from '../runtime/tensor.js';
import { randnItems } from '../kernels/randn.js';
import { seedKey } from '../kernels/randn_host.js';
import { addNoise, schedulerStep } from '../kernels/scheduler_step.js';
import { ConfigReader, LIMITS, type Config } from '../runtime/config.js';
import {
  alphasCumprod, discreteTimesteps, f32, makeBetas,
  type BetaConfig, type PredictionType, type TimestepSpacing,
} from './schedule.js';

// The schedulers read their config with the shared reader (runtime/config.ts).
export { ConfigReader };

export type SchedulerConfig = Config;

export interface StepOptions {
  /** DDIM's eta (default 0) */
  eta?: number;
  /** the Gaussian draw for this step; else drawn from the scheduler's seed (see setNoiseSeed) */
  noise?: Tensor;
  /** reseeds the scheduler's generator and restarts its step count (diffusers'
   * `generator=torch.Generator().manual_seed(s)`) */
  generatorSeed?: number;
}

export interface StepResult {
  prevSample: Tensor;
  predOriginalSample?: Tensor;
}

/** The largest num_train_timesteps accepted: 1e9 would build gigabytes of tables. */
export const MAX_TRAIN_TIMESTEPS = LIMITS.num_train_timesteps.max!;

export function readBetaConfig(c: ConfigReader): BetaConfig {
  return {
    // sizes the beta/alpha/sigma tables (diffusers' models use 1000)
    numTrainTimesteps: c.int('num_train_timesteps', 1000),
    betaStart: c.num('beta_start', 0.0001)!,
    betaEnd: c.num('beta_end', 0.02)!,
    betaSchedule: c.oneOf('beta_schedule', ['linear', 'scaled_linear', 'squaredcos_cap_v2'] as const, 'linear'),
    trainedBetas: c.numArray('trained_betas'),
    rescaleBetasZeroSnr: c.bool('rescale_betas_zero_snr', false),
  };
}

/** What every scheduler shares: the beta/alpha tables, the schedule, the step counter and the
 * seeded noise stream. Subclasses fill `timesteps` in setTimesteps and implement step. */
export abstract class SchedulerBase {
  /** the parsed config with defaults filled in (diffusers' keys) */
  readonly config: Record<string, unknown>;
  readonly numTrainTimesteps: number;
  readonly betas: Float64Array;
  readonly alphasCumprod: Float64Array;
  readonly predictionType: PredictionType;
  readonly timestepSpacing: TimestepSpacing;
  readonly stepsOffset: number;
  /** model evaluations per step (1 for every scheduler here, as in diffusers) */
  readonly order: number = 1;
  timesteps: number[] = [];
  numInferenceSteps: number | null = null;
  protected _stepIndex: number | null = null;
  protected beginIndex: number | null = null;
  private seed = 0;
  /** steps that drew noise since setTimesteps / reset: the noise is a function of (seed, this) */
  private noiseDraws = 0;

  protected constructor(readonly className: string, protected readonly reader: ConfigReader) {
    const bc = readBetaConfig(reader);
    this.numTrainTimesteps = bc.numTrainTimesteps;
    this.betas = makeBetas(className, bc);
    this.alphasCumprod = alphasCumprod(this.betas);
    this.predictionType = reader.oneOf('prediction_type', ['epsilon', 'v_prediction', 'sample'] as const, 'epsilon');
    this.timestepSpacing = reader.oneOf('timestep_spacing', ['leading', 'trailing', 'linspace'] as const, this.defaultSpacing());
    this.stepsOffset = reader.int('steps_offset', 0);
    this.config = reader.out;
    const T = this.numTrainTimesteps;
    this.timesteps = Array.from({ length: T }, (_, i) => T - 1 - i);
  }

  protected defaultSpacing(): TimestepSpacing {
    return 'leading';
  }

  /** index of the next step in `timesteps` (null until the first step or scaleModelInput) */
  get stepIndex(): number | null {
    return this._stepIndex;
  }

  /** Where a run that does not start at the first timestep begins (diffusers' set_begin_index). */
  setBeginIndex(i: number): void {
    this.beginIndex = i;
  }

  abstract get initNoiseSigma(): number;
  abstract setTimesteps(n: number): void;
  abstract scaleModelInput(sample: Tensor, t: number): Tensor;
  abstract step(modelOutput: Tensor, t: number, sample: Tensor, opts?: StepOptions): StepResult;
  abstract addNoise(x0: Tensor, noise: Tensor, timesteps: readonly number[]): Tensor;

  /** Clears the multistep state and the step counter (history tensors are released). */
  reset(): void {
    this._stepIndex = null;
    this.beginIndex = null;
    this.noiseDraws = 0;
  }

  /** A new scheduler of the same class and config, with no state: what a pipeline runs each call
   * on, so that calls in flight at the same time do not share timesteps, history or noise. */
  clone(): this {
    const C = this.constructor as new (config: SchedulerConfig) => this;
    return new C({ ...this.config });
  }

  /** The seed of the noise the scheduler draws itself (ancestral steps without `noise`): the k-th
   * draw after setTimesteps is item i of the batch from seed + i at stream offset (k + 1) * itemSize,
   * a pure function of (seed, item, step) that continues the stream of the initial latents drawn
   * with the same seed. setTimesteps and reset restart the count. */
  setNoiseSeed(seed: number): void {
    seedKey(`${this.className}.setNoiseSeed`, seed);
    this.seed = seed;
    this.noiseDraws = 0;
  }

  protected requireTimesteps(op: string): void {
    if (this.numInferenceSteps === null) throw new Error(`${this.className}.${op}: call setTimesteps(n) first`);
  }

  protected checkPair(op: string, a: Tensor, b: Tensor, an: string, bn: string): void {
    if (a.engine !== b.engine) throw new Error(`${this.className}.${op}: ${an} and ${bn} belong to different engines`);
    if (shapeKey(a) !== shapeKey(b)) {
      throw new Error(`${this.className}.${op}: ${an} [${a.shape.join(', ')}] and ${bn} [${b.shape.join(', ')}] differ in shape`);
    }
  }

  /** The step's Gaussian draw: the caller's tensor (not owned) or a seeded draw (owned). */
  protected noiseFor(op: string, like: Tensor, opts: StepOptions): { noise: Tensor; owned: boolean } {
    if (opts.generatorSeed !== undefined) this.setNoiseSeed(opts.generatorSeed);
    if (opts.noise) {
      this.checkPair(op, like, opts.noise, 'sample', 'noise');
      return { noise: opts.noise, owned: false };
    }
    const B = like.rank ? like.shape[0] : 1;
    const perItem = B ? like.size / B : 0;
    const noise = randnItems(like.engine, like.shape, this.seed, { offset: (this.noiseDraws + 1) * perItem, dtype: like.dtype });
    this.noiseDraws++;
    return { noise, owned: true };
  }

  /** Per item signal and noise scales for add_noise, looked up like diffusers. */
  protected checkAddNoise(x0: Tensor, noise: Tensor, timesteps: readonly number[]): void {
    this.checkPair('addNoise', x0, noise, 'x0', 'noise');
    const B = x0.rank ? x0.shape[0] : 1;
    if (timesteps.length !== B) {
      throw new Error(`${this.className}.addNoise: ${timesteps.length} timesteps for a batch of ${B} ([${x0.shape.join(', ')}])`);
    }
  }
}

/** DDPM and DDIM share the clip_sample options, the refusal of dynamic thresholding, the discrete
 * timestep schedule and an identity scale_model_input (a view the caller may dispose). */
export abstract class ClippedAlphaScheduler extends SchedulerBase {
  readonly clipSample: boolean;
  readonly clipSampleRange: number;

  protected constructor(className: string, r: ConfigReader, clipSampleDefault = true) {
    super(className, r);
    this.clipSample = r.bool('clip_sample', clipSampleDefault);
    this.clipSampleRange = r.num('clip_sample_range', 1)!;
    r.refuseTrue('thresholding', 'dynamic thresholding needs a per-sample quantile; use clip_sample');
    r.num('dynamic_thresholding_ratio', 0.995);
    r.num('sample_max_value', 1);
  }

  get initNoiseSigma(): number {
    return 1;
  }

  setTimesteps(n: number): void {
    this.timesteps = discreteTimesteps(this.className, this.timestepSpacing, this.numTrainTimesteps, n, this.stepsOffset);
    this.numInferenceSteps = n;
    this.reset();
  }

  scaleModelInput(sample: Tensor, _t?: number): Tensor {
    return sample.reshape(sample.shape);
  }

  /**
   * The fused step DDPM and DDIM end with: prev = cx*sample + ce*modelOutput (+ std*noise when std is
   * given) + cx0*x0, where x0 = the (optionally clipped) prediction from the x0 weights; one dispatch.
   */
  protected posteriorStep(
    sample: Tensor,
    modelOutput: Tensor,
    opts: StepOptions,
    x0: readonly number[],
    coefs: [cx: number, ce: number],
    std: number | null,
    cx0: number,
  ): StepResult {
    const inputs = [sample, modelOutput];
    const out = [...coefs];
    let owned: Tensor | null = null;
    if (std !== null) {
      const nz = this.noiseFor('step', sample, opts);
      if (nz.owned) owned = nz.noise;
      inputs.push(nz.noise);
      out.push(std);
    }
    out.push(cx0);
    const r = this.clipSampleRange;
    try {
      const [prevSample, predOriginalSample] = schedulerStep({
        inputs,
        x0: inputs.length === 3 ? [x0[0], x0[1], 0] : [...x0],
        out,
        clip: this.clipSample ? [-r, r] : undefined,
        outputs: 2,
      });
      this._stepIndex = (this._stepIndex ?? 0) + 1;
      return { prevSample, predOriginalSample };
    } finally {
      owned?.dispose();
    }
  }

  protected checkT(op: string, t: number): void {
    if (!Number.isInteger(t) || t < 0 || t >= this.numTrainTimesteps) throw new Error(`${this.className}.${op}: timestep ${t} is not an integer in [0, ${this.numTrainTimesteps})`);
  }

  /** sqrt(a_t) x0 + sqrt(1 - a_t) noise, per batch item. */
  addNoise(x0: Tensor, noise: Tensor, timesteps: readonly number[]): Tensor {
    this.checkAddNoise(x0, noise, timesteps);
    for (const t of timesteps) this.checkT('addNoise', t);
    const a = timesteps.map((t) => this.alphasCumprod[t]);
    return addNoise(x0, noise, a.map((v) => f32(Math.sqrt(v))), a.map((v) => f32(Math.sqrt(f32(1 - v)))));
  }
}

function shapeKey(t: Tensor): string {
  return t.shape.join(',');
}

/** JSON.parse for config files written by Python's json module, which may hold the bare tokens
 * Infinity, -Infinity and NaN (e.g. DPMSolverMultistepScheduler's lambda_min_clipped). */
export function parseConfigJson(text: string): Record<string, unknown> {
  // only outside strings: a token after ':' or ',' or '[' (optionally spaced)
  const fixed = text.replace(/([:,[]\s*)(-?Infinity|NaN)(?=\s*[,}\]])/g, (_m, pre: string, tok: string) => `${pre}"${tok}"`);
  const obj = JSON.parse(fixed) as Record<string, unknown>;
  const conv = (v: unknown): unknown => {
    if (v === 'Infinity') return Infinity;
    if (v === '-Infinity') return -Infinity;
    if (v === 'NaN') return NaN;
    if (Array.isArray(v)) return v.map(conv);
    return v;
  };
  for (const k of Object.keys(obj)) obj[k] = conv(obj[k]);
  return obj;
}
