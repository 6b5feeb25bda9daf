// Schedulers vs diffusers 0.31 reference runs (test/fixtures/schedulers/<name>/<schedule>_n<N>):
// the whole sampling loop with the fixtures' exact fake model, every intermediate compared.
import { describe, it, expect, afterAll } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  DDPMScheduler, DDIMScheduler, PNDMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
  DPMSolverMultistepScheduler, LMSDiscreteScheduler, Engine,
} from '../src/index.js';
import { SchedulerBase, parseConfigJson } from '../src/schedulers/index.js';
import type { Tensor } from '../src/index.js';
import { FIXTURES, readSafetensorsFile, type HostTensor } from './fixture.js';
import { getEngine, randn, relL2, track, reportWorst, readF32 } from './helpers.js';

afterAll(() => reportWorst('schedulers'));

const f = Math.fround;
const TOL = 1e-5;

type Ctor = new (config: Record<string, unknown>) => SchedulerBase;
const CLASSES: Record<string, Ctor> = {
  DDPMScheduler, DDIMScheduler, PNDMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler, LMSDiscreteScheduler,
};

function make(config: Record<string, unknown>): SchedulerBase {
  const C = CLASSES[config._class_name as string];
  if (!C) throw new Error(`no scheduler ${config._class_name}`);
  return new C(config);
}

/** the fixtures' fake model: c(t) * x + 0.05 * sin(x), evaluated in float32 like torch */
function fakeEps(x: Float32Array, t: number): Float32Array {
  const c = f(0.3 * Math.cos((Math.PI * t) / 1000));
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f(f(c * x[i]) + f(0.05 * f(Math.sin(x[i]))));
  return out;
}

function row(h: HostTensor, i: number): Float32Array {
  const per = h.shape.slice(1).reduce((a, b) => a * b, 1);
  return Float32Array.from(h.data.subarray(i * per, (i + 1) * per));
}

function check(label: string, got: Float32Array, want: ArrayLike<number>, what: string): void {
  const e = track(label, relL2(got, want));
  expect(e, `${what}: relative L2 ${e}`).toBeLessThanOrEqual(TOL);
}

/** like loadCase, but config.json may hold Python's -Infinity (DPM's lambda_min_clipped) */
function loadSchedCase(name: string) {
  const dir = join(FIXTURES, name);
  const io = readSafetensorsFile(join(dir, 'io.safetensors'));
  const get = (k: string) => {
    const t = io[k];
    if (!t) throw new Error(`${name}: no ${k}`);
    return t;
  };
  return {
    io,
    config: parseConfigJson(readFileSync(join(dir, 'config.json'), 'utf8')),
    caseInfo: JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8')) as Record<string, unknown>,
    input: (n: string) => get(`input.${n}`),
    output: (n: string) => get(`output.${n}`),
  };
}

const caseNames: string[] = [];
for (const s of readdirSync(join(FIXTURES, 'schedulers')).sort()) {
  for (const c of readdirSync(join(FIXTURES, 'schedulers', s)).sort()) caseNames.push(`schedulers/${s}/${c}`);
}

