// The ftfy tables are data (src/text/text_cleanup_data.json) made by tools/gen_text_cleanup_data.py.
// Their use is tested through fixText in clip_tokenizer.test.ts; here: their shape, and, where ftfy
// 6.3.1 is importable by python3 (e.g. PYTHONPATH=/tmp/ftfy-lib, see the script), that the committed
// file is exactly what the generator prints.
import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as D from '../src/text/text_cleanup_data.js';

const root = join(import.meta.dirname, '..');
const hasFtfy = spawnSync('python3', ['-c', 'import ftfy; assert ftfy.__version__ == "6.3.1"']).status === 0;

describe('text clean-up data', () => {
  it('has ftfy 6.3.1 tables of the expected shape', () => {
    const json = JSON.parse(readFileSync(join(root, 'src/text/text_cleanup_data.json'), 'utf8'));
    expect(json.source).toMatch(/^ftfy 6\.3\.1 /);
    expect(D.CHARMAP_ENCODINGS).toHaveLength(10);
    for (const enc of D.CHARMAP_ENCODINGS) {
      const high = [...D.DECODING_HIGH[enc]];
      expect(high, enc).toHaveLength(128);
      expect(new Set(high).size, enc).toBe(128);
    }
    expect(D.SLOPPY_SUB_ENCODINGS.has('sloppy-windows-1252')).toBe(true);
    expect(D.HTML_ENTITIES['&eacute;']).toBe('é');
    expect(Object.keys(D.HTML_ENTITIES).length).toBeGreaterThan(2000);
    expect(D.INVALID_CHARREFS.get(0x80)).toBe('€');
    expect(D.INVALID_CODEPOINTS.has(0xfffe)).toBe(true);
    for (const [src, flags] of [[D.BADNESS_SOURCE, 'u'], [D.UTF8_DETECTOR_SOURCE, 'gu'], [D.ALTERED_UTF8_SOURCE, 'g'], [D.LOSSY_UTF8_SOURCE, 'g'], [D.A_GRAVE_WORD_SOURCE, 'g']]) {
      expect(() => new RegExp(src, flags)).not.toThrow();
    }
  });

  it.skipIf(!hasFtfy)('is what tools/gen_text_cleanup_data.py prints (needs ftfy 6.3.1)', () => {
    const r = spawnSync('python3', [join(root, 'tools/gen_text_cleanup_data.py')], { encoding: 'utf8', maxBuffer: 1 << 24 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(readFileSync(join(root, 'src/text/text_cleanup_data.json'), 'utf8'));
  });
});
