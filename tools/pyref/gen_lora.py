"""LoRA reference cases from diffusers 0.31 + peft 0.13.2 (vendored; versions in the PYREF folder's vendor/VERSIONS).
The base model is the tiny Stable Diffusion of test/tiny_sd.ts (the txt2img_cfg_ddim fixture's UNet and VAE, the
clip_text/quick_gelu text encoder). The LoRA files are not stored: their tensors come from tools/pyref/seeded.py
(test/seeded.ts makes the same), and case.json lists each file's keys and shapes (and alpha values), so the TS
tests build byte-identical files. Files (rank 4):
  peft   diffusers/PEFT names (unet.*.lora_A/lora_B, text_encoder.*), no alpha (alpha = rank)
  kohya  kohya names with diffusers blocks (lora_unet_*, lora_te_*), alpha 8
  sgm    kohya names with the original checkpoint's blocks (input_blocks / middle_block / output_blocks), alpha 2
  lcm    an LCM-LoRA-shaped kohya file: every module the LCM-LoRA training script targets, alpha 8
  peft_mixed  PEFT names, no alpha, ranks 2/4/8 mixed (merged weights in peft_mixed_refs.safetensors)
  kohya_partial_alpha  kohya names, alpha on some layers only (merged weights also in peft_mixed_refs.safetensors)
Linear and conv (1x1 and 3x3) layers in each. Outputs (refs.safetensors):
  merge/<case>/<component>.<module>.weight   the weights after pipe.load_lora_weights + fuse_lora(lora_scale)
                                             (two LoRAs: fused one after the other, unload_lora_weights between)
  pipe/<case>/image, pipe/<case>/latents     StableDiffusionPipeline.__call__ with those fused weights, prompt_embeds
                                             from the (fused) text encoder on the token ids in case.json,
                                             latents_T and every scheduler noise from the engine's Philox stream of
                                             `seed` (ported below), output_type='pt'
Run: /usr/bin/python3 tools/pyref/gen_lora.py   (PYREF: folder with fixenv.py, default /work/pyref)"""
import json, math, os, sys
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import torch
import diffusers.schedulers.scheduling_lcm as m_lcm
from diffusers import UNet2DConditionModel, AutoencoderKL, StableDiffusionPipeline, DDIMScheduler, LCMScheduler
from transformers import CLIPTextModel, CLIPTextConfig
from safetensors.torch import load_file, save_file
from seeded import seeded_values

root = os.path.dirname(os.path.dirname(here))
FX = os.path.join(root, 'test/fixtures')
out_dir = os.path.join(FX, 'lora'); os.makedirs(out_dir, exist_ok=True)
torch.set_grad_enabled(False)
RANK = 4

# ------------------------------------------------------------------ the engine's noise (src/kernels/randn_host.ts)
M32 = 0xFFFFFFFF
def philox(c, key):
    c0, c1, c2, c3 = c
    k0, k1 = key
    for r in range(10):
        if r > 0:
            k0 = (k0 + 0x9E3779B9) & M32
            k1 = (k1 + 0xBB67AE85) & M32
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c3 ^ k1) & M32, p0 & M32
    return c0, c1, c2, c3

