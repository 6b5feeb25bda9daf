// CLIP's byte-level BPE tokenizer, matching the Hugging Face transformers (slow, Python)
// CLIPTokenizer that diffusers' Stable Diffusion pipelines use, with ftfy installed:
//
//   special-token strings split out first -> ftfy.fix_text -> whitespace collapse + strip ->
//   lower-case -> pre-tokenise (words, single digits, punctuation runs, contractions) ->
//   UTF-8 bytes mapped to printable chars -> BPE by merge rank -> vocab ids
//
// then framed as BOS + content[:maxLength-2] + EOS and padded to maxLength, as
// StableDiffusionPipeline's `tokenizer(prompt, padding="max_length", truncation=True)` does.

import { fixText } from './text_cleanup.js';
import { joinPath, readTextIfExists, type IOOptions } from '../runtime/io.js';

export interface CLIPTokenizerOptions {
  /** sequence length of encode() (default: tokenizer_config's model_max_length, else 77) */
  maxLength?: number;
  /** id used for padding (default: the pad token of the config files, else the EOS id) */
  padTokenId?: number;
  /** token strings (default '<|startoftext|>' / '<|endoftext|>', or as the config files say) */
  bosToken?: string;
  eosToken?: string;
  unkToken?: string;
  padToken?: string;
  /**
   * How many merges.txt lines (after the '#version' header) are used. transformers' CLIPTokenizer
   * hard-codes 49152 - 256 - 2 = 48894, the merges the original CLIP was trained with.
   */
  maxMerges?: number;
  /** extra strings that are never split, mapped to their ids (e.g. textual-inversion tokens) */
  addedTokens?: Record<string, number>;
}

export interface EncodedText {
  inputIds: number[];
  /** 1 from BOS up to and including the first EOS, 0 on padding */
  attentionMask: number[];
}

const DEFAULT_BOS = '<|startoftext|>';
const DEFAULT_EOS = '<|endoftext|>';
const DEFAULT_MAX_MERGES = 49152 - 256 - 2;

// Python `regex` module's \s (Unicode White_Space); JS's \s differs (adds U+FEFF, lacks U+0085).
const WS = '\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const WS_RUN_RE = new RegExp(`[${WS}]+`, 'gu');
// Python str.strip() strips str.isspace() characters, which also include U+001C..U+001F.
const STRIP_RE = new RegExp(`^[${WS}\\x1c-\\x1f]+|[${WS}\\x1c-\\x1f]+$`, 'gu');
const PRETOKEN_RE = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^${WS}\\p{L}\\p{N}]+`,
  'giu',
);

/** GPT-2's reversible byte -> printable character table (no whitespace/control chars in BPE). */
function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    table[b] = String.fromCharCode(printable ? b : 256 + extra++);
  }
  return table;
}

type ReadText = (file: string) => Promise<string | null>; // null: the file does not exist

function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

function parseJsonFile(text: string, label: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`CLIPTokenizer: ${label} is not valid JSON (${(e as Error).message})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`CLIPTokenizer: ${label} must hold a JSON object`);
  return v as Record<string, unknown>;
}

export class CLIPTokenizer {
  readonly vocabSize: number;
  readonly maxLength: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly unkTokenId: number;

  private readonly encoder: Map<string, number>;
  private readonly decoder: Map<number, string>;
  private readonly ranks: Map<string, number>;
  private readonly byteEncoder = bytesToUnicode();
  private readonly byteDecoder: Map<string, number>;
  private readonly cache = new Map<string, string[]>();
  /** strings cut out before any normalisation, longest first */
  private readonly specialStrings: string[];
  private readonly specialIds: Map<string, number>;
  private readonly utf8 = new TextEncoder();

