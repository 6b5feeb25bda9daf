"""Tiny diffusers StableDiffusionXLPipeline / StableDiffusionXLImg2ImgPipeline cases (SDXL base layout:
tokenizer + tokenizer_2, text_encoder (CLIPTextModel) + text_encoder_2 (CLIPTextModelWithProjection), unet with
text_time added embeddings, vae, EulerDiscreteScheduler; the refiner layout with only text_encoder_2 and
requires_aesthetics_score; an LCM UNet with time_cond_proj_dim). Weights come from tools/pyref/seeded.py on both
sides, so only component configs, tensor names/shapes and reference outputs are stored
(test/fixtures/sdxl_pipeline/manifest.json + refs.safetensors). The tokenizers are the real CLIP ViT-L/14 files
of test/fixtures/tokenizers (tokenizer_2 pads with '!' as SDXL's does).
Run: /usr/bin/python3 tools/pyref/gen_sdxl_pipeline.py   (PYREF: folder with fixenv.py, default /work/pyref;
diffusers 0.31.0 and transformers 4.45 as in its vendor/VERSIONS, torch 1.13 CPU)"""
import json, os, sys
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401
here = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, here)
import torch
import transformers.tokenization_utils_base as tub
tub.AddedToken.__hash__ = lambda self: hash(self.content)  # no compiled tokenizers here; ids unchanged
tub.AddedToken.__setstate__ = lambda self, d: self.__dict__.update(d)  # (the fallback class lacks it)
from transformers import CLIPTokenizer, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from diffusers import AutoencoderKL, UNet2DConditionModel, EulerDiscreteScheduler, LCMScheduler
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline
import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img as img2img_mod
from safetensors.torch import save_file
from seeded import fill_seeded
from gen_modern_unets import check_sgm_map  # the UNet's sgm key map, checked there through diffusers' converter
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

torch.set_grad_enabled(False)
root = os.path.dirname(os.path.dirname(here))
out = os.path.join(root, 'test/fixtures/sdxl_pipeline'); os.makedirs(out, exist_ok=True)
tokdir = os.path.join(root, 'test/fixtures/tokenizers/clip-vit-large-patch14')
vocab, merges = os.path.join(tokdir, 'vocab.json'), os.path.join(tokdir, 'merges.txt')
tokenizer = CLIPTokenizer(vocab, merges, model_max_length=77)
tokenizer_2 = CLIPTokenizer(vocab, merges, model_max_length=77, pad_token='!')

# two encoders of different widths (32 and 48; cross_attention_dim 80) and a projection narrower than the
# second's width (24), so a concat in the wrong order or a pooled output taken before the projection shows
te1_cfg = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                         max_position_embeddings=77, hidden_act='gelu', projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1)
te2_cfg = CLIPTextConfig(vocab_size=49408, hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         max_position_embeddings=77, hidden_act='gelu', projection_dim=24, bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
TIME_DIM = 8
def unet_cfg(cross, n_ids, **kw):
    return dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=[32, 64], layers_per_block=2,
                down_block_types=['DownBlock2D', 'CrossAttnDownBlock2D'], up_block_types=['CrossAttnUpBlock2D', 'UpBlock2D'],
                attention_head_dim=[2, 4], use_linear_projection=True, transformer_layers_per_block=[1, 2],
                addition_embed_type='text_time', addition_time_embed_dim=TIME_DIM,
                projection_class_embeddings_input_dim=n_ids * TIME_DIM + 24, cross_attention_dim=cross, norm_num_groups=8, **kw)
vae_cfg = dict(block_out_channels=[32, 64], in_channels=3, out_channels=3, down_block_types=['DownEncoderBlock2D'] * 2,
               up_block_types=['UpDecoderBlock2D'] * 2, latent_channels=4, layers_per_block=1, norm_num_groups=32,
               sample_size=32, scaling_factor=0.13025, force_upcast=True)