def randn(shape, seed, offset=0):
    n = 1
    for d in shape: n *= d
    key = (seed % 2**32, seed // 2**32)
    out, g, l = [], offset // 4, offset % 4
    while len(out) < n:
        x = philox((g % 2**32, g // 2**32, 0, 0), key)
        v = []
        for p in range(2):
            u = ((x[2 * p] >> 8) + 1) / 2**24
            r = math.sqrt(-2 * math.log(u))
            th = (2 * math.pi * (x[2 * p + 1] >> 8)) / 2**24
            v += [r * math.cos(th), r * math.sin(th)]
        for j in range(l, 4):
            if len(out) < n: out.append(v[j])
        g += 1; l = 0
    return torch.tensor(out, dtype=torch.float64).to(torch.float32).reshape(shape)

# ------------------------------------------------------------------ base model
cfg = json.load(open(os.path.join(FX, 'pipelines/txt2img_cfg_ddim/config.json')))
w = load_file(os.path.join(FX, 'pipelines/txt2img_cfg_ddim/weights.safetensors'))
TE_DIR = os.path.join(FX, 'clip_text/quick_gelu')

def base_pipe():
    unet = UNet2DConditionModel.from_config(cfg['unet'])
    unet.load_state_dict({k[5:]: v for k, v in w.items() if k.startswith('unet.')}, strict=True)
    vae = AutoencoderKL.from_config(cfg['vae'])
    vae.load_state_dict({k[4:]: v for k, v in w.items() if k.startswith('vae.')}, strict=True)
    te = CLIPTextModel(CLIPTextConfig.from_pretrained(TE_DIR))
    missing, unexpected = te.load_state_dict(load_file(os.path.join(TE_DIR, 'model.safetensors')), strict=False)
    assert all('position_ids' in k for k in missing + unexpected), (missing, unexpected)
    sched = DDIMScheduler.from_config(cfg['scheduler'])
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=None, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.float32)

P0 = base_pipe()
MODS = {'unet': dict(P0.unet.named_modules()), 'text_encoder': dict(P0.text_encoder.named_modules())}

# ------------------------------------------------------------------ LoRA files (manifests + tensors)
UNET_PICK = [
    'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q', 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k',
    'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v', 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0',
    'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k', 'down_blocks.0.attentions.0.proj_in',
    'down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj', 'down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2',
    'down_blocks.0.resnets.0.conv1', 'down_blocks.0.resnets.0.time_emb_proj', 'down_blocks.1.resnets.0.conv_shortcut',
    'mid_block.attentions.0.transformer_blocks.0.attn2.to_v', 'up_blocks.1.attentions.0.proj_out', 'up_blocks.0.upsamplers.0.conv',
]
TE_PICK = [
    'text_model.encoder.layers.0.self_attn.q_proj', 'text_model.encoder.layers.0.self_attn.k_proj', 'text_model.encoder.layers.0.self_attn.v_proj',
    'text_model.encoder.layers.0.self_attn.out_proj', 'text_model.encoder.layers.1.mlp.fc1', 'text_model.encoder.layers.1.mlp.fc2',
]
# original-numbering name -> diffusers module (layers_per_block 1: input_blocks 1 = down 0 layer 0, 2 = down 0's
# downsampler, 3 = down 1 layer 0; output_blocks 2 and 3 = up 1 layers 0 and 1)
SGM_PICK = {
    'input_blocks_1_1_transformer_blocks_0_attn1_to_q': 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q',
    'input_blocks_1_1_proj_in': 'down_blocks.0.attentions.0.proj_in',
    'input_blocks_1_0_in_layers_2': 'down_blocks.0.resnets.0.conv1',
    'input_blocks_1_0_emb_layers_1': 'down_blocks.0.resnets.0.time_emb_proj',
    'input_blocks_2_0_op': 'down_blocks.0.downsamplers.0.conv',
    'input_blocks_3_0_skip_connection': 'down_blocks.1.resnets.0.conv_shortcut',
    'middle_block_1_transformer_blocks_0_attn2_to_k': 'mid_block.attentions.0.transformer_blocks.0.attn2.to_k',
    'middle_block_2_out_layers_3': 'mid_block.resnets.1.conv2',
    'output_blocks_3_1_transformer_blocks_0_attn1_to_q': 'up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q',
    'output_blocks_2_0_skip_connection': 'up_blocks.1.resnets.0.conv_shortcut',
}
LCM_TARGETS = ('to_q', 'to_k', 'to_v', 'to_out.0', 'proj_in', 'proj_out', 'ff.net.0.proj', 'ff.net.2', 'conv1', 'conv2',
               'conv_shortcut', 'downsamplers.0.conv', 'upsamplers.0.conv', 'time_emb_proj')

def lora_shapes(mod):
    wt = mod.weight
    if wt.dim() == 2:
        return [RANK, wt.shape[1]], [wt.shape[0], RANK]
    return [RANK, wt.shape[1], wt.shape[2], wt.shape[3]], [wt.shape[0], RANK, 1, 1]

def kohya_entries(prefix, name, mod, alpha):
    d, u = lora_shapes(mod)
    return [{'key': f'{prefix}{name}.lora_down.weight', 'shape': d}, {'key': f'{prefix}{name}.lora_up.weight', 'shape': u},
            {'key': f'{prefix}{name}.alpha', 'shape': [], 'values': [alpha]}]

FILES = {}
FILES['peft'] = [e for comp, picks in (('unet', UNET_PICK), ('text_encoder', TE_PICK)) for m in picks for e in (
    {'key': f'{comp}.{m}.lora_A.weight', 'shape': lora_shapes(MODS[comp][m])[0]},
    {'key': f'{comp}.{m}.lora_B.weight', 'shape': lora_shapes(MODS[comp][m])[1]})]
FILES['kohya'] = [e for m in UNET_PICK for e in kohya_entries('lora_unet_', m.replace('.', '_'), MODS['unet'][m], 8.0)] + \
                 [e for m in TE_PICK for e in kohya_entries('lora_te_', m.replace('.', '_'), MODS['text_encoder'][m], 8.0)]
FILES['sgm'] = [e for k, m in SGM_PICK.items() for e in kohya_entries('lora_unet_', k, MODS['unet'][m], 2.0)] + \
               kohya_entries('lora_te_', 'text_model_encoder_layers_1_mlp_fc2', MODS['text_encoder']['text_model.encoder.layers.1.mlp.fc2'], 2.0)
FILES['lcm'] = [e for n, m in MODS['unet'].items() if hasattr(m, 'weight') and m.weight is not None and m.weight.dim() in (2, 4)
                and any(n == t or n.endswith('.' + t) for t in LCM_TARGETS) and 'time_embedding' not in n
                for e in kohya_entries('lora_unet_', n.replace('.', '_'), m, 8.0)]

def lora_dict(name):
    return {e['key']: (torch.tensor(e['values'][0], dtype=torch.float32) if 'values' in e else seeded_values(e['key'], e['shape']))
            for e in FILES[name]}

# ------------------------------------------------------------------ fusing
def targets(name):
    """(component, module) the file touches, from the manifest (diffusers names)."""
    out = []
    inv_sgm = {'lora_unet_' + k: v for k, v in SGM_PICK.items()}
    for e in FILES[name]:
        k = e['key']
        if k.endswith('lora_A.weight'):
            comp, rest = k.split('.', 1)
            out.append((comp, rest[:-len('.lora_A.weight')]))
        elif k.endswith('lora_down.weight'):
            stem = k[:-len('.lora_down.weight')]
            if stem in inv_sgm: out.append(('unet', inv_sgm[stem])); continue
            comp = 'unet' if stem.startswith('lora_unet_') else 'text_encoder'
            und = stem[len('lora_unet_'):] if comp == 'unet' else stem[len('lora_te_'):]
            m = [n for n in MODS[comp] if n.replace('.', '_') == und]
            assert len(m) == 1, (k, m)
            out.append((comp, m[0]))
    return out

def fused_pipe(loras, scheduler=None):
    """loras: [(file, scale)], fused one after the other; checks diffusers' result against the formula."""
    pipe = base_pipe()
    expect = {}
    for i, (name, scale) in enumerate(loras):
        sd = lora_dict(name)
        for comp, m in targets(name):
            mod = dict(getattr(pipe, comp).named_modules())[m]
            key = (comp, m)
            if key not in expect: expect[key] = mod.weight.detach().clone().double()
            if name == 'peft':
                down, up, alpha = sd[f'{comp}.{m}.lora_A.weight'], sd[f'{comp}.{m}.lora_B.weight'], RANK
            else:
                stem = [k[:-len('.lora_down.weight')] for k in sd if k.endswith('lora_down.weight') and (comp, m) == targets_of(name, k)][0]
                down, up, alpha = sd[stem + '.lora_down.weight'], sd[stem + '.lora_up.weight'], sd[stem + '.alpha'].item()
            delta = up.double().reshape(up.shape[0], RANK) @ down.double().reshape(RANK, -1)
            expect[key] += scale * alpha / RANK * delta.reshape(expect[key].shape)
        # unet_config: the SD pipeline maps original (SGM) block numbers only when given it (SDXL's passes it itself)
        pipe.load_lora_weights(dict(sd), adapter_name=f'l{i}', unet_config=pipe.unet.config)
        pipe.fuse_lora(lora_scale=scale, adapter_names=[f'l{i}'])
        pipe.unload_lora_weights()
    worst = 0.0
    for (comp, m), e in expect.items():
        got = dict(getattr(pipe, comp).named_modules())[m].weight.double()
        err = ((got - e).norm() / e.norm()).item()
        if err > 1e-6: print("   ", comp, m, err)
        worst = max(worst, err)
    print(f'  {loras}: diffusers fuse_lora vs the formula (float64): worst rel L2 {worst:.2e} over {len(expect)} layers')
    assert worst < 1e-6
    if scheduler == 'lcm':
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    return pipe, sorted(expect)

_tcache = {}
def targets_of(name, key):
    if name not in _tcache:
        ks = [e['key'] for e in FILES[name] if e['key'].endswith('lora_down.weight')]
        _tcache[name] = dict(zip(ks, targets(name)))
    return _tcache[name][key]

refs, cases = {}, {}
MERGES = {'peft': [('peft', 0.8)], 'kohya': [('kohya', 0.8)], 'sgm': [('sgm', 1.0)], 'two': [('peft', 0.7), ('kohya', -0.5)]}
for case, loras in MERGES.items():
    pipe, keys = fused_pipe(loras)
    for comp, m in keys:
        refs[f'merge/{case}/{comp}.{m}.weight'] = dict(getattr(pipe, comp).named_modules())[m].weight.detach().clone().contiguous()
    cases[f'merge/{case}'] = {'loras': [{'file': n, 'scale': s} for n, s in loras], 'weights': [f'{c}.{m}.weight' for c, m in keys]}

# ------------------------------------------------------------------ pipelines
PROMPT = 'a photo of an astronaut riding a horse'
IDS = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558] + [49407] * 68
NEG_IDS = [49406] + [49407] * 76

_noise = []
def given_noise(shape, generator=None, device=None, dtype=None, layout=None):
    n = _noise.pop(0)
    assert tuple(n.shape) == tuple(shape), (n.shape, shape)
    return n.to(dtype)
m_lcm.randn_tensor = given_noise

PIPES = {
    'kohya_ddim': dict(loras=[('kohya', 0.8)], scheduler='ddim', steps=2, guidance=7.5, seed=7),
    'two_ddim': dict(loras=[('peft', 0.7), ('kohya', 0.5)], scheduler='ddim', steps=2, guidance=7.5, seed=7),
    'lcm': dict(loras=[('lcm', 1.0)], scheduler='lcm', steps=4, guidance=1.5, seed=42),
}
shape = (1, 4, 8, 8)
for case, c in PIPES.items():
    pipe, _ = fused_pipe(c['loras'], c['scheduler'])
    pe = pipe.text_encoder(torch.tensor([IDS]))[0]
    ne = pipe.text_encoder(torch.tensor([NEG_IDS]))[0]
    latents = randn(shape, c['seed'])
    _noise[:] = [randn(shape, c['seed'], (d + 1) * 64 * 4) for d in range(c['steps'])]
    seen = []
    def cb(p, i, t, kw):
        seen.append(kw['latents'].clone()); return {}
    img = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, latents=latents.clone(), num_inference_steps=c['steps'],
               guidance_scale=c['guidance'], output_type='pt', callback_on_step_end=cb, callback_on_step_end_tensor_inputs=['latents']).images
    used = c['steps'] - 1 if c['scheduler'] == 'lcm' else 0
    assert len(_noise) == c['steps'] - used, len(_noise)
    refs[f'pipe/{case}/image'] = img.contiguous()
    refs[f'pipe/{case}/latents'] = torch.stack(seen).contiguous()
    print(f'  pipe/{case}: image mean {img.mean().item():.4f} std {img.std().item():.4f}; timesteps {pipe.scheduler.timesteps.tolist()}')
    cases[f'pipe/{case}'] = {'loras': [{'file': n, 'scale': s} for n, s in c['loras']], 'scheduler': c['scheduler'], 'steps': c['steps'],
                             'guidance_scale': c['guidance'], 'seed': c['seed'], 'timesteps': pipe.scheduler.timesteps.tolist()}