  private constructor(vocab: Record<string, unknown>, mergesText: string, opts: CLIPTokenizerOptions) {
    this.encoder = new Map();
    this.decoder = new Map();
    for (const [tok, id] of Object.entries(vocab)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
        throw new Error(`CLIPTokenizer: vocab.json maps ${JSON.stringify(tok)} to ${JSON.stringify(id)}, expected a non-negative integer id`);
      }
      this.encoder.set(tok, id);
      this.decoder.set(id, tok);
    }
    if (this.encoder.size === 0) throw new Error('CLIPTokenizer: vocab.json is empty');

    const lines = mergesText.trim().split('\n');
    if (!lines[0]?.startsWith('#version')) {
      // transformers always drops the first line; a file without the header would lose a merge.
      throw new Error(`CLIPTokenizer: merges.txt must start with a '#version' line, got ${JSON.stringify(lines[0]?.slice(0, 40) ?? '')}`);
    }
    const maxMerges = opts.maxMerges ?? DEFAULT_MAX_MERGES;
    this.ranks = new Map();
    for (let i = 1; i < lines.length && i <= maxMerges; i++) {
      const parts = lines[i]!.trim().split(/\s+/);
      if (parts.length !== 2) throw new Error(`CLIPTokenizer: merges.txt line ${i + 1} is not a pair: ${JSON.stringify(lines[i]!.slice(0, 60))}`);
      // Python's dict(zip(merges, range(n))): a repeated pair keeps its last rank.
      this.ranks.set(`${parts[0]} ${parts[1]}`, i - 1);
    }

    this.byteDecoder = new Map(this.byteEncoder.map((c, b) => [c, b]));

    const idOf = (tok: string, what: string): number => {
      const id = this.encoder.get(tok) ?? opts.addedTokens?.[tok];
      if (id === undefined) throw new Error(`CLIPTokenizer: the ${what} token ${JSON.stringify(tok)} is not in vocab.json`);
      return id;
    };
    const bos = opts.bosToken ?? DEFAULT_BOS;
    const eos = opts.eosToken ?? DEFAULT_EOS;
    const unk = opts.unkToken ?? eos;
    this.bosTokenId = idOf(bos, 'BOS');
    this.eosTokenId = idOf(eos, 'EOS');
    this.unkTokenId = idOf(unk, 'unknown');
    if (opts.padTokenId !== undefined) {
      if (!Number.isInteger(opts.padTokenId) || opts.padTokenId < 0) throw new Error(`CLIPTokenizer: padTokenId must be a non-negative integer, got ${opts.padTokenId}`);
      this.padTokenId = opts.padTokenId;
    } else {
      this.padTokenId = opts.padToken !== undefined ? idOf(opts.padToken, 'padding') : this.eosTokenId;
    }
    this.maxLength = opts.maxLength ?? 77;
    if (!Number.isInteger(this.maxLength) || this.maxLength < 2) throw new Error(`CLIPTokenizer: maxLength must be an integer >= 2, got ${this.maxLength}`);

    // Like transformers, every special token (pad included: SD 2.x's '!' too) and every added
    // token is matched verbatim in the raw prompt before any clean-up.
    this.specialIds = new Map();
    for (const [tok, what] of [[bos, 'BOS'], [eos, 'EOS'], [unk, 'unknown']] as const) this.specialIds.set(tok, idOf(tok, what));
    if (opts.padToken !== undefined) this.specialIds.set(opts.padToken, idOf(opts.padToken, 'padding'));
    for (const [tok, id] of Object.entries(opts.addedTokens ?? {})) {
      if (tok.length === 0 || !Number.isInteger(id) || id < 0) throw new Error(`CLIPTokenizer: bad added token ${JSON.stringify(tok)} -> ${id}`);
      this.specialIds.set(tok, id);
    }
    this.specialStrings = [...this.specialIds.keys()].sort((a, b) => b.length - a.length);
    for (const [tok, id] of this.specialIds) {
      if (!this.decoder.has(id)) this.decoder.set(id, tok);
    }
    let maxId = 0;
    for (const id of this.decoder.keys()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    // The two CLIP special strings also arise from the pre-tokeniser; they bypass BPE.
    this.cache.set(DEFAULT_BOS, [DEFAULT_BOS]);
    this.cache.set(DEFAULT_EOS, [DEFAULT_EOS]);
  }