describe('schedulers vs diffusers fixtures', () => {
  it('has the 32 cases', () => expect(caseNames.length).toBe(32));

  for (const name of caseNames) {
    it(name, async () => {
      const engine = await getEngine();
      const fx = loadSchedCase(name);
      const info = fx.caseInfo as { num_inference_steps: number; step_kwargs: { eta?: number } };
      const N = info.num_inference_steps;
      const s = make(fx.config);
      const family = name.split('/')[1];
      s.setTimesteps(N);

      const wantT = Array.from(fx.output('timesteps').data);
      expect(s.timesteps).toEqual(wantT);
      expect(f(s.initNoiseSigma)).toBe(fx.output('init_noise_sigma').data[0]);
      const acp = fx.output('alphas_cumprod').data;
      expect(Array.from(s.alphasCumprod)).toEqual(Array.from(acp));
      if (fx.io['output.sigmas']) expect((s as unknown as { sigmas: number[] }).sigmas).toEqual(Array.from(fx.output('sigmas').data));

      const xT = fx.output('x_T');
      const unit = fx.input('x_T_unit');
      const xTHost = Float32Array.from(unit.data, (v) => f(v * s.initNoiseSigma));
      expect(relL2(xTHost, xT.data)).toBeLessThanOrEqual(1e-7);
      let x: Tensor = engine.tensor(Float32Array.from(xT.data), xT.shape);
      const noise = fx.io['output.noise'];
      const drawn = fx.io['output.noise_drawn'];
      const varNoise = fx.io['input.variance_noise'];
      const pos = fx.io['output.pred_original_sample'];
      const eta = info.step_kwargs.eta;
      for (let i = 0; i < s.timesteps.length; i++) {
        const t = s.timesteps[i];
        const mi = s.scaleModelInput(x, t);
        const miHost = await readF32(mi);
        check(`${family} model_input`, miHost, row(fx.output('model_input'), i), `${name} step ${i} model_input`);
        const eps = engine.tensor(fakeEps(miHost, t), x.shape);
        mi.dispose();
        let stepNoise: Tensor | undefined;
        if (noise && drawn!.data[i] !== 0) stepNoise = engine.tensor(row(noise, i), x.shape);
        if (varNoise) stepNoise = engine.tensor(row(varNoise, i), x.shape);
        const out = await s.step(eps, t, x, { eta, noise: stepNoise });
        eps.dispose();
        stepNoise?.dispose();
        check(`${family} prev_sample`, await readF32(out.prevSample), row(fx.output('prev_sample'), i), `${name} step ${i} prev_sample`);
        if (pos) {
          expect(out.predOriginalSample, 'predOriginalSample').toBeDefined();
          check(`${family} pred_original_sample`, await readF32(out.predOriginalSample!), row(pos, i), `${name} step ${i} pred_original_sample`);
        }
        out.predOriginalSample?.dispose();
        x.dispose();
        x = out.prevSample;
      }
      check(`${family} final_sample`, await readF32(x), fx.output('final_sample').data, `${name} final_sample`);
      x.dispose();
      s.reset();

      // add_noise: a fresh scheduler per row of timesteps
      const x0 = engine.tensor(Float32Array.from(fx.input('add_noise_x0').data), fx.input('add_noise_x0').shape);
      const nz = engine.tensor(Float32Array.from(fx.input('add_noise_noise').data), x0.shape);
      const ts = fx.input('add_noise_timesteps');
      for (let p = 0; p < ts.shape[0]; p++) {
        const fresh = make(fx.config);
        fresh.setTimesteps(N);
        const tRow = Array.from(ts.data.subarray(p * ts.shape[1], (p + 1) * ts.shape[1]));
        const y = await fresh.addNoise(x0, nz, tRow);
        check(`${family} add_noise`, await readF32(y), row(fx.output('add_noise'), p), `${name} add_noise row ${p}`);
        y.dispose();
      }
      x0.dispose();
      nz.dispose();
    });
  }
});

// ---------------------------------------------------------------- behaviour beyond the fixtures

const SD = { beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, steps_offset: 1, clip_sample: false, set_alpha_to_one: false };

async function run1(engine: Engine, s: SchedulerBase, model: Float32Array, sample: Float32Array, t: number, opts: Record<string, unknown> = {}) {
  const shape = [2, 3];
  const e = engine.tensor(model, shape);
  const x = engine.tensor(sample, shape);
  const r = await s.step(e, t, x, opts);
  const prev = await readF32(r.prevSample);
  const x0 = r.predOriginalSample ? await readF32(r.predOriginalSample) : null;
  r.prevSample.dispose();
  r.predOriginalSample?.dispose();
  e.dispose();
  x.dispose();
  return { prev, x0 };
}

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string) {
  const e = relL2(got, want);
  expect(e, `${what}: relative L2 ${e}`).toBeLessThanOrEqual(1e-5);
}

const hostX = Float32Array.from([0.9, -1.3, 0.25, 2.1, -0.6, 1.7]);
const hostM = Float32Array.from([0.4, 0.8, -1.1, 0.05, 1.9, -0.7]);
const map = (a: ArrayLike<number>, fn: (v: number, i: number) => number) => Array.from(a, fn);