# ------------------------------------------------------------------ SDXL: kohya original numbering + lora_te1_/lora_te2_
# The tiny SDXL base of test/tiny_sdxl.ts (test/fixtures/sdxl_pipeline/manifest.json configs, seeded weights):
# layers_per_block 2, DownBlock2D first, transformer_layers_per_block [1, 2], linear projections, text_encoder_2
# with text_projection. Only merged weights are compared (the pipeline itself is tested in sdxl_pipeline).
from diffusers import StableDiffusionXLPipeline, EulerDiscreteScheduler
from transformers import CLIPTextModelWithProjection
from seeded import fill_seeded
xm = json.load(open(os.path.join(FX, 'sdxl_pipeline/manifest.json')))
def sdxl_pipe():
    xc = xm['configs']
    unet = UNet2DConditionModel.from_config(xc['unet']); fill_seeded(unet)
    te1 = CLIPTextModel(CLIPTextConfig.from_dict(xc['text_encoder'])); fill_seeded(te1)
    te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(xc['text_encoder_2'])); fill_seeded(te2)
    vae = AutoencoderKL.from_config(xc['vae'])
    p = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=None, tokenizer_2=None, unet=unet,
                                  scheduler=EulerDiscreteScheduler.from_config(xc['scheduler']), add_watermarker=False)
    return p.to(torch.float32)