sched_cfg = dict(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', steps_offset=1, timestep_spacing='leading',
                 interpolation_type='linear', use_karras_sigmas=False, prediction_type='epsilon')

mods = {
    'text_encoder': CLIPTextModel(te1_cfg), 'text_encoder_2': CLIPTextModelWithProjection(te2_cfg),
    'unet': UNet2DConditionModel(**unet_cfg(80, 6)), 'vae': AutoencoderKL(**vae_cfg),
    'unet_refiner': UNet2DConditionModel(**unet_cfg(48, 5)),
    'unet_lcm': UNet2DConditionModel(**unet_cfg(80, 6, time_cond_proj_dim=16)),
    # SD 1.x-shaped LCM UNet (no added embeddings) for StableDiffusionPipeline with text_encoder
    'unet_sd_lcm': UNet2DConditionModel(**{**unet_cfg(32, 6, time_cond_proj_dim=16), 'addition_embed_type': None,
                                           'addition_time_embed_dim': None, 'projection_class_embeddings_input_dim': None}),
    # the same without time_cond_proj_dim: an ordinary SD 1.x-shaped UNet (classifier-free guidance, guidance_rescale)
    'unet_sd': UNet2DConditionModel(**{**unet_cfg(32, 6), 'addition_embed_type': None,
                                       'addition_time_embed_dim': None, 'projection_class_embeddings_input_dim': None}),
    # the VAE with per-channel latents_mean / latents_std in its config (same weights: seeded by key)
    'vae_norm': AutoencoderKL(**vae_cfg, latents_mean=[0.3, -0.8, 0.1, 0.5], latents_std=[1.7, 0.6, 2.2, 0.9]),
}
manifest = {}
for name, m in mods.items():
    sd = fill_seeded(m); m.eval()
    manifest[name] = [{'key': k, 'shape': list(v.shape)} for k, v in sd.items() if v.is_floating_point()]
sched = EulerDiscreteScheduler(**sched_cfg)
def plain(cfg):  # diffusers' _use_default_values is a set: its order changes from run to run
    return {k: v for k, v in cfg.items() if k != '_use_default_values'}
