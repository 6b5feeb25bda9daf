"""Makes and verifies the diffusers reference cases of test/fixtures (format: test/fixtures/README.md).

  verify [<case>...]   recompute committed cases through diffusers from their committed config.json,
                       weights.safetensors and input.* tensors of io.safetensors, compare with the committed
                       output.* tensors; prints max abs / rel error per case, exits 1 when any output's
                       rel error (max |a-b| / max |ref|) exceeds --rtol (default 1e-5) or an integer output differs.
                       No cases = every case of test/fixtures/index.json that this script knows.
  make <case>...       write a NEW case folder (config.json, weights.safetensors, io.safetensors, case.json) under
                       --out (default /tmp/fixtures; never test/fixtures unless you pass it). The config comes from
                       --config FILE or else from the committed case of the same name (so a model author copies a
                       case's config.json, edits sizes and makes a new case); weights are re-drawn seeded as the
                       README says (conv/linear ~ N(0, 1/fan_in), biases ~ N(0, 0.05^2), norm weights 1 + N(0, 0.1^2),
                       norm biases N(0, 0.1^2), embeddings N(0, 1)), inputs seeded with the shapes of the template case.

Run: /usr/bin/python3 tools/pyref/gen_fixtures.py verify
     /usr/bin/python3 tools/pyref/gen_fixtures.py make ops/linear --out /tmp/fx --seed 3
(PYREF: folder with fixenv.py, default /work/pyref; versions in its vendor/VERSIONS, copied in FIXTURES.md.)"""
import argparse, json, math, os, re, sys, time, warnings
warnings.filterwarnings('ignore', category=FutureWarning)  # diffusers' deprecation notices for old import paths
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401  (vendor dir on sys.path, hub offline, pure-python safetensors)
import torch
import torch.nn.functional as F
import diffusers
import diffusers.models.activations, diffusers.models.attention, diffusers.models.downsampling, diffusers.models.upsampling  # noqa: E401
import diffusers.models.embeddings, diffusers.models.resnet, diffusers.models.autoencoders.vae  # noqa: E401
import diffusers.models.transformers.transformer_2d  # noqa: F401
from diffusers.models.attention_processor import Attention, AttnProcessor
from safetensors.torch import load_file, save_file

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
FIXTURES = os.path.join(root, 'test/fixtures')
torch.set_grad_enabled(False)
META = {'format': 'pt', 'diffusers_version': diffusers.__version__}


def classic_attention(m):
    """Every Attention on the bmm/softmax AttnProcessor the fixtures were made with (torch 1.13 has no SDPA anyway)."""
    for mod in m.modules():
        if isinstance(mod, Attention):
            mod.set_processor(AttnProcessor())
    return m


def without(cfg, *keys):
    return {k: v for k, v in cfg.items() if k not in keys and not k.startswith('_')}


# ---------------------------------------------------------------- ops
def op_name(cfg):
    return cfg['op'].replace(' ', '')  # e.g. 'torch.nn.GroupNorm + SiLU', 'softmax attention'