X0 = sdxl_pipe()
XMODS = {'unet': dict(X0.unet.named_modules()), 'text_encoder': dict(X0.text_encoder.named_modules()),
         'text_encoder_2': dict(X0.text_encoder_2.named_modules())}
# layers_per_block 2 (S = 3): input_blocks 1, 2 = down 0 resnets, 3 = its downsampler, 4, 5 = down 1 layers 0, 1;
# output_blocks 0-2 = up 0 (CrossAttnUpBlock2D, upsampler at .2.conv), 3-5 = up 1 (UpBlock2D)
SDXL_SGM = {
    'input_blocks_1_0_in_layers_2': 'down_blocks.0.resnets.0.conv1',
    'input_blocks_2_0_emb_layers_1': 'down_blocks.0.resnets.1.time_emb_proj',
    'input_blocks_3_0_op': 'down_blocks.0.downsamplers.0.conv',
    'input_blocks_4_0_skip_connection': 'down_blocks.1.resnets.0.conv_shortcut',
    'input_blocks_4_1_transformer_blocks_1_attn2_to_k': 'down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k',
    'input_blocks_5_1_proj_in': 'down_blocks.1.attentions.1.proj_in',
    'middle_block_0_emb_layers_1': 'mid_block.resnets.0.time_emb_proj',
    'middle_block_1_transformer_blocks_1_ff_net_2': 'mid_block.attentions.0.transformer_blocks.1.ff.net.2',
    'output_blocks_0_1_transformer_blocks_0_attn1_to_out_0': 'up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0',
    'output_blocks_2_1_proj_out': 'up_blocks.0.attentions.2.proj_out',
    'output_blocks_2_2_conv': 'up_blocks.0.upsamplers.0.conv',
    'output_blocks_4_0_skip_connection': 'up_blocks.1.resnets.1.conv_shortcut',
}
# (each with an out_proj: diffusers 0.31 infers the text encoder's key style from to_out_lora)
SDXL_TE = {'lora_te1_': ('text_encoder', ['text_model.encoder.layers.0.self_attn.q_proj', 'text_model.encoder.layers.0.self_attn.out_proj', 'text_model.encoder.layers.1.mlp.fc1']),
           'lora_te2_': ('text_encoder_2', ['text_model.encoder.layers.0.self_attn.k_proj', 'text_model.encoder.layers.1.self_attn.out_proj', 'text_model.encoder.layers.1.mlp.fc2'])}
