"""Reference outputs of the bench's three whole-model rows (bench/model_rows.ts), computed by diffusers 0.31 on
CPU in float32 (torch 1.13), written to bench/refs/model_rows.safetensors (full outputs, ~90 KB) and
bench/refs/model_rows.json (configs, inputs, state-dict keys, output statistics):

  mnist_unet  the bundled ldm-mnist UNet2DModel (models/ldm-mnist/unet) at CFG batch 20: the latents of the
              reference run (models/ldm-mnist/reference, latents_steps[8], the input of the t=501 step) twice,
              class labels 0..9 then ten null labels (10), timestep 501.
  mnist_vq    the ldm-mnist VQModel decode (quantise + post_quant_conv + decoder) at batch 10 of the reference's
              latents_quantized: every latent pixel is a codebook entry, so the nearest code is unambiguous and
              an f16 run cannot flip a code (the raw latents have gaps down to 4e-5, see the model's README).
  sd_unet     an SD 1.5-shaped UNet2DConditionModel (block_out_channels 32/64/128/128, cross_attention_dim 96,
              8 heads per attention), weights from tools/pyref/seeded.py (test/seeded.ts makes the same ones),
              sample [2, 4, 32, 32] and encoder_hidden_states [2, 77, 96] seeded with unit variance, timestep 501.

Seeded inputs: seeded_values(key, shape) * sqrt(fan_in) (fan_in = numel / shape[0]), i.e. uniform, variance 1.
Run: /usr/bin/python3 tools/pyref/gen_bench_refs.py   (PYREF: folder with fixenv.py, default /work/pyref)"""
import json, math, os, sys, warnings
warnings.filterwarnings('ignore')
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import torch
from diffusers import UNet2DModel, UNet2DConditionModel, VQModel
from safetensors.torch import load_file, save_file
from seeded import fill_seeded, seeded_values

root = os.path.dirname(os.path.dirname(here))
MNIST = os.path.join(root, 'models/ldm-mnist')
OUT = os.path.join(root, 'bench/refs')

SD_UNET = {
    'act_fn': 'silu', 'attention_head_dim': 8, 'block_out_channels': [32, 64, 128, 128], 'center_input_sample': False,
    'cross_attention_dim': 96,
    'down_block_types': ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    'downsample_padding': 1, 'flip_sin_to_cos': True, 'freq_shift': 0, 'in_channels': 4, 'layers_per_block': 2,
    'mid_block_scale_factor': 1, 'norm_eps': 1e-5, 'norm_num_groups': 32, 'out_channels': 4, 'sample_size': 32,
    'up_block_types': ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
}


def seeded_input(key, shape):
    n = math.prod(shape)
    return seeded_values(key, shape) * math.sqrt(n // shape[0])


def load(cls, folder):
    cfg = json.load(open(os.path.join(folder, 'config.json')))
    m = cls.from_config(cfg)
    m.load_state_dict(load_file(os.path.join(folder, 'diffusion_pytorch_model.safetensors')))
    return m.eval()


def stats(t):
    t = t.double()
    return {'shape': list(t.shape), 'mean': t.mean().item(), 'std': t.std().item(), 'absmax': t.abs().max().item(), 'l2': t.norm().item()}


def main():
    torch.manual_seed(0)
    ref = load_file(os.path.join(MNIST, 'reference/reference.safetensors'))
    rows, tensors = {}, {}
    with torch.no_grad():
        unet = load(UNet2DModel, os.path.join(MNIST, 'unet'))
        lat = ref['latents_steps'][8]
        x = torch.cat([lat, lat])
        labels = list(range(10)) + [10] * 10
        y = unet(x, 501, class_labels=torch.tensor(labels)).sample
        tensors['mnist_unet.input'] = x.contiguous()
        tensors['mnist_unet.output'] = y.contiguous()
        rows['mnist_unet'] = {'timestep': 501, 'class_labels': labels, 'input': 'latents_steps[8] of models/ldm-mnist/reference, twice', 'output': stats(y)}

        vq = load(VQModel, os.path.join(MNIST, 'vqvae'))
        h = ref['latents_quantized']
        y = vq.decode(h).sample
        tensors['mnist_vq.input'] = h.contiguous()
        tensors['mnist_vq.output'] = y.contiguous()
        rows['mnist_vq'] = {'input': 'latents_quantized of models/ldm-mnist/reference', 'output': stats(y)}

        sd = UNet2DConditionModel.from_config(SD_UNET).eval()
        sd_state = fill_seeded(sd)
        x = seeded_input('bench.sd_unet.sample', [2, 4, 32, 32])
        ctx = seeded_input('bench.sd_unet.encoder_hidden_states', [2, 77, 96])
        y = sd(x, 501, encoder_hidden_states=ctx).sample
        tensors['sd_unet.output'] = y.contiguous()
        rows['sd_unet'] = {
            'config': SD_UNET, 'timestep': 501,
            'inputs': {'sample': ['bench.sd_unet.sample', [2, 4, 32, 32]], 'encoder_hidden_states': ['bench.sd_unet.encoder_hidden_states', [2, 77, 96]]},
            'keys': {k: list(v.shape) for k, v in sd_state.items() if v.is_floating_point()},
            'output': stats(y),
        }
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, 'model_rows.safetensors'))
    meta = {'generator': 'tools/pyref/gen_bench_refs.py', 'diffusers': '0.31.0', 'torch': torch.__version__, 'rows': rows}
    with open(os.path.join(OUT, 'model_rows.json'), 'w') as f:
        json.dump(meta, f, separators=(',', ':'))  # one line: the state-dict key list is long
        f.write('\n')
    for k, r in rows.items():
        print(k, r['output'])


if __name__ == '__main__':
    main()