def op_module(cfg):
    op = op_name(cfg)
    if op == 'torch.nn.Conv2d':
        return torch.nn.Conv2d(cfg['in_channels'], cfg['out_channels'], cfg['kernel_size'], stride=cfg['stride'],
                               padding=cfg['padding'], bias=cfg['bias'])
    if op == 'diffusers.models.downsampling.Downsample2D':
        return diffusers.models.downsampling.Downsample2D(cfg['channels'], use_conv=cfg['use_conv'],
                                                          out_channels=cfg['out_channels'], padding=cfg['padding'], name=cfg['name'])
    if op == 'diffusers.models.upsampling.Upsample2D':
        return diffusers.models.upsampling.Upsample2D(cfg['channels'], use_conv=cfg['use_conv'], out_channels=cfg['out_channels'])
    if op.startswith('torch.nn.GroupNorm'):
        return torch.nn.GroupNorm(cfg['num_groups'], cfg['num_channels'], eps=cfg['eps'], affine=cfg['affine'])
    if op == 'torch.nn.Linear':
        return torch.nn.Linear(cfg['in_features'], cfg['out_features'], bias=cfg['bias'])
    if op == 'torch.nn.LayerNorm':
        return torch.nn.LayerNorm(cfg['normalized_shape'], eps=cfg['eps'], elementwise_affine=cfg['elementwise_affine'])
    if op == 'diffusers.models.activations.GELU':
        return diffusers.models.activations.GELU(cfg['dim_in'], cfg['dim_out'], approximate=cfg['approximate'])
    if op == 'diffusers.models.activations.GEGLU':
        return diffusers.models.activations.GEGLU(cfg['dim_in'], cfg['dim_out'])
    if op == 'diffusers.models.attention.FeedForward':
        return diffusers.models.attention.FeedForward(cfg['dim'], mult=cfg['mult'], dropout=cfg['dropout'],
                                                      activation_fn=cfg['activation_fn'], final_dropout=cfg['final_dropout'])
    if op == 'diffusers.models.attention_processor.Attention':
        a = Attention(**without(cfg, 'op'), _from_deprecated_attn_block=cfg.get('_from_deprecated_attn_block', False))
        a.set_processor(AttnProcessor())
        return a
    if op.startswith('Timesteps+TimestepEmbedding'):
        tp, te = cfg['time_proj'], cfg['time_embedding']
        return torch.nn.ModuleDict({
            'time_proj': diffusers.models.embeddings.Timesteps(tp['num_channels'], tp['flip_sin_to_cos'], tp['downscale_freq_shift']),
            'time_embedding': diffusers.models.embeddings.TimestepEmbedding(te['in_channels'], te['time_embed_dim'], act_fn=te['act_fn'])})
    if op == 'diffusers.models.resnet.ResnetBlock2D':
        kw = without(cfg, 'op')
        return diffusers.models.resnet.ResnetBlock2D(**kw)
    if op == 'diffusers.models.transformers.transformer_2d.Transformer2DModel':
        return classic_attention(diffusers.models.transformers.transformer_2d.Transformer2DModel(**without(cfg, 'op')))
    if op == 'diffusers.models.autoencoders.vae.VectorQuantizer':
        return diffusers.models.autoencoders.vae.VectorQuantizer(cfg['n_e'], cfg['vq_embed_dim'], beta=cfg['beta'], remap=cfg['remap'],
                                                                 sane_index_shape=cfg['sane_index_shape'], legacy=cfg['legacy'])
    return None  # stateless ops


def op_run(cfg, m, i):
    op = op_name(cfg)
    if op == 'torch.nn.GroupNorm+SiLU':
        return {'y': F.silu(m(i['x']))}
    if op.startswith('diffusers.models.downsampling'):
        return {'y_even': m(i['x_even']), 'y_odd': m(i['x_odd'])}
    if op == 'torch.nn.functional.interpolate':
        return {'y': F.interpolate(i['x'], scale_factor=cfg['scale_factor'], mode=cfg['mode'])}
    if op == 'torch.nn.functional.gelu':
        return {'y': F.gelu(i['x'], approximate=cfg['approximate'])}
    if op == 'softmaxattention':
        probs = (i['q'] @ i['k'].transpose(-1, -2) * cfg['scale']).softmax(dim=-1)
        return {'out': probs @ i['v'], 'probs': probs}
    if op == 'diffusers.models.embeddings.get_timestep_embedding':
        return {'emb': diffusers.models.embeddings.get_timestep_embedding(
            i['timesteps'], cfg['embedding_dim'], flip_sin_to_cos=cfg['flip_sin_to_cos'],
            downscale_freq_shift=cfg['downscale_freq_shift'], scale=cfg['scale'], max_period=cfg['max_period'])}
    if op.startswith('Timesteps+TimestepEmbedding'):
        t_emb = m['time_proj'](i['timesteps'])
        # as the UNets do: the sinusoid is made in float32, then cast to the MLP's dtype
        return {'t_emb': t_emb, 'emb': m['time_embedding'](t_emb.to(m['time_embedding'].linear_1.weight.dtype))}
    if op == 'diffusers.models.resnet.ResnetBlock2D':
        return {'y': m(i['x'], i.get('temb'))}
    if op == 'diffusers.models.attention_processor.Attention':
        return {'y': m(i['x'], encoder_hidden_states=i.get('context'))}
    if op.endswith('Transformer2DModel'):
        return {'y': m(i['x'], encoder_hidden_states=i['context']).sample}
    if op.endswith('VectorQuantizer'):
        z_q, loss, (_, _, idx) = m(i['z'])
        return {'z_q': z_q, 'indices': idx, 'loss': loss.reshape(1)}
    return {'y': m(i['x'])}


