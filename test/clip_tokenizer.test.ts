// CLIPTokenizer against the transformers (slow CLIPTokenizer + ftfy 6.3.1) reference cases in
// test/fixtures/clip_tokenizer/cases.json, plus loading paths and error messages.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync, mkdtempSync, writeFileSync, mkdirSync, rmSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import { FIXTURES } from './fixture.js';
import { CLIPTokenizer } from '../src/text/clip_tokenizer.js';
import { fixText } from '../src/text/text_cleanup.js';

interface TokCase {
  name: string;
  text: string;
  input_ids: number[];
  attention_mask: number[];
  ids_unpadded: number[];
  tokens: string[];
  ftfy_fixed_text: string;
  normalized_text: string;
  eos_position: number;
}

const TOK_DIR = join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14');
const cases = (JSON.parse(readFileSync(join(FIXTURES, 'clip_tokenizer', 'cases.json'), 'utf8')) as { cases: TokCase[] }).cases;

// Cases that this implementation knowingly does not reproduce, with the reason. Empty: every
// case (mojibake repair included) matches exactly.
const KNOWN_DIFFERENCES: Record<string, string> = {};

let tok: CLIPTokenizer;

beforeAll(async () => {
  tok = await CLIPTokenizer.fromPretrained(TOK_DIR);
});

describe('CLIPTokenizer: transformers reference cases', () => {
  it('has the SD 1.x settings', () => {
    expect(cases.length).toBe(45);
    expect(tok.maxLength).toBe(77);
    expect(tok.bosTokenId).toBe(49406);
    expect(tok.eosTokenId).toBe(49407);
    expect(tok.padTokenId).toBe(49407);
    expect(tok.vocabSize).toBe(49408);
  });

  for (const c of cases) {
    const known = KNOWN_DIFFERENCES[c.name];
    const test = known ? it.fails : it;
    test(`${c.name}${known ? ` (known difference: ${known})` : ''}`, () => {
      expect(fixText(c.text)).toBe(c.ftfy_fixed_text);
      expect(tok.tokenize(c.text)).toEqual(c.tokens);
      expect(tok.encodeUnpadded(c.text)).toEqual(c.ids_unpadded);
      const { inputIds, attentionMask } = tok.encodeWithMask(c.text);
      expect(inputIds).toEqual(c.input_ids);
      expect(attentionMask).toEqual(c.attention_mask);
      expect(tok.encode(c.text)).toEqual(c.input_ids);
      expect(inputIds.indexOf(49407)).toBe(c.eos_position);
    });
  }
});

