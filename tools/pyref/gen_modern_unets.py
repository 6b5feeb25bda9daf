"""Reference cases for the modern UNet2DConditionModel configurations (issue 13), from diffusers 0.31 itself.

Writes test/fixtures/modern/<case>/ (or --out): config.json (the diffusers config), manifest.json (state-dict
keys and shapes: the weights are seeded from their names, tools/pyref/seeded.py == test/seeded.ts, so none
are stored), io.safetensors (input.* / output.* in float32) and case.json (versions, calls, error stats).

  sd2_unet   SD 2.x-shaped: use_linear_projection, upcast_attention, heads per block (attention_head_dim list,
             as SD 2.1's [5, 10, 20, 20]), cross_attention_dim of OpenCLIP-H scaled down.
  sdxl_unet  SDXL-shaped: DownBlock2D at level 0, addition_embed_type "text_time" (pooled text embeds + 6
             micro-conditioning time ids), transformer_layers_per_block [1, 2, 3] (mid block: 3 layers),
             heads per block, linear projection, cross dim = concat of two text encoders' widths.
             Also the Stability (sgm) single-file key of every tensor ('original' in manifest.json), checked
             by mapping a checkpoint with those keys back through diffusers' convert_ldm_unet_checkpoint.
  lcm_unet   LCM-distilled: time_cond_proj_dim (the guidance-scale embedding enters the time MLP), with
             per-layer transformer_layers_per_block lists and reverse_transformer_layers_per_block.
             input.timestep_cond = LatentConsistencyModelPipeline.get_guidance_scale_embedding(guidance - 1).

Run: /usr/bin/python3 tools/pyref/gen_modern_unets.py [--out DIR] [--verify]
(--verify recomputes every output from the committed inputs and compares; PYREF: folder with fixenv.py,
default /work/pyref; versions in its vendor/VERSIONS, listed in tools/pyref/FIXTURES.md.)"""
import argparse, json, os, sys, warnings
warnings.filterwarnings('ignore', category=FutureWarning)
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401  (vendor dir on sys.path, hub offline, pure-python safetensors)
import torch
import diffusers
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_text2img import LatentConsistencyModelPipeline
from safetensors.torch import save_file, load_file

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from seeded import fill_seeded  # noqa: E402

root = os.path.dirname(os.path.dirname(here))
torch.set_grad_enabled(False)

