"""Deterministic weights from a key name, computed identically by test/seeded.ts, so the tests of the
paper's models need no stored weights: value i of tensor `key` comes from a 32-bit integer hash of
(FNV-1a(key), i). Matrices/convs: uniform with variance 1/fan_in; 1-D weights (norms): 1 + 0.4u;
other 1-D tensors (biases): 0.4u; u in [-0.5, 0.5)."""
import torch

M32 = 0xFFFFFFFF

def fnv1a(s):
    h = 0x811C9DC5
    for b in s.encode('utf-8'):
        h = ((h ^ b) * 0x01000193) & M32
    return h

def seeded_values(key, shape):
    n = 1
    for d in shape:
        n *= d
    i = torch.arange(n, dtype=torch.int64)
    h = (i * 0x9E3779B1 + fnv1a(key)) & M32
    for _ in range(2):
        h = h ^ (h >> 16)
        h = (h * 0x045D9F3B) & M32
    h = h ^ (h >> 16)
    u = h.to(torch.float64) / 4294967296.0 - 0.5
    if len(shape) >= 2:
        fan_in = n // shape[0]
        v = u * 2 * (3.0 / fan_in) ** 0.5
    elif len(shape) == 1 and key.endswith('weight'):
        v = 1 + 0.4 * u
    else:
        v = 0.4 * u
    return v.to(torch.float32).reshape(shape)

def fill_seeded(module, prefixes=('',)):
    """Overwrites every parameter/buffer of module whose name starts with one of prefixes (floats only)."""
    sd = module.state_dict()
    with torch.no_grad():
        for k, t in sd.items():
            if t.is_floating_point() and t.dim() >= 1 and any(k.startswith(p) for p in prefixes):
                t.copy_(seeded_values(k, list(t.shape)))
    return sd