# ---------------------------------------------------------------- models
def model_from_config(cfg):
    cls = getattr(diffusers, cfg['_class_name'])
    return classic_attention(cls.from_config(cfg)).eval()


def run_autoencoder_kl(m, i, cfg=None):
    post = m.encode(i['x']).latent_dist
    return {'encoder_moments': m.quant_conv(m.encoder(i['x'])), 'latent_mean': post.mean, 'latent_logvar': post.logvar,
            'latent_std': post.std, 'decode': m.decode(i['z']).sample,
            'forward_sample_posterior_false': m(i['x'], sample_posterior=False).sample}


def run_vq_model(m, i, cfg=None):
    lat = m.encode(i['x']).latents
    q, loss, (_, _, idx) = m.quantize(lat)
    return {'latents': lat, 'quantized': q, 'indices': idx, 'commit_loss': loss.reshape(1), 'decode': m.decode(lat).sample,
            'decode_force_not_quantize': m.decode(lat, force_not_quantize=True).sample, 'forward': m(i['x']).sample}


def run_unet2d(m, i, cfg=None):
    cl = i.get('class_labels')
    out = {'sample_t%d' % t: m(i['sample'], int(t), class_labels=cl).sample for t in i['timesteps_scalar'].tolist()}
    out['sample_tbatch'] = m(i['sample'], i['timesteps_batch'], class_labels=cl).sample
    return out


def run_unet2d_condition(m, i, cfg=None):
    return {'sample': m(i['sample'], i['timestep'], encoder_hidden_states=i['encoder_hidden_states']).sample,
            'sample2': m(i['sample2'], i['timesteps2'], encoder_hidden_states=i['encoder_hidden_states']).sample}


# ---------------------------------------------------------------- schedulers
def fake_eps(x, t):
    c = torch.tensor(0.3 * math.cos(math.pi * float(t) / 1000.0), dtype=torch.float64).to(torch.float32)
    return c * x + 0.05 * torch.sin(x)


SIGMA_SCHEDULERS = ('EulerDiscreteScheduler', 'EulerAncestralDiscreteScheduler', 'LMSDiscreteScheduler', 'DPMSolverMultistepScheduler')


def run_scheduler(cfg, case, i):
    cls = getattr(diffusers, cfg['_class_name'])
    n = int(case['num_inference_steps'])
    step_kw = dict(case['call'].get('step_kwargs') or {})
    seed = case.get('generator_seed')
    s = cls.from_config(cfg)
    s.set_timesteps(n)
    x = i['x_T_unit'] * s.init_noise_sigma
    rec = {k: [] for k in ('model_input', 'model_output', 'prev_sample', 'pred_original_sample', 'noise', 'noise_drawn')}
    g = torch.Generator().manual_seed(int(seed)) if seed not in (None, 'None') else None
    out = {'timesteps': s.timesteps.clone(), 'init_noise_sigma': torch.tensor([float(s.init_noise_sigma)]),
           'alphas_cumprod': s.alphas_cumprod.to(torch.float32).clone(), 'x_T': x.clone()}
    if cfg['_class_name'] in SIGMA_SCHEDULERS:
        out['sigmas'] = s.sigmas.to(torch.float32).clone()
    for k, t in enumerate(s.timesteps):
        mi = s.scale_model_input(x, t)
        mo = fake_eps(mi, t.item())
        kw = dict(step_kw)
        if 'variance_noise' in i:
            kw['variance_noise'] = i['variance_noise'][k]
        if g is not None:
            kw['generator'] = g
            state = g.get_state()
        r = s.step(mo, t, x, **kw)
        if g is not None:  # the noise step() drew, if any: replay the generator from its state
            drawn = not torch.equal(state, g.get_state())
            g2 = torch.Generator().set_state(state)
            rec['noise'].append(torch.randn(x.shape, generator=g2, dtype=x.dtype) if drawn else torch.zeros_like(x))
            rec['noise_drawn'].append(int(drawn))
        rec['model_input'].append(mi); rec['model_output'].append(mo); rec['prev_sample'].append(r.prev_sample)
        if getattr(r, 'pred_original_sample', None) is not None:
            rec['pred_original_sample'].append(r.pred_original_sample)
        x = r.prev_sample
    for k, v in rec.items():
        if v:
            out[k] = torch.tensor(v, dtype=torch.int64) if k == 'noise_drawn' else torch.stack(v)
    out['final_sample'] = x
    rows = []
    for ts in i['add_noise_timesteps']:
        s2 = cls.from_config(cfg); s2.set_timesteps(n)
        rows.append(s2.add_noise(i['add_noise_x0'], i['add_noise_noise'], ts))
    out['add_noise'] = torch.stack(rows)
    return out


