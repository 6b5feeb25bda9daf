// BERT WordPiece tokenizer (bert-base-uncased), as CompVis latent-diffusion's BERTTokenizer and
// diffusers' LDMTextToImagePipeline use it: transformers' BasicTokenizer (clean text, CJK split,
// NFC, lower case + accent strip, punctuation split) followed by greedy longest-match WordPiece,
// then [CLS] ... [SEP] and [PAD] (id 0) up to 77 tokens. Matches transformers' BertTokenizer ids.

import { joinPath, readTextIfExists, type IOOptions } from '../runtime/io.js';

export interface BertTokenizerOptions {
  /** sequence length of encode() (77 in both latent-diffusion and LDMTextToImagePipeline) */
  maxLength?: number;
  /** bert-base-uncased lower-cases and strips accents; cased vocabularies set false */
  doLowerCase?: boolean;
}

/** Special tokens transformers splits out of the text before the basic tokenizer sees it. */
const SPECIAL = ['[UNK]', '[SEP]', '[PAD]', '[CLS]', '[MASK]'];
const MAX_WORD_CHARS = 100; // longer words become [UNK] (transformers' max_input_chars_per_word)

// transformers' _is_whitespace / _is_control / _is_punctuation, by Unicode category.
const isWhitespace = (c: string) => c === ' ' || c === '\t' || c === '\n' || c === '\r' || /^\p{Zs}$/u.test(c);
const isControl = (c: string) => !(c === '\t' || c === '\n' || c === '\r') && /^\p{C}$/u.test(c);
function isPunctuation(c: string): boolean {
  const cp = c.codePointAt(0)!;
  // ASCII symbols such as ^ $ ` count as punctuation although Unicode calls them S*.
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
  return /^\p{P}$/u.test(c);
}
function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

export class BertTokenizer {
  readonly vocab: Map<string, number>;
  readonly maxLength: number;
  readonly doLowerCase: boolean;
  readonly clsTokenId: number;
  readonly sepTokenId: number;
  readonly padTokenId: number;
  readonly unkTokenId: number;

  constructor(vocabText: string, options: BertTokenizerOptions = {}) {
    this.vocab = new Map();
    const lines = vocabText.split('\n');
    // transformers strips each line's trailing newline only; a final empty line is no token
    if (lines.length && lines[lines.length - 1] === '') lines.pop();
    lines.forEach((l, i) => {
      const tok = l.replace(/\r$/, '');
      if (!this.vocab.has(tok)) this.vocab.set(tok, i);
    });
    const need = (t: string) => {
      const id = this.vocab.get(t);
      if (id === undefined) throw new Error(`BertTokenizer: the vocabulary has no ${t} token (is this a BERT vocab.txt?)`);
      return id;
    };
    this.clsTokenId = need('[CLS]');
    this.sepTokenId = need('[SEP]');
    this.padTokenId = need('[PAD]');
    this.unkTokenId = need('[UNK]');
    this.maxLength = options.maxLength ?? 77;
    this.doLowerCase = options.doLowerCase ?? true;
    if (!Number.isInteger(this.maxLength) || this.maxLength < 2) throw new Error(`BertTokenizer: maxLength must be an integer >= 2, got ${this.maxLength}`);
  }

  /** A tokenizer folder (vocab.txt) or a pipeline folder with `tokenizer/vocab.txt`; path (Node) or URL. */
  static async fromPretrained(pathOrUrl: string | URL, options: BertTokenizerOptions & IOOptions = {}): Promise<BertTokenizer> {
    const base = String(pathOrUrl);
    const read = (file: string) => readTextIfExists(joinPath(base, file), { ...options, onProgress: undefined });
    const text = (await read('vocab.txt')) ?? (await read('tokenizer/vocab.txt'));
    if (text === null) throw new Error(`BertTokenizer: no vocab.txt in ${base} (nor in ${joinPath(base, 'tokenizer')})`);
    return new BertTokenizer(text, options);
  }

  /** WordPiece tokens of text (no [CLS]/[SEP]), as transformers' tokenize(). */
  tokenize(text: string): string[] {
    const out: string[] = [];
    // special tokens written in the text stay whole (transformers' added-token split)
    const re = new RegExp(SPECIAL.map((s) => s.replace(/[[\]]/g, '\\$&')).join('|'), 'g');
    let last = 0;
    for (const m of text.matchAll(re)) {
      this.tokenizePlain(text.slice(last, m.index), out);
      out.push(m[0]);
      last = m.index! + m[0].length;
    }
    this.tokenizePlain(text.slice(last), out);
    return out;
  }

  private tokenizePlain(text: string, out: string[]): void {
    let clean = '';
    for (const c of text) {
      const cp = c.codePointAt(0)!;
      if (cp === 0 || cp === 0xfffd || isControl(c)) continue;
      if (isWhitespace(c)) clean += ' ';
      else if (isCjk(cp)) clean += ` ${c} `;
      else clean += c;
    }
    clean = clean.normalize('NFC');
    for (let word of clean.split(' ')) {
      if (!word) continue;
      if (this.doLowerCase) word = word.toLowerCase().normalize('NFD').replace(/\p{Mn}/gu, '');
      // split on punctuation: each punctuation character is its own token
      let cur = '';
      for (const c of word) {
        if (isPunctuation(c)) {
          if (cur) this.wordPiece(cur, out);
          this.wordPiece(c, out);
          cur = '';
        } else cur += c;
      }
      if (cur) this.wordPiece(cur, out);
    }
  }

  private wordPiece(word: string, out: string[]): void {
    const chars = Array.from(word);
    if (chars.length > MAX_WORD_CHARS) {
      out.push('[UNK]');
      return;
    }
    const pieces: string[] = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found: string | null = null;
      while (start < end) {
        const sub = (start > 0 ? '##' : '') + chars.slice(start, end).join('');
        if (this.vocab.has(sub)) {
          found = sub;
          break;
        }
        end--;
      }
      if (found === null) {
        out.push('[UNK]');
        return;
      }
      pieces.push(found);
      start = end;
    }
    out.push(...pieces);
  }

  /** Token ids of text: [CLS] tokens [SEP] [PAD]..., truncated and padded to maxLength. */
  encode(text: string): number[] {
    const ids = this.tokenize(text).map((t) => this.vocab.get(t) ?? this.unkTokenId);
    const body = ids.slice(0, this.maxLength - 2);
    const out = [this.clsTokenId, ...body, this.sepTokenId];
    while (out.length < this.maxLength) out.push(this.padTokenId);
    return out;
  }
}
