// `generate --init-image` (image-to-image, SDXL refiner folders) and `--refiner` (the SDXL base hands its
// latents to the refiner: diffusers' denoising_end / denoising_start) on tiny SDXL folders: the
// refiner's PNG equals the same handoff through the API, the options land in the PNG and `--from`
// reruns them; wrong combinations stop before the engine starts.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PNG } from 'pngjs';
import { parseGenerateArgs } from '../src/cli/main.js';
import { readInitImage } from '../src/cli/generate.js';
import { detectFamily } from '../src/cli/families.js';
import { Engine, StableDiffusionXLPipeline } from '../src/index.js';
import { readGenerationParameters } from '../src/image/png_metadata.js';
import { buildTinySdxlFolder, readSdxlManifest } from './tiny_sdxl.js';

const root = resolve(import.meta.dirname, '..');
const cli = (args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), ...args], { cwd: root, encoding: 'utf8', timeout: 240_000 });

describe('generate --init-image / --refiner', () => {
  let dir = '';
  let input = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'cli-refiner-'));
    const m = readSdxlManifest();
    buildTinySdxlFolder(join(dir, 'base'), 'base', m);
    buildTinySdxlFolder(join(dir, 'refiner'), 'refiner', m);
    buildTinySdxlFolder(join(dir, 'sd'), 'sd', m);
    // a 24x32 (w x h) RGBA input with a gradient and a translucent corner (alpha is dropped)
    const png = new PNG({ width: 24, height: 32 });
    for (let i = 0; i < 24 * 32; i++) png.data.set([(i * 7) % 256, (i * 3) % 256, 255 - (i % 256), i < 40 ? 90 : 255], 4 * i);
    input = join(dir, 'in.png');
    writeFileSync(input, PNG.sync.write(png));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('parses and checks the flags', () => {
    expect(parseGenerateArgs(['--prompt', 'a', '--init-image', 'x.png', '--strength', '0.5'])).toMatchObject({ initImage: 'x.png', strength: 0.5 });
    expect(parseGenerateArgs(['--prompt', 'a', '--refiner', 'r'])).toMatchObject({ refiner: 'r', denoisingEnd: 0.8 });
    expect(parseGenerateArgs(['--prompt', 'a', '--refiner', 'r', '--denoising-end', '0.7'])).toMatchObject({ denoisingEnd: 0.7 });
    expect(() => parseGenerateArgs(['--prompt', 'a', '--strength', '0.5'])).toThrow(/--strength needs --init-image/);
    expect(() => parseGenerateArgs(['--prompt', 'a', '--init-image', 'x.png', '--strength', '0'])).toThrow(/--strength must be in \(0, 1\]/);
    expect(() => parseGenerateArgs(['--prompt', 'a', '--denoising-end', '0.8'])).toThrow(/--denoising-end needs --refiner/);
    expect(() => parseGenerateArgs(['--prompt', 'a', '--refiner', 'r', '--denoising-end', '1'])).toThrow(/--denoising-end must be in \(0, 1\)/);
    expect(() => parseGenerateArgs(['--class', '3', '--init-image', 'x.png'])).toThrow(/--init-image applies to Stable Diffusion/);
    expect(detectFamily({ _class_name: 'StableDiffusionXLImg2ImgPipeline' }, { _class_name: 'EulerDiscreteScheduler' }, {})).toBe('sdxl');
    const { data, shape } = readInitImage(input, 2);
    expect(shape).toEqual([2, 3, 32, 24]);
    expect([data[1], data[32 * 24 + 1], data[2 * 32 * 24 + 1]]).toEqual([7 / 255, 3 / 255, 254 / 255].map(Math.fround));
    expect(data.subarray(3 * 32 * 24)).toEqual(data.subarray(0, 3 * 32 * 24));
  });

  it('--refiner: the base runs to 0.8 and the refiner finishes; the PNG equals the API handoff and reruns with --from', async () => {
    const out = join(dir, 'handoff.png');
    const r = cli(['generate', '--model', join(dir, 'base'), '--refiner', join(dir, 'refiner'), '--prompt', 'a lighthouse', '--steps', '10', '--seed', '3', '--out', out]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/refiner: .* from 0.8 of the schedule/);
    const png = readFileSync(out);
    expect(readGenerationParameters(png)?.params).toMatchObject({ steps: 10, guidanceScale: 5, refiner: join(dir, 'refiner'), denoisingEnd: 0.8 });
    // the same through the API, on the engine the CLI makes (f16 where the adapter has it)
    const engine = await Engine.create({});
    const base = await StableDiffusionXLPipeline.fromPretrained(engine, join(dir, 'base'));
    const refiner = await StableDiffusionXLPipeline.fromPretrained(engine, join(dir, 'refiner'));
    try {
      const o = { prompt: ['a lighthouse'], steps: 10, guidanceScale: 5, seed: 3 };
      const { images: lat } = await base.generate({ ...o, denoisingEnd: 0.8, outputType: 'latent' });
      const { images, rgba } = await refiner.generate({ ...o, image: lat, denoisingStart: 0.8 });
      lat.dispose();
      images.dispose();
      expect(Buffer.from(PNG.sync.read(png).data).equals(Buffer.from(rgba[0].data))).toBe(true);
    } finally {
      base.dispose();
      refiner.dispose();
      engine.destroy();
    }
    const again = join(dir, 'again.png');
    const f = cli(['generate', '--from', out, '--out', again]);
    expect(f.status, f.stderr).toBe(0);
    expect(readFileSync(again).equals(png)).toBe(true);
  }, 240_000);

  it('a refiner folder as --model does img2img from --init-image (its size), and needs one', () => {
    const out = join(dir, 'refined.png');
    const r = cli(['generate', '--model', join(dir, 'refiner'), '--init-image', input, '--strength', '0.5', '--prompt', 'a castle', '--steps', '4', '--out', out]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/family: sdxl \(guessed from the folder/);
    const png = readFileSync(out);
    expect([PNG.sync.read(png).width, PNG.sync.read(png).height]).toEqual([24, 32]);
    expect(readGenerationParameters(png)?.params).toMatchObject({ initImage: input, strength: 0.5 });

    const bad = cli(['generate', '--model', join(dir, 'refiner'), '--prompt', 'a castle', '--steps', '2', '--out', join(dir, 'x.png')]);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/is an SDXL refiner \(StableDiffusionXLImg2ImgPipeline\): it refines an image: give --init-image/);
    const sd = cli(['generate', '--model', join(dir, 'base'), '--refiner', join(dir, 'sd'), '--prompt', 'a', '--steps', '2', '--out', join(dir, 'y.png')]);
    expect(sd.status).not.toBe(0);
    expect(sd.stderr).toMatch(/--refiner .*: model_index.json names StableDiffusionPipeline; an SDXL refiner is a StableDiffusionXLImg2ImgPipeline folder/);
    expect(sd.stderr).not.toMatch(/adapter:/); // stopped before the engine started
  }, 240_000);
});
