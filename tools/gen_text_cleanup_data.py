#!/usr/bin/env python3
"""Regenerates src/text/text_cleanup_data.json from ftfy 6.3.1.

Usage (ftfy 6.3.1 and its dependency wcwidth importable, e.g. from their wheels):
    pip download ftfy==6.3.1 wcwidth --no-deps -d /tmp/ftfy
    pip install --no-deps --target /tmp/ftfy-lib /tmp/ftfy/*.whl
    PYTHONPATH=/tmp/ftfy-lib python3 tools/gen_text_cleanup_data.py > src/text/text_cleanup_data.json

src/text/text_cleanup_data.ts loads the JSON and gives it types; test/text_cleanup.test.ts runs
this script when ftfy is importable and checks the committed JSON is what it prints.

The transformers CLIPTokenizer runs prompts through ftfy.fix_text, whose mojibake
detector is driven by large hand-tuned character tables and regexes. Rather than
retyping them (and drifting), this script reads them from ftfy itself (Apache-2.0)
and from Python's codecs / html modules, and emits them as plain data:

* the decoding tables of the ten single-byte encodings ftfy tries, including its
  "sloppy" variants (undefined bytes fall back to Latin-1, 0x1A -> U+FFFD);
* ftfy's HTML entity table (HTML5 names ending in ';', plus upper-case spellings);
* the numeric character-reference quirks of Python's html.unescape;
* ftfy's badness and UTF-8 detector regexes, translated from Python's regex syntax
  tree into JavaScript regex source (so the JS engine sees exactly the same
  character sets, with Python's \\s / \\w / . semantics spelled out).
"""
import html
import html.entities
import json
import sys

import ftfy  # noqa: F401  (registers the sloppy codecs)
from ftfy import badness, chardata, fixes

try:
    import re._parser as sre_parse  # Python >= 3.11
    import re._constants as sre_c
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore
    import sre_constants as sre_c  # type: ignore

assert ftfy.__version__ == "6.3.1", ftfy.__version__

PY_SPACE = [c for c in range(0x110000) if chr(c).isspace()]


def esc(cp: int, byte_mode: bool) -> str:
    if (0x30 <= cp <= 0x39) or (0x41 <= cp <= 0x5A) or (0x61 <= cp <= 0x7A):
        return chr(cp)
    if byte_mode:
        return "\\x%02x" % cp
    return "\\u{%x}" % cp


def category_class_body(cat, byte_mode: bool) -> str:
    if cat == sre_c.CATEGORY_UNI_SPACE or cat == sre_c.CATEGORY_SPACE:
        if byte_mode:
            return "\\t\\n\\x0b\\x0c\\r "
        return "".join(esc(c, False) for c in PY_SPACE)
    if cat == sre_c.CATEGORY_UNI_WORD or cat == sre_c.CATEGORY_WORD:
        if byte_mode:
            return "A-Za-z0-9_"
        return "\\p{L}\\p{N}_"
    if cat == sre_c.CATEGORY_UNI_DIGIT or cat == sre_c.CATEGORY_DIGIT:
        return "0-9" if byte_mode else "\\p{Nd}"
    raise ValueError(f"category {cat}")


def emit(tree, byte_mode: bool) -> str:
    out = []
    for op, av in tree:
        out.append(emit_item(op, av, byte_mode))
    return "".join(out)