  /** Builds a tokenizer from the text of vocab.json and merges.txt. */
  static fromFiles(vocabJsonText: string, mergesText: string, options: CLIPTokenizerOptions = {}): CLIPTokenizer {
    return new CLIPTokenizer(parseJsonFile(vocabJsonText, 'vocab.json'), mergesText, options);
  }

  /**
   * Loads a diffusers/transformers tokenizer folder (vocab.json + merges.txt, optionally
   * tokenizer_config.json / special_tokens_map.json), or a pipeline folder holding one in
   * `tokenizer/`: a local path in Node, or a base URL (fetch). Explicit options win over the
   * config files.
   */
  static async fromPretrained(pathOrUrl: string | URL, options: CLIPTokenizerOptions & IOOptions = {}): Promise<CLIPTokenizer> {
    const base = String(pathOrUrl);
    const read: ReadText = (file) => readTextIfExists(joinPath(base, file), { ...options, onProgress: undefined });

    let prefix = '';
    let vocabText = await read('vocab.json');
    if (vocabText === null) {
      vocabText = await read('tokenizer/vocab.json');
      if (vocabText !== null) prefix = 'tokenizer/';
    }
    if (vocabText === null) {
      throw new Error(`CLIPTokenizer: no vocab.json in ${base} (nor in ${joinPath(base, 'tokenizer')}); expected a tokenizer folder with vocab.json and merges.txt`);
    }
    const mergesText = await read(prefix + 'merges.txt');
    if (mergesText === null) throw new Error(`CLIPTokenizer: ${joinPath(base, prefix + 'merges.txt')} not found (a CLIP tokenizer needs vocab.json and merges.txt)`);

    const fromConfig: CLIPTokenizerOptions = {};
    const added: Record<string, number> = {};
    // transformers lets special_tokens_map.json override tokenizer_config.json.
    for (const file of ['tokenizer_config.json', 'special_tokens_map.json']) {
      const text = await read(prefix + file);
      if (text === null) continue;
      const cfg = parseJsonFile(text, prefix + file);
      const b = tokenContent(cfg.bos_token);
      const e = tokenContent(cfg.eos_token);
      const u = tokenContent(cfg.unk_token);
      const p = tokenContent(cfg.pad_token);
      if (b !== undefined) fromConfig.bosToken = b;
      if (e !== undefined) fromConfig.eosToken = e;
      if (u !== undefined) fromConfig.unkToken = u;
      if (p !== undefined) fromConfig.padToken = p;
      const ml = cfg.model_max_length;
      // transformers writes a huge sentinel when the length is unknown.
      if (typeof ml === 'number' && Number.isInteger(ml) && ml >= 2 && ml < 1e6) fromConfig.maxLength = ml;
      const dec = cfg.added_tokens_decoder;
      if (dec && typeof dec === 'object') {
        for (const [id, v] of Object.entries(dec as Record<string, unknown>)) {
          const c = tokenContent(v);
          if (c !== undefined && /^\d+$/.test(id)) added[c] = Number(id);
        }
      }
    }
    const addedJson = await read(prefix + 'added_tokens.json');
    if (addedJson !== null) {
      for (const [tok, id] of Object.entries(parseJsonFile(addedJson, prefix + 'added_tokens.json'))) {
        if (typeof id === 'number') added[tok] = id;
      }
    }
    const { fetch: _f, signal: _s, ...explicit } = options;
    const merged: CLIPTokenizerOptions = { ...fromConfig, ...explicit };
    merged.addedTokens = { ...added, ...(explicit.addedTokens ?? {}) };
    return new CLIPTokenizer(parseJsonFile(vocabText, prefix + 'vocab.json'), mergesText, merged);
  }

