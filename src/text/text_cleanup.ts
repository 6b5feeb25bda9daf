// Prompt clean-up equivalent to ftfy 6.3.1's `fix_text` with its default settings, which the
// Hugging Face CLIPTokenizer applies to every prompt before BPE. Getting this byte-for-byte right
// matters: a prompt that ftfy rewrites (HTML entities, curly quotes, fullwidth letters, mojibake)
// yields different token ids, hence a different image, if the rewrite is skipped.
//
// The algorithm follows ftfy's documented behaviour; its character tables and detector regexes
// are generated from ftfy itself into text_cleanup_data.json (see tools/gen_text_cleanup_data.py).
// Strings are handled as sequences of code points (ftfy works on Python str); "byte strings" are
// JS strings whose chars are all in U+0000..U+00FF, one char per byte.

import {
  A_GRAVE_WORD_SOURCE,
  ALTERED_UTF8_SOURCE,
  BADNESS_SOURCE,
  CHARMAP_ENCODINGS,
  DECODING_HIGH,
  HTML_ENTITIES,
  INVALID_CHARREFS,
  INVALID_CODEPOINTS,
  LOSSY_UTF8_SOURCE,
  SLOPPY_SUB_ENCODINGS,
  UTF8_DETECTOR_SOURCE,
} from './text_cleanup_data.js';

// ---------------------------------------------------------------------------------------------
// Lazily built tables (the module is imported by browser bundles that may never tokenize).

interface Codec {
  encode: Map<number, number>; // code point -> byte
  decode: string[]; // byte -> char
}

let codecs: Map<string, Codec> | null = null;
let strict1252: string[] | null = null;
let widthMap: Map<number, string> | null = null;
let badnessRe: RegExp | null = null;

function getCodecs(): Map<string, Codec> {
  if (codecs) return codecs;
  codecs = new Map();
  for (const name of CHARMAP_ENCODINGS) {
    const high = Array.from(DECODING_HIGH[name]!);
    if (high.length !== 128) throw new Error(`text_cleanup: bad table for ${name}`);
    const decode: string[] = [];
    for (let b = 0; b < 128; b++) decode.push(String.fromCharCode(b));
    if (SLOPPY_SUB_ENCODINGS.has(name)) decode[0x1a] = '\ufffd';
    decode.push(...high);
    const encode = new Map<number, number>();
    decode.forEach((ch, b) => encode.set(ch.codePointAt(0)!, b));
    codecs.set(name, { encode, decode });
  }
  return codecs;
}

/** Python's strict 'windows-1252' codec: the sloppy table minus the five undefined bytes. */
function getStrict1252(): string[] {
  if (strict1252) return strict1252;
  const t = getCodecs().get('sloppy-windows-1252')!.decode.slice();
  t[0x1a] = '\x1a';
  for (const b of [0x81, 0x8d, 0x8f, 0x90, 0x9d]) t[b] = '';
  strict1252 = t;
  return t;
}

function getWidthMap(): Map<number, string> {
  if (widthMap) return widthMap;
  // Same construction as ftfy: the ideographic space plus every halfwidth/fullwidth form whose
  // NFKC form differs from itself (the block's NFKC mappings have been stable for decades).
  widthMap = new Map([[0x3000, ' ']]);
  for (let cp = 0xff01; cp < 0xfff0; cp++) {
    const ch = String.fromCharCode(cp);
    const alt = ch.normalize('NFKC');
    if (alt !== ch) widthMap.set(cp, alt);
  }
  return widthMap;
}

function isBad(text: string): boolean {
  badnessRe ??= new RegExp(BADNESS_SOURCE, 'u');
  return badnessRe.test(text);
}