FILES['sdxl_kohya'] = [e for k, m in SDXL_SGM.items() for e in kohya_entries('lora_unet_', k, XMODS['unet'][m], 8.0)] + \
    [e for pre, (comp, ms) in SDXL_TE.items() for m in ms for e in kohya_entries(pre, m.replace('.', '_'), XMODS[comp][m], 8.0)]
SDXL_PEFT = [('unet', 'down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v'), ('text_encoder_2', 'text_model.encoder.layers.1.self_attn.out_proj'),
             ('text_encoder_2', 'text_model.encoder.layers.0.self_attn.v_proj'), ('text_encoder', 'text_model.encoder.layers.0.self_attn.out_proj')]
FILES['sdxl_peft'] = [e for comp, m in SDXL_PEFT for e in (
    {'key': f'{comp}.{m}.lora_A.weight', 'shape': lora_shapes(XMODS[comp][m])[0]},
    {'key': f'{comp}.{m}.lora_B.weight', 'shape': lora_shapes(XMODS[comp][m])[1]})]
xp = sdxl_pipe()
expect, names, xrefs = {}, [], {}
for i, (name, scale) in enumerate([('sdxl_kohya', 0.9), ('sdxl_peft', 0.6)]):
    sd = lora_dict(name)
    if name == 'sdxl_kohya':
        pairs = [('unet', m, 'lora_unet_' + k) for k, m in SDXL_SGM.items()] + [(comp, m, pre + m.replace('.', '_')) for pre, (comp, ms) in SDXL_TE.items() for m in ms]
        items = [(c, m, sd[st + '.lora_down.weight'], sd[st + '.lora_up.weight'], sd[st + '.alpha'].item()) for c, m, st in pairs]
    else:
        items = [(c, m, sd[f'{c}.{m}.lora_A.weight'], sd[f'{c}.{m}.lora_B.weight'], RANK) for c, m in SDXL_PEFT]
    for c, m, down, up, alpha in items:
        key = (c, m)
        if key not in expect: expect[key] = dict(getattr(xp, c).named_modules())[m].weight.detach().clone().double()
        expect[key] += scale * alpha / RANK * (up.double().reshape(up.shape[0], RANK) @ down.double().reshape(RANK, -1)).reshape(expect[key].shape)
    xp.load_lora_weights(dict(sd), adapter_name=f'x{i}')
    xp.fuse_lora(lora_scale=scale, adapter_names=[f'x{i}'])
    xp.unload_lora_weights()