// [input, output] pairs produced by ftfy 6.3.1 `fix_text` itself (Python 3.11.7, unicodedata 14.0.0),
// covering behaviours the transformers cases do not: multi-layer mojibake, Cyrillic/emoji mojibake,
// restored 0xA0 bytes, C1 controls, lossy sequences, numeric reference quirks, per-line '<' rule.
const FTFY_OUTPUTS: [string, string][] = [
  ["\u00e2\u0153\u201d No problems", "\u2714 No problems"],
  ["&macr;\\_(\u00e3\u0083\u0084)_/&macr;", "\u00af\\_(\u30c4)_/\u00af"],
  ["Broken text&hellip; it&#x2019;s \ufb02ubberi\ufb01c!", "Broken text\u2026 it's flubberific!"],
  ["\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33", "LOUD NOISES"],
  ["&ATILDE;&SUP3;", "\u00f3"],
  ["The Mona Lisa doesn\u00c3\u00a2\u00e2\u201a\u00ac\u00e2\u201e\u00a2t have eyebrows.", "The Mona Lisa doesn't have eyebrows."],
  ["voil\u00c3 le travail", "voil\u00e0 le travail"],
  ["\u00c3  la carte", "\u00e0 la carte"],
  ["\u00d0\u00bf\u00d1\u20ac\u00d0\u00b8\u00d0\u00b2\u00d0\u00b5\u00d1\u201a", "\u043f\u0440\u0438\u0432\u0435\u0442"],
  ["\u0420\u0491\u0420\u0455\u0420\u00b1\u0421\u0402\u0420\u0455", "\u0420\u0491\u0420\u0455\u0420\u00b1\u0421\u0402\u0420\u0455"],
  ["\u00f0\u0178\u02dc\u20ac smile", "\ud83d\ude00 smile"],
  ["I\u00e2\u0080\u0099m fine", "I'm fine"],
  ["caf\u0082 \u0093hi\u0094", "caf' \"hi\""],
  ["\u0080\u0081\u008d", "\u20ac\u0081\u008d"],
  ["\u00c3\u001a", "\u00c3"],
  ["caf\u00c3?", "caf\u00c3?"],
  ["\u00c3\u0192\u00c2\u00a9t\u00c3\u0192\u00c2\u00a9", "\u00e9t\u00e9"],
  ["&#0;|&#13;|&#128;|&#x80;|&#1114112;|&#55296;|&#1;|&#59;|&#x3b;|&#xZZ;|&#12ab;|&#X41;|&#0000000000000000000065;", "\ufffd|\n|\u20ac|\u20ac|\ufffd|\ufffd||&#59;|&#x3b;|&#xZZ;|&#12ab;|A|A"],
  ["&NotAnEntity; &AMP &EACUTE; &Eacute; &NotEqualTilde; &hellip; &mdash;", "&NotAnEntity; &AMP \u00c9 \u00c9 \u2242\u0338 \u2026 \u2014"],
  ["x <y\n&amp;\n&amp;", "x <y\n&amp;\n&amp;"],
  ["&amp;\nline <\n&amp;", "&\nline <\n&amp;"],
  ["a\u2028b\u2029c\u0085d\r\ne\rf", "a\nb\nc\u2026d\ne\nf"],
  ["\u0000\u0007\u000b\u000e\u001f\u007f\u206a\ufeff\ufff9ok", "ok"],
  ["\u01c4\u01c5\u01c6\u01c7\u01c8\u01c9\u01ca\u01cb\u01cc\u0132\u0133\u0149\ufb00\ufb03\ufb04\ufb05\ufb06", "D\u017dD\u017ed\u017eLJLjljNJNjnjIJij'nffffiffl\u017ftst"],
  ["\uff61\uff62\uff63\uff64\uff65\uff66\uff67\uff71\uff9d\uff9e\uff9f\uffe0\uffe1\uffe2\uffe3\uffe4\uffe5\uffe6", "\u3002\u300c\u300d\u3001\u30fb\u30f2\u30a1\u30a2\u30f3\u3099\u309a\u00a2\u00a3\u00ac \u0304\u00a6\u00a5\u20a9"],
  ["quote\u2018single\u2019 \u201alow\u201b \u201cd\u201d \u201elow\u201f \u02bc", "quote'single' 'low' \"d\" \"low\" '"],
  ["\u001b[1;31mbold\u001b[0m \u001b[K", "bold "],
  ["\u00c2\u00a3100 \u00c2\u00a92024", "\u00a3100 \u00a92024"],
  ["\u00c3\u00baltimo\u00c2\u00a0x", "\u00faltimo\u00a0x"],
  ["J\u00c3\u00b6rg in M\u00c3\u00bcnchen and K\u00c3\u00b8benhavn", "J\u00f6rg in M\u00fcnchen and K\u00f8benhavn"],
];

describe('fixText: ftfy 6.3.1 outputs', () => {
  for (const [input, want] of FTFY_OUTPUTS) {
    it(JSON.stringify(input).slice(0, 60), () => {
      expect(fixText(input)).toBe(want);
    });
  }
});