# ---------------------------------------------------------------- pipelines
def split_weights(w, prefixes):
    return {p: {k[len(p) + 1:]: v for k, v in w.items() if k.startswith(p + '.')} for p in prefixes}


def run_pipeline(cfg, case, w, i):
    comps = [k for k in cfg if k != 'scheduler']
    ws = split_weights(w, comps)
    models = {}
    for c in comps:
        m = model_from_config(cfg[c]); m.load_state_dict(ws[c], strict=True); models[c] = m
    s = getattr(diffusers, cfg['scheduler']['_class_name']).from_config(cfg['scheduler'])
    n = int(case['num_inference_steps'])
    s.set_timesteps(n)
    eta = {'eta': 0.0} if cfg['scheduler']['_class_name'] == 'DDIMScheduler' else {}
    lat = i['latents_T'] * s.init_noise_sigma
    out = {'timesteps': s.timesteps.clone()}
    rec = {}
    def add(k, v): rec.setdefault(k, []).append(v)
    if 'unet' in models and 'vqvae' in models:  # LDMPipeline
        unet, vq = models['unet'], models['vqvae']
        for t in s.timesteps:
            eps = unet(s.scale_model_input(lat, t), t).sample
            r = s.step(eps, t, lat, **eta)
            lat = r.prev_sample
            add('noise_pred_steps', eps); add('latents_steps', lat); add('pred_original_steps', r.pred_original_sample)
        z = lat / vq.config.scaling_factor
        _, _, (_, _, idx) = vq.quantize(z)
        dec = vq.decode(z).sample
        out['decode_indices'] = idx
    else:  # StableDiffusionPipeline with prompt embeddings given
        unet, vae = models['unet'], models['vae']
        gs = float(case.get('guidance_scale', 7.5))
        emb = torch.cat([i['negative_prompt_embeds'], i['prompt_embeds']])
        for t in s.timesteps:
            lmi = s.scale_model_input(torch.cat([lat, lat]), t)
            raw = unet(lmi, t, encoder_hidden_states=emb).sample
            u, c = raw.chunk(2)
            g = u + gs * (c - u)
            lat = s.step(g, t, lat, **eta).prev_sample
            add('latent_model_input_steps', lmi); add('unet_out_steps', raw); add('noise_pred_steps', g); add('latents_steps', lat)
        dec = vae.decode(lat / vae.config.scaling_factor).sample
    for k, v in rec.items():
        out[k] = torch.stack(v)
    out.update({'final_latents': lat, 'decoded': dec, 'image': (dec / 2 + 0.5).clamp(0, 1)})
    return out


def run_original_layout(cfg, case, w, i):
    km = case['key_map_diffusers_to_original']
    out = {}
    models = {}
    for c in ('unet', 'vae'):
        m = model_from_config(cfg[c])
        m.load_state_dict({d: w[o] .reshape(m.state_dict()[d].shape) for d, o in km[c].items()}, strict=True)
        models[c] = m
    out['unet.sample'] = models['unet'](i['unet.sample'], i['unet.timestep'], encoder_hidden_states=i['unet.encoder_hidden_states']).sample
    out['vae.decode'] = models['vae'].decode(i['vae.z']).sample
    out['vae.latent_mean'] = models['vae'].encode(i['vae.x']).latent_dist.mean
    return out


