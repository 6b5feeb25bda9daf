// ftfy 6.3.1's character tables and detector regexes, as data: text_cleanup_data.json is generated
// by tools/gen_text_cleanup_data.py from ftfy itself (Apache-2.0, Robyn Speer) and Python's
// codecs/html tables (see NOTICE.md). This module only gives the JSON its types and shapes.
import data from './text_cleanup_data.json' with { type: 'json' };

/** ftfy's candidate single-byte encodings, in the order it tries them. */
export const CHARMAP_ENCODINGS: readonly string[] = data.charmapEncodings;

/**
 * Upper halves (bytes 0x80-0xFF) of each encoding's decoding table. Bytes below 0x80 decode
 * to ASCII, except that the sloppy codecs decode 0x1A to U+FFFD (SLOPPY_SUB_ENCODINGS).
 */
export const DECODING_HIGH: Readonly<Record<string, string>> = data.decodingHigh;

export const SLOPPY_SUB_ENCODINGS: ReadonlySet<string> = new Set(data.sloppySubEncodings);

/** ftfy.chardata.HTML_ENTITIES: '&name;' -> text. */
export const HTML_ENTITIES: Readonly<Record<string, string>> = data.htmlEntities;

/** Python html.unescape: numeric references remapped instead of decoded. */
export const INVALID_CHARREFS: ReadonlyMap<number, string> = new Map(data.invalidCharrefs as [number, string][]);

/** Python html.unescape: numeric references that decode to nothing. */
export const INVALID_CODEPOINTS: ReadonlySet<number> = new Set(data.invalidCodepoints);

/** ftfy.badness.BADNESS_RE: any match means the text looks like mojibake. Flags: 'u'. */
export const BADNESS_SOURCE: string = data.badnessSource;

/** ftfy.chardata.UTF8_DETECTOR_RE: runs of what look like UTF-8 bytes shown as single-byte characters. Flags: 'gu'. */
export const UTF8_DETECTOR_SOURCE: string = data.utf8DetectorSource;

/** ftfy.chardata.ALTERED_UTF8_RE over a byte string (one char per byte). Flags: 'g'. */
export const ALTERED_UTF8_SOURCE: string = data.alteredUtf8Source;

/** ftfy.chardata.LOSSY_UTF8_RE over a byte string (one char per byte). Flags: 'g'. */
export const LOSSY_UTF8_SOURCE: string = data.lossyUtf8Source;

/** ftfy.fixes.A_GRAVE_WORD_RE over a byte string (one char per byte). Flags: 'g'. */
export const A_GRAVE_WORD_SOURCE: string = data.aGraveWordSource;
