"""A tiny Stable Diffusion 2.x-shaped StableDiffusionPipeline run by diffusers 0.31 itself, stage by stage, for
test/sd2_pipeline.test.ts. SD 2.x in miniature: the tokenizer pads with '!' (pad_token of SD 2.x's tokenizer
files), a gelu CLIPTextModel (OpenCLIP), a UNet with use_linear_projection, a per-block attention_head_dim list
and upcast_attention, a v_prediction scheduler (DDIM and Euler). Weights come from tools/pyref/seeded.py (the
test makes the same ones with test/seeded.ts), so only configs, tensor names/shapes and reference outputs are
stored (test/fixtures/sd2/).
Run: /usr/bin/python3 tools/pyref/gen_sd2_pipeline.py   (PYREF: folder with fixenv.py, default /work/pyref;
versions in tools/pyref/FIXTURES.md: diffusers 0.31.0, transformers 4.45.0.dev0, torch 1.13.0a0 CPU f32)"""
import json, os, sys
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401
here = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, here)
import torch
import transformers.tokenization_utils_base as tub
tub.AddedToken.__hash__ = lambda self: hash(self.content)  # no compiled tokenizers here; ids unchanged
tub.AddedToken.__setstate__ = lambda self, d: self.__dict__.update(d)  # the pure-Python AddedToken lacks it
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from diffusers import AutoencoderKL, UNet2DConditionModel, DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, StableDiffusionPipeline
import diffusers.schedulers.scheduling_euler_ancestral_discrete as m_ea
from safetensors.torch import save_file
from seeded import fill_seeded

root = os.path.dirname(os.path.dirname(here))
out = os.path.join(root, 'test/fixtures/sd2'); os.makedirs(out, exist_ok=True)
vocab_dir = os.path.join(root, 'test/fixtures/tokenizers/clip-vit-large-patch14')

# stabilityai/stable-diffusion-2-1's tokenizer: the CLIP BPE files with pad_token '!'
tok = CLIPTokenizer(os.path.join(vocab_dir, 'vocab.json'), os.path.join(vocab_dir, 'merges.txt'), pad_token='!', model_max_length=77)
assert tok.pad_token_id == 0
text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                                            max_position_embeddings=77, hidden_act='gelu', projection_dim=32, pad_token_id=1, bos_token_id=0, eos_token_id=2))
# SD 2.x: linear proj_in/proj_out, heads per block as a list, attention upcast, cross_attention_dim = text width
unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[32, 64], layers_per_block=1,
                            down_block_types=['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'], up_block_types=['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
                            cross_attention_dim=32, attention_head_dim=[2, 8], use_linear_projection=True, upcast_attention=True, norm_num_groups=32)
vae = AutoencoderKL(block_out_channels=[32, 32, 32], down_block_types=['DownEncoderBlock2D'] * 3, up_block_types=['UpDecoderBlock2D'] * 3,
                    layers_per_block=1, latent_channels=4, norm_num_groups=32, scaling_factor=0.18215, sample_size=32)
# stabilityai/stable-diffusion-2-1's scheduler_config.json (DDIM, v_prediction)
sd2_sched = dict(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', clip_sample=False, set_alpha_to_one=False,
                 steps_offset=1, prediction_type='v_prediction', num_train_timesteps=1000, timestep_spacing='leading')
schedulers = {
    'ddim': DDIMScheduler(**sd2_sched),
    'euler': EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', steps_offset=1,
                                    prediction_type='v_prediction', timestep_spacing='trailing'),
}
manifest = {}
for name, m in {'text_encoder': text_encoder, 'unet': unet, 'vae': vae}.items():
    sd = fill_seeded(m); m.eval()
    manifest[name] = [{'key': k, 'shape': list(v.shape)} for k, v in sd.items() if v.is_floating_point()]

