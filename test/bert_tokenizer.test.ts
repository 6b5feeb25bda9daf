// BertTokenizer (bert-base-uncased WordPiece) against transformers' slow BertTokenizer ids
// (test/fixtures/tokenizers/bert-base-uncased/cases.json, made by tools/pyref/gen_bert_tokenizer.py).
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from './fixture.js';
import { BertTokenizer } from '../src/text/bert_tokenizer.js';

const DIR = join(FIXTURES, 'tokenizers', 'bert-base-uncased');
const cases = (JSON.parse(readFileSync(join(DIR, 'cases.json'), 'utf8')) as { cases: { text: string; tokens: string[]; ids: number[] }[] }).cases;

describe('BertTokenizer', () => {
  const tok = new BertTokenizer(readFileSync(join(DIR, 'vocab.txt'), 'utf8'));

  it('has the bert-base-uncased special ids', () => {
    expect([tok.padTokenId, tok.unkTokenId, tok.clsTokenId, tok.sepTokenId, tok.vocab.size]).toEqual([0, 100, 101, 102, 30522]);
  });

  for (const c of cases) {
    it(`matches transformers: ${JSON.stringify(c.text).slice(0, 50)}`, () => {
      expect(tok.tokenize(c.text)).toEqual(c.tokens);
      expect(tok.encode(c.text)).toEqual(c.ids);
    });
  }

  it('loads a folder or a pipeline folder, and refuses a vocabulary without BERT specials', async () => {
    const t = await BertTokenizer.fromPretrained(DIR);
    expect(t.encode('a cat')).toEqual(tok.encode('a cat'));
    await expect(BertTokenizer.fromPretrained(join(FIXTURES, 'nope'))).rejects.toThrow(/no vocab\.txt/);
    expect(() => new BertTokenizer('a\nb\n')).toThrow(/no \[CLS\] token/);
  });
});