# ---------------------------------------------------------------- dispatch
def load_case(d):
    cfg = json.load(open(os.path.join(d, 'config.json')))
    case = json.load(open(os.path.join(d, 'case.json'))) if os.path.exists(os.path.join(d, 'case.json')) else {}
    wp = os.path.join(d, 'weights.safetensors')
    w = load_file(wp) if os.path.exists(wp) else {}
    io = load_file(os.path.join(d, 'io.safetensors')) if os.path.exists(os.path.join(d, 'io.safetensors')) else {}
    return cfg, case, w, io


def group_of(name):
    return name.split('/')[0]


def build(name, cfg):
    """The module of a model/op case (None for schedulers, pipelines and stateless ops)."""
    g = group_of(name)
    if g == 'ops':
        return op_module(cfg)
    if g in ('autoencoder_kl', 'vq_model', 'unet2d', 'unet2d_condition'):
        return model_from_config(cfg)
    return None


def compute(name, cfg, case, w, inputs, module=None):
    g = group_of(name)
    if g == 'schedulers':
        return run_scheduler(cfg, case, inputs)
    if g == 'pipelines':
        return run_pipeline(cfg, case, w, inputs)
    if g == 'original_layout':
        return run_original_layout(cfg, case, w, inputs)
    m = module if module is not None else build(name, cfg)
    if m is not None and module is None:
        m.load_state_dict(w, strict=True)
    if m is not None:
        m.eval()
    if g == 'ops':
        return op_run(cfg, m, inputs)
    return {'autoencoder_kl': run_autoencoder_kl, 'vq_model': run_vq_model, 'unet2d': run_unet2d,
            'unet2d_condition': run_unet2d_condition}[g](m, inputs, cfg)


def compare(ref, got):
    """(max abs, max rel over outputs, integer mismatches, missing outputs); rel = max|a-b| / max|ref| per output."""
    worst_abs, worst_rel, bad_int, missing = 0.0, 0.0, 0, []
    for k, r in ref.items():
        if k not in got:
            missing.append(k); continue
        a = got[k].detach().reshape(r.shape)
        if not r.is_floating_point():
            bad_int += int((a.to(r.dtype) != r).sum())
            continue
        d = float((a.double() - r.double()).abs().max()) if r.numel() else 0.0
        scale = float(r.double().abs().max()) if r.numel() else 0.0
        worst_abs = max(worst_abs, d)
        worst_rel = max(worst_rel, d / scale if scale > 0 else d)
    return worst_abs, worst_rel, bad_int, missing


def all_cases():
    idx = os.path.join(FIXTURES, 'index.json')
    if os.path.exists(idx):
        return json.load(open(idx))['cases']
    found = []  # a make --out folder: every folder with a case.json
    for d, _, files in sorted(os.walk(FIXTURES)):
        if 'case.json' in files and 'io.safetensors' in files:
            found.append(os.path.relpath(d, FIXTURES))
    return found


def verify(names, rtol):
    names = names or all_cases()
    fails, worst = 0, (0.0, 0.0, None)
    t0 = time.time()
    for name in names:
        d = os.path.join(FIXTURES, name)
        cfg, case, w, io = load_case(d)
        inputs = {k[6:]: v for k, v in io.items() if k.startswith('input.')}
        ref = {k[7:]: v for k, v in io.items() if k.startswith('output.')}
        try:
            got = compute(name, cfg, case, w, inputs)
        except Exception as e:  # report and go on: one broken case must not hide the others
            print('%-48s ERROR %s: %s' % (name, type(e).__name__, e)); fails += 1; continue
        a, r, bad, missing = compare(ref, got)
        ok = r <= rtol and bad == 0 and not missing
        fails += not ok
        if r > worst[1]:
            worst = (a, r, name)
        print('%-48s %s outputs %2d  max_abs %.3e  max_rel %.3e%s%s' % (
            name, 'ok  ' if ok else 'FAIL', len(ref), a, r, '  int_mismatch %d' % bad if bad else '',
            '  missing %s' % missing if missing else ''))
    print('%d cases, %d failed, worst rel %.3e (abs %.3e) in %s, %.0f s' % (len(names), fails, worst[1], worst[0], worst[2] or '-', time.time() - t0))
    return 1 if fails else 0