prompt, negative = 'a professional photograph of an astronaut riding a horse!', 'blurry, low quality'
H = W = 32
steps, scale = 3, 7.5
g = torch.Generator().manual_seed(0)
latents_T = torch.randn(1, 4, H // 4, W // 4, generator=g)
refs = {'latents_T': latents_T}
ids = lambda p: tok([p], padding='max_length', max_length=tok.model_max_length, truncation=True, return_tensors='pt').input_ids
refs['input_ids'] = ids(prompt).to(torch.int64)
refs['negative_input_ids'] = ids(negative).to(torch.int64)
with torch.no_grad():
    refs['prompt_embeds'] = text_encoder(refs['input_ids'])[0]
    refs['negative_prompt_embeds'] = text_encoder(refs['negative_input_ids'])[0]
    cases = {}
    for sname, sched in schedulers.items():
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=sched,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        per_step = []
        def grab(p, i, t, kw):
            per_step.append(kw['latents'].clone())
            return kw
        img = pipe(prompt, negative_prompt=negative, height=H, width=W, num_inference_steps=steps, guidance_scale=scale,
                   latents=latents_T.clone(), output_type='np', callback_on_step_end=grab).images
        refs[f'{sname}.timesteps'] = sched.timesteps.to(torch.int64)
        refs[f'{sname}.latents_steps'] = torch.stack(per_step)
        refs[f'{sname}.image'] = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()
        cases[sname] = {'scheduler': {'_class_name': type(sched).__name__, **{k: v for k, v in dict(sched.config).items() if k != '_use_default_values'}}, 'timesteps': sched.timesteps.tolist()}
    # SD-Turbo in miniature: stabilityai/sd-turbo's scheduler_config.json (Euler, trailing, epsilon) run as
    # our 'euler_a_trailing' preset (EulerAncestral from that config), guidance 0 (one UNet pass), 1 and 4
    # steps. The ancestral noise diffusers draws is recorded, so the test can hand the same to our sampler.
    turbo_sched = dict(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', interpolation_type='linear',
                       num_train_timesteps=1000, prediction_type='epsilon', steps_offset=1, timestep_spacing='trailing',
                       use_karras_sigmas=False)
    drawn = []
    orig_randn = m_ea.randn_tensor
    def recording_randn(*a, **k):
        n = orig_randn(*a, **k); drawn.append(n.clone()); return n
    m_ea.randn_tensor = recording_randn
    turbo = {'scheduler': {'_class_name': 'EulerDiscreteScheduler', **turbo_sched}, 'sampler': 'euler_a_trailing', 'guidance_scale': 0.0, 'runs': {}}
    for n_steps in (1, 4):
        sched = EulerAncestralDiscreteScheduler.from_config(turbo_sched)  # as our preset does: the folder config, ancestral
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=sched,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        per_step, drawn[:] = [], []
        def grab(p, i, t, kw):
            per_step.append(kw['latents'].clone())
            return kw
        img = pipe(prompt, height=H, width=W, num_inference_steps=n_steps, guidance_scale=0.0, latents=latents_T.clone(),
                   output_type='np', callback_on_step_end=grab, generator=torch.Generator().manual_seed(7)).images
        refs[f'turbo{n_steps}.latents_steps'] = torch.stack(per_step)
        refs[f'turbo{n_steps}.noise'] = torch.stack(drawn)
        refs[f'turbo{n_steps}.image'] = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()
        turbo['runs'][str(n_steps)] = sched.timesteps.tolist()
    m_ea.randn_tensor = orig_randn
# diffusers' _use_default_values is a set's order (varies run to run): dropped, so reruns are byte-identical
clean = lambda c: {k: v for k, v in c.items() if k != '_use_default_values'}
configs = {'text_encoder': text_encoder.config.to_dict(), 'unet': clean(dict(unet.config)), 'vae': clean(dict(vae.config))}
tokenizer_files = {'tokenizer_config.json': {'model_max_length': 77, 'pad_token': '!', 'bos_token': '<|startoftext|>', 'eos_token': '<|endoftext|>',
                                             'unk_token': '<|endoftext|>', 'do_lower_case': True, 'tokenizer_class': 'CLIPTokenizer'},
                   'special_tokens_map.json': {'pad_token': '!', 'bos_token': '<|startoftext|>', 'eos_token': '<|endoftext|>', 'unk_token': '<|endoftext|>'}}
json.dump({'prompt': prompt, 'negative_prompt': negative, 'height': H, 'width': W, 'steps': steps, 'guidance_scale': scale,
           'versions': {'diffusers': '0.31.0', 'torch': torch.__version__}, 'configs': configs, 'tokenizer_files': tokenizer_files,
           'cases': cases, 'turbo': turbo, 'tensors': manifest}, open(os.path.join(out, 'manifest.json'), 'w'), default=str)
save_file({k: v.contiguous() for k, v in refs.items()}, os.path.join(out, 'refs.safetensors'))
print('ok', {k: list(v.shape) for k, v in refs.items()})
print('input_ids', refs['input_ids'][0, :16].tolist())