describe('CLIPTokenizer: behaviour', () => {
  it('truncates to 75 content tokens and always ends with EOS', () => {
    const long = Array.from({ length: 200 }, (_, i) => `word${i}`).join(' ');
    const ids = tok.encode(long);
    expect(ids.length).toBe(77);
    expect(ids[0]).toBe(49406);
    expect(ids[76]).toBe(49407);
    expect(tok.encodeUnpadded(long).length).toBeGreaterThan(77);
    expect(tok.encodeWithMask(long).attentionMask.every((m) => m === 1)).toBe(true);
  });

  it('caches BPE results without changing them', () => {
    const a = tok.encode('an astronaut riding a horse on mars');
    const b = tok.encode('an astronaut riding a horse on mars');
    expect(b).toEqual(a);
  });

  it('heap-based BPE equals the reference merge loop on random words (lengths 1 to 600)', () => {
    // the reference: CLIP's bpe(), lowest-ranked pair first, all its occurrences left to right
    const ranks = new Map<string, number>();
    readFileSync(join(TOK_DIR, 'merges.txt'), 'utf8').trim().split('\n').slice(1).forEach((l, i) => ranks.set(l.trim(), i));
    const refBpe = (w: string): string[] => {
      let word = Array.from(w);
      word[word.length - 1] += '</w>';
      for (;;) {
        let best = -1;
        let bestRank = Infinity;
        for (let i = 0; i + 1 < word.length; i++) {
          const r = ranks.get(`${word[i]} ${word[i + 1]}`);
          if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
        }
        if (best < 0) return word;
        const [a, b] = [word[best], word[best + 1]];
        const next: string[] = [];
        for (let i = 0; i < word.length; ) {
          if (i + 1 < word.length && word[i] === a && word[i + 1] === b) (next.push(a + b), (i += 2));
          else next.push(word[i++]);
        }
        word = next;
      }
    };
    let x = 12345;
    const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const letters = 'abcdefghijklmnopqrstuvwxyz';
    for (let k = 0; k < 300; k++) {
      const n = 1 + Math.floor(rnd() ** 2 * 600);
      const alphabet = k % 3 === 0 ? 'ab' : k % 3 === 1 ? 'aeinrst' : letters; // repeats stress equal ranks
      const w = Array.from({ length: n }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join('');
      expect(tok.tokenize(w), w.slice(0, 40)).toEqual(refBpe(w));
    }
  });

  it('tokenizes a 100k-character word and long random-letter prompts without overflowing the stack', () => {
    const t0 = performance.now();
    const one = 'a'.repeat(100_000);
    const ids = tok.encodeUnpadded(one);
    expect(ids.length).toBeGreaterThan(2);
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(one);
    let x = 7;
    const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const word = Array.from({ length: 100_000 }, () => String.fromCharCode(97 + Math.floor(rnd() * 26))).join('');
    const ids2 = tok.encodeUnpadded(word);
    expect(tok.decode(ids2, { skipSpecialTokens: true })).toBe(word);
    const prompt = Array.from({ length: 5000 }, () => word.slice(0, 1 + Math.floor(rnd() * 30))).join(' ');
    expect(tok.encode(prompt)).toHaveLength(77);
    console.log(`CLIPTokenizer: two 100k-character words and a 5000-word random prompt in ${(performance.now() - t0).toFixed(0)} ms`);
  }, 60_000);

  it('decodes back to the normalised prompt', () => {
    expect(tok.decode(tok.encode('A Photo of a CAT, 8k!'), { skipSpecialTokens: true })).toBe('a photo of a cat , 8 k !');
    expect(tok.decode(tok.encodeUnpadded('café 🐶'), { skipSpecialTokens: true })).toBe('café 🐶');
  });

  it('honours maxLength and padTokenId options', () => {
    const vocab = readFileSync(join(TOK_DIR, 'vocab.json'), 'utf8');
    const merges = readFileSync(join(TOK_DIR, 'merges.txt'), 'utf8');
    const t = CLIPTokenizer.fromFiles(vocab, merges, { maxLength: 8, padTokenId: 0 });
    const { inputIds, attentionMask } = t.encodeWithMask('a cat');
    expect(inputIds).toEqual([49406, 320, 2368, 49407, 0, 0, 0, 0]);
    expect(attentionMask).toEqual([1, 1, 1, 1, 0, 0, 0, 0]);
    expect(t.encode('a a a a a a a a a a').length).toBe(8);
    expect(t.encode('a a a a a a a a a a')[7]).toBe(49407);
  });

  it('rejects non-string prompts', () => {
    expect(() => tok.encode(undefined as unknown as string)).toThrow(/CLIPTokenizer\.encode: expected a string/);
  });
});

describe('CLIPTokenizer: loading', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'cliptok-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('loads a pipeline folder with a tokenizer/ subfolder, and file: URLs', async () => {
    const pipe = join(dir, 'pipe');
    mkdirSync(join(pipe, 'tokenizer'), { recursive: true });
    copyFileSync(join(TOK_DIR, 'vocab.json'), join(pipe, 'tokenizer', 'vocab.json'));
    copyFileSync(join(TOK_DIR, 'merges.txt'), join(pipe, 'tokenizer', 'merges.txt'));
    const t = await CLIPTokenizer.fromPretrained(pipe);
    expect(t.encode(cases[0]!.text)).toEqual(cases[0]!.input_ids);
    const t2 = await CLIPTokenizer.fromPretrained(pathToFileURL(join(pipe, 'tokenizer')).href);
    expect(t2.encode(cases[0]!.text)).toEqual(cases[0]!.input_ids);
  });

  it('reads the SD 2.x pad token "!" from the config files, and splits it out like transformers', async () => {
    const sd2 = join(dir, 'sd2');
    mkdirSync(sd2, { recursive: true });
    copyFileSync(join(TOK_DIR, 'vocab.json'), join(sd2, 'vocab.json'));
    copyFileSync(join(TOK_DIR, 'merges.txt'), join(sd2, 'merges.txt'));
    writeFileSync(join(sd2, 'special_tokens_map.json'), JSON.stringify({
      bos_token: { content: '<|startoftext|>', lstrip: false, normalized: true, rstrip: false, single_word: false },
      eos_token: { content: '<|endoftext|>', lstrip: false, normalized: true, rstrip: false, single_word: false },
      pad_token: '!',
      unk_token: { content: '<|endoftext|>', lstrip: false, normalized: true, rstrip: false, single_word: false },
    }));
    writeFileSync(join(sd2, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 77, pad_token: '!', tokenizer_class: 'CLIPTokenizer' }));
    const t = await CLIPTokenizer.fromPretrained(sd2);
    expect(t.padTokenId).toBe(0);
    const ids = t.encode('a cat');
    expect(ids.slice(0, 5)).toEqual([49406, 320, 2368, 49407, 0]);
    expect(ids.length).toBe(77);
    // With '!' an added special token, transformers' slow tokenizer cuts every '!' out verbatim
    // (id 0) instead of letting BPE form '!</w>' (256) or '!!!</w>'.
    const wow = t.tokenToId('wow</w>')!;
    expect(t.encodeUnpadded('wow!!')).toEqual([49406, wow, 0, 0, 49407]);
    expect(tok.encodeUnpadded('wow!!')).toEqual([49406, wow, tok.tokenToId('!!</w>'), 49407]);
  });

  it('fails clearly without vocab.json', async () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty, { recursive: true });
    await expect(CLIPTokenizer.fromPretrained(empty)).rejects.toThrow(/no vocab\.json in .*empty.*tokenizer/);
  });

  it('fails clearly without merges.txt', async () => {
    const half = join(dir, 'half');
    mkdirSync(half, { recursive: true });
    copyFileSync(join(TOK_DIR, 'vocab.json'), join(half, 'vocab.json'));
    await expect(CLIPTokenizer.fromPretrained(half)).rejects.toThrow(/half\/merges\.txt not found/);
  });

  it('fails clearly on malformed files', () => {
    const merges = readFileSync(join(TOK_DIR, 'merges.txt'), 'utf8');
    expect(() => CLIPTokenizer.fromFiles('{not json', merges)).toThrow(/vocab\.json is not valid JSON/);
    expect(() => CLIPTokenizer.fromFiles('{"a": 0}', merges)).toThrow(/BOS token "<\|startoftext\|>" is not in vocab\.json/);
    expect(() => CLIPTokenizer.fromFiles('{"<|startoftext|>": 0, "<|endoftext|>": 1}', 'i n\nt h')).toThrow(/must start with a '#version' line/);
  });

  it('loads over fetch from a base URL, falling back to tokenizer/', async () => {
    const files: Record<string, string> = {
      'https://example.test/sd/tokenizer/vocab.json': readFileSync(join(TOK_DIR, 'vocab.json'), 'utf8'),
      'https://example.test/sd/tokenizer/merges.txt': readFileSync(join(TOK_DIR, 'merges.txt'), 'utf8'),
    };
    const requested: string[] = [];
    const fakeFetch = (async (url: string) => {
      requested.push(String(url));
      const body = files[String(url)];
      return body === undefined ? new Response('nope', { status: 404, statusText: 'Not Found' }) : new Response(body);
    }) as unknown as typeof fetch;
    const t = await CLIPTokenizer.fromPretrained('https://example.test/sd', { fetch: fakeFetch });
    expect(t.encode(cases[3]!.text)).toEqual(cases[3]!.input_ids);
    expect(requested[0]).toBe('https://example.test/sd/vocab.json');
    await expect(CLIPTokenizer.fromPretrained('https://example.test/none', { fetch: fakeFetch })).rejects.toThrow(/no vocab\.json in https:\/\/example\.test\/none/);
  });
});
