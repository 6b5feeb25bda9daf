"""The key layout of a Stable Diffusion 2.x single-file checkpoint for the tiny SD 2.x pipeline of
gen_sd2_pipeline.py, as diffusers 0.31 reads it: original names come from the CompVis code (vendored
latent-diffusion: openaimodel.UNetModel with a spatial transformer, the autoencoder's Encoder/Decoder) and
OpenCLIP's text tower naming; diffusers' own converters (convert_ldm_unet_checkpoint,
convert_ldm_vae_checkpoint, convert_open_clip_checkpoint) say which diffusers tensor each one becomes. Every
original tensor is filled with distinct numbers (tensor id * 2^24 + element index, float64), so the converted
tensors name their source and the element range they took (q/k/v rows of a fused in_proj). Writes
test/fixtures/sd2/single_file_map.json: original key -> shape + the diffusers pieces it is made of, in order;
the test writes the file from the seeded diffusers weights with it, and a round trip here checks that
diffusers converts such a file back to exactly those weights.
Run: /usr/bin/python3 tools/pyref/gen_sd2_single_file.py   (after gen_sd2_pipeline.py; PYREF as there)"""
import json, os, sys
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401
VENDOR = os.path.join(os.environ.get('PYREF', '/work/pyref'), 'vendor')
sys.path.insert(0, os.path.join(VENDOR, 'latent-diffusion'))
import torch
from ldm.modules.diffusionmodules.openaimodel import UNetModel
from ldm.modules.diffusionmodules.model import Encoder, Decoder
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_open_clip_checkpoint
from transformers import CLIPTextConfig, CLIPTextModel

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
out = os.path.join(root, 'test/fixtures/sd2')
m = json.load(open(os.path.join(out, 'manifest.json')))
ucfg, vcfg, tcfg = m['configs']['unet'], m['configs']['vae'], m['configs']['text_encoder']
shapes = {c: {e['key']: e['shape'] for e in m['tensors'][c]} for c in ('unet', 'vae', 'text_encoder')}