def emit_item(op, av, byte_mode: bool) -> str:
    if op == sre_c.LITERAL:
        return esc(av, byte_mode)
    if op == sre_c.NOT_LITERAL:
        return "[^" + esc(av, byte_mode) + "]"
    if op == sre_c.ANY:
        return "[^\\n]"
    if op == sre_c.IN:
        neg = False
        body = []
        for iop, iav in av:
            if iop == sre_c.NEGATE:
                neg = True
            elif iop == sre_c.LITERAL:
                body.append(esc(iav, byte_mode))
            elif iop == sre_c.RANGE:
                body.append(esc(iav[0], byte_mode) + "-" + esc(iav[1], byte_mode))
            elif iop == sre_c.CATEGORY:
                body.append(category_class_body(iav, byte_mode))
            else:
                raise ValueError(f"class item {iop}")
        return "[" + ("^" if neg else "") + "".join(body) + "]"
    if op == sre_c.CATEGORY:
        return "[" + category_class_body(av, byte_mode) + "]"
    if op == sre_c.BRANCH:
        return "(?:" + "|".join(emit(b, byte_mode) for b in av[1]) + ")"
    if op == sre_c.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        assert not add_flags and not del_flags
        return "(?:" + emit(sub, byte_mode) + ")"
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
        lo, hi, sub = av
        inner = emit(sub, byte_mode)
        if not (len(sub) == 1 and sub[0][0] in (sre_c.LITERAL, sre_c.IN, sre_c.ANY, sre_c.CATEGORY)):
            inner = "(?:" + inner + ")"
        if hi == sre_c.MAXREPEAT:
            q = "*" if lo == 0 else "+" if lo == 1 else "{%d,}" % lo
        elif lo == hi:
            q = "{%d}" % lo
        elif lo == 0 and hi == 1:
            q = "?"
        else:
            q = "{%d,%d}" % (lo, hi)
        return inner + q + ("?" if op == sre_c.MIN_REPEAT else "")
    if op == sre_c.AT:
        if av in (sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_STRING):
            return "^"
        raise ValueError(f"anchor {av}")
    if op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
        direction, sub = av
        kind = ("(?<" if direction < 0 else "(?") + ("=" if op == sre_c.ASSERT else "!")
        return kind + emit(sub, byte_mode) + ")"
    raise ValueError(f"op {op}")


def to_js(pattern) -> str:
    byte_mode = isinstance(pattern.pattern, bytes)
    tree = sre_parse.parse(pattern.pattern, pattern.flags)
    return emit(tree, byte_mode)


def main() -> None:
    out = {
        "source": "ftfy %s (Apache-2.0, Robyn Speer) and Python %d.%d codecs/html tables, by tools/gen_text_cleanup_data.py"
        % (ftfy.__version__, sys.version_info[0], sys.version_info[1]),
        # ftfy's candidate single-byte encodings, in the order it tries them
        "charmapEncodings": list(chardata.CHARMAP_ENCODINGS),
    }
    # Upper halves (bytes 0x80-0xFF) of each encoding's decoding table. Bytes below 0x80 decode to
    # ASCII, except that the sloppy codecs decode 0x1A to U+FFFD (sloppySubEncodings).
    high = {}
    sloppy_sub = []
    for enc in chardata.CHARMAP_ENCODINGS:
        table = bytes(range(256)).decode(enc)
        assert len(table) == 256
        assert len(set(table)) == 256, enc
        for b in range(128):
            if b == 0x1A and table[b] == "\ufffd":
                continue
            assert table[b] == chr(b), (enc, b)
        if table[0x1A] == "\ufffd":
            sloppy_sub.append(enc)
        high[enc] = table[128:]
    out["decodingHigh"] = high
    out["sloppySubEncodings"] = sloppy_sub
    # ftfy.chardata.HTML_ENTITIES: '&name;' -> text
    out["htmlEntities"] = {k: chardata.HTML_ENTITIES[k] for k in sorted(chardata.HTML_ENTITIES)}
    # Python html.unescape: numeric references remapped instead of decoded, and ones that decode to nothing
    inv = html._invalid_charrefs  # type: ignore[attr-defined]
    out["invalidCharrefs"] = [[k, inv[k]] for k in sorted(inv)]
    out["invalidCodepoints"] = sorted(html._invalid_codepoints)  # type: ignore[attr-defined]
    # ftfy's detector regexes as JavaScript regex source (flags are chosen by text_cleanup.ts)
    out["badnessSource"] = to_js(badness.BADNESS_RE)
    out["utf8DetectorSource"] = to_js(chardata.UTF8_DETECTOR_RE)
    out["alteredUtf8Source"] = to_js(chardata.ALTERED_UTF8_RE)
    out["lossyUtf8Source"] = to_js(chardata.LOSSY_UTF8_RE)
    out["aGraveWordSource"] = to_js(fixes.A_GRAVE_WORD_RE)
    # ensure_ascii keeps the file 7-bit (invisible and combining characters stay readable as \\u escapes)
    sys.stdout.write(json.dumps(out, ensure_ascii=True, indent=1) + "\n")


if __name__ == "__main__":
    main()
