// Hostile review of the modern families (issue #13): cases a user can hit that the reference tests
// do not. Each test failed before its fix.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { getEngine } from './helpers.js';
import { buildTinySdxlFolder, buildTinySdxlSingleFile, readSdxlManifest } from './tiny_sdxl.js';
import { StableDiffusionPipeline, StableDiffusionXLPipeline, type Engine } from '../src/index.js';
import { familyConflict } from '../src/cli/families.js';
import { parseGenerateArgs, UsageError } from '../src/cli/main.js';

const m = readSdxlManifest();

let engine: Engine;
let root: string;
beforeAll(async () => {
  engine = await getEngine();
  root = mkdtempSync(join(tmpdir(), 'hostile-'));
  buildTinySdxlFolder(join(root, 'sdxl'), 'base', m);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('StableDiffusionXLPipeline.generate: options it used to accept silently', () => {
  let pipe: StableDiffusionXLPipeline;
  beforeAll(async () => {
    pipe = await StableDiffusionXLPipeline.fromPretrained(engine, join(root, 'sdxl'));
  });
  afterAll(() => pipe.dispose());

  it('strength out of (0, 1] without an image, and an empty prompt list, are refused before allocating', async () => {
    const before = engine.memory().inUseBytes;
    const small = { steps: 2, width: 16, height: 16, prompt: 'a cat' };
    await expect(pipe.generate({ ...small, strength: 1.5 })).rejects.toThrow(/strength must be in \(0, 1\]/);
    await expect(pipe.generate({ ...small, strength: NaN })).rejects.toThrow(/strength must be in \(0, 1\]/);
    await expect(pipe.generate({ ...small, prompt: [] })).rejects.toThrow(/StableDiffusionXLPipeline.generate: prompt is an empty list/);
    expect(engine.memory().inUseBytes).toBe(before);
  });

  it('clipSkip past the encoders\' layers is refused by name before allocating; encodePrompt checks clipSkip and empty lists too', async () => {
    const before = engine.memory().inUseBytes;
    const max = Math.min(pipe.textEncoder!.shape.layers, pipe.textEncoder2!.shape.layers) - 1;
    await expect(pipe.generate({ steps: 2, width: 16, height: 16, prompt: 'a', clipSkip: max + 1 })).rejects.toThrow(new RegExp(`clipSkip must be an integer in \\[0, ${max}\\]`));
    // encodePrompt used to take a negative clipSkip as a later hidden state, silently
    expect(() => pipe.encodePrompt(['a'], undefined, -1)).toThrow(/clipSkip must be an integer in/);
    expect(() => pipe.encodePrompt([])).toThrow(/StableDiffusionXLPipeline.encodePrompt: no prompts/);
    expect(engine.memory().inUseBytes).toBe(before);
  });
});

describe('StableDiffusionPipeline.generate: an empty prompt list', () => {
  it('is refused by name before allocating (it failed inside CLIPTextModel.forward)', async () => {
    buildTinySdxlFolder(join(root, 'sd_lcm'), 'sd_lcm', m);
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, join(root, 'sd_lcm'));
    const before = engine.memory().inUseBytes;
    await expect(pipe.generate({ steps: 2, width: 16, height: 16, prompt: [] })).rejects.toThrow(/StableDiffusionPipeline.generate: prompt is an empty list/);
    expect(engine.memory().inUseBytes).toBe(before);
    pipe.dispose();
  });
});

describe('generate --family that contradicts the folder', () => {
  const sd = { _class_name: 'StableDiffusionPipeline', unet: ['diffusers', 'UNet2DConditionModel'] };
  const xl = { _class_name: 'StableDiffusionXLPipeline', unet: ['diffusers', 'UNet2DConditionModel'] };
  const ldm = { _class_name: 'LDMPipeline' };
  const lcmUnet = { time_cond_proj_dim: 256 };

  it('is refused, naming what the folder is (it used to run with the wrong defaults: --family lcm ran classifier-free guidance 8.5 on an ordinary UNet)', () => {
    expect(familyConflict('lcm', xl, {})).toMatch(/--family lcm is for LCM-distilled UNets \(time_cond_proj_dim in unet\/config\.json\).*--family lcm-lora --lora/);
    expect(familyConflict('sdxl', sd, {})).toMatch(/--family sdxl is for StableDiffusionXLPipeline folders; this one is a StableDiffusionPipeline/);
    expect(familyConflict('sd1', xl, {})).toMatch(/this one is a StableDiffusionXLPipeline: --family sdxl/);
    expect(familyConflict('sd2', xl, {})).toMatch(/--family sdxl/);
    expect(familyConflict('ldm', sd, {})).toMatch(/--family ldm is for LDMPipeline folders/);
    expect(familyConflict('sd1', ldm, null)).toMatch(/an LDMPipeline folder: --family ldm/);
  });

  it('what fits passes: turbo and LCM-LoRA over SD and SDXL, lcm over an LCM UNet, sd1/sd2 over each other', () => {
    for (const [f, index, unet] of [
      ['sd-turbo', sd, {}], ['sd-turbo', xl, {}], ['lcm-lora', sd, {}], ['lcm-lora', xl, {}], ['lcm', sd, lcmUnet], ['lcm', xl, lcmUnet],
      ['lcm', { ...sd, _class_name: 'LatentConsistencyModelPipeline' }, lcmUnet], ['sd1', sd, {}], ['sd2', sd, {}], ['sdxl', xl, {}], ['ldm', ldm, null],
    ] as const) {
      expect(familyConflict(f, index, unet), `${f} over ${index._class_name}`).toBeNull();
    }
  });

  it('the command line stops before loading anything, exit code 1', () => {
    const root2 = resolve(import.meta.dirname, '..');
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(root2, 'src/cli/main.ts'), 'generate', '--model', join(root, 'sdxl'), '--family', 'lcm', '--prompt', 'a', '--out', join(root, 'x.png')], { cwd: root2, encoding: 'utf8', timeout: 120_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--family lcm is for LCM-distilled UNets/);
    expect(r.stderr).not.toMatch(/adapter:/);
  }, 120_000);
});

