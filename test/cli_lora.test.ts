// `ldm-webgpu generate --lora FILE[:SCALE]` (repeatable): argument parsing, and a run on the tiny SD
// folder with a kohya LoRA built from the lora fixture's manifest (the merge itself is test/lora.test.ts').
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseGenerateArgs, loraArg, UsageError } from '../src/cli/main.js';
import { readGenerationParameters } from '../src/image/png_metadata.js';
import { buildTinySdFolder } from './tiny_sd.js';
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
});