configs = {k: plain(m.config.to_dict() if hasattr(m.config, 'to_dict') else dict(m.config)) for k, m in mods.items()}
configs['scheduler'] = plain(dict(sched.config))
configs['scheduler_lcm'] = plain(dict(LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', timestep_spacing='leading').config))

base = StableDiffusionXLPipeline(vae=mods['vae'], text_encoder=mods['text_encoder'], text_encoder_2=mods['text_encoder_2'],
                                 tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=mods['unet'], scheduler=sched, add_watermarker=False)
refs, cases = {}, {}

def save(prefix, **tensors):
    for k, v in tensors.items():
        refs[f'{prefix}.{k}'] = v.detach().float().contiguous()

def ids_of(tok, prompts):
    return tok(prompts, padding='max_length', max_length=77, truncation=True, return_tensors='pt').input_ids.to(torch.int32)

def run(pipe, name, call, latents_shape=None, output_type='np', **kw):
    steps = []
    def cb(p, i, t, d):
        steps.append(d['latents'].clone()); return d
    g = torch.Generator().manual_seed(0)
    if latents_shape is not None:
        kw['latents'] = torch.randn(*latents_shape, generator=g)
        save(name, latents_T=kw['latents'])
    img = pipe(**call, **kw, output_type=output_type, callback_on_step_end=cb, callback_on_step_end_tensor_inputs=['latents']).images
    if output_type == 'latent':  # the latents themselves (scaled, as the next pipeline takes them)
        save(name, latents_steps=torch.stack(steps), latents_out=img, timesteps=pipe.scheduler.timesteps.float())
        return img
    save(name, latents_steps=torch.stack(steps), image=torch.from_numpy(img).permute(0, 3, 1, 2), timesteps=pipe.scheduler.timesteps.float())
    return img

def encode(pipe, name, **kw):
    pe, ne, pp, npool = pipe.encode_prompt(device='cpu', num_images_per_prompt=1, **kw)
    save(name, prompt_embeds=pe, pooled_prompt_embeds=pp, **({'negative_prompt_embeds': ne, 'negative_pooled_prompt_embeds': npool} if ne is not None else {}))

# ---- 1. base text-to-image: negative prompt, default size (unet sample_size 16 x vae factor 2 = 32), guidance 5
P, N = 'a photo of an astronaut riding a horse on mars', 'blurry, low quality'
c = dict(prompt=P, negative_prompt=N, num_inference_steps=3, guidance_scale=5.0)
encode(base, 'base', prompt=P, do_classifier_free_guidance=True, negative_prompt=N)
save('base', input_ids=ids_of(tokenizer, [P]), input_ids_2=ids_of(tokenizer_2, [P]), add_time_ids=base._get_add_time_ids((32, 32), (0, 0), (32, 32), torch.float32, 24))
run(base, 'base', c, latents_shape=(1, 4, 16, 16))
cases['base'] = {'pipeline': 'StableDiffusionXLPipeline', **c, 'height': 32, 'width': 32}

# ---- 2. prompt_2, no negative prompt (force_zeros_for_empty_prompt), clip_skip 1, micro-conditioning, 24x40, batch 2
P2 = ['a red cube on a table', 'a watercolor of a lighthouse']
Q2 = ['studio lighting', 'stormy sea at night']
c = dict(prompt=P2, prompt_2=Q2, num_inference_steps=2, guidance_scale=4.0, clip_skip=1, height=24, width=40,
         original_size=(40, 28), crops_coords_top_left=(2, 4), target_size=(24, 36))
encode(base, 'cond', prompt=P2, prompt_2=Q2, do_classifier_free_guidance=True, clip_skip=1)
save('cond', add_time_ids=base._get_add_time_ids((40, 28), (2, 4), (24, 36), torch.float32, 24))
run(base, 'cond', c, latents_shape=(2, 4, 12, 20))
cases['cond'] = {'pipeline': 'StableDiffusionXLPipeline', **c}

# ---- 3. refiner layout (text_encoder_2 only, requires_aesthetics_score, force_zeros_for_empty_prompt false): img2img
# from latents (a 4-channel `image` is taken as latents, as diffusers does), strength 0.6 of 5 steps
refiner = StableDiffusionXLImg2ImgPipeline(vae=mods['vae'], text_encoder=None, text_encoder_2=mods['text_encoder_2'], tokenizer=None,
                                           tokenizer_2=tokenizer_2, unet=mods['unet_refiner'], scheduler=EulerDiscreteScheduler(**sched_cfg),
                                           requires_aesthetics_score=True, force_zeros_for_empty_prompt=False, add_watermarker=False)
g = torch.Generator().manual_seed(1)
init = torch.randn(1, 4, 16, 12, generator=g)
noise = torch.randn(1, 4, 16, 12, generator=g)
save('refiner', image_latents=init, noise=noise)
img2img_mod.randn_tensor = lambda *a, **k: noise.clone()  # the add_noise noise, given to our pipeline as `latents`
c = dict(prompt='a castle on a hill', num_inference_steps=5, strength=0.6, guidance_scale=5.0, aesthetic_score=7.0, negative_aesthetic_score=2.0)
encode(refiner, 'refiner', prompt=c['prompt'], do_classifier_free_guidance=True)
run(refiner, 'refiner', {**c, 'image': init})
ids, neg = refiner._get_add_time_ids((32, 24), (0, 0), (32, 24), 7.0, 2.0, (32, 24), (0, 0), (32, 24), torch.float32, 24)
save('refiner', add_time_ids=ids, negative_add_time_ids=neg)
cases['refiner'] = {'pipeline': 'StableDiffusionXLImg2ImgPipeline', **c, 'height': 32, 'width': 24}

# ---- 4. LCM UNet (time_cond_proj_dim): guidance as an embedding, no classifier-free guidance; LCMScheduler, 1 step
# (LCM's steps before the last draw their own noise)
lcm = StableDiffusionXLPipeline(vae=mods['vae'], text_encoder=mods['text_encoder'], text_encoder_2=mods['text_encoder_2'], tokenizer=tokenizer,
                                tokenizer_2=tokenizer_2, unet=mods['unet_lcm'], scheduler=LCMScheduler.from_config(configs['scheduler_lcm']), add_watermarker=False)
c = dict(prompt='a cat wearing a hat', num_inference_steps=1, guidance_scale=3.0)
run(lcm, 'lcm', c, latents_shape=(1, 4, 16, 16))
cases['lcm'] = {'pipeline': 'StableDiffusionXLPipeline', **c, 'height': 32, 'width': 32}

# ---- 5. the same in StableDiffusionPipeline (SD 1.x layout): LCM UNet, guidance embedding, no CFG
sd_lcm = StableDiffusionPipeline(vae=mods['vae'], text_encoder=mods['text_encoder'], tokenizer=tokenizer, unet=mods['unet_sd_lcm'],
                                 scheduler=LCMScheduler.from_config(configs['scheduler_lcm']), safety_checker=None, feature_extractor=None,
                                 requires_safety_checker=False)
c = dict(prompt='a cat wearing a hat', num_inference_steps=1, guidance_scale=3.0, height=32, width=32)
run(sd_lcm, 'sd_lcm', c, latents_shape=(1, 4, 16, 16))
cases['sd_lcm'] = {'pipeline': 'StableDiffusionPipeline', **c}

# ---- 6. guidance_rescale (Lin et al. 2023 sec. 3.4): the guided prediction rescaled to the std of the conditional one per
# item (over C, H, W; torch's unbiased std), batch 2 so a std over the whole batch shows; SDXL base and StableDiffusionPipeline
P3, N3 = ['a bowl of fruit', 'a snowy mountain village'], ['dark', 'people']
c = dict(prompt=P3, negative_prompt=N3, num_inference_steps=2, guidance_scale=6.0, guidance_rescale=0.7)
run(base, 'rescale', c, latents_shape=(2, 4, 16, 16))
cases['rescale'] = {'pipeline': 'StableDiffusionXLPipeline', **c, 'height': 32, 'width': 32}
sd = StableDiffusionPipeline(vae=mods['vae'], text_encoder=mods['text_encoder'], tokenizer=tokenizer, unet=mods['unet_sd'],
                             scheduler=EulerDiscreteScheduler(**sched_cfg), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
c = dict(prompt=P3, negative_prompt=N3, num_inference_steps=2, guidance_scale=7.5, guidance_rescale=0.5, height=32, width=32)
run(sd, 'sd_rescale', c, latents_shape=(2, 4, 16, 16))
cases['sd_rescale'] = {'pipeline': 'StableDiffusionPipeline', **c}

# ---- 7. base -> refiner handoff: the base runs timesteps >= 200 of 10 (denoising_end 0.8) and returns latents
# (output_type 'latent'); the refiner takes them as its image, runs the rest (denoising_start 0.8), no noise added
c = dict(prompt='a lighthouse at dusk', negative_prompt='blurry', num_inference_steps=10, guidance_scale=5.0, denoising_end=0.8)
lat = run(base, 'handoff_base', c, latents_shape=(1, 4, 16, 16), output_type='latent')
cases['handoff_base'] = {'pipeline': 'StableDiffusionXLPipeline', **c, 'height': 32, 'width': 32}
c = dict(prompt='a lighthouse at dusk', num_inference_steps=10, guidance_scale=5.0, denoising_start=0.8)
run(refiner, 'handoff_refiner', {**c, 'image': lat})
cases['handoff_refiner'] = {'pipeline': 'StableDiffusionXLImg2ImgPipeline', **c}

# ---- 8. a VAE with latents_mean / latents_std: the refiner's img2img from an RGB image (encode: (z - mean) * sf / std) and
# its decode (z * std / sf + mean). The posterior sample's noise is given on both sides (E), as the add_noise noise.
refiner_norm = StableDiffusionXLImg2ImgPipeline(vae=mods['vae_norm'], text_encoder=None, text_encoder_2=mods['text_encoder_2'], tokenizer=None,
                                                tokenizer_2=tokenizer_2, unet=mods['unet_refiner'], scheduler=EulerDiscreteScheduler(**sched_cfg),
                                                requires_aesthetics_score=True, force_zeros_for_empty_prompt=False, add_watermarker=False)
g = torch.Generator().manual_seed(2)
rgb = torch.rand(1, 3, 32, 24, generator=g)
post_noise = torch.randn(1, 4, 16, 12, generator=g)
noise2 = torch.randn(1, 4, 16, 12, generator=g)
save('vae_norm', image_in=rgb, posterior_noise=post_noise, noise=noise2)
img2img_mod.randn_tensor = lambda *a, **k: noise2.clone()
img2img_mod.retrieve_latents = lambda out, generator=None, sample_mode='sample': out.latent_dist.mean + out.latent_dist.std * post_noise
c = dict(prompt='a castle on a hill', num_inference_steps=4, strength=0.75, guidance_scale=4.0)
run(refiner_norm, 'vae_norm', {**c, 'image': rgb})
cases['vae_norm'] = {'pipeline': 'StableDiffusionXLImg2ImgPipeline', **c, 'height': 32, 'width': 24}

# ---- 9. the base pipeline as one Stability (sgm) single file: every tensor's key there and where its values
# come from (diffusers component keys, concatenated along dim 0; `T`: transposed). Checked by mapping it back
# through diffusers' own single-file converters, which must give every component's state dict exactly.
def vae_key(k, n):
    res = lambda r: r.replace('conv_shortcut.', 'nin_shortcut.')
    attn = {'group_norm.': 'norm.', 'to_q.': 'q.', 'to_k.': 'k.', 'to_v.': 'v.', 'to_out.0.': 'proj_out.'}
    p = k.split('.')
    if p[0] in ('quant_conv', 'post_quant_conv') or p[1] in ('conv_in', 'conv_out'):
        return k
    if p[1] == 'conv_norm_out':
        return f'{p[0]}.norm_out.{p[2]}'
    if p[1] == 'mid_block':
        rest = '.'.join(p[4:])
        if p[2] == 'resnets':
            return f'{p[0]}.mid.block_{int(p[3]) + 1}.' + res(rest)
        a = next(a for a in attn if rest.startswith(a))
        return f'{p[0]}.mid.attn_1.' + attn[a] + rest[len(a):]
    i = int(p[2]) if p[0] == 'encoder' else n - 1 - int(p[2])
    lvl = 'down' if p[0] == 'encoder' else 'up'
    if p[3] == 'resnets':
        return f'{p[0]}.{lvl}.{i}.block.{p[4]}.' + res('.'.join(p[5:]))
    return f'{p[0]}.{lvl}.{i}.{"downsample" if lvl == "down" else "upsample"}.conv.' + '.'.join(p[6:])

def openclip_entries(sd, prefix):
    out = {}
    simple = {'text_model.embeddings.token_embedding.weight': 'token_embedding.weight', 'text_model.embeddings.position_embedding.weight': 'positional_embedding',
              'text_model.final_layer_norm.weight': 'ln_final.weight', 'text_model.final_layer_norm.bias': 'ln_final.bias'}
    layer = {'self_attn.out_proj.': 'attn.out_proj.', 'layer_norm1.': 'ln_1.', 'layer_norm2.': 'ln_2.', 'mlp.fc1.': 'mlp.c_fc.', 'mlp.fc2.': 'mlp.c_proj.'}
    for k in sd:
        if k in simple:
            out[prefix + simple[k]] = ([k], False)
        elif k == 'text_projection.weight':
            out[prefix + 'text_projection'] = ([k], True)
        elif k.startswith('text_model.encoder.layers.'):
            i, rest = k.split('.')[3], '.'.join(k.split('.')[4:])
            if rest.startswith('self_attn.') and rest.split('.')[1] in ('q_proj', 'k_proj', 'v_proj'):
                wb = rest.split('.')[2]
                out[f'{prefix}transformer.resblocks.{i}.attn.in_proj_{wb}'] = ([f'text_model.encoder.layers.{i}.self_attn.{q}_proj.{wb}' for q in 'qkv'], False)
            else:
                a = next(a for a in layer if rest.startswith(a))
                out[f'{prefix}transformer.resblocks.{i}.' + layer[a] + rest[len(a):]] = ([k], False)
    return out

single, ckpt = [], {}
def add(key, comp, srcs, transpose, sd):
    v = torch.cat([sd[s] for s in srcs], 0)
    v = v.T.contiguous() if transpose else v
    if comp == 'vae' and v.dim() == 2 and '.attn_1.' in key:
        v = v[:, :, None, None]  # CompVis keeps the VAE attention projections as 1x1 convs
    ckpt[key] = v
    single.append({'key': key, 'shape': list(v.shape), 'from': [f'{comp}.{s}' for s in srcs], **({'T': True} if transpose else {})})
sds = {k: mods[k].state_dict() for k in ('unet', 'vae', 'text_encoder', 'text_encoder_2')}
for k, orig in check_sgm_map(mods['unet'], dict(mods['unet'].config)).items():
    add('model.diffusion_model.' + orig, 'unet', [k], False, sds['unet'])
for k in sds['vae']:
    add('first_stage_model.' + vae_key(k, len(vae_cfg['block_out_channels'])), 'vae', [k], False, sds['vae'])
for k in sds['text_encoder']:
    if not k.endswith('position_ids'):
        add('conditioner.embedders.0.transformer.' + k, 'text_encoder', [k], False, sds['text_encoder'])
for key, (srcs, t) in openclip_entries(sds['text_encoder_2'], 'conditioner.embedders.1.model.').items():
    add(key, 'text_encoder_2', srcs, t, sds['text_encoder_2'])
def same(back, sd, what):
    sd = {k: v for k, v in sd.items() if not k.endswith('position_ids')}
    back = {k: v for k, v in back.items() if not k.endswith('position_ids')}
    assert set(back) == set(sd), (what, sorted(set(sd) - set(back))[:4], sorted(set(back) - set(sd))[:4])
    for k in sd:
        assert torch.equal(back[k].reshape(sd[k].shape), sd[k]), (what, k)
same(convert_ldm_vae_checkpoint(ckpt, dict(mods['vae'].config)), sds['vae'], 'vae')
same(convert_ldm_clip_checkpoint(ckpt), sds['text_encoder'], 'text_encoder')
same(convert_open_clip_checkpoint(mods['text_encoder_2'], ckpt, prefix='conditioner.embedders.1.model.'), sds['text_encoder_2'], 'text_encoder_2')

tokenizer_files = {'tokenizer_2': {
    'tokenizer_config.json': {'model_max_length': 77, 'pad_token': '!', 'bos_token': '<|startoftext|>', 'eos_token': '<|endoftext|>',
                              'unk_token': '<|endoftext|>', 'do_lower_case': True, 'tokenizer_class': 'CLIPTokenizer'},
    'special_tokens_map.json': {'pad_token': '!', 'bos_token': '<|startoftext|>', 'eos_token': '<|endoftext|>', 'unk_token': '<|endoftext|>'}}}
json.dump({'cases': cases, 'configs': configs, 'tensors': manifest, 'tokenizer_files': tokenizer_files, 'single_file': single,
           'versions': open(os.path.join(os.environ.get('PYREF', '/work/pyref'), 'vendor', 'VERSIONS')).read().split('\n')[:2]},
          open(os.path.join(out, 'manifest.json'), 'w'), default=str)
save_file(refs, os.path.join(out, 'refs.safetensors'))
print('ok', {k: list(v.shape) for k, v in refs.items()})