describe('prediction types (hand-checked single steps)', () => {
  it('DDIM v_prediction and sample, with clip_sample', async () => {
    const engine = await getEngine();
    const s = new DDIMScheduler({ ...SD, prediction_type: 'v_prediction' });
    s.setTimesteps(10);
    expect(s.timesteps).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    const t = 901;
    const a = s.alphasCumprod[901];
    const ap = s.alphasCumprod[801];
    const x0 = map(hostX, (x, i) => Math.sqrt(a) * x - Math.sqrt(1 - a) * hostM[i]);
    const eps = map(hostX, (x, i) => Math.sqrt(a) * hostM[i] + Math.sqrt(1 - a) * x);
    const r = await run1(engine, s, hostM, hostX, t);
    expectClose(r.x0!, x0, 'v x0');
    expectClose(r.prev, map(x0, (v, i) => Math.sqrt(ap) * v + Math.sqrt(1 - ap) * eps[i]), 'v prev');

    const s2 = new DDIMScheduler({ ...SD, prediction_type: 'sample', clip_sample: true, clip_sample_range: 0.5 });
    s2.setTimesteps(10);
    const r2 = await run1(engine, s2, hostM, hostX, t);
    const c = map(hostM, (v) => Math.min(0.5, Math.max(-0.5, v)));
    // epsilon comes from the unclipped model output, x0 is clipped
    const eps2 = map(hostX, (x, i) => (x - Math.sqrt(a) * hostM[i]) / Math.sqrt(1 - a));
    expectClose(r2.x0!, c, 'sample x0 clipped');
    expectClose(r2.prev, map(c, (v, i) => Math.sqrt(ap) * v + Math.sqrt(1 - ap) * eps2[i]), 'sample prev');
  });

  it('DDPM sample prediction (fixed_small variance with given noise)', async () => {
    const engine = await getEngine();
    const s = new DDPMScheduler({ ...SD, prediction_type: 'sample' });
    s.setTimesteps(10);
    const t = 501;
    const a = s.alphasCumprod[501];
    const ap = s.alphasCumprod[401];
    const beta = 1 - a / ap;
    const noise = Float32Array.from([0.3, -0.2, 1.0, -1.4, 0.6, 0.1]);
    const nt = engine.tensor(noise, [2, 3]);
    const r = await run1(engine, s, hostM, hostX, t, { noise: nt });
    nt.dispose();
    const std = Math.sqrt(((1 - ap) / (1 - a)) * beta);
    const want = map(hostM, (x0, i) => ((Math.sqrt(ap) * beta) / (1 - a)) * x0 + ((Math.sqrt(1 - beta) * (1 - ap)) / (1 - a)) * hostX[i] + std * noise[i]);
    expectClose(r.prev, want, 'ddpm sample prev');
    expectClose(r.x0!, hostM, 'ddpm sample x0');
  });

  it('PNDM v_prediction first step', async () => {
    const engine = await getEngine();
    const s = new PNDMScheduler({ ...SD, skip_prk_steps: true, prediction_type: 'v_prediction' });
    s.setTimesteps(10);
    expect(s.timesteps.slice(0, 3)).toEqual([901, 801, 801]);
    const a = s.alphasCumprod[901];
    const ap = s.alphasCumprod[801];
    const eps = map(hostX, (x, i) => Math.sqrt(a) * hostM[i] + Math.sqrt(1 - a) * x);
    const den = a * Math.sqrt(1 - ap) + Math.sqrt(a * (1 - a) * ap);
    const r = await run1(engine, s, hostM, hostX, 901);
    expectClose(r.prev, map(hostX, (x, i) => Math.sqrt(ap / a) * x - ((ap - a) * eps[i]) / den), 'pndm v prev');
    expect(r.x0).toBeNull();
  });

  it('Euler, Euler ancestral and LMS with v_prediction / sample', async () => {
    const engine = await getEngine();
    for (const [C, pred] of [[EulerDiscreteScheduler, 'v_prediction'], [EulerDiscreteScheduler, 'sample'], [LMSDiscreteScheduler, 'v_prediction'], [LMSDiscreteScheduler, 'sample']] as const) {
      const s = new C({ ...SD, prediction_type: pred });
      s.setTimesteps(10);
      const sg = s.sigmas[0];
      const sn = s.sigmas[1];
      const x0 = pred === 'sample' ? Array.from(hostM) : map(hostX, (x, i) => hostM[i] * (-sg / Math.sqrt(sg * sg + 1)) + x / (sg * sg + 1));
      const r = await run1(engine, s, hostM, hostX, s.timesteps[0]);
      expectClose(r.x0!, x0, `${C.name} ${pred} x0`);
      // first step: order 1 for LMS, so both are Euler steps
      expectClose(r.prev, map(hostX, (x, i) => x + ((x - x0[i]) / sg) * (sn - sg)), `${C.name} ${pred} prev`);
    }
    const s = new EulerAncestralDiscreteScheduler({ ...SD, prediction_type: 'v_prediction' });
    s.setTimesteps(10);
    const [sg, sn] = [s.sigmas[0], s.sigmas[1]];
    const up = Math.sqrt((sn * sn * (sg * sg - sn * sn)) / (sg * sg));
    const down = Math.sqrt(sn * sn - up * up);
    const noise = Float32Array.from([1.2, -0.3, 0.5, 0.9, -1.1, 0.2]);
    const nt = engine.tensor(noise, [2, 3]);
    const r = await run1(engine, s, hostM, hostX, s.timesteps[0], { noise: nt });
    nt.dispose();
    const x0 = map(hostX, (x, i) => hostM[i] * (-sg / Math.sqrt(sg * sg + 1)) + x / (sg * sg + 1));
    expectClose(r.prev, map(hostX, (x, i) => x + ((x - x0[i]) / sg) * (down - sg) + up * noise[i]), 'euler-a v prev');
  });

  it('DPM-Solver++ with sample prediction: first and second order steps', async () => {
    const engine = await getEngine();
    const s = new DPMSolverMultistepScheduler({ ...SD, prediction_type: 'sample' });
    s.setTimesteps(10);
    const as = (sig: number) => ({ al: 1 / Math.sqrt(1 + sig * sig), si: sig / Math.sqrt(1 + sig * sig) });
    const [p0, p1, p2] = [as(s.sigmas[0]), as(s.sigmas[1]), as(s.sigmas[2])];
    // order 1 is DDIM in data-prediction form: x_t = (s_t / s_s) x + (a_t - a_s s_t / s_s) x0
    const r1 = await run1(engine, s, hostM, hostX, s.timesteps[0]);
    const want1 = map(hostX, (x, i) => (p1.si / p0.si) * x + (p1.al - (p0.al * p1.si) / p0.si) * hostM[i]);
    expectClose(r1.prev, want1, 'dpm first order');
    // order 2 (midpoint): D1 = (m0 - m1) / r0 with r0 = h_prev / h
    const m2 = Float32Array.from([-0.2, 0.6, 0.9, -1.0, 0.3, 0.45]);
    const r2 = await run1(engine, s, m2, Float32Array.from(want1), s.timesteps[1]);
    const lam = (p: { al: number; si: number }) => Math.log(p.al / p.si);
    const h = lam(p2) - lam(p1);
    const r0 = (lam(p1) - lam(p0)) / h;
    const want2 = map(want1, (x, i) => {
      const d0 = m2[i];
      const d1 = (m2[i] - hostM[i]) / r0;
      return (p2.si / p1.si) * x - p2.al * (Math.exp(-h) - 1) * d0 - 0.5 * p2.al * (Math.exp(-h) - 1) * d1;
    });
    expectClose(r2.prev, want2, 'dpm second order');
  });
});

