"""ONNX files of the bench's three whole-model rows, for ONNX Runtime Web beside our engine (bench/ort.ts):
the same torch modules with the same weights as tools/pyref/gen_bench_refs.py (the bundled ldm-mnist UNet2DModel
and VQModel decode, the seeded SD-shaped UNet2DConditionModel), exported with torch.onnx.export (opset 17, fixed
shapes, float32) into bench/onnx/ (ignored by git: regenerate, never commit). Each graph's inputs are named as
bench/ort.ts feeds them; the timestep (and the class labels) are inputs too, so no constant folding hides work.

Run: /usr/bin/python3 tools/pyref/export_onnx.py   (PYREF: folder with fixenv.py, default /work/pyref)"""
import os, sys, warnings
warnings.filterwarnings('ignore')
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import torch
from diffusers import UNet2DModel, UNet2DConditionModel, VQModel
from diffusers.models.attention_processor import Attention, AttnProcessor
from safetensors.torch import load_file
from seeded import fill_seeded
from gen_bench_refs import SD_UNET, MNIST, load, seeded_input

root = os.path.dirname(os.path.dirname(here))


def attention_scores(self, query, key, attention_mask=None):
    # diffusers' get_attention_scores seeds baddbmm with an uninitialised [B*heads, Lq, Lk] tensor (beta 0),
    # which the exporter stores as a constant (400 MiB for the SD row): the same softmax(q k^T scale) without it
    s = torch.bmm(query, key.transpose(-1, -2)) * self.scale
    if attention_mask is not None:
        s = s + attention_mask
    return s.softmax(dim=-1).to(query.dtype)


Attention.get_attention_scores = attention_scores
OUT = os.path.join(root, 'bench/onnx')


class MnistUNet(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, sample, timestep, class_labels):
        return self.m(sample, timestep, class_labels=class_labels).sample


class VQDecode(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, latents):
        return self.m.decode(latents).sample


class SDUNet(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, sample, timestep, encoder_hidden_states):
        return self.m(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


def export(name, module, args, names):
    path = os.path.join(OUT, f'{name}.onnx')
    module.eval()
    for m in module.modules():
        if hasattr(m, 'set_processor'):
            m.set_processor(AttnProcessor())  # plain matmul/softmax attention (torch 1.13 has no SDPA)
    with torch.no_grad():
        torch.onnx.export(module, args, path, input_names=names, output_names=['out'], opset_version=17, do_constant_folding=True)
    print(f'wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)')


def main():
    os.makedirs(OUT, exist_ok=True)
    refs = load_file(os.path.join(root, 'bench/refs/model_rows.safetensors'))
    unet = load(UNet2DModel, os.path.join(MNIST, 'unet'))
    labels = torch.tensor(list(range(10)) + [10] * 10, dtype=torch.int64)
    export('mnist_unet', MnistUNet(unet), (refs['mnist_unet.input'], torch.tensor([501] * 20, dtype=torch.int64), labels), ['sample', 'timestep', 'class_labels'])
    vq = load(VQModel, os.path.join(MNIST, 'vqvae'))
    export('mnist_vq', VQDecode(vq), (refs['mnist_vq.input'],), ['latents'])
    sd = UNet2DConditionModel.from_config(SD_UNET).eval()
    fill_seeded(sd)
    x = seeded_input('bench.sd_unet.sample', [2, 4, 32, 32])
    ctx = seeded_input('bench.sd_unet.encoder_hidden_states', [2, 77, 96])
    export('sd_unet', SDUNet(sd), (x, torch.tensor([501, 501], dtype=torch.int64), ctx), ['sample', 'timestep', 'encoder_hidden_states'])


if __name__ == '__main__':
    main()
