"""Reference ids for BertTokenizer (bert-base-uncased, as CompVis' BERTTokenizer and diffusers'
LDMTextToImagePipeline use it) from transformers' slow BertTokenizer.
Run: /usr/bin/python3 tools/pyref/gen_bert_tokenizer.py  (PYREF = folder with fixenv.py, default /work/pyref)"""
import json, os, sys
sys.path.insert(0, os.environ.get('PYREF', '/work/pyref'))
import fixenv  # noqa: F401  (vendor dir on sys.path, hub offline)
from transformers import BertTokenizer
import transformers.tokenization_utils_base as tub
# Without the compiled `tokenizers`, transformers' fallback AddedToken is an unhashable dataclass
# (Python 3.11+); hashing by content is what the compiled one does. Tokenization is unchanged.
tub.AddedToken.__hash__ = lambda self: hash(self.content)

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
vocab = os.path.join(root, 'test/fixtures/tokenizers/bert-base-uncased/vocab.txt')
tok = BertTokenizer(vocab, do_lower_case=True)
cases = [
    'a painting of a virus monster playing guitar',
    '',
    'A photo of an ASTRONAUT riding a horse on Mars!',
    'Café déjà vu, naïve façade — Ångström résumé',
    "don't stop-believing... (really?) [yes] {no} 3.14 $5 #tag @user",
    '中文字符测试 and 日本語のテキスト mixed with 한국어',
    'emoji 😀🎉 👍🏽 stay as [UNK]?',
    'supercalifragilisticexpialidocious antidisestablishmentarianism',
    'x' * 120 + ' long word',
    ' '.join(['word'] * 100),
    'tabs\tand\nnewlines\r\n  and   spaces',
    'control\u0000chars\u200b zero\ufeffwidth \u00adsoft',
    'ÀÉÎÕÜ ÿ ß œ æ ø ł đ',
    'unaffable unbelievably tokenization',
    'Ｆｕｌｌｗｉｄｔｈ ａｂｃ １２３',
    'greek αβγ ΔΕΖ cyrillic ПРИВЕТ мир',
    'math ∑ ∫ ≤ ≥ → ← ∞ °C',
    '"quoted" \'single\' `back` ~tilde^ caret | pipe \\ slash /',
]
out = []
for text in cases:
    enc = tok(text, truncation=True, max_length=77, padding='max_length')
    out.append({'text': text, 'tokens': tok.tokenize(text), 'ids': enc['input_ids']})
path = os.path.join(root, 'test/fixtures/tokenizers/bert-base-uncased/cases.json')
with open(path, 'w', encoding='utf-8') as f:
    f.write('{"generator": "tools/pyref/gen_bert_tokenizer.py", "transformers": "%s", "cases": [\n' % __import__('transformers').__version__)
    f.write(',\n'.join(json.dumps(c, ensure_ascii=False) for c in out))
    f.write('\n]}\n')
print(len(out), 'cases')