describe('PNDM with the Runge-Kutta warm-up (skip_prk_steps false)', () => {
  it('has diffusers\' timesteps and matches a float64 host run of PRK + PLMS', async () => {
    const engine = await getEngine();
    const cfg = { beta_schedule: 'linear', skip_prk_steps: false };
    const s = new PNDMScheduler(cfg);
    s.setTimesteps(10);
    expect(s.timesteps).toEqual([900, 850, 850, 800, 800, 750, 750, 700, 700, 650, 650, 600, 600, 500, 400, 300, 200, 100, 0]);
    const acp = s.alphasCumprod;
    const ratio = 100;
    // host: diffusers' step_prk / step_plms / _get_prev_sample in float64
    const prev = (x: number[], t: number, tp: number, e: number[]) => {
      const a = acp[t];
      const ap = tp >= 0 ? acp[tp] : acp[0];
      const den = a * Math.sqrt(1 - ap) + Math.sqrt(a * (1 - a) * ap);
      return x.map((v, i) => Math.sqrt(ap / a) * v - ((ap - a) * e[i]) / den);
    };
    const model = (x: number[], t: number) => x.map((v) => 0.3 * Math.cos((Math.PI * t) / 1000) * v + 0.05 * Math.sin(v));
    let hx = Array.from(randn(24, 77));
    const ets: number[][] = [];
    let cur: number[] = [];
    let curSample: number[] = [];
    let gx: Tensor = engine.tensor(Float32Array.from(hx), [2, 3, 4]);
    for (let c = 0; c < s.timesteps.length; c++) {
      const t = s.timesteps[c];
      const eh = model(hx, t);
      if (c < 12) {
        const tp = t - (c % 2 ? 0 : ratio / 2);
        const from = s.timesteps[c - (c % 4)];
        let e = eh;
        if (c % 4 === 0) {
          cur = eh.map((v) => v / 6);
          ets.push(eh);
          curSample = hx;
        } else if (c % 4 === 3) {
          e = cur.map((v, i) => v + eh[i] / 6);
        } else {
          cur = cur.map((v, i) => v + eh[i] / 3);
        }
        hx = prev(curSample, from, tp, e);
      } else {
        ets.push(eh);
        const n = ets.length;
        const e = eh.map((_, i) => (55 * ets[n - 1][i] - 59 * ets[n - 2][i] + 37 * ets[n - 3][i] - 9 * ets[n - 4][i]) / 24);
        hx = prev(hx, t, t - ratio, e);
      }
      // GPU: the same model evaluated on the GPU run's own sample
      const gxHost = await readF32(gx);
      const eg = engine.tensor(Float32Array.from(model(Array.from(gxHost), t)), gx.shape);
      const r = s.step(eg, t, gx);
      eg.dispose();
      gx.dispose();
      gx = r.prevSample;
      expectClose(await readF32(gx), hx, `PRK/PLMS step ${c}`);
    }
    gx.dispose();
    s.reset();
  });
});

