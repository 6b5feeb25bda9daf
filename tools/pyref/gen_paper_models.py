"""Reference cases for LatentDiffusion.fromOriginal: the paper's release configs (CompVis
latent-diffusion @ a506df5, configs/ and models/ldm/) shrunk in size only (model_channels 32,
context 32, ddconfig.ch 32, n_embed 64, BERT 2 layers; every structural option kept), built with
the original code, weights from tools/pyref/seeded.py (so none are stored: test/seeded.ts makes the
same ones). Per case in test/fixtures/paper/<case>/: config.yaml, manifest.json (state-dict keys and
shapes, scale_factor's value) and refs.safetensors (encoder output, UNet output for given x/t/cond,
a 4-step DDIM run from a given x_T through CompVis' DDIMSampler, decoded image, first-stage encode).
Run: /usr/bin/python3 tools/pyref/gen_paper_models.py   (PYREF: folder with fixenv.py, default /work/pyref)"""
import json, os, sys, types
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
VENDOR = os.path.join(os.environ.get('PYREF', '/work/pyref'), 'vendor')
sys.path.insert(0, os.path.join(VENDOR, 'latent-diffusion'))
sys.path.insert(0, os.path.join(VENDOR, 'taming-transformers'))
import torch
import torch.nn as nn
from seeded import fill_seeded

# --- stand-ins for what cannot be installed here (none of it is numerics) ---
def mod(name, **attrs):
    m = types.ModuleType(name); m.__dict__.update(attrs); sys.modules[name] = m; return m
class LightningModule(nn.Module):
    @property
    def device(self): return torch.device('cpu')
def rank_zero_only(f): return f
mod('pytorch_lightning', LightningModule=LightningModule, __version__='1.4.2')
mod('pytorch_lightning.utilities'); mod('pytorch_lightning.utilities.distributed', rank_zero_only=rank_zero_only)
import transformers.tokenization_utils_base as tub  # before the torchvision stand-in (it probes specs)
tub.AddedToken.__hash__ = lambda self: hash(self.content)
from transformers import BertTokenizer
import importlib.machinery
for n in ['torchvision', 'torchvision.utils', 'clip', 'kornia']:
    mod(n, make_grid=None).__spec__ = importlib.machinery.ModuleSpec(n, None)
from omegaconf import OmegaConf
from ldm.util import instantiate_from_config
import ldm.modules.encoders.modules as enc
from ldm.models.diffusion import ddim as ddim_mod
from safetensors.torch import save_file

root = os.path.dirname(os.path.dirname(here))
VOCAB = os.path.join(root, 'test/fixtures/tokenizers/bert-base-uncased/vocab.txt')

class SlowBERTTokenizer(nn.Module):
    """CompVis' BERTTokenizer with transformers' slow BertTokenizer (same ids on this vocabulary)."""
    def __init__(self, device='cuda', vq_interface=True, max_length=77):
        super().__init__(); self.tok = BertTokenizer(VOCAB, do_lower_case=True); self.max_length = max_length
    def forward(self, text):
        return self.tok(text, truncation=True, max_length=self.max_length, padding='max_length', return_tensors='pt')['input_ids']
enc.BERTTokenizer = SlowBERTTokenizer
ddim_mod.DDIMSampler.register_buffer = lambda self, name, attr: setattr(self, name, attr)  # no .to('cuda')

REL = os.path.join(VENDOR, 'latent-diffusion')
CASES = {
    # name: (release config, latent size, extra)
    'cin256-v2': ('configs/latent-diffusion/cin256-v2.yaml', 8),
    'txt2img-1p4B': ('configs/latent-diffusion/txt2img-1p4B-eval.yaml', 8),
    'celeba256': ('models/ldm/celeba256/config.yaml', 8),
    'bsr_sr': ('models/ldm/bsr_sr/config.yaml', 8),
    'semantic_synthesis256': ('models/ldm/semantic_synthesis256/config.yaml', 8),
    'lsun_churches256': ('models/ldm/lsun_churches256/config.yaml', 16),
    'cin256': ('models/ldm/cin256/config.yaml', 8),
    'text2img256': ('models/ldm/text2img256/config.yaml', 8),
    'layout2img-openimages256': ('models/ldm/layout2img-openimages256/config.yaml', 8),
    'inpainting_big': ('models/ldm/inpainting_big/config.yaml', 8),
    'ffhq256': ('models/ldm/ffhq256/config.yaml', 8),
    'lsun_beds256': ('models/ldm/lsun_beds256/config.yaml', 8),
    # twice semantic_synthesis256's latent size, as in the releases (128 vs 64)
    'semantic_synthesis512': ('models/ldm/semantic_synthesis512/config.yaml', 16),
}

def strip(node, key):
    if isinstance(node, dict):
        node.pop(key, None)
        for v in node.values(): strip(v, key)

