// PNG generation parameters (src/image/png_metadata.ts): the A1111 text, tEXt/iTXt chunks with
// valid CRCs that pngjs (an independent decoder) still reads, the JSON round trip, and refusals of
// files that are not PNGs or are cut short.
import { describe, expect, it } from 'vitest';
import { PNG } from 'pngjs';
import {
  a1111Sampler,
  a1111SamplerName,
  formatParameters,
  parseParameters,
  readGenerationParameters,
  readTextChunks,
  withGenerationParameters,
  withTextChunks,
  pngChunks,
  type GenerationParameters,
} from '../src/image/png_metadata.js';
import { argsFromPng } from '../src/cli/main.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function smallPng(w = 5, h = 3): Uint8Array {
  const png = new PNG({ width: w, height: h });
  for (let i = 0; i < png.data.length; i++) png.data[i] = (i * 37 + 11) & 0xff;
  return new Uint8Array(PNG.sync.write(png));
}

const SD: GenerationParameters = {
  model: 'https://example.org/models/sd15/',
  prompt: 'an astronaut, riding a horse: "photo"',
  negativePrompt: 'blurry, low quality',
  steps: 25,
  sampler: 'euler-a',
  guidanceScale: 7.5,
  seed: 1234567,
  width: 512,
  height: 768,
  batchSize: 2,
  batchIndex: 1,
  f16: true,
};

describe('A1111 parameters text', () => {
  it('writes the convention other tools read', () => {
    expect(formatParameters(SD)).toBe(
      'an astronaut, riding a horse: "photo"\nNegative prompt: blurry, low quality\n' +
        'Steps: 25, Sampler: Euler a, CFG scale: 7.5, Seed: 1234567, Size: 512x768, Model: sd15, Batch size: 2, Batch pos: 1',
    );
    const ldm: GenerationParameters = { model: 'ldm-mnist', classLabels: [3], steps: 4, guidanceScale: 3, seed: 0, width: 32, height: 32 };
    expect(formatParameters(ldm, 'DDIMScheduler')).toBe('Steps: 4, Sampler: DDIM, CFG scale: 3, Seed: 0, Size: 32x32, Model: ldm-mnist, Class: 3');
  });

  it('reads it back, quoted values and multi-line prompts included', () => {
    const p = parseParameters(formatParameters({ ...SD, prompt: 'line one\nline two', sampler: 'dpm++2m', model: 'C:\\models\\my, model' }));
    expect(p).toMatchObject({ prompt: 'line one\nline two', negativePrompt: 'blurry, low quality', steps: 25, sampler: 'dpm++2m', guidanceScale: 7.5, seed: 1234567, width: 512, height: 768, model: 'my, model', batchSize: 2, batchIndex: 1 });
    // A1111's own output, as pasted from a real file.
    const a = parseParameters('a cat\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, Model hash: abc, Model: v1-5');
    expect(a).toMatchObject({ prompt: 'a cat', negativePrompt: 'dog', steps: 20, sampler: 'dpm++2m_karras', guidanceScale: 7, seed: 42, width: 512, height: 512, model: 'v1-5' });
    expect(a.fields['Schedule type']).toBe('Karras');
  });

  it('the sampler presets in A1111 names: the sampler and its "Schedule type", read back to the preset', () => {
    const line = (sampler: string) => formatParameters({ ...SD, prompt: undefined, negativePrompt: undefined, batchSize: undefined, sampler });
    expect(line('euler_a_trailing')).toBe('Steps: 25, Sampler: Euler a, Schedule type: SGM Uniform, CFG scale: 7.5, Seed: 1234567, Size: 512x768, Model: sd15');
    const want: Record<string, [string, string | undefined]> = {
      euler_a_trailing: ['Euler a', 'SGM Uniform'],
      'euler-a-trailing': ['Euler a', 'SGM Uniform'],
      euler_trailing: ['Euler', 'SGM Uniform'],
      'dpm++2m_karras': ['DPM++ 2M', 'Karras'],
      euler_karras: ['Euler', 'Karras'],
      'euler-a': ['Euler a', undefined],
      lcm: ['LCM', undefined],
      DPMSolverMultistepScheduler: ['DPM++ 2M', undefined],
    };
    for (const [ours, [sampler, schedule]] of Object.entries(want)) {
      expect(a1111Sampler(ours), ours).toEqual(schedule ? { sampler, schedule } : { sampler });
      expect(a1111SamplerName(ours), ours).toBe(sampler);
      const back = parseParameters(line(ours));
      expect(back.fields['Schedule type'], ours).toBe(schedule);
      // what comes back runs the same: the preset (its hyphen spelling reads back as the underscore one)
      expect(back.sampler, ours).toBe(schedule ? ours.replace('euler-a-trailing', 'euler_a_trailing') : ours === 'DPMSolverMultistepScheduler' ? 'dpm++2m' : ours);
    }
    // A1111 before 1.9 wrote the schedule into the sampler's name; "Automatic" is the model's own
    expect(parseParameters('Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 64x64').sampler).toBe('dpm++2m_karras');
    expect(parseParameters('Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 64x64').sampler).toBe('euler-a');
    // a schedule we have no preset for: the sampler as written, the schedule kept in fields
    expect(parseParameters('Steps: 20, Sampler: LMS Karras, CFG scale: 7, Seed: 1, Size: 64x64').sampler).toBe('LMS Karras');
    expect(parseParameters('Steps: 20, Sampler: DPM++ 2M, Schedule type: Exponential, CFG scale: 7, Seed: 1, Size: 64x64').fields['Schedule type']).toBe('Exponential');
  });
});