# ---------------------------------------------------------------- make
def seeded_init(module, g):
    """The README's init: conv/linear ~ N(0, 1/fan_in), biases N(0, 0.05^2), norms 1 + N(0, 0.1^2) / N(0, 0.1^2),
    embeddings N(0, 1)."""
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    for mod_name, mod in module.named_modules():
        for pn, p in mod.named_parameters(recurse=False):
            if isinstance(mod, norms):
                v = (1.0 if pn == 'weight' else 0.0) + 0.1 * torch.randn(p.shape, generator=g)
            elif isinstance(mod, torch.nn.Embedding):
                v = torch.randn(p.shape, generator=g)
            elif p.dim() >= 2:
                v = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
            else:
                v = 0.05 * torch.randn(p.shape, generator=g)
            p.copy_(v)


def make_inputs(name, cfg, template, g):
    """Inputs with the template's shapes and dtypes; values in the ranges the committed cases use."""
    ins = {}
    for k, spec in template['inputs'].items():
        shape = spec['shape']
        if k == 'timesteps_scalar':  # the committed cases' 1, 500, 999: both ends and the middle of the schedule
            ins[k] = torch.linspace(1, 999, shape[0]).round().to(torch.int64)
        elif spec['dtype'] == 'int64' or k.startswith('timestep') or k == 'class_labels':
            hi = (cfg.get('num_class_embeds') or 10) if k == 'class_labels' else 1000
            v = torch.randint(0, hi, shape, generator=g)
            ins[k] = v if spec['dtype'] == 'int64' else v.to(torch.float32) + 0.5
        elif k == 'x' and group_of(name) in ('autoencoder_kl', 'vq_model'):
            ins[k] = torch.rand(shape, generator=g) * 2 - 1
        else:
            ins[k] = torch.randn(shape, generator=g)
    return ins


def tensor_info(v):
    info = {'shape': list(v.shape), 'dtype': str(v.dtype).replace('torch.', '')}
    if v.is_floating_point() and v.numel():
        info['max_abs'] = float(v.abs().max())
    return info