const LIGATURES: ReadonlyMap<number, string> = new Map([
  [0x0132, 'IJ'], [0x0133, 'ij'], [0x0149, '\u02bcn'],
  [0x01f1, 'DZ'], [0x01f2, 'Dz'], [0x01f3, 'dz'],
  [0x01c4, 'D\u017d'], [0x01c5, 'D\u017e'], [0x01c6, 'd\u017e'],
  [0x01c7, 'LJ'], [0x01c8, 'Lj'], [0x01c9, 'lj'],
  [0x01ca, 'NJ'], [0x01cb, 'Nj'], [0x01cc, 'nj'],
  [0xfb00, 'ff'], [0xfb01, 'fi'], [0xfb02, 'fl'], [0xfb03, 'ffi'], [0xfb04, 'ffl'],
  [0xfb05, '\u017ft'], [0xfb06, 'st'],
]);

function isControlToRemove(cp: number): boolean {
  return (
    cp <= 0x08 || cp === 0x0b || (cp >= 0x0e && cp <= 0x1f) || cp === 0x7f ||
    (cp >= 0x206a && cp <= 0x206f) || cp === 0xfeff || (cp >= 0xfff9 && cp <= 0xfffc)
  );
}

function translate(text: string, map: (cp: number) => string | undefined): string {
  let out = '';
  let changed = false;
  for (const ch of text) {
    const r = map(ch.codePointAt(0)!);
    if (r === undefined) out += ch;
    else {
      out += r;
      changed = true;
    }
  }
  return changed ? out : text;
}

// ---------------------------------------------------------------------------------------------
// Individual fixers.

const HTML_ENTITY_RE = /&#?[0-9A-Za-z]{1,24};/g;
const NUMERIC_REF_RE = /^&#(?:([0-9]+)|[xX]([0-9a-fA-F]+));$/;

/** What Python's html.unescape makes of a complete numeric reference. */
function numericCharref(num: number): string {
  const remapped = INVALID_CHARREFS.get(num);
  if (remapped !== undefined) return remapped;
  if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
  if (INVALID_CODEPOINTS.has(num)) return '';
  return String.fromCodePoint(num);
}

export function unescapeHtml(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(HTML_ENTITY_RE, (m) => {
    const named = HTML_ENTITIES[m];
    if (named !== undefined) return named;
    if (!m.startsWith('&#')) return m;
    // ftfy keeps the reference unless html.unescape consumed all of it (no ';' left over).
    const n = NUMERIC_REF_RE.exec(m);
    if (!n) return m;
    const num = n[1] !== undefined ? Number(n[1]) : parseInt(n[2]!, 16);
    const ch = numericCharref(num);
    return ch.includes(';') ? m : ch;
  });
}