worst = 0.0
for (c, m), e in sorted(expect.items()):
    got = dict(getattr(xp, c).named_modules())[m].weight.detach()
    worst = max(worst, ((got.double() - e).norm() / e.norm()).item())
    xrefs[f'merge/sdxl/{c}.{m}.weight'] = got.clone().contiguous()
    names.append(f'{c}.{m}.weight')
print(f'  sdxl (kohya original numbering 0.9 + PEFT 0.6): diffusers fuse_lora vs the formula: worst rel L2 {worst:.2e} over {len(expect)} layers')
assert worst < 1e-6
cases['merge/sdxl'] = {'loras': [{'file': 'sdxl_kohya', 'scale': 0.9}, {'file': 'sdxl_peft', 'scale': 0.6}], 'weights': names}

# ------------------------------------------------------------------ PEFT without alpha, mixed ranks
# diffusers 0.31 (utils/peft_utils.get_peft_kwargs) gives every module lora_alpha = the rank of the FIRST
# lora_B in its rank dict (r = the most common rank, rank_pattern the others; no alpha_pattern), so each
# module's scale is first_rank / own_rank. The rank dict's order: the UNet's state-dict order (a file
# loads with sorted keys, as safetensors' load_file gives them: passed here as a sorted dict); the text
# encoder's, its attention modules layer by layer (out_proj, q_proj, k_proj, v_proj), then its MLPs (fc1, fc2).
MIXED = {'unet': {'down_blocks.0.attentions.0.proj_in': 2, 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q': 4,
                  'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v': 4, 'down_blocks.0.resnets.0.conv1': 8,
                  'mid_block.attentions.0.transformer_blocks.0.attn2.to_v': 4, 'up_blocks.1.attentions.0.proj_out': 4},
         'text_encoder': {'text_model.encoder.layers.0.mlp.fc1': 2, 'text_model.encoder.layers.0.self_attn.out_proj': 8,
                          'text_model.encoder.layers.0.self_attn.q_proj': 4, 'text_model.encoder.layers.1.self_attn.k_proj': 4,
                          'text_model.encoder.layers.1.mlp.fc2': 4}}
