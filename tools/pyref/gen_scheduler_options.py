"""Scheduler option cases from diffusers 0.31 (vendored; versions in the PYREF folder's vendor/VERSIONS):
LCMScheduler and the options the schedulers share (timestep_spacing, prediction_type, rescale_betas_zero_snr,
use_karras_sigmas, final_sigmas_type, steps_offset), SD-Turbo's Euler ancestral with trailing spacing.
Each case: config, steps, timesteps, sigmas (where the class has them), init_noise_sigma, and a whole sampling
loop on a small seeded sample with the fixtures' fake model eps = 0.3 cos(pi t / 1000) x + 0.05 sin(x) on the
scaled model input; stochastic steps get given noise (stored), so the TS side can pass the same tensors.
Writes test/fixtures/scheduler_options/cases.json (small).
Run: /usr/bin/python3 tools/pyref/gen_scheduler_options.py   (PYREF: folder with fixenv.py, default /work/pyref)"""
import json, math, os, sys
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401
import torch
import diffusers
import diffusers.schedulers.scheduling_lcm as m_lcm
import diffusers.schedulers.scheduling_euler_ancestral_discrete as m_ea
from diffusers import LCMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler, DDIMScheduler

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
out = os.path.join(root, 'test/fixtures/scheduler_options'); os.makedirs(out, exist_ok=True)
SHAPE = (2, 2, 3, 3)
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear')

_queue = []
def given_noise(shape, generator=None, device=None, dtype=None, layout=None):
    n = _queue.pop(0)
    assert tuple(n.shape) == tuple(shape)
    return n.to(dtype)
m_lcm.randn_tensor = given_noise
m_ea.randn_tensor = given_noise

def fake_eps(x, t):
    c = torch.tensor(0.3 * math.cos(math.pi * float(t) / 1000), dtype=torch.float32)
    return c * x + 0.05 * torch.sin(x)

def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]

def run(name, cls, config, n, seed):
    s = cls(**config)
    s.set_timesteps(n)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g) * float(s.init_noise_sigma)
    case = dict(name=name, class_name=cls.__name__, config={k: v for k, v in s.config.items() if not k.startswith('_') and not (isinstance(v, float) and not math.isfinite(v))}, steps=n,
                timesteps=[float(v) for v in s.timesteps.tolist()], init_noise_sigma=float(s.init_noise_sigma), x=flat(x), loop=[])
    if hasattr(s, 'sigmas'):
        case['sigmas'] = flat(s.sigmas.float())
    for t in s.timesteps:
        inp = s.scale_model_input(x, t)
        eps = fake_eps(inp, t)
        noise = torch.randn(SHAPE, generator=g)
        _queue[:] = [noise]
        r = s.step(eps, t, x)
        used = not _queue
        prev = r.prev_sample
        x0 = getattr(r, 'denoised', None)
        if x0 is None: x0 = getattr(r, 'pred_original_sample', None)
        step = dict(t=float(t), prev_sample=flat(prev))
        if used: step['noise'] = flat(noise)
        if x0 is not None: step['pred_original_sample'] = flat(x0)
        case['loop'].append(step)
        x = prev
    return case

cases = []
for n in (1, 2, 4, 8):
    cases.append(run(f'lcm_n{n}', LCMScheduler, {}, n, 10 + n))
cases.append(run('lcm_orig100_n3', LCMScheduler, dict(original_inference_steps=100), 3, 1))
cases.append(run('lcm_v_zero_snr_n4', LCMScheduler, dict(prediction_type='v_prediction', rescale_betas_zero_snr=True), 4, 2))
# at the usual timestep_scaling 10, c_skip < 1e-6 for t >= 139: a small scaling makes the boundary condition count
cases.append(run('lcm_scaling0.002_n8', LCMScheduler, dict(timestep_scaling=0.002), 8, 4))
cases.append(run('lcm_sample_clip_n2', LCMScheduler, dict(prediction_type='sample', clip_sample=True, clip_sample_range=0.8), 2, 3))
for n in (1, 2, 4):
    cases.append(run(f'sd_turbo_euler_a_trailing_n{n}', EulerAncestralDiscreteScheduler, dict(SD, timestep_spacing='trailing'), n, 20 + n))
cases.append(run('euler_a_leading_offset1_n5', EulerAncestralDiscreteScheduler, dict(SD, timestep_spacing='leading', steps_offset=1), 5, 4))
cases.append(run('euler_karras_n6', EulerDiscreteScheduler, dict(SD, use_karras_sigmas=True), 6, 5))
cases.append(run('euler_karras_sigma_min_n6', EulerDiscreteScheduler, dict(SD, use_karras_sigmas=True, final_sigmas_type='sigma_min'), 6, 6))
cases.append(run('euler_v_zero_snr_trailing_n5', EulerDiscreteScheduler, dict(SD, prediction_type='v_prediction', rescale_betas_zero_snr=True, timestep_spacing='trailing'), 5, 7))
cases.append(run('euler_sample_leading_offset1_n4', EulerDiscreteScheduler, dict(SD, prediction_type='sample', timestep_spacing='leading', steps_offset=1), 4, 8))
cases.append(run('dpmpp_karras_n6', DPMSolverMultistepScheduler, dict(SD, use_karras_sigmas=True), 6, 9))
cases.append(run('dpmpp_karras_sigma_min_n6', DPMSolverMultistepScheduler, dict(SD, use_karras_sigmas=True, final_sigmas_type='sigma_min'), 6, 10))
cases.append(run('dpmpp_v_trailing_n5', DPMSolverMultistepScheduler, dict(SD, prediction_type='v_prediction', timestep_spacing='trailing'), 5, 11))
cases.append(run('ddim_v_zero_snr_trailing_n5', DDIMScheduler, dict(SD, prediction_type='v_prediction', rescale_betas_zero_snr=True, timestep_spacing='trailing', clip_sample=False), 5, 12))
cases.append(run('ddim_leading_offset1_n4', DDIMScheduler, dict(SD, steps_offset=1, clip_sample=False, set_alpha_to_one=False), 4, 13))
cases.append(run('ddim_linspace_n4', DDIMScheduler, dict(SD, timestep_spacing='linspace', clip_sample=False), 4, 14))

with open(os.path.join(out, 'cases.json'), 'w') as f:
    # non-finite config values (DPM's lambda_min_clipped = -inf, its default) are left out: plain JSON
    json.dump(dict(generator='tools/pyref/gen_scheduler_options.py', diffusers=diffusers.__version__, torch=torch.__version__,
                   shape=list(SHAPE), cases=cases), f, separators=(',', ':'), allow_nan=False)
print(len(cases), 'cases', os.path.getsize(os.path.join(out, 'cases.json')), 'bytes')