const ANSI_RE = /\x1b\[[\p{Nd};]*[a-zA-Z]/gu;

export function removeTerminalEscapes(text: string): string {
  return text.includes('\x1b') ? text.replace(ANSI_RE, '') : text;
}

export function uncurlQuotes(text: string): string {
  return text.replace(/[\u201c-\u201f]/g, '"').replace(/[\u02bc\u2018-\u201b]/g, "'");
}

export function fixLatinLigatures(text: string): string {
  return translate(text, (cp) => LIGATURES.get(cp));
}

export function fixCharacterWidth(text: string): string {
  const map = getWidthMap();
  return translate(text, (cp) => map.get(cp));
}

export function fixLineBreaks(text: string): string {
  return text
    .replace(/\r\n/g, '\n')
    .replace(/[\r\u2028\u2029\u0085]/g, '\n');
}

export function fixSurrogates(text: string): string {
  // A JS string already reads a valid surrogate pair as one code point; only lone halves remain.
  return text.replace(/[\ud800-\udfff]/gu, '\ufffd');
}

export function removeControlChars(text: string): string {
  return translate(text, (cp) => (isControlToRemove(cp) ? '' : undefined));
}

function c1ToWindows1252(text: string): string {
  const table = getCodecs().get('sloppy-windows-1252')!.decode;
  return text.replace(/[\x80-\x9f]/g, (c) => table[c.charCodeAt(0)]!);
}

export function fixC1Controls(text: string): string {
  return c1ToWindows1252(text);
}

// ---------------------------------------------------------------------------------------------
// Mojibake repair (ftfy.fix_encoding).

function isAscii(text: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(text);
}

/** Encodes `text` in a single-byte codec as a byte string, or null when it cannot be. */
function encodeSingleByte(text: string, codec: Codec): string | null {
  let out = '';
  for (const ch of text) {
    const b = codec.encode.get(ch.codePointAt(0)!);
    if (b === undefined) return null;
    out += String.fromCharCode(b);
  }
  return out;
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function byteStringToBytes(bytes: string): Uint8Array {
  const u = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) u[i] = bytes.charCodeAt(i);
  return u;
}

/** Strict UTF-8; null on any malformed sequence (Python raises UnicodeDecodeError). */
function decodeUtf8Strict(bytes: string): string | null {
  try {
    return utf8Decoder.decode(byteStringToBytes(bytes));
  } catch {
    return null;
  }
}

/**
 * ftfy's 'utf-8-variants' codec: UTF-8 that also accepts the Java-style C0 80 for U+0000 and
 * CESU-8 surrogate pairs (ED A0-AF xx ED B0-BF xx) for astral characters; everything else,
 * including a lone encoded surrogate, must be strict UTF-8.
 */
function decodeUtf8Variants(bytes: string): string | null {
  let out = '';
  let start = 0; // beginning of the pending strict run
  const b = (k: number) => (k < bytes.length ? bytes.charCodeAt(k) : -1);
  for (let i = 0; i < bytes.length; ) {
    const c = b(i);
    let special: string | null = null;
    let len = 0;
    if (c === 0xc0 && b(i + 1) === 0x80) {
      special = '\u0000';
      len = 2;
    } else if (
      c === 0xed && b(i + 1) >= 0xa0 && b(i + 1) <= 0xaf && b(i + 2) >= 0x80 && b(i + 2) <= 0xbf &&
      b(i + 3) === 0xed && b(i + 4) >= 0xb0 && b(i + 4) <= 0xbf && b(i + 5) >= 0x80 && b(i + 5) <= 0xbf
    ) {
      const cp = ((b(i + 1) & 0x0f) << 16) + ((b(i + 2) & 0x3f) << 10) + ((b(i + 4) & 0x0f) << 6) + (b(i + 5) & 0x3f) + 0x10000;
      special = String.fromCodePoint(cp);
      len = 6;
    }
    if (special === null) {
      i++;
      continue;
    }
    if (i > start) {
      const part = decodeUtf8Strict(bytes.slice(start, i));
      if (part === null) return null;
      out += part;
    }
    out += special;
    i += len;
    start = i;
  }
  if (start < bytes.length) {
    const part = decodeUtf8Strict(bytes.slice(start));
    if (part === null) return null;
    out += part;
  }
  return out;
}

let alteredUtf8Re: RegExp | null = null;
let lossyUtf8Re: RegExp | null = null;
let aGraveWordRe: RegExp | null = null;
let utf8DetectorRe: RegExp | null = null;

/** Puts back the 0xA0 bytes that became spaces inside UTF-8 sequences (ftfy restore_byte_a0). */
function restoreByteA0(bytes: string): string {
  aGraveWordRe ??= new RegExp(A_GRAVE_WORD_SOURCE, 'g');
  alteredUtf8Re ??= new RegExp(ALTERED_UTF8_SOURCE, 'g');
  return bytes.replace(aGraveWordRe, '\xc3\xa0 ').replace(alteredUtf8Re, (m) => m.replace(/ /g, '\xa0'));
}

function replaceLossySequences(bytes: string): string {
  lossyUtf8Re ??= new RegExp(LOSSY_UTF8_SOURCE, 'g');
  return bytes.replace(lossyUtf8Re, '\xef\xbf\xbd');
}

function decodeInconsistentUtf8(text: string): string {
  utf8DetectorRe ??= new RegExp(UTF8_DETECTOR_SOURCE, 'gu');
  return text.replace(utf8DetectorRe, (sub) => (sub.length < text.length && isBad(sub) ? fixEncoding(sub) : sub));
}

function fixEncodingOneStep(text: string): string {
  if (text.length === 0 || isAscii(text) || !isBad(text)) return text;

  const possible: string[] = [];
  for (const [name, codec] of getCodecs()) {
    const encoded = encodeSingleByte(text, codec);
    if (encoded === null) continue;
    possible.push(name);
    let bytes = encoded;
    alteredUtf8Re ??= new RegExp(ALTERED_UTF8_SOURCE, 'g');
    alteredUtf8Re.lastIndex = 0;
    // macroman excluded: an en dash followed by a space would look like a damaged sequence.
    if (name !== 'macroman' && alteredUtf8Re.test(bytes)) bytes = restoreByteA0(bytes);
    if (name.startsWith('sloppy')) bytes = replaceLossySequences(bytes);
    const decoded = bytes.includes('\xed') || bytes.includes('\xc0') ? decodeUtf8Variants(bytes) : decodeUtf8Strict(bytes);
    if (decoded !== null) return decoded;
  }

  utf8DetectorRe ??= new RegExp(UTF8_DETECTOR_SOURCE, 'gu');
  utf8DetectorRe.lastIndex = 0;
  if (utf8DetectorRe.test(text)) {
    const fixed = decodeInconsistentUtf8(text);
    if (fixed !== text) return fixed;
  }

  // ftfy tests for 'windows-1252' here while its list only holds 'sloppy-windows-1252', so this
  // branch always re-decodes Latin-1 text as strict Windows-1252; reproduced as is.
  if (possible.includes('latin-1')) {
    const table = getStrict1252();
    let fixed = '';
    let ok = true;
    for (const ch of text) {
      const d = table[ch.codePointAt(0)!];
      if (!d) {
        ok = false;
        break;
      }
      fixed += d;
    }
    if (ok && fixed !== text) return fixed;
  }

  if (/[\x80-\x9f]/.test(text)) return c1ToWindows1252(text);
  return text;
}

/** ftfy.fix_encoding: repeat single repair steps until nothing changes. */
export function fixEncoding(text: string): string {
  for (;;) {
    const next = fixEncodingOneStep(text);
    if (next === text) return text;
    text = next;
  }
}

// ---------------------------------------------------------------------------------------------
// fix_text.

function fixSegment(text: string, unescape: boolean): string {
  for (;;) {
    const orig = text;
    if (unescape) text = unescapeHtml(text);
    text = fixEncoding(text);
    text = fixC1Controls(text);
    text = fixLatinLigatures(text);
    text = fixCharacterWidth(text);
    text = uncurlQuotes(text);
    text = fixLineBreaks(text);
    text = fixSurrogates(text);
    text = removeTerminalEscapes(text);
    text = removeControlChars(text);
    text = text.normalize('NFC');
    if (text === orig) return text;
  }
}

const MAX_SEGMENT = 1_000_000;

/**
 * ftfy.fix_text with default settings. The text is fixed line by line; HTML entities are
 * un-escaped until the first line that contains a literal '<' (then it is taken to be real HTML,
 * whose entities must stay), and from there on not at all.
 */
export function fixText(text: string): string {
  let out = '';
  let unescape = true;
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf('\n', pos) + 1;
    if (end === 0) end = text.length;
    if (end - pos > MAX_SEGMENT) {
      end = pos + MAX_SEGMENT;
      // Never cut a surrogate pair in half (ftfy counts code points, we count UTF-16 units).
      const c = text.charCodeAt(end - 1);
      if (c >= 0xd800 && c <= 0xdbff) end++;
    }
    const segment = text.slice(pos, end);
    if (unescape && segment.includes('<')) unescape = false;
    out += fixSegment(segment, unescape);
    pos = end;
  }
  return out;
}