describe('PNG text chunks', () => {
  it('adds tEXt (Latin-1) and iTXt (other text) chunks that a PNG decoder accepts', () => {
    const src = smallPng();
    const out = withTextChunks(src, { parameters: 'café 1', other: 'ユニコード ✓' });
    const types = pngChunks(out).map((c) => c.type);
    expect(types.slice(0, 3)).toEqual(['IHDR', 'tEXt', 'iTXt']);
    expect(readTextChunks(out)).toEqual({ parameters: 'café 1', other: 'ユニコード ✓' });
    // pngjs checks every chunk's CRC: the pixels are unchanged.
    expect(Buffer.from(PNG.sync.read(Buffer.from(out)).data)).toEqual(Buffer.from(PNG.sync.read(Buffer.from(src)).data));
    // Replacing keeps one chunk per key.
    const again = withTextChunks(out, { parameters: 'second' });
    expect(readTextChunks(again)).toEqual({ parameters: 'second', other: 'ユニコード ✓' });
    expect(pngChunks(again).filter((c) => c.type === 'tEXt').length).toBe(1);
  });

  it('round-trips the exact options as JSON', () => {
    const png = withGenerationParameters(smallPng(), SD);
    const r = readGenerationParameters(png)!;
    expect(r.exact).toBe(true);
    expect(r.params).toEqual(SD);
    expect(r.text).toBe(formatParameters(SD));
    // Deterministic: same options, same bytes.
    expect(Buffer.from(withGenerationParameters(smallPng(), SD))).toEqual(Buffer.from(png));
    // Without the JSON chunk the A1111 text is what is there.
    const textOnly = withTextChunks(smallPng(), { parameters: formatParameters(SD) });
    expect(readGenerationParameters(textOnly)).toMatchObject({ exact: false, params: { steps: 25, seed: 1234567, model: 'sd15' } });
    expect(readGenerationParameters(smallPng())).toBeNull();
  });

  it('refuses files that are not PNGs or are cut short, saying why', () => {
    const png = withGenerationParameters(smallPng(), SD);
    expect(() => readGenerationParameters(new TextEncoder().encode('GIF89a not a png'))).toThrow(/PNG signature/);
    expect(() => readGenerationParameters(png.subarray(0, 40))).toThrow(/truncated PNG/);
    const broken = withTextChunks(smallPng(), { 'ldm-webgpu': '{"steps": 3,' });
    expect(() => readGenerationParameters(broken)).toThrow(/not valid JSON/);
    expect(() => withTextChunks(smallPng(), { '': 'x' })).toThrow(/PNG text key/);
  });

  it('turns a PNG into CLI arguments (--from), refusing ones without exact options', () => {
    const dir = mkdtempSync(join(tmpdir(), 'png-from-'));
    try {
      const f = join(dir, 'a.png');
      writeFileSync(f, withGenerationParameters(smallPng(), SD));
      expect(argsFromPng(f, undefined, 'b.png')).toMatchObject({
        model: SD.model, modelLabel: SD.model, prompt: SD.prompt, negativePrompt: SD.negativePrompt, steps: 25, sampler: 'euler-a',
        guidance: 7.5, seed: 1234567, width: 512, height: 768, batch: 2, batchIndex: 1, out: 'b.png',
      });
      writeFileSync(f, withTextChunks(smallPng(), { parameters: formatParameters(SD) }));
      expect(() => argsFromPng(f, undefined, 'b.png')).toThrow(/does not say where the model is/);
      writeFileSync(f, withGenerationParameters(smallPng(), { ...SD, steps: -1 }));
      expect(() => argsFromPng(f, undefined, 'b.png')).toThrow(/bad steps/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