def make(names, out_dir, seed, config_path, like, shapes):
    for name in names:
        tdir = os.path.join(FIXTURES, like or name)
        if not os.path.exists(os.path.join(tdir, 'case.json')):
            sys.exit('make %s: no committed case %s to take the call and input shapes from (use --like)' % (name, like or name))
        template = json.load(open(os.path.join(tdir, 'case.json')))
        for k, shape in (shapes or {}).items():
            template['inputs'][k]['shape'] = shape
        cfg = json.load(open(config_path or os.path.join(tdir, 'config.json')))
        if group_of(name) != group_of(like or name):
            sys.exit('make %s: --like must name a case of the same group' % name)
        g = torch.Generator().manual_seed(seed)
        group = group_of(name)
        w = {}
        if group == 'schedulers':
            n = int(template['num_inference_steps'])
            inputs = {'x_T_unit': torch.randn(template['inputs']['x_T_unit']['shape'], generator=g),
                      'add_noise_x0': torch.randn(template['inputs']['add_noise_x0']['shape'], generator=g),
                      'add_noise_noise': torch.randn(template['inputs']['add_noise_noise']['shape'], generator=g)}
            if 'variance_noise' in template['inputs']:
                inputs['variance_noise'] = torch.randn(template['inputs']['variance_noise']['shape'], generator=g)
            s = getattr(diffusers, cfg['_class_name']).from_config(cfg); s.set_timesteps(n)
            rows, b = template['inputs']['add_noise_timesteps']['shape']
            inputs['add_noise_timesteps'] = s.timesteps[torch.randint(0, n, (rows, b), generator=g)]
            module = None
        elif group == 'pipelines':
            for c in cfg:
                if c == 'scheduler':
                    continue
                m = model_from_config(cfg[c]); seeded_init(m, g)
                w.update({c + '.' + k: v.clone() for k, v in m.state_dict().items()})
            inputs = {k: torch.randn(s['shape'], generator=g) for k, s in template['inputs'].items()}
            module = None
        elif group in ('ops', 'autoencoder_kl', 'vq_model', 'unet2d', 'unet2d_condition'):
            module = build(name, cfg)
            if module is not None:
                seeded_init(module, g); module.eval()
                w = {k: v.clone().contiguous() for k, v in module.state_dict().items()}
            inputs = make_inputs(name, cfg, template, g)
        else:
            sys.exit('make %s: group %s is verify-only' % (name, group))
        outputs = compute(name, cfg, template, w, inputs, module=module)
        again = compute(name, cfg, template, w, inputs, module=module)
        fp64 = {}
        if module is not None:  # the same diffusers code in float64, as the committed cases record it
            import copy
            m64 = copy.deepcopy(module).double()
            in64 = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
            try:
                out64 = compute(name, cfg, template, w, in64, module=m64)
            except Exception as e:
                print('  (no float64 check for %s: %s)' % (name, e)); out64 = {}
            fp64 = {k: compare({k: out64[k].to(v.dtype) if not v.is_floating_point() else out64[k]}, {k: v})[0 if v.is_floating_point() else 2]
                    for k, v in outputs.items() if k in out64}
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        json.dump(cfg, open(os.path.join(d, 'config.json'), 'w'), indent=2, sort_keys=True)
        save_file(w, os.path.join(d, 'weights.safetensors'), metadata=META)
        io = {'input.' + k: v.contiguous() for k, v in inputs.items()}
        io.update({'output.' + k: v.detach().contiguous() for k, v in outputs.items()})
        save_file(io, os.path.join(d, 'io.safetensors'), metadata=META)
        case = {k: template[k] for k in ('call', 'num_inference_steps', 'generator_seed', 'guidance_scale', 'note') if k in template}
        case.update({'case': name, 'generator': 'tools/pyref/gen_fixtures.py make (seed %d)' % seed,
                     'diffusers_version': diffusers.__version__, 'torch_version': torch.__version__, 'device': 'cpu', 'dtype': 'float32',
                     'attention_processor': 'AttnProcessor',
                     'inputs': {k: tensor_info(v) for k, v in inputs.items()},
                     'outputs': {k: dict(tensor_info(v), rerun_max_abs_diff=compare({k: v}, {k: again[k]})[0],
                                         **({'fp64_max_abs_diff': fp64[k]} if k in fp64 else {})) for k, v in outputs.items()},
                     'tolerance_note': 'rerun_max_abs_diff: the fp32 computation repeated; fp64_max_abs_diff: vs the same '
                                       'diffusers code in float64 (ints: number of mismatching entries)'})
        text = json.dumps(case, indent=2)
        text = re.sub(r'\[\s*([-0-9.e, \n]*?)\s*\]', lambda m: '[' + re.sub(r'\s*,\s*', ', ', m.group(1).strip()) + ']', text)
        open(os.path.join(d, 'case.json'), 'w').write(text + '\n')  # shapes on one line, as the committed cases
        print('wrote', d, '(%d weights, %d inputs, %d outputs)' % (len(w), len(inputs), len(outputs)))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('mode', choices=['verify', 'make'])
    ap.add_argument('cases', nargs='*')
    ap.add_argument('--rtol', type=float, default=1e-5)
    ap.add_argument('--out', default='/tmp/fixtures')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--fixtures', default=None, help='verify: case root (default test/fixtures), e.g. a make --out folder')
    ap.add_argument('--config', default=None, help='make: config.json to use instead of the committed case\'s')
    ap.add_argument('--like', default=None, help='make: committed case to copy the call and input shapes from (default: the same name)')
    ap.add_argument('--shapes', default=None, help='make: JSON {input name: shape} overriding the template\'s input shapes')
    a = ap.parse_args()
    global FIXTURES
    if a.mode == 'verify' and a.fixtures:
        FIXTURES = a.fixtures
    if a.mode == 'verify':
        sys.exit(verify(a.cases, a.rtol))
    if not a.cases:
        sys.exit('make needs at least one case name (e.g. ops/linear, unet2d/uncond)')
    sys.exit(make(a.cases, a.out, a.seed, a.config, a.like, json.loads(a.shapes) if a.shapes else None))


if __name__ == '__main__':
    main()