describe('schedules and options', () => {
  it('spacings: trailing, linspace, leading as diffusers', () => {
    const d = new DDIMScheduler({ timestep_spacing: 'trailing' });
    d.setTimesteps(10);
    expect(d.timesteps).toEqual([999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    d.setTimesteps(3);
    expect(d.timesteps).toEqual([999, 666, 332]);
    const l = new DDIMScheduler({ timestep_spacing: 'linspace' });
    l.setTimesteps(10);
    expect(l.timesteps).toEqual([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    const e = new EulerDiscreteScheduler({ ...SD, timestep_spacing: 'leading' });
    e.setTimesteps(10);
    expect(e.timesteps).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    const max = e.sigmas[0];
    expect(e.initNoiseSigma).toBeCloseTo(Math.sqrt(max * max + 1), 4);
    const dp = new DPMSolverMultistepScheduler({ ...SD, timestep_spacing: 'linspace' });
    dp.setTimesteps(10);
    expect(dp.timesteps).toEqual([999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
    const dt = new DPMSolverMultistepScheduler({ ...SD, timestep_spacing: "trailing" });
    dt.setTimesteps(4);
    expect(dt.timesteps).toEqual([999, 749, 499, 249]);
  });

  it('use_karras_sigmas gives decreasing sigmas from sigma_max to sigma_min', () => {
    for (const C of [EulerDiscreteScheduler, LMSDiscreteScheduler, DPMSolverMultistepScheduler]) {
      const plain = new C(SD);
      plain.setTimesteps(20);
      const s = new C({ ...SD, use_karras_sigmas: true });
      s.setTimesteps(20);
      const sig = s.sigmas;
      expect(sig.length).toBe(21);
      for (let i = 1; i < sig.length; i++) expect(sig[i], `${C.name} sigma ${i}`).toBeLessThan(sig[i - 1]);
      expect(sig[20]).toBe(0);
      // same endpoints as the train schedule, denser at low noise than the plain spacing
      expect(Math.abs(sig[0] - 14.6146) / 14.6146).toBeLessThan(1e-3);
      expect(Math.abs(sig[19] - 0.0292) / 0.0292).toBeLessThan(2e-2);
      expect(sig[15]).toBeLessThan(plain.sigmas[15]);
      for (let i = 1; i < s.timesteps.length; i++) expect(s.timesteps[i]).toBeLessThanOrEqual(s.timesteps[i - 1]);
    }
  });

  it('names the key and value of an unsupported option', () => {
    const bad: [new (c: Record<string, unknown>) => SchedulerBase, Record<string, unknown>, RegExp][] = [
      [DDIMScheduler, { beta_schedule: 'cosine' }, /DDIMScheduler: unsupported value "cosine" for config key 'beta_schedule'/],
      [DDIMScheduler, { prediction_type: 'eps' }, /unsupported value "eps" for config key 'prediction_type'/],
      [DDIMScheduler, { timestep_spacing: 'uniform' }, /unsupported value "uniform" for config key 'timestep_spacing'/],
      [DDIMScheduler, { thresholding: true }, /'thresholding' = true is not supported/],
      [DDPMScheduler, { variance_type: 'learned_range' }, /DDPMScheduler: unsupported value "learned_range" for config key 'variance_type'/],
      [EulerDiscreteScheduler, { interpolation_type: 'cubic' }, /unsupported value "cubic" for config key 'interpolation_type'/],
      [EulerDiscreteScheduler, { final_sigmas_type: 'max' }, /unsupported value "max" for config key 'final_sigmas_type'/],
      [EulerDiscreteScheduler, { use_exponential_sigmas: true }, /'use_exponential_sigmas' = true/],
      [EulerAncestralDiscreteScheduler, { prediction_type: 'sample' }, /unsupported value "sample" for config key 'prediction_type'/],
      [DPMSolverMultistepScheduler, { algorithm_type: 'sde-dpmsolver++' }, /unsupported value "sde-dpmsolver\+\+" for config key 'algorithm_type'/],
      [DPMSolverMultistepScheduler, { solver_type: 'rk4' }, /unsupported value "rk4" for config key 'solver_type'/],
      [DPMSolverMultistepScheduler, { solver_order: 3 }, /solver_order/],
      [PNDMScheduler, { prediction_type: 'sample' }, /PNDMScheduler: unsupported value "sample" for config key 'prediction_type'/],
      [LMSDiscreteScheduler, { beta_start: 'x' }, /config key 'beta_start' must be a number, got "x"/],
      [DDIMScheduler, { trained_betas: [0.1, 0.2] }, /trained_betas has 2 values/],
    ];
    for (const [C, cfg, re] of bad) expect(() => new C(cfg), JSON.stringify(cfg)).toThrow(re);
  });

  it('ignores unknown keys and accepts diffusers aliases', () => {
    const s = new DDIMScheduler({ _class_name: 'DDIMScheduler', _diffusers_version: '0.31.0', some_future_option: 3 });
    expect(s.config.num_train_timesteps).toBe(1000);
    expect('some_future_option' in s.config).toBe(false);
    const d = new DPMSolverMultistepScheduler({ algorithm_type: 'deis', solver_type: 'bh2' });
    expect(d.config.algorithm_type).toBe('dpmsolver++');
    expect(d.solverType).toBe('midpoint');
    expect(parseConfigJson('{"a": -Infinity, "b": [1, NaN], "c": "Infinity"}')).toEqual({ a: -Infinity, b: [1, NaN], c: Infinity });
  });

  it('squaredcos_cap_v2 and trained_betas build the tables', () => {
    const c = new DDIMScheduler({ beta_schedule: 'squaredcos_cap_v2' });
    expect(c.betas[999]).toBeCloseTo(0.999, 6);
    expect(c.alphasCumprod[0]).toBeGreaterThan(0.9999);
    const betas = Array.from({ length: 10 }, (_, i) => 0.01 * (i + 1));
    const t = new DDPMScheduler({ num_train_timesteps: 10, trained_betas: betas });
    expect(t.alphasCumprod[1]).toBeCloseTo(0.99 * 0.98, 6);
    const z = new DDIMScheduler({ ...SD, rescale_betas_zero_snr: true });
    expect(z.alphasCumprod[999]).toBe(0);
  });

  it('rejects misuse with errors naming the scheduler', async () => {
    const engine = await getEngine();
    const x = engine.tensor(hostX, [2, 3]);
    const m = engine.tensor(randn(8, 3), [2, 4]);
    const s = new DDIMScheduler(SD);
    expect(() => s.step(x, 901, x)).toThrow(/DDIMScheduler.step: call setTimesteps/);
    s.setTimesteps(10);
    expect(() => s.step(m, 901, x)).toThrow(/DDIMScheduler.step: modelOutput \[2, 4\] and sample \[2, 3\] differ/);
    expect(() => s.setTimesteps(0)).toThrow(/positive integer/);
    expect(() => s.setTimesteps(1001)).toThrow(/exceed num_train_timesteps/);
    expect(() => s.addNoise(x, x, [1, 2, 3])).toThrow(/3 timesteps for a batch of 2/);
    const e = new EulerDiscreteScheduler(SD);
    e.setTimesteps(10);
    expect(() => e.scaleModelInput(x, 123.5)).toThrow(/timestep 123.5 is not in the schedule/);
    x.dispose();
    m.dispose();
  });
});

describe('state, noise and memory', () => {
  async function loop(engine: Engine, s: SchedulerBase, seed: number): Promise<Float32Array> {
    let x = engine.tensor(randn(2 * 4 * 8, 7).map((v) => v * s.initNoiseSigma), [2, 4, 8]);
    for (const t of s.timesteps) {
      const mi = s.scaleModelInput(x, t);
      const eps = engine.tensor(fakeEps(await readF32(mi), t), x.shape);
      mi.dispose();
      const out = await s.step(eps, t, x, { generatorSeed: t === s.timesteps[0] ? seed : undefined, eta: 1 });
      eps.dispose(); // the caller's handle: schedulers keep their own references to history
      out.predOriginalSample?.dispose();
      x.dispose();
      x = out.prevSample;
    }
    const r = await readF32(x);
    x.dispose();
    return r;
  }

  it('multistep schedulers restart cleanly after setTimesteps / reset and hold no memory afterwards', async () => {
    const engine = await getEngine();
    for (const C of [PNDMScheduler, DPMSolverMultistepScheduler, LMSDiscreteScheduler]) {
      const s = new C({ ...SD, skip_prk_steps: true });
      s.setTimesteps(8);
      await engine.sync();
      const before = engine.memory().inUseBytes;
      const a = await loop(engine, s, 1);
      s.setTimesteps(8);
      const b = await loop(engine, s, 1);
      expect(b).toEqual(a);
      s.reset();
      expect(engine.memory().inUseBytes, C.name).toBe(before);
      for (const v of a) expect(Number.isFinite(v)).toBe(true);
    }
  });

  it('draws seeded noise with ops.randn when none is given (DDPM, Euler ancestral, DDIM eta 1)', async () => {
    const engine = await getEngine();
    for (const C of [DDPMScheduler, EulerAncestralDiscreteScheduler, DDIMScheduler]) {
      const s = new C(SD);
      s.setTimesteps(6);
      const a = await loop(engine, s, 5);
      s.setTimesteps(6);
      const b = await loop(engine, s, 5);
      s.setTimesteps(6);
      const c = await loop(engine, s, 6);
      expect(b, C.name).toEqual(a);
      expect(relL2(c, a), C.name).toBeGreaterThan(1e-3);
      for (const v of a) expect(Number.isFinite(v)).toBe(true);
    }
  });

  it('scaleModelInput returns a tensor the caller may dispose independently', async () => {
    const engine = await getEngine();
    const s = new DDIMScheduler(SD);
    s.setTimesteps(5);
    const x = engine.tensor(hostX, [2, 3]);
    const mi = s.scaleModelInput(x, s.timesteps[0]);
    mi.dispose();
    expect(await readF32(x)).toEqual(hostX);
    x.dispose();
  });

  it('each step is one dispatch (plus one for drawn noise)', async () => {
    const engine = await getEngine();
    const x = engine.tensor(hostX, [2, 3]);
    const m = engine.tensor(hostM, [2, 3]);
    for (const [C, extra] of [[DDIMScheduler, 0], [PNDMScheduler, 0], [DPMSolverMultistepScheduler, 0], [LMSDiscreteScheduler, 0], [EulerDiscreteScheduler, 0], [DDPMScheduler, 1], [EulerAncestralDiscreteScheduler, 1]] as const) {
      const s = new C({ ...SD, skip_prk_steps: true });
      s.setTimesteps(10);
      for (let i = 0; i < 3; i++) {
        const t = s.timesteps[i];
        s.scaleModelInput(x, t).dispose();
        const before = engine.stats().dispatches;
        const r = await s.step(m, t, x);
        expect(engine.stats().dispatches - before, C.name).toBe(1 + extra);
        r.prevSample.dispose();
        r.predOriginalSample?.dispose();
      }
      s.reset();
    }
    x.dispose();
    m.dispose();
  });
});