FIRST_ALPHA = {'unet': 2, 'text_encoder': 8}  # sorted-first UNet key (proj_in); the text encoder's first attention out_proj
def shapes_r(mod, r):
    wt = mod.weight
    if wt.dim() == 2: return [r, wt.shape[1]], [wt.shape[0], r]
    return [r, wt.shape[1], wt.shape[2], wt.shape[3]], [wt.shape[0], r, 1, 1]
FILES['peft_mixed'] = [e for comp, ms in MIXED.items() for m, r in ms.items() for e in (
    {'key': f'{comp}.{m}.lora_A.weight', 'shape': shapes_r(MODS[comp][m], r)[0]},
    {'key': f'{comp}.{m}.lora_B.weight', 'shape': shapes_r(MODS[comp][m], r)[1]})]
mp = base_pipe()
sd = lora_dict('peft_mixed')
expect = {}
SCALE_MIXED = 0.8
for comp, ms in MIXED.items():
    for m, r in ms.items():
        w0 = dict(getattr(mp, comp).named_modules())[m].weight.detach().double()
        up, down = sd[f'{comp}.{m}.lora_B.weight'].double(), sd[f'{comp}.{m}.lora_A.weight'].double()
        expect[(comp, m)] = w0 + SCALE_MIXED * FIRST_ALPHA[comp] / r * (up.reshape(up.shape[0], r) @ down.reshape(r, -1)).reshape(w0.shape)
mp.load_lora_weights(dict(sorted(sd.items())), adapter_name='mixed')
mp.fuse_lora(lora_scale=SCALE_MIXED, adapter_names=['mixed'])
mp.unload_lora_weights()
mrefs, names, worst = {}, [], 0.0
for (comp, m), e in sorted(expect.items()):
    got = dict(getattr(mp, comp).named_modules())[m].weight.detach()
    worst = max(worst, ((got.double() - e).norm() / e.norm()).item())
    mrefs[f'merge/peft_mixed/{comp}.{m}.weight'] = got.clone().contiguous()
    names.append(f'{comp}.{m}.weight')
print(f'  peft_mixed: diffusers fuse_lora vs alpha = first rank (unet 2, text_encoder 8): worst rel L2 {worst:.2e}')
assert worst < 1e-6
cases['merge/peft_mixed'] = {'loras': [{'file': 'peft_mixed', 'scale': SCALE_MIXED}], 'weights': names}
save_file(mrefs, os.path.join(out_dir, 'peft_mixed_refs.safetensors'))