COMMON = dict(in_channels=4, out_channels=4, norm_num_groups=8, sample_size=8, flip_sin_to_cos=True, freq_shift=0)
CASES = {
    'sd2_unet': dict(
        COMMON,
        block_out_channels=[16, 32, 48],
        down_block_types=['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
        up_block_types=['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
        layers_per_block=1,
        attention_head_dim=[2, 4, 6],
        cross_attention_dim=40,
        use_linear_projection=True,
        upcast_attention=True,
    ),
    'sdxl_unet': dict(
        COMMON,
        block_out_channels=[16, 32, 48],
        down_block_types=['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
        up_block_types=['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
        layers_per_block=2,
        attention_head_dim=[1, 2, 3],
        transformer_layers_per_block=[1, 2, 3],
        cross_attention_dim=40,  # 16 + 24: the two text encoders' hidden sizes
        use_linear_projection=True,
        addition_embed_type='text_time',
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24 + 6 * 8,  # pooled (encoder 2) + 6 time ids
    ),
    'lcm_unet': dict(
        COMMON,
        block_out_channels=[16, 32],
        down_block_types=['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
        up_block_types=['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
        layers_per_block=1,
        attention_head_dim=[2, 4],
        transformer_layers_per_block=[[1], [2]],
        reverse_transformer_layers_per_block=[[2, 1], [1, 2]],
        cross_attention_dim=24,
        time_cond_proj_dim=12,
    ),
}
POOLED = 24
TIME_IDS = [[1024, 1024, 0, 0, 1024, 1024], [768, 1152, 16, 48, 1024, 1024]]
GUIDANCE = [8.0, 3.5]


def sgm_key(k, cfg):
    """diffusers UNet key -> Stability's sgm / CompVis single-file key (without model.diffusion_model.)."""
    n = len(cfg['block_out_channels'])
    lpb = cfg['layers_per_block']
    lpb = [lpb] * n if isinstance(lpb, int) else lpb
    res = [('norm1.', 'in_layers.0.'), ('conv1.', 'in_layers.2.'), ('time_emb_proj.', 'emb_layers.1.'),
           ('norm2.', 'out_layers.0.'), ('conv2.', 'out_layers.3.'), ('conv_shortcut.', 'skip_connection.')]

    def resnet(rest):
        for a, b in res:
            if rest.startswith(a):
                return b + rest[len(a):]
        raise KeyError(rest)
    p = k.split('.')
    simple = {'time_embedding.linear_1': 'time_embed.0', 'time_embedding.linear_2': 'time_embed.2',
              'add_embedding.linear_1': 'label_emb.0.0', 'add_embedding.linear_2': 'label_emb.0.2',
              'conv_in': 'input_blocks.0.0', 'conv_norm_out': 'out.0', 'conv_out': 'out.2'}
    head = '.'.join(p[:-1])
    if head in simple:
        return simple[head] + '.' + p[-1]
    if p[0] == 'down_blocks':
        i, kind = int(p[1]), p[2]
        base = 1 + sum(lpb[:i]) + i  # each earlier level: its resnets and a downsampler
        if kind == 'downsamplers':
            return f'input_blocks.{base + lpb[i]}.0.op.' + '.'.join(p[5:])
        j = int(p[3])
        rest = '.'.join(p[4:])
        return f'input_blocks.{base + j}.0.' + resnet(rest) if kind == 'resnets' else f'input_blocks.{base + j}.1.' + rest
    if p[0] == 'mid_block':
        rest = '.'.join(p[3:])
        if p[1] == 'attentions':
            return 'middle_block.1.' + rest
        return f'middle_block.{0 if p[2] == "0" else 2}.' + resnet(rest)
    if p[0] == 'up_blocks':
        i, kind = int(p[1]), p[2]
        base = sum(lpb[n - 1 - b] + 1 for b in range(i))
        has_attn = cfg['up_block_types'][i].startswith('CrossAttn')
        if kind == 'upsamplers':
            return f'output_blocks.{base + lpb[n - 1 - i]}.{2 if has_attn else 1}.' + '.'.join(p[4:])
        j = int(p[3])
        rest = '.'.join(p[4:])
        return f'output_blocks.{base + j}.0.' + resnet(rest) if kind == 'resnets' else f'output_blocks.{base + j}.1.' + rest
    raise KeyError(k)


def check_sgm_map(model, cfg):
    """Maps a checkpoint with the sgm keys back through diffusers' own converter: must give the state dict."""
    sd = model.state_dict()
    ckpt = {'model.diffusion_model.' + sgm_key(k, cfg): v for k, v in sd.items()}
    assert len(ckpt) == len(sd), 'sgm key map is not one-to-one'
    back = convert_ldm_unet_checkpoint(ckpt, dict(cfg))
    assert set(back) == set(sd), (sorted(set(sd) - set(back))[:5], sorted(set(back) - set(sd))[:5])
    for k, v in sd.items():
        assert torch.equal(back[k], v), k
    return {k: sgm_key(k, cfg) for k in sd}


def build(cfg):
    m = UNet2DConditionModel(**cfg).eval()
    for mod in m.modules():
        if isinstance(mod, Attention):
            mod.set_processor(AttnProcessor())  # the classic bmm/softmax path (honours upcast_attention)
    fill_seeded(m)
    return m


def inputs_for(name, cfg, seed):
    g = torch.Generator().manual_seed(seed)
    x = {
        'sample': torch.randn(2, 4, 8, 8, generator=g),
        'timestep': torch.tensor([981], dtype=torch.int64),
        'encoder_hidden_states': torch.randn(2, 7, cfg['cross_attention_dim'], generator=g),
        'sample2': torch.randn(2, 4, 8, 8, generator=g),
        'timesteps2': torch.tensor([999.0, 421.5]),
    }
    if cfg.get('addition_embed_type') == 'text_time':
        x['text_embeds'] = torch.randn(2, POOLED, generator=g)
        x['time_ids'] = torch.tensor(TIME_IDS, dtype=torch.float32)
    if cfg.get('time_cond_proj_dim'):
        x['guidance_scale'] = torch.tensor(GUIDANCE)
        x['timestep_cond'] = LatentConsistencyModelPipeline.get_guidance_scale_embedding(
            None, x['guidance_scale'] - 1, embedding_dim=cfg['time_cond_proj_dim'])
    return x


def run(model, cfg, x):
    kw = {}
    if 'text_embeds' in x:
        kw['added_cond_kwargs'] = {'text_embeds': x['text_embeds'], 'time_ids': x['time_ids']}
    if 'timestep_cond' in x:
        kw['timestep_cond'] = x['timestep_cond']
    ehs = x['encoder_hidden_states']
    return {
        'sample': model(x['sample'], x['timestep'], encoder_hidden_states=ehs, **kw).sample,
        'sample2': model(x['sample2'], x['timesteps2'], encoder_hidden_states=ehs, **kw).sample,
    }


def stats(t):
    return {'shape': list(t.shape), 'dtype': 'float32', 'max_abs': t.abs().max().item(), 'mean_abs': t.abs().mean().item()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=os.path.join(root, 'test/fixtures/modern'))
    ap.add_argument('--verify', action='store_true', help='recompute from the committed inputs and compare')
    ap.add_argument('cases', nargs='*', default=list(CASES))
    a = ap.parse_args()
    bad = 0
    for i, name in enumerate(a.cases):
        cfg = CASES[name]
        d = os.path.join(a.out, name)
        model = build(cfg)
        if a.verify:
            io = load_file(os.path.join(d, 'io.safetensors'))
            x = {k[6:]: v for k, v in io.items() if k.startswith('input.')}
            out = run(model, cfg, x)
            for k, v in out.items():
                ref = io['output.' + k]
                rel = ((v - ref).abs().max() / ref.abs().max()).item()
                print(f'{name} {k}: max rel {rel:.2e}')
                bad += rel > 1e-5
            continue
        x = inputs_for(name, cfg, 1000 + i)
        out = run(model, cfg, x)
        # float64 run: how far float32 itself is from exact (the floor for our error)
        out64 = run(model.double(), cfg, {k: (v.double() if v.is_floating_point() else v) for k, v in x.items()})
        os.makedirs(d, exist_ok=True)
        full = {**model.config}
        json.dump({k: v for k, v in full.items() if not k.startswith('_')} | {'_class_name': 'UNet2DConditionModel', '_diffusers_version': diffusers.__version__},
                  open(os.path.join(d, 'config.json'), 'w'), indent=1, sort_keys=True)
        sgm = check_sgm_map(model, cfg) if name == 'sdxl_unet' else None
        manifest = [{'key': k, 'shape': list(v.shape), **({'original': sgm[k]} if sgm else {})} for k, v in model.state_dict().items()]
        json.dump({'tensors': manifest}, open(os.path.join(d, 'manifest.json'), 'w'))
        io = {f'input.{k}': v.contiguous() for k, v in x.items()}
        io.update({f'output.{k}': v.contiguous() for k, v in out.items()})
        save_file(io, os.path.join(d, 'io.safetensors'))
        case = {
            'case': f'modern/{name}', 'diffusers_version': diffusers.__version__, 'torch_version': torch.__version__,
            'device': 'cpu', 'dtype': 'float32', 'weights': 'seeded from each key (tools/pyref/seeded.py), keys and shapes in manifest.json',
            'call': {
                'sample': 'model(sample, timestep, encoder_hidden_states, **extra).sample',
                'sample2': 'model(sample2, timesteps2, encoder_hidden_states, **extra).sample (a float timestep per item)',
                'extra': 'added_cond_kwargs={text_embeds, time_ids} for text_time; timestep_cond for time_cond_proj_dim',
            },
            'inputs': {k: {'shape': list(v.shape), 'dtype': str(v.dtype).replace('torch.', '')} for k, v in x.items()},
            'outputs': {k: {**stats(v), 'fp32_vs_fp64_rel': ((v.double() - out64[k]).abs().max() / out64[k].abs().max()).item()} for k, v in out.items()},
        }
        json.dump(case, open(os.path.join(d, 'case.json'), 'w'), indent=1)
        print(name, {k: round(v.abs().max().item(), 4) for k, v in out.items()}, 'params', sum(v.numel() for v in model.state_dict().values()))
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
