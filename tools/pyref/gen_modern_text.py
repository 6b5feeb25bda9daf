"""Reference cases for the SD 2.x / SDXL text encoders (test/fixtures/modern_text/<case>/): transformers'
CLIPTextModel / CLIPTextModelWithProjection on tiny configs, and diffusers' own encode_prompt of
StableDiffusionPipeline (SD 2.x, clip_skip) and StableDiffusionXLPipeline (two encoders, hidden_states[-2],
pooled text_embeds). Weights come from tools/pyref/seeded.py (test/seeded.ts makes the same ones), so only
config.json, case.json (the call, the prompts and the manifest of weight names/shapes) and io.safetensors
(input ids and outputs, F32/I64) are stored. Tokenizer: the committed clip-vit-large-patch14 vocab with
tokenizer_config pad_token "!" (id 0) as SD 2.x / SDXL's tokenizer_2, or the EOS as SD 1.x's.
Versions: transformers 4.45.0.dev0 @ d6751d91, diffusers 0.31.0 @ ca596782, torch 1.13 CPU (vendor/VERSIONS).
Run: /usr/bin/python3 tools/pyref/gen_modern_text.py [--out DIR]   (PYREF: folder with fixenv.py, default /work/pyref)
     /usr/bin/python3 tools/pyref/gen_modern_text.py --verify   recompute into a temp dir and compare with the committed
     cases (ids equal, floats max|a-b|/max|ref| <= 1e-5 per output; exit 1 otherwise)"""
import argparse, json, os, sys, types, warnings
warnings.filterwarnings('ignore')
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401  (vendor dir on sys.path, hub offline, pure-python safetensors)
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
root = os.path.dirname(os.path.dirname(here))
import torch
import transformers.tokenization_utils_base as tub
# Without the compiled `tokenizers`, transformers' fallback AddedToken is unhashable and has no __setstate__
# (which the slow tokenizer calls for a special pad token such as '!'); these stand-ins do what tokenizers' do.
tub.AddedToken.__hash__ = lambda self: hash(self.content)
tub.AddedToken.__setstate__ = lambda self, d: self.__dict__.update(d)
import transformers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
import diffusers
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file, load_file
from seeded import fill_seeded

torch.set_grad_enabled(False)
TOK = os.path.join(root, 'test/fixtures/tokenizers/clip-vit-large-patch14')
PROMPTS = ['a photograph of an astronaut riding a horse', 'Ein Hund! (oil on canvas), 1890']
NEGATIVE = ['blurry', '']


def tokenizer(pad):
    t = CLIPTokenizer.from_pretrained(TOK, pad_token=pad) if pad else CLIPTokenizer.from_pretrained(TOK)
    t.model_max_length = 77
    return t


def model(cls, **cfg):
    base = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, bos_token_id=49406, pad_token_id=1)
    base.update(cfg)
    m = cls(CLIPTextConfig(**base)).eval()
    fill_seeded(m)
    return m


def manifest(m):
    return [{'key': k, 'shape': list(t.shape)} for k, t in m.state_dict().items() if t.is_floating_point()]


def save(out, name, config, info, io):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'config.json'), 'w') as f:
        json.dump(config, f, indent=1, sort_keys=True)
    info = dict(info, versions={'transformers': transformers.__version__, 'diffusers': diffusers.__version__, 'torch': torch.__version__})
    with open(os.path.join(d, 'case.json'), 'w') as f:
        json.dump(info, f, indent=1)
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(d, 'io.safetensors'), metadata={'format': 'pt'})
    print(name, {k: list(v.shape) for k, v in io.items()})


def config_of(m):
    c = m.config.to_dict()
    keep = ['architectures', 'vocab_size', 'hidden_size', 'intermediate_size', 'projection_dim', 'num_hidden_layers',
            'num_attention_heads', 'max_position_embeddings', 'hidden_act', 'layer_norm_eps', 'bos_token_id',
            'eos_token_id', 'pad_token_id', 'model_type']
    return {k: c[k] for k in keep if k in c}


def ids_of(tok, prompts):
    return tok(prompts, padding='max_length', max_length=77, truncation=True, return_tensors='pt').input_ids


def stack(hs):
    return torch.stack(list(hs), 0)


def with_projection_case(out, name, act, eos):
    """CLIPTextModelWithProjection (SDXL's text_encoder_2 shape); ids with pad '!' and, in a second batch, an added
    token id 49409 (a textual-inversion token) before the EOS, where the legacy argmax rule and the first-EOS rule differ."""
    m = model(CLIPTextModelWithProjection, vocab_size=49410, hidden_size=40, intermediate_size=88, projection_dim=24,
              num_hidden_layers=3, num_attention_heads=5, hidden_act=act, eos_token_id=eos)
    ids = ids_of(tokenizer('!'), PROMPTS)
    added = ids.clone()
    added[0, 3] = 49409
    added[1, 5] = 49408
    io = {'input.input_ids': ids, 'input.input_ids_added': added}
    for key, x in [('', ids), ('added.', added)]:
        o = m(x, output_hidden_states=True)
        io[f'output.{key}text_embeds'] = o.text_embeds
        io[f'output.{key}last_hidden_state'] = o.last_hidden_state
        if not key:
            io['output.hidden_states'] = stack(o.hidden_states)
    pool = lambda x: (x.argmax(-1) if eos == 2 else (x == eos).int().argmax(-1)).tolist()
    info = {'call': 'CLIPTextModelWithProjection(input_ids, output_hidden_states=True)', 'prompts': PROMPTS, 'pad_token': '!',
            'pool_positions': {'input_ids': pool(ids), 'input_ids_added': pool(added)}, 'weights': manifest(m)}
    save(out, name, config_of(m), info, io)
    return m


