// `ldm-webgpu generate --lora FILE[:SCALE]` (repeatable): argument parsing, and a run on the tiny SD
// folder with a kohya LoRA built from the lora fixture's manifest (the merge itself is test/lora.test.ts'),
// and on an SDXL single file (family told by its sgm keys) against the same folder with the same LoRA.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseGenerateArgs, loraArg, UsageError } from '../src/cli/main.js';
import { readGenerationParameters } from '../src/image/png_metadata.js';
import { buildTinySdFolder } from './tiny_sd.js';
import { buildTinySdxlFolder, buildTinySdxlSingleFile, readSdxlManifest } from './tiny_sdxl.js';
import { PNG } from 'pngjs';
import { seededSafetensors, type ManifestEntry } from './seeded.js';
import { FIXTURES } from './fixture.js';

const root = resolve(import.meta.dirname, '..');
const cli = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), ...args], { cwd: root, encoding: 'utf8', timeout: 240_000 });

describe('--lora', () => {
  it('parses FILE[:SCALE], repeated; URLs and drive letters keep their colons', () => {
    expect(loraArg('a.safetensors')).toEqual({ source: 'a.safetensors', scale: 1 });
    expect(loraArg('a.safetensors:0.75')).toEqual({ source: 'a.safetensors', scale: 0.75 });
    expect(loraArg('a.safetensors:-.5')).toEqual({ source: 'a.safetensors', scale: -0.5 });
    expect(loraArg('C:\\loras\\x.safetensors')).toEqual({ source: 'C:\\loras\\x.safetensors', scale: 1 });
    expect(loraArg('https://host:8080/x.safetensors:1e-1')).toEqual({ source: 'https://host:8080/x.safetensors', scale: 0.1 });
    const a = parseGenerateArgs(['--model', 'm', '--prompt', 'p', '--lora', 'a.safetensors:0.8', '--lora', 'b.safetensors']);
    expect(a.loras).toEqual([
      { source: 'a.safetensors', scale: 0.8 },
      { source: 'b.safetensors', scale: 1 },
    ]);
    expect(parseGenerateArgs(['--model', 'm', '--prompt', 'p']).loras).toBeUndefined();
    // the lcm-lora family asks for one
    expect(parseGenerateArgs(['--model', 'm', '--prompt', 'p', '--family', 'lcm-lora', '--lora', 'lcm.safetensors']).steps).toBe(4);
    expect(() => parseGenerateArgs(['--model', 'm', '--prompt', 'p', '--family', 'lcm-lora'])).toThrow(UsageError);
    expect(() => parseGenerateArgs(['--class', '3', '--lora', 'a.safetensors'])).toThrow(/--lora applies to Stable Diffusion folders/);
    expect(() => loraArg('')).toThrow(UsageError);
    expect(() => loraArg(' :0.5')).toThrow(UsageError);
  });

  it('generates with a LoRA: says what merged, stores the LoRAs in the PNG; a LoRA that does not fit fails', () => {
    const model = buildTinySdFolder();
    const dir = mkdtempSync(join(tmpdir(), 'lora-cli-'));
    try {
      const meta = JSON.parse(readFileSync(join(FIXTURES, 'lora', 'case.json'), 'utf8')) as { files: Record<string, ManifestEntry[]> };
      const lora = join(dir, 'style.safetensors');
      writeFileSync(lora, seededSafetensors(meta.files.kohya));
      const out = join(dir, 'sd.png');
      const r = cli(['generate', '--model', model, '--prompt', 'a horse', '--steps', '2', '--seed', '3', '--lora', `${lora}:0.8`, '--out', out]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/LoRA: 20 layer\(s\) merged/);
      const p = readGenerationParameters(readFileSync(out));
      expect(p?.params.loras).toEqual([{ source: lora, scale: 0.8 }]);

      const bad = join(dir, 'bad.safetensors');
      writeFileSync(bad, seededSafetensors(meta.files.kohya.map((e) => ({ ...e, key: e.key.replace('attn1_to_q', 'attn1_to_z') }))));
      const r2 = cli(['generate', '--model', model, '--prompt', 'a horse', '--steps', '2', '--lora', bad, '--out', join(dir, 'bad.png')]);
      expect(r2.status).not.toBe(0);
      expect(r2.stderr).toMatch(/LoraError|does not fit the unet/);
      expect(r2.stderr).toMatch(/attn1_to_z/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(model, { recursive: true, force: true });
    }
  }, 480_000);

  it('an SDXL single file (--tokenizer, family from its keys) with --lora gives the pixels of the folder with that LoRA', () => {
    const m = readSdxlManifest();
    const dir = mkdtempSync(join(tmpdir(), 'lora-cli-sdxl-'));
    try {
      const folder = join(dir, 'folder');
      buildTinySdxlFolder(folder, 'base', m);
      const file = join(dir, 'sdxl-tiny.safetensors');
      writeFileSync(file, buildTinySdxlSingleFile('base', m));
      const configs = join(dir, 'configs.json');
      // the tiny sizes and the folder's scheduler (the SDXL defaults would not fit the tiny tensors)
      const { unet, vae, text_encoder, text_encoder_2, scheduler } = m.configs;
      writeFileSync(configs, JSON.stringify({ unet, vae, text_encoder, text_encoder_2, scheduler: { _class_name: 'EulerDiscreteScheduler', ...scheduler } }));
      // kohya names for the bigG encoder's text_projection (the pooled embeds) and a q_proj
      const lora = join(dir, 'te2.safetensors');
      const entries: ManifestEntry[] = [['text_projection', [24, 48]], ['text_model_encoder_layers_0_self_attn_q_proj', [48, 48]]].flatMap(([n, s]) => {
        const [o, i] = s as number[];
        return [
          { key: `lora_te2_${n}.lora_down.weight`, shape: [4, i] },
          { key: `lora_te2_${n}.lora_up.weight`, shape: [o, 4] },
          { key: `lora_te2_${n}.alpha`, shape: [], values: [2] },
        ];
      });
      writeFileSync(lora, seededSafetensors(entries));
      const tok = join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14');
      const common = ['--prompt', 'a horse', '--steps', '2', '--seed', '5', '--width', '32', '--height', '32'];
      const run = (name: string, extra: string[]) => {
        const out = join(dir, `${name}.png`);
        const r = cli(['generate', ...extra, ...common, '--out', out]);
        expect(r.status, r.stderr).toBe(0);
        return { stderr: r.stderr, png: readFileSync(out) };
      };
      const single = run('single', ['--model', file, '--tokenizer', tok, '--config', configs, '--lora', `${lora}:0.5`]);
      expect(single.stderr).toMatch(/family: sdxl \(guessed from the file's keys; --family to change\): 2 steps, guidance 5/);
      expect(single.stderr).toMatch(/LoRA: 2 layer\(s\) merged/);
      expect(readGenerationParameters(single.png)?.params).toMatchObject({ steps: 2, guidanceScale: 5, loras: [{ source: lora, scale: 0.5 }] });
      const folderRun = run('folder', ['--model', folder, '--lora', `${lora}:0.5`]);
      const plain = run('plain', ['--model', file, '--tokenizer', tok, '--config', configs]);
      const pixels = (b: Buffer) => PNG.sync.read(b).data;
      expect(pixels(single.png).equals(pixels(folderRun.png))).toBe(true);
      expect(pixels(plain.png).equals(pixels(single.png))).toBe(false);
      // an unknown component is refused before loading, with the SDXL file's list (text_encoder_2 included)
      const sd2only = join(dir, 'bad.json');
      writeFileSync(sd2only, JSON.stringify({ text_encoder_3: {} }));
      const bad = cli(['generate', '--model', file, '--tokenizer', tok, '--config', sd2only, ...common, '--out', join(dir, 'bad.png')]);
      expect(bad.status).toBe(1);
      expect(bad.stderr).toMatch(/unknown component "text_encoder_3" \(unet, vae, text_encoder, text_encoder_2, scheduler\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 480_000);
});