orig = {}
# UNet: CompVis names (the stablediffusion repo's SD 2.x UNet has the same names; its proj_in/proj_out are
# Linear, stored 2-D, which is what diffusers' linear-projection UNet holds, so shapes follow diffusers)
unet = UNetModel(image_size=8, in_channels=4, model_channels=ucfg['block_out_channels'][0], out_channels=4,
                 num_res_blocks=ucfg['layers_per_block'], attention_resolutions=[1, 2],
                 channel_mult=[c // ucfg['block_out_channels'][0] for c in ucfg['block_out_channels']], num_heads=2,
                 use_spatial_transformer=True, transformer_depth=1, context_dim=ucfg['cross_attention_dim'], legacy=False)
for k, v in unet.state_dict().items():
    orig['model.diffusion_model.' + k] = list(v.shape)
# VAE: the autoencoder's Encoder/Decoder plus its quant convs
L = vcfg['latent_channels']
dd = dict(double_z=True, z_channels=L, resolution=32, in_channels=3, out_ch=3, ch=vcfg['block_out_channels'][0],
          ch_mult=[c // vcfg['block_out_channels'][0] for c in vcfg['block_out_channels']], num_res_blocks=vcfg['layers_per_block'],
          attn_resolutions=[], dropout=0.0)
for name, mod in (('encoder', Encoder(**dd)), ('decoder', Decoder(**dd))):
    for k, v in mod.state_dict().items():
        orig[f'first_stage_model.{name}.{k}'] = list(v.shape)
orig.update({'first_stage_model.quant_conv.weight': [2 * L, 2 * L, 1, 1], 'first_stage_model.quant_conv.bias': [2 * L],
             'first_stage_model.post_quant_conv.weight': [L, L, 1, 1], 'first_stage_model.post_quant_conv.bias': [L]})
# OpenCLIP text tower (open_clip's TextTransformer state dict names)
H, F = tcfg['hidden_size'], tcfg['intermediate_size']
p = 'cond_stage_model.model.'
orig.update({p + 'token_embedding.weight': [tcfg['vocab_size'], H], p + 'positional_embedding': [tcfg['max_position_embeddings'], H],
             p + 'ln_final.weight': [H], p + 'ln_final.bias': [H], p + 'text_projection': [H, tcfg['projection_dim']], p + 'logit_scale': []})
for i in range(tcfg['num_hidden_layers']):
    b = f'{p}transformer.resblocks.{i}.'
    orig.update({b + 'ln_1.weight': [H], b + 'ln_1.bias': [H], b + 'attn.in_proj_weight': [3 * H, H], b + 'attn.in_proj_bias': [3 * H],
                 b + 'attn.out_proj.weight': [H, H], b + 'attn.out_proj.bias': [H], b + 'ln_2.weight': [H], b + 'ln_2.bias': [H],
                 b + 'mlp.c_fc.weight': [F, H], b + 'mlp.c_fc.bias': [F], b + 'mlp.c_proj.weight': [H, F], b + 'mlp.c_proj.bias': [H]})
keys = sorted(orig)
S = 2 ** 24
ck = {k: (torch.arange(max(1, torch.Size(orig[k]).numel()), dtype=torch.float64) + (i + 1) * S).reshape(orig[k]) for i, k in enumerate(keys)}
te = CLIPTextModel(CLIPTextConfig(**{k: tcfg[k] for k in ('vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'max_position_embeddings', 'hidden_act', 'projection_dim')}))
conv = {'unet': convert_ldm_unet_checkpoint(ck, ucfg), 'vae': convert_ldm_vae_checkpoint(ck, vcfg), 'text_encoder': convert_open_clip_checkpoint(te, ck)}
pieces = {k: [] for k in keys}
for comp, sd in conv.items():
    assert set(sd) == set(shapes[comp]) - {'text_model.embeddings.position_ids'}, (comp, set(sd) ^ set(shapes[comp]))
    for dk, v in sd.items():
        flat = v.reshape(-1)
        src, start = keys[int(flat[0].item()) // S - 1], int(flat[0].item()) % S
        assert torch.equal(flat - flat[0], torch.arange(flat.numel(), dtype=torch.float64)), dk  # one contiguous range
        pieces[src].append((start, comp, dk))
layout = {}
for k in keys:
    ps = sorted(pieces[k])
    n = max(1, torch.Size(orig[k]).numel())
    assert not ps or (ps[0][0] == 0 and sum(torch.Size(shapes[c][d]).numel() for _, c, d in ps) == n), k
    # SD 2.x stores the UNet's linear proj_in/proj_out 2-D, as diffusers holds them
    shape = shapes['unet'][ps[0][2]] if len(ps) == 1 and ps[0][1] == 'unet' else orig[k]
    layout[k] = {'shape': shape, 'from': [[c, d] for _, c, d in ps]}
# round trip: the file the test writes (seeded diffusers weights placed by the layout) converts back to them
sys.path.insert(0, here)
from seeded import seeded_values
back = {}
for k, e in layout.items():
    back[k] = (torch.cat([seeded_values(d, shapes[c][d]).reshape(-1) for c, d in e['from']]).reshape(e['shape'])
               if e['from'] else torch.zeros(e['shape']))
for comp, sd in {'unet': convert_ldm_unet_checkpoint(back, ucfg), 'vae': convert_ldm_vae_checkpoint(back, vcfg), 'text_encoder': convert_open_clip_checkpoint(te, back)}.items():
    for dk, v in sd.items():
        assert torch.equal(v.reshape(shapes[comp][dk]), seeded_values(dk, shapes[comp][dk])), dk
json.dump({'note': 'original key -> shape and the diffusers tensors (component, name) it is made of, concatenated in order; none: not used by diffusers',
           'layout': layout}, open(os.path.join(out, 'single_file_map.json'), 'w'), indent=0)
print('ok', len(layout), 'keys;', sum(1 for e in layout.values() if not e['from']), 'unused:', [k for k, e in layout.items() if not e['from']])