def sd2_case(out):
    """SD 2.x's text encoder shape: OpenCLIP-style CLIPTextModel (gelu, legacy eos_token_id 2, pad '!'), the 24th
    layer dropped as diffusers' conversion does (here 4 -> 3), and diffusers' StableDiffusionPipeline.encode_prompt
    with and without clip_skip."""
    m = model(CLIPTextModel, hidden_size=44, intermediate_size=100, num_hidden_layers=3, num_attention_heads=4,
              hidden_act='gelu', eos_token_id=2, bos_token_id=0, pad_token_id=1, projection_dim=20)
    tok = tokenizer('!')
    ids = ids_of(tok, PROMPTS)
    o = m(ids, output_hidden_states=True)
    io = {'input.input_ids': ids, 'output.last_hidden_state': o.last_hidden_state, 'output.pooler_output': o.pooler_output,
          'output.hidden_states': stack(o.hidden_states)}
    pipe = types.SimpleNamespace(tokenizer=tok, text_encoder=m)
    for skip in [None, 1, 2]:
        pe, ne = StableDiffusionPipeline.encode_prompt(pipe, PROMPTS, torch.device('cpu'), 1, True, NEGATIVE, clip_skip=skip)
        io[f'output.prompt_embeds_clip_skip_{skip or 0}'] = pe
        if skip is None:
            io['output.negative_prompt_embeds'] = ne
    io['input.negative_input_ids'] = ids_of(tok, NEGATIVE)
    info = {'call': 'CLIPTextModel(input_ids, output_hidden_states=True); StableDiffusionPipeline.encode_prompt(prompts, '
                    'negative, clip_skip in [None, 1, 2])', 'prompts': PROMPTS, 'negative_prompts': NEGATIVE, 'pad_token': '!',
            'weights': manifest(m)}
    save(out, 'sd2_openclip', config_of(m), info, io)


def sdxl_case(out, te2):
    """StableDiffusionXLPipeline.encode_prompt with a CLIP-L-shaped text_encoder (quick_gelu, pad = EOS) and the
    bigG-shaped text_encoder_2 of the with_projection_legacy_eos case (pad '!')."""
    te1 = model(CLIPTextModel, hidden_size=32, intermediate_size=68, num_hidden_layers=3, num_attention_heads=4,
                hidden_act='quick_gelu', eos_token_id=2, projection_dim=32)
    tok1, tok2 = tokenizer(None), tokenizer('!')
    pipe = types.SimpleNamespace(tokenizer=tok1, tokenizer_2=tok2, text_encoder=te1, text_encoder_2=te2,
                                 config=types.SimpleNamespace(force_zeros_for_empty_prompt=True))
    io = {'input.input_ids': ids_of(tok1, PROMPTS), 'input.input_ids_2': ids_of(tok2, PROMPTS),
          'input.negative_input_ids': ids_of(tok1, NEGATIVE), 'input.negative_input_ids_2': ids_of(tok2, NEGATIVE)}
    for skip in [None, 1]:
        pe, ne, pp, npp = StableDiffusionXLPipeline.encode_prompt(pipe, PROMPTS, device=torch.device('cpu'), num_images_per_prompt=1,
                                                                  do_classifier_free_guidance=True, negative_prompt=NEGATIVE, clip_skip=skip)
        io[f'output.prompt_embeds_clip_skip_{skip or 0}'] = pe
        if skip is None:
            io['output.pooled_prompt_embeds'] = pp
            io['output.negative_prompt_embeds'] = ne
            io['output.negative_pooled_prompt_embeds'] = npp
    info = {'call': 'StableDiffusionXLPipeline.encode_prompt(prompts, negative_prompt=negative, clip_skip in [None, 1]); '
                    'text_encoder_2 = ../with_projection_legacy_eos', 'prompts': PROMPTS, 'negative_prompts': NEGATIVE,
            'pad_token': None, 'pad_token_2': '!', 'weights': manifest(te1)}
    save(out, 'sdxl_encode_prompt', config_of(te1), info, io)


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    committed = os.path.join(root, 'test/fixtures/modern_text')
    ap.add_argument('--out', default=committed)
    ap.add_argument('--verify', action='store_true')
    a = ap.parse_args()
    if a.verify:
        import tempfile
        a.out = tempfile.mkdtemp()
    te2 = with_projection_case(a.out, 'with_projection_legacy_eos', 'gelu', 2)
    with_projection_case(a.out, 'with_projection_first_eos', 'quick_gelu', 49407)
    sd2_case(a.out)
    sdxl_case(a.out, te2)
    if a.verify:
        bad = 0
        for case in sorted(os.listdir(a.out)):
            ref, new = (load_file(os.path.join(d, case, 'io.safetensors')) for d in (committed, a.out))
            worst = 0.0
            for k in sorted(set(ref) | set(new)):
                if k not in ref or k not in new or ref[k].shape != new[k].shape:
                    print(f'{case} {k}: missing or reshaped'); bad += 1; continue
                if not ref[k].is_floating_point():
                    if not torch.equal(ref[k], new[k]): print(f'{case} {k}: ids differ'); bad += 1
                    continue
                rel = ((ref[k] - new[k]).abs().max() / ref[k].abs().max()).item()
                worst = max(worst, rel)
                if rel > 1e-5: print(f'{case} {k}: rel {rel:.2e}'); bad += 1
            print(f'{case}: worst rel {worst:.2e}')
        sys.exit(1 if bad else 0)