# ------------------------------------------------------------------ kohya with alpha on some layers only
# diffusers 0.31: lora_alpha = the most common alpha of the component (Counter.most_common: ties go to the
# first, in sorted lora_down key order), alpha_pattern for the other alphas; layers without alpha get lora_alpha.
PARTIAL = {'unet': {'down_blocks.0.attentions.0.proj_in': 2.0, 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q': 8.0,
                    'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v': None, 'down_blocks.0.resnets.0.conv1': 8.0,
                    'mid_block.attentions.0.transformer_blocks.0.attn2.to_v': 8.0, 'up_blocks.1.attentions.0.proj_out': None},
           'text_encoder': {'text_model.encoder.layers.0.mlp.fc1': 2.0, 'text_model.encoder.layers.0.self_attn.out_proj': 2.0,
                            'text_model.encoder.layers.1.mlp.fc2': 8.0, 'text_model.encoder.layers.0.self_attn.q_proj': None}}
# (a minority alpha on a text-encoder attention module is lost in diffusers 0.31: get_peft_kwargs builds its
# alpha_pattern key as '...self_attn' from the '...self_attn.to_out_lora.down.weight.alpha' name, which matches no
# module, so such a layer gets the most common alpha instead of its own; this engine keeps each layer's alpha
# as kohya does, so the case puts the minority alpha on an MLP layer, where diffusers keeps it)
COMMON_ALPHA = {'unet': 8.0, 'text_encoder': 2.0}
FILES['kohya_partial_alpha'] = [e for comp, ms in PARTIAL.items() for m, a in ms.items()
                                for e in kohya_entries('lora_unet_' if comp == 'unet' else 'lora_te_', m.replace('.', '_'), MODS[comp][m], a)
                                if a is not None or not e['key'].endswith('.alpha')]
pp = base_pipe()
sd = lora_dict('kohya_partial_alpha')
expect = {}
for comp, ms in PARTIAL.items():
    for m, a in ms.items():
        stem = ('lora_unet_' if comp == 'unet' else 'lora_te_') + m.replace('.', '_')
        w0 = dict(getattr(pp, comp).named_modules())[m].weight.detach().double()
        up, down = sd[stem + '.lora_up.weight'].double(), sd[stem + '.lora_down.weight'].double()
        alpha = a if a is not None else COMMON_ALPHA[comp]
        expect[(comp, m)] = w0 + 0.8 * alpha / RANK * (up.reshape(up.shape[0], RANK) @ down.reshape(RANK, -1)).reshape(w0.shape)
pp.load_lora_weights(dict(sorted(sd.items())), adapter_name='partial')
pp.fuse_lora(lora_scale=0.8, adapter_names=['partial'])
pp.unload_lora_weights()
worst = 0.0
names = []
for (comp, m), e in sorted(expect.items()):
    got = dict(getattr(pp, comp).named_modules())[m].weight.detach()
    worst = max(worst, ((got.double() - e).norm() / e.norm()).item())
    mrefs[f'merge/kohya_partial_alpha/{comp}.{m}.weight'] = got.clone().contiguous()
    names.append(f'{comp}.{m}.weight')
print(f'  kohya_partial_alpha: diffusers fuse_lora vs missing alpha = most common alpha (unet 8, text_encoder 2): worst rel L2 {worst:.2e}')
assert worst < 1e-6
cases['merge/kohya_partial_alpha'] = {'loras': [{'file': 'kohya_partial_alpha', 'scale': 0.8}], 'weights': names}
save_file(mrefs, os.path.join(out_dir, 'peft_mixed_refs.safetensors'))

save_file(refs, os.path.join(out_dir, 'refs.safetensors'))
save_file(xrefs, os.path.join(out_dir, 'sdxl_refs.safetensors'))
meta = {
    'generator': 'tools/pyref/gen_lora.py', 'diffusers_version': '0.31.0', 'peft_version': '0.13.2', 'torch_version': torch.__version__,
    'rank': RANK, 'prompt': PROMPT, 'prompt_ids': IDS, 'negative_prompt_ids': NEG_IDS,
    'files': FILES, 'cases': cases,
}
json.dump(meta, open(os.path.join(out_dir, 'case.json'), 'w'), indent=1)
print('wrote', out_dir, [os.path.getsize(os.path.join(out_dir, f)) for f in ('refs.safetensors', 'sdxl_refs.safetensors')], 'bytes of refs')