describe('a folder of the other Stable Diffusion pipeline', () => {
  it('is refused from model_index.json before any weight loads, naming the class to use', async () => {
    buildTinySdxlFolder(join(root, 'sd_lcm'), 'sd_lcm', m);
    const loaded: string[] = [];
    const onComponentProgress = (c: string) => void loaded.push(c);
    const before = engine.memory().inUseBytes;
    await expect(StableDiffusionPipeline.fromPretrained(engine, join(root, 'sdxl'), { onComponentProgress })).rejects.toThrow(/model_index\.json names StableDiffusionXLPipeline: load it with StableDiffusionXLPipeline/);
    await expect(StableDiffusionXLPipeline.fromPretrained(engine, join(root, 'sd_lcm'), { onComponentProgress })).rejects.toThrow(/model_index\.json names StableDiffusionPipeline: load it with StableDiffusionPipeline/);
    expect(loaded).toEqual([]);
    expect(engine.memory().inUseBytes).toBe(before);
  });

  it('an SDXL UNet given to StableDiffusionPipeline is named as such (the text width check used to speak first)', async () => {
    const xl = await StableDiffusionXLPipeline.fromPretrained(engine, join(root, 'sdxl'));
    try {
      expect(() => new StableDiffusionPipeline({ vae: xl.vae, unet: xl.unet, scheduler: xl.scheduler, textEncoder: xl.textEncoder, tokenizer: xl.tokenizer })).toThrow(/this is an SDXL UNet \(addition_embed_type "text_time"\)/);
    } finally {
      xl.dispose();
    }
  });
});

describe('load(path): what the path names', () => {
  it('a .SAFETENSORS name, or a URL with ?download=true, is a single file; a pickle .ckpt is refused by name (all were read as folders)', async () => {
    const file = join(root, 'SDXL.SAFETENSORS');
    writeFileSync(file, buildTinySdxlSingleFile('base', m));
    // the single-file path: it reaches the tokenizer check, which only single files have
    const configs = { unetConfig: m.configs.unet, vaeConfig: m.configs.vae, textEncoderConfig: m.configs.text_encoder, textEncoder2Config: m.configs.text_encoder_2 };
    await expect(StableDiffusionXLPipeline.load(engine, file, configs as never)).rejects.toThrow(/single files carry no tokenizer/);
    const fetch = (async () => new Response(new Uint8Array(0), { status: 404 })) as typeof globalThis.fetch;
    await expect(StableDiffusionXLPipeline.load(engine, 'https://example.com/m.safetensors?download=true', { fetch })).rejects.toThrow(/m\.safetensors\?download=true/);
    await expect(StableDiffusionXLPipeline.load(engine, 'https://example.com/m.safetensors?download=true', { fetch })).rejects.not.toThrow(/model_index/);
    for (const load of [StableDiffusionPipeline.load, StableDiffusionXLPipeline.load]) {
      await expect(load(engine, join(root, 'v1-5-pruned.ckpt'))).rejects.toThrow(/v1-5-pruned\.ckpt: a pickle checkpoint .*\.safetensors/);
    }
  });
});

describe('generate --model with a file name', () => {
  it('a pickle .ckpt is a usage error pointing at .safetensors and --ckpt; a .safetensors URL with a query is a single file', () => {
    expect(() => parseGenerateArgs(['--model', 'v1-5-pruned-emaonly.ckpt', '--prompt', 'a'])).toThrow(UsageError);
    expect(() => parseGenerateArgs(['--model', 'v1-5-pruned-emaonly.ckpt', '--prompt', 'a'])).toThrow(/pickle checkpoint.*\.safetensors.*--ckpt/);
    expect(parseGenerateArgs(['--model', 'https://example.com/v1-5.safetensors?download=true', '--tokenizer', 'tok', '--prompt', 'a'])).toMatchObject({ tokenizer: 'tok' });
  });
});

describe('an SDXL base folder without text_encoder', () => {
  it('says the base UNet needs both encoders (it said "the text encoders give 48 = 48-wide")', async () => {
    const xl = await StableDiffusionXLPipeline.fromPretrained(engine, join(root, 'sdxl'));
    try {
      expect(() => new StableDiffusionXLPipeline({ vae: xl.vae, unet: xl.unet, scheduler: xl.scheduler, textEncoder2: xl.textEncoder2, tokenizer2: xl.tokenizer2 })).toThrow(
        /text_encoder_2 alone gives 48-wide embeddings but the UNet cross-attends to 80: this UNet needs text_encoder too \(32 \+ 48; only the refiner/,
      );
    } finally {
      xl.dispose();
    }
  });
});