def shrink(cfg, latent):
    p = cfg['model']['params']
    u = p['unet_config']['params']
    u['model_channels'] = 32; u['image_size'] = latent; p['image_size'] = latent
    if u.get('context_dim'): u['context_dim'] = 32
    f = p['first_stage_config']['params']
    f['ddconfig']['ch'] = 32
    if 'n_embed' in f: f['n_embed'] = 64
    f['lossconfig'] = {'target': 'torch.nn.Identity'}
    c = p['cond_stage_config']
    if isinstance(c, dict):
        t = c['target']
        if t.endswith('ClassEmbedder'): c['params']['embed_dim'] = 32
        if t.endswith('BERTEmbedder'): c['params'].update(n_embed=32, n_layer=2)
    strip(cfg, 'ckpt_path')
    return cfg

g = torch.Generator().manual_seed(0)
def randn(*shape): return torch.randn(*shape, generator=g)

def make(name, rel, latent):
    g.manual_seed(0)  # each case draws its inputs from its own seed: cases regenerate alone
    cfg = shrink(OmegaConf.to_container(OmegaConf.load(os.path.join(REL, rel))), latent)
    model = instantiate_from_config(cfg['model'])
    p = cfg['model']['params']
    # __is_first_stage__: cond_stage_model IS first_stage_model (one module, both names in the state
    # dict); seed it through the first_stage_model names only
    shared = p['cond_stage_config'] == '__is_first_stage__'
    fill_seeded(model, ('model.diffusion_model.', 'first_stage_model.') + (() if shared else ('cond_stage_model.',)))
    model.eval()
    if p.get('scale_by_std'):
        model.scale_factor.fill_(0.5)  # learned from data in training; a value != 1 the loader must read from the checkpoint
    C = p['unet_config']['params']['out_channels']
    refs, meta = {}, {'case': name, 'release_config': rel}
    ckey = model.model.conditioning_key
    with torch.no_grad():
        # conditioning
        cond = uc = cc = None
        ct = p['cond_stage_config'] if isinstance(p['cond_stage_config'], str) else p['cond_stage_config']['target']
        if ct.endswith('ClassEmbedder'):
            n = p['cond_stage_config']['params'].get('n_classes', 1000)
            labels = [3, n - 1]
            cc = model.get_learned_conditioning({model.cond_stage_key: torch.tensor(labels)})
            refs['cond'] = cc; meta['class_labels'] = labels
            # cin256-v2's last class is its null class; models/ldm/cin256 (1000 classes) has none: no guidance
            cond, uc = cc[:1], (cc[1:] if n == 1001 else None)
        elif ct.endswith('BERTEmbedder') and p['cond_stage_config']['params'].get('use_tokenizer', True) is False:
            # layout2img: the bounding-box token sequence goes to the encoder as it is; no guidance
            cp = p['cond_stage_config']['params']
            tokens = torch.randint(0, cp['vocab_size'], (2, cp['max_seq_len']), generator=g)
            cc = model.get_learned_conditioning(tokens)
            refs['cond'] = cc; meta['tokens'] = tokens.tolist()
            cond, uc = cc[:1], None
        elif ct.endswith('BERTEmbedder'):
            prompts = ['a painting of a virus monster playing guitar', '']
            cc = model.get_learned_conditioning(prompts)
            refs['cond'] = cc; meta['prompts'] = prompts
            cond, uc = cc[:1], cc[1:]
        elif ct.endswith('SpatialRescaler'):
            H = latent * 2 ** (len(p['first_stage_config']['params']['ddconfig']['ch_mult']) - 1)
            lab = torch.randint(0, 182, (1, H, H), generator=g)
            seg = torch.nn.functional.one_hot(lab, 182).permute(0, 3, 1, 2).float()
            refs['seg_labels'] = lab.float()  # the one-hot map is rebuilt from these
            cond = model.get_learned_conditioning(seg); refs['cond'] = cond
        elif ct == '__is_first_stage__':
            # scripts/inpaint.py: image, mask (1 = fill) and masked image mapped to [-1, 1]; the cond is
            # the first stage's encoding of the masked image + the mask resized (nearest) to the latents
            H = latent * 4
            image = torch.rand(1, 3, H, H, generator=g)
            mask = torch.zeros(1, 1, H, H); mask[:, :, H // 4: 3 * H // 4, H // 8: H // 2] = 1
            refs['inpaint_image'] = image; refs['inpaint_mask'] = mask
            batch = {'image': image * 2 - 1, 'mask': mask * 2 - 1, 'masked_image': (1 - mask) * image * 2 - 1}
            c = model.cond_stage_model.encode(batch['masked_image'])
            mk = torch.nn.functional.interpolate(batch['mask'], size=c.shape[-2:])
            cond = torch.cat((c, mk), dim=1); refs['cond'] = cond; meta['inpaint'] = True
        elif ct == 'torch.nn.Identity':
            lr = (torch.rand(1, 3, latent, latent, generator=g) * 2 - 1)
            refs['low_res'] = lr
            cond = model.get_learned_conditioning(lr); refs['cond'] = cond
        # UNet output for given x, t, cond (a batch of 2 with different timesteps)
        x = randn(2, C, latent, latent); t = torch.tensor([999, 321])
        c2 = cc if cc is not None else (None if cond is None else torch.cat([cond, cond]))
        refs['unet_x'] = x; meta['unet_t'] = t.tolist()
        refs['unet_out'] = model.apply_model(x, t, c2)
        # DDIM, 4 steps, eta 0, x_T given; guidance 3 where the release scripts use it
        xT = randn(1, C, latent, latent); refs['x_T'] = xT
        sampler = ddim_mod.DDIMSampler(model)
        scale = 3.0 if uc is not None else 1.0
        meta.update(steps=4, eta=0.0, guidance_scale=scale)
        samples, _ = sampler.sample(S=4, batch_size=1, shape=(C, latent, latent), conditioning=cond, eta=0.0, x_T=xT,
                                    unconditional_guidance_scale=scale, unconditional_conditioning=uc, verbose=False)
        refs['ddim_latents'] = samples
        refs['image'] = torch.clamp((model.decode_first_stage(samples) + 1) / 2, 0, 1)
        if meta.get('inpaint'):
            m01 = torch.clamp((batch['mask'] + 1) / 2, 0, 1)
            refs['image'] = (1 - m01) * torch.clamp((batch['image'] + 1) / 2, 0, 1) + m01 * refs['image']
        img = torch.rand(1, 3, latent * 4, latent * 4, generator=g) * 2 - 1
        refs['fs_image'] = img
        e = model.first_stage_model.encode(img)
        refs['fs_encode'] = e if isinstance(e, torch.Tensor) else e.mean  # VQ: pre-quant h; KL: the posterior mean
        meta['scale_factor'] = float(model.scale_factor)
    out = os.path.join(root, 'test/fixtures/paper', name)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'config.yaml'), 'w') as fh:
        fh.write('# %s shrunk in size by tools/pyref/gen_paper_models.py\n' % rel)
        fh.write(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    sd = model.state_dict()
    manifest = [{'key': k, 'shape': list(v.shape), **({'values': v.flatten().tolist()} if k == 'scale_factor' else {})}
                for k, v in sd.items() if v.is_floating_point()]
    json.dump({'meta': meta, 'tensors': manifest}, open(os.path.join(out, 'manifest.json'), 'w'))
    save_file({k: v.contiguous().float() for k, v in refs.items()}, os.path.join(out, 'refs.safetensors'))
    print(name, ckey, {k: list(v.shape) for k, v in refs.items()})

only = sys.argv[1:]
for name, (rel, latent) in CASES.items():
    if only and name not in only: continue
    try:
        make(name, rel, latent)
    except Exception as e:
        import traceback; traceback.print_exc(); print('FAILED', name, e)

# ---- the first-stage zoo (models/first_stage_models/*): encode + decode of a 32x32 image
FIRST_STAGES = ['kl-f4', 'kl-f8', 'kl-f16', 'kl-f32', 'vq-f4', 'vq-f4-noattn', 'vq-f8', 'vq-f8-n256', 'vq-f16']

def make_first_stage(name):
    g.manual_seed(0)
    rel = 'models/first_stage_models/%s/config.yaml' % name
    cfg = OmegaConf.to_container(OmegaConf.load(os.path.join(REL, rel)))
    cfg.pop('data', None); cfg.pop('lightning', None)
    p = cfg['model']['params']
    p['ddconfig']['ch'] = 32
    if 'n_embed' in p: p['n_embed'] = 64
    p['lossconfig'] = {'target': 'torch.nn.Identity'}
    strip(cfg, 'ckpt_path')
    model = instantiate_from_config(cfg['model'])
    fill_seeded(model, ('encoder.', 'decoder.', 'quant_conv.', 'post_quant_conv.', 'quantize.'))
    model.eval()
    img = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        if hasattr(model, 'quantize'):
            h = model.encode_to_prequant(img)
            dec = model.decode(model.quantize(h)[0])   # = VQModelInterface.decode(h)
        else:
            h = model.encode(img).mean
            dec = model.decode(h)
    out = os.path.join(root, 'test/fixtures/paper/first_stage', name)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'config.yaml'), 'w') as fh:
        fh.write('# %s shrunk in size by tools/pyref/gen_paper_models.py\n' % rel)
        fh.write(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    manifest = [{'key': k, 'shape': list(v.shape)} for k, v in model.state_dict().items() if v.is_floating_point()]
    json.dump({'tensors': manifest}, open(os.path.join(out, 'manifest.json'), 'w'))
    save_file({'image': img, 'encode': h.contiguous(), 'decode': dec.contiguous()}, os.path.join(out, 'refs.safetensors'))
    print(name, list(h.shape), list(dec.shape))

for name in FIRST_STAGES:
    if only and name not in only: continue
    try:
        make_first_stage(name)
    except Exception as e:
        import traceback; traceback.print_exc(); print('FAILED', name, e)