  /** BPE of one byte-mapped pre-token: the lowest-ranked adjacent pair is merged first, equal
   * ranks left to right, as CLIP's reference loop does, but with a heap over the pairs and a linked
   * list over the symbols, O(n log n) instead of O(n^2) per word, so a 100k-character word takes
   * milliseconds, not hours. (A merge only creates pairs of higher rank than its own, so this order
   * is the reference's.) Words of 256+ characters are not cached, as in Hugging Face tokenizers. */
  private bpe(token: string): string[] {
    const hit = this.cache.get(token);
    if (hit) return hit;
    const sym = Array.from(token);
    sym[sym.length - 1] += '</w>';
    const n = sym.length;
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const alive = new Uint8Array(n).fill(1);
    const heap = new PairHeap();
    const push = (l: number) => {
      const r = next[l];
      if (r < 0) return;
      const rank = this.ranks.get(`${sym[l]} ${sym[r]}`);
      if (rank !== undefined) heap.push(rank, l, r, sym[l].length + sym[r].length);
    };
    for (let i = 0; i + 1 < n; i++) push(i);
    while (heap.size) {
      const [, l, r, len] = heap.pop();
      // stale: one side merged away or grown since the pair was pushed
      if (!alive[l] || !alive[r] || next[l] !== r || sym[l].length + sym[r].length !== len) continue;
      sym[l] += sym[r];
      alive[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      if (prev[l] >= 0) push(prev[l]);
      push(l);
    }
    const word: string[] = [];
    for (let i = 0; i >= 0; i = next[i]) word.push(sym[i]);
    if (token.length < 256) {
      // Prompts repeat words; keep the cache bounded for long-running apps (tokenizers: 10,000).
      if (this.cache.size >= 10_000) {
        this.cache.clear();
        this.cache.set(DEFAULT_BOS, [DEFAULT_BOS]);
        this.cache.set(DEFAULT_EOS, [DEFAULT_EOS]);
      }
      this.cache.set(token, word);
    }
    return word;
  }

  /** Normalises one piece of prompt text (no special strings inside) into BPE strings. */
  private bpePiece(piece: string, out: string[]): void {
    const text = fixText(piece).replace(WS_RUN_RE, ' ').replace(STRIP_RE, '').toLowerCase();
    for (const m of text.matchAll(PRETOKEN_RE)) {
      let mapped = '';
      for (const b of this.utf8.encode(m[0])) mapped += this.byteEncoder[b];
      for (const t of this.bpe(mapped)) out.push(t); // no spread: a word may have 100k pieces
    }
  }

  /** Splits the raw prompt at verbatim special-token strings (longest match first). */
  private splitSpecial(text: string): { text: string; special: boolean }[] {
    const parts: { text: string; special: boolean }[] = [];
    let start = 0;
    let i = 0;
    outer: while (i < text.length) {
      for (const s of this.specialStrings) {
        if (text.startsWith(s, i)) {
          if (i > start) parts.push({ text: text.slice(start, i), special: false });
          parts.push({ text: s, special: true });
          i += s.length;
          start = i;
          continue outer;
        }
      }
      i++;
    }
    if (start < text.length) parts.push({ text: text.slice(start), special: false });
    return parts;
  }

  private checkText(text: unknown, op: string): asserts text is string {
    if (typeof text !== 'string') throw new Error(`CLIPTokenizer.${op}: expected a string prompt, got ${text === null ? 'null' : typeof text}`);
  }

  /** The BPE strings of a prompt (byte-mapped form, '</w>' ends a word), without BOS/EOS. */
  tokenize(text: string): string[] {
    this.checkText(text, 'tokenize');
    const out: string[] = [];
    for (const p of this.splitSpecial(text)) {
      if (p.special) out.push(p.text);
      else this.bpePiece(p.text, out);
    }
    return out;
  }

  private tokenId(tok: string): number {
    return this.specialIds.get(tok) ?? this.encoder.get(tok) ?? this.unkTokenId;
  }

  /** BOS + every content id + EOS, neither truncated nor padded (transformers' `tokenizer(text)`). */
  encodeUnpadded(text: string): number[] {
    this.checkText(text, 'encodeUnpadded');
    return [this.bosTokenId, ...this.tokenize(text).map((t) => this.tokenId(t)), this.eosTokenId];
  }

  /** maxLength ids: BOS + content truncated to maxLength - 2 + EOS, then padding; plus the mask. */
  encodeWithMask(text: string): EncodedText {
    this.checkText(text, 'encodeWithMask');
    const content = this.tokenize(text).map((t) => this.tokenId(t)).slice(0, this.maxLength - 2);
    const inputIds = [this.bosTokenId, ...content, this.eosTokenId];
    const attentionMask = inputIds.map(() => 1);
    while (inputIds.length < this.maxLength) {
      inputIds.push(this.padTokenId);
      attentionMask.push(0);
    }
    return { inputIds, attentionMask };
  }

  /** maxLength ids as StableDiffusionPipeline feeds the text encoder. */
  encode(text: string): number[] {
    this.checkText(text, 'encode');
    return this.encodeWithMask(text).inputIds;
  }

  /** Number of content tokens of a prompt (to warn about truncation past maxLength - 2). */
  countTokens(text: string): number {
    return this.tokenize(text).length;
  }

  /** Token id of a vocabulary string, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.specialIds.get(token) ?? this.encoder.get(token);
  }

  /**
   * Ids back to text, as transformers' convert_tokens_to_string: the tokens' bytes decoded as UTF-8
   * (invalid sequences become U+FFFD), each '</w>' a space, the ends trimmed.
   */
  decode(ids: readonly number[], { skipSpecialTokens = false }: { skipSpecialTokens?: boolean } = {}): string {
    const specials = new Set([this.bosTokenId, this.eosTokenId, this.padTokenId, ...this.specialIds.values()]);
    const bytes: number[] = [];
    for (const id of ids) {
      if (skipSpecialTokens && specials.has(id)) continue;
      const tok = this.decoder.get(id);
      if (tok === undefined) continue;
      for (const ch of tok) {
        const b = this.byteDecoder.get(ch);
        if (b !== undefined) bytes.push(b);
        else bytes.push(...this.utf8.encode(ch));
      }
    }
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(new Uint8Array(bytes)).replace(/<\/w>/g, ' ').trim();
  }
}

/** Binary min-heap of candidate merges ordered by (rank, left position). */
class PairHeap {
  private rank: number[] = [];
  private left: number[] = [];
  private right: number[] = [];
  private len: number[] = [];

  get size(): number {
    return this.rank.length;
  }

  private less(a: number, b: number): boolean {
    return this.rank[a] < this.rank[b] || (this.rank[a] === this.rank[b] && this.left[a] < this.left[b]);
  }

  private swap(a: number, b: number): void {
    for (const arr of [this.rank, this.left, this.right, this.len]) [arr[a], arr[b]] = [arr[b], arr[a]];
  }

  push(rank: number, left: number, right: number, len: number): void {
    this.rank.push(rank);
    this.left.push(left);
    this.right.push(right);
    this.len.push(len);
    let i = this.rank.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  pop(): [number, number, number, number] {
    const top: [number, number, number, number] = [this.rank[0], this.left[0], this.right[0], this.len[0]];
    const last = this.rank.length - 1;
    this.swap(0, last);
    this.rank.pop();
    this.left.pop();
    this.right.pop();
    this.len.pop();
    let i = 0;
    for (;;) {
      const a = 2 * i + 1;
      const b = a + 1;
      let m = i;
      if (a < last && this.less(a, m)) m = a;
      if (b < last && this.less(b, m)) m = b;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
    return top;
  }
}
