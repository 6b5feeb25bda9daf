"""A tiny diffusers LDMTextToImagePipeline (the layout of CompVis/ldm-text2im-large-256: vqvae, bert,
tokenizer, unet, scheduler) with weights from tools/pyref/seeded.py; stores only the component
configs, tensor names/shapes and reference outputs (test/fixtures/paper/ldm_text2img).
Run: /usr/bin/python3 tools/pyref/gen_ldm_text2img.py   (PYREF: folder with fixenv.py, default /work/pyref)"""
import json, os, sys
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401
here = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, here)
import torch
import transformers.tokenization_utils_base as tub
tub.AddedToken.__hash__ = lambda self: hash(self.content)  # no compiled tokenizers here; ids unchanged
from transformers import BertTokenizer
from diffusers import AutoencoderKL, UNet2DConditionModel, DDIMScheduler
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel, LDMTextToImagePipeline
from safetensors.torch import save_file
from seeded import fill_seeded

root = os.path.dirname(os.path.dirname(here))
out = os.path.join(root, 'test/fixtures/paper/ldm_text2img'); os.makedirs(out, exist_ok=True)
vqvae = AutoencoderKL(block_out_channels=[32, 32, 32, 32], down_block_types=['DownEncoderBlock2D'] * 4, up_block_types=['UpDecoderBlock2D'] * 4,
                      layers_per_block=1, latent_channels=4, norm_num_groups=32, scaling_factor=0.18215)
bert = LDMBertModel(LDMBertConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, head_dim=12, encoder_ffn_dim=64))
unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[32, 64], layers_per_block=1,
                            down_block_types=['CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types=['UpBlock2D', 'CrossAttnUpBlock2D'],
                            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', clip_sample=False, set_alpha_to_one=False)
tok = BertTokenizer(os.path.join(root, 'test/fixtures/tokenizers/bert-base-uncased/vocab.txt'))
comps = {'vqvae': vqvae, 'bert': bert, 'unet': unet}
manifest = {}
for name, m in comps.items():
    sd = fill_seeded(m); m.eval()
    manifest[name] = [{'key': k, 'shape': list(v.shape)} for k, v in sd.items() if v.is_floating_point()]
pipe = LDMTextToImagePipeline(vqvae=vqvae, bert=bert, tokenizer=tok, unet=unet, scheduler=sched)
g = torch.Generator().manual_seed(0)
latents = torch.randn(1, 4, 8, 8, generator=g)
prompt = 'a painting of a squirrel eating a burger'
with torch.no_grad():
    emb = bert(tok([prompt], padding='max_length', max_length=77, truncation=True, return_tensors='pt').input_ids)[0]
    img = pipe(prompt, num_inference_steps=5, guidance_scale=6.0, eta=0.0, latents=latents.clone(), output_type='np').images
configs = {'vqvae': dict(vqvae.config), 'bert': bert.config.to_dict(), 'unet': dict(unet.config), 'scheduler': dict(sched.config)}
json.dump({'prompt': prompt, 'steps': 5, 'guidance_scale': 6.0, 'configs': configs, 'tensors': manifest}, open(os.path.join(out, 'manifest.json'), 'w'), default=str)
save_file({'prompt_embeds': emb.contiguous(), 'latents': latents, 'image': torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()}, os.path.join(out, 'refs.safetensors'))
print('ok', emb.shape, img.shape)
