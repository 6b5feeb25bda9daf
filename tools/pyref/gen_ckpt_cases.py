"""Small torch.save checkpoints for the .ckpt reader tests (test/fixtures/ckpt): a Lightning-style
checkpoint with the extras real releases carry (callbacks keyed by a class, AttributeDict hparams,
optimizer state, an OrderedDict state dict with _metadata, f16/bf16/int storages, a transposed view,
views sharing one storage, a 0-d buffer, an nn.Parameter), a bare state dict saved under another
archive stem, and hostile pickles (eval, os.system) that a safe reader must refuse.
Run: /usr/bin/python3 tools/pyref/gen_ckpt_cases.py   (torch 1.13, Debian python3-torch)"""
import json, os, sys, types, collections
import torch

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(os.path.dirname(os.path.dirname(here)), 'test/fixtures/ckpt')
os.makedirs(out, exist_ok=True)

# Stand-ins with the module paths of pytorch_lightning, so the pickle names the same globals.
def mod(name):
    m = types.ModuleType(name); sys.modules[name] = m; return m
for n in ['pytorch_lightning', 'pytorch_lightning.callbacks', 'pytorch_lightning.utilities']:
    mod(n)
mc = mod('pytorch_lightning.callbacks.model_checkpoint')
pa = mod('pytorch_lightning.utilities.parsing')
class ModelCheckpoint: pass
ModelCheckpoint.__module__ = mc.__name__; mc.ModelCheckpoint = ModelCheckpoint
class AttributeDict(dict): pass
AttributeDict.__module__ = pa.__name__; pa.AttributeDict = AttributeDict

g = torch.Generator().manual_seed(0)
base = torch.randn(3, 4, generator=g)
shared = torch.randn(10, generator=g)
sd = collections.OrderedDict()
sd['model.a'] = torch.randn(3, 5, generator=g)
sd['model.half'] = torch.randn(7, generator=g).half()
sd['model.bf16'] = torch.randn(2, 3, generator=g).bfloat16()
sd['model.long'] = torch.tensor([1, -2, 3, 2**31 - 1], dtype=torch.int64)
sd['model.transposed'] = base.t()            # non-contiguous: strides (1, 4)
sd['model.view_a'] = shared[2:6]             # offset 2 into a shared storage
sd['model.view_b'] = shared[5:].view(5, 1)   # the same storage, offset 5
sd['scale_factor'] = torch.tensor(0.18215)   # a 0-d buffer
sd['model_ema.num_updates'] = torch.tensor(12, dtype=torch.int)
sd['model.param'] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
sd['model.empty'] = torch.zeros(0, 3)
sd._metadata = collections.OrderedDict([('', {'version': 1}), ('model', {'version': 1})])
hp = AttributeDict(); hp['linear_start'] = 0.0015; hp['first_stage_config'] = {'target': 'x.Y'}
ckpt = {
    'epoch': 3, 'global_step': 1234, 'pytorch-lightning_version': '1.4.2', 'state_dict': sd,
    'callbacks': {ModelCheckpoint: {'monitor': None, 'best_model_score': None}},
    'optimizer_states': [{'state': {0: {'exp_avg': torch.ones(2)}}, 'param_groups': [{'lr': 1e-4, 'params': [0]}]}],
    'lr_schedulers': [], 'hparams_name': 'kwargs', 'hyper_parameters': hp,
}
torch.save(ckpt, os.path.join(out, 'model.ckpt'))
torch.save(collections.OrderedDict([('w', torch.arange(6, dtype=torch.float32).view(2, 3)), ('b', torch.tensor([0.5], dtype=torch.float16))]),
           os.path.join(out, 'weights.pt'))

expected = {}
for k, v in sd.items():
    t = v.detach()
    expected[k] = {'shape': list(t.shape), 'values': t.float().flatten().tolist() if t.is_floating_point() else t.flatten().tolist()}
json.dump({'generator': 'tools/pyref/gen_ckpt_cases.py', 'torch': torch.__version__, 'tensors': expected}, open(os.path.join(out, 'expected.json'), 'w'))

class Evil:
    def __init__(self, f, a): self.f, self.a = f, a
    def __reduce__(self): return (self.f, self.a)
torch.save({'state_dict': {'w': torch.ones(1)}, 'x': Evil(eval, ('1+1',))}, os.path.join(out, 'hostile_eval.ckpt'))
torch.save({'state_dict': {'w': torch.ones(1)}, 'x': Evil(os.system, ('true',))}, os.path.join(out, 'hostile_system.ckpt'))
torch.save({'w': Evil(getattr, ('abc', 'upper'))}, os.path.join(out, 'hostile_getattr.ckpt'))
print(sorted(os.listdir(out)))
