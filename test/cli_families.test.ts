// `generate --family`: each family's defaults (steps, guidance, sampler) fill what the command line
// leaves out, the family of a folder is guessed when not given, and the sampler presets (SD-Turbo's
// trailing ancestral Euler, Karras sigmas) set their options over the model's scheduler config.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PNG } from 'pngjs';
import { parseGenerateArgs, UsageError } from '../src/cli/main.js';
import { detectFamily, FAMILIES, FAMILY_NAMES } from '../src/cli/families.js';
import { createScheduler } from '../src/index.js';
import { readGenerationParameters, readTextChunks } from '../src/image/png_metadata.js';
import { buildSd2SingleFile, buildTinySd2Folder, readSd2Manifest } from './tiny_sd2.js';
import { FIXTURES } from './fixture.js';
import { buildTinySdxlFolder, buildTinySdxlSingleFile, readSdxlManifest } from './tiny_sdxl.js';

const root = resolve(import.meta.dirname, '..');
const cli = (args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), ...args], { cwd: root, encoding: 'utf8', timeout: 240_000 });

const SD_SCHED = { _class_name: 'PNDMScheduler', beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', steps_offset: 1, skip_prk_steps: true };

describe('--family defaults', () => {
  it('fills steps, guidance and sampler from the family; flags given win', () => {
    expect(parseGenerateArgs(['--prompt', 'a', '--family', 'sd-turbo'])).toMatchObject({ family: 'sd-turbo', steps: 1, guidance: 0, sampler: 'euler_a_trailing' });
    expect(parseGenerateArgs(['--prompt', 'a', '--family', 'sd-turbo', '--steps', '4', '--guidance', '1.5', '--sampler', 'euler'])).toMatchObject({ steps: 4, guidance: 1.5, sampler: 'euler' });
    expect(parseGenerateArgs(['--prompt', 'a', '--family', 'lcm'])).toMatchObject({ steps: 4, guidance: 8.5, sampler: 'lcm' });
    expect(parseGenerateArgs(['--prompt', 'a', '--family', 'sdxl'])).toMatchObject({ steps: 20, guidance: 5, sampler: undefined });
    expect(parseGenerateArgs(['--prompt', 'a', '--family', 'sd2'])).toMatchObject({ steps: 20, guidance: 7.5 });
    // an LDM keeps its own guidance default (3 with class labels, else 1)
    expect(parseGenerateArgs(['--class', '3', '--family', 'ldm'])).toMatchObject({ steps: 20, guidance: undefined });
    // without --family nothing is decided yet: generate guesses the family from the folder
    expect(parseGenerateArgs(['--prompt', 'a']).steps).toBeUndefined();
    for (const f of FAMILY_NAMES) expect(FAMILIES[f].steps, f).toBeGreaterThan(0);
  });

  it('single files: --tokenizer, --config and --prediction-type go with a .safetensors --model only', () => {
    expect(parseGenerateArgs(['--model', 'sd21.safetensors', '--prompt', 'a', '--tokenizer', 'tok', '--config', 'c.json', '--prediction-type', 'epsilon'])).toMatchObject({ tokenizer: 'tok', config: 'c.json', predictionType: 'epsilon' });
    expect(() => parseGenerateArgs(['--model', 'folder', '--prompt', 'a', '--tokenizer', 'tok'])).toThrow(/--tokenizer applies to/);
    expect(() => parseGenerateArgs(['--model', 'folder', '--prompt', 'a', '--prediction-type', 'epsilon'])).toThrow(/--prediction-type applies to/);
    expect(() => parseGenerateArgs(['--model', 'm.safetensors', '--prompt', 'a', '--prediction-type', 'sample'])).toThrow(/epsilon or v_prediction/);
    expect(() => parseGenerateArgs(['--model', 'folder', '--config', 'c.json'])).toThrow(UsageError);
    expect(() => parseGenerateArgs(['--model', 'm.safetensors', '--class', '3'])).toThrow(/--prompt, not --class/);
  });

  it('refuses unknown families, LCM-LoRA without a LoRA, and SD families on --ckpt', () => {
    expect(() => parseGenerateArgs(['--family', 'sd3'])).toThrow(/--family must be one of sd1, sd2, sdxl, sd-turbo, lcm, lcm-lora, ldm/);
    expect(() => parseGenerateArgs(['--prompt', 'a', '--family', 'lcm-lora'])).toThrow(UsageError);
    expect(() => parseGenerateArgs(['--prompt', 'a', '--family', 'lcm-lora'])).toThrow(/needs --lora/);
    expect(parseGenerateArgs(['--prompt', 'a', '--family', 'lcm-lora', '--lora', 'lcm.safetensors'])).toMatchObject({ steps: 4, guidance: 1, sampler: 'lcm', loras: [{ source: 'lcm.safetensors', scale: 1 }] });
    expect(() => parseGenerateArgs(['--ckpt', 'm.ckpt', '--config', 'c.yaml', '--family', 'sd1'])).toThrow(/--family ldm/);
  });

  it('guesses the family of a folder from its configs', () => {
    const sd = { _class_name: 'StableDiffusionPipeline', unet: ['diffusers', 'UNet2DConditionModel'] };
    expect(detectFamily(sd, SD_SCHED, { cross_attention_dim: 768 })).toBe('sd1');
    expect(detectFamily(sd, SD_SCHED, { cross_attention_dim: 1024, use_linear_projection: true })).toBe('sd2');
    expect(detectFamily(sd, { ...SD_SCHED, _class_name: 'DDIMScheduler', prediction_type: 'v_prediction' }, { cross_attention_dim: 1024 })).toBe('sd2');
    expect(detectFamily(sd, { ...SD_SCHED, _class_name: 'EulerDiscreteScheduler', timestep_spacing: 'trailing' }, { cross_attention_dim: 1024 })).toBe('sd-turbo');
    expect(detectFamily({ _class_name: 'StableDiffusionXLPipeline' }, { ...SD_SCHED, _class_name: 'EulerAncestralDiscreteScheduler', timestep_spacing: 'trailing' }, null)).toBe('sd-turbo');
    expect(detectFamily({ _class_name: 'StableDiffusionXLPipeline' }, { ...SD_SCHED, _class_name: 'EulerDiscreteScheduler', timestep_spacing: 'leading' }, { cross_attention_dim: 2048 })).toBe('sdxl');
    expect(detectFamily(sd, { ...SD_SCHED, _class_name: 'LCMScheduler' }, { cross_attention_dim: 768, time_cond_proj_dim: 256 })).toBe('lcm');
    // an LCM scheduler over an ordinary UNet: LCM-LoRA fused in (guidance 1, not the embedded 8.5)
    expect(detectFamily(sd, { ...SD_SCHED, _class_name: 'LCMScheduler' }, { cross_attention_dim: 768 })).toBe('lcm-lora');
    expect(detectFamily({ _class_name: 'LatentConsistencyModelPipeline' }, SD_SCHED, { cross_attention_dim: 768, time_cond_proj_dim: 256 })).toBe('lcm');
    expect(detectFamily({ _class_name: 'LDMPipeline' }, { _class_name: 'DDIMScheduler' }, null)).toBe('ldm');
  });
});

describe('sampler presets', () => {
  it('euler_a_trailing is ancestral Euler from t = 999 (SD-Turbo), on the model betas', () => {
    const s = createScheduler(SD_SCHED, 'euler_a_trailing');
    expect(s.className).toBe('EulerAncestralDiscreteScheduler');
    s.setTimesteps(1);
    expect([...s.timesteps]).toEqual([999]);
    s.setTimesteps(4);
    expect([...s.timesteps]).toEqual([999, 749, 499, 249]);
    // the plain alias keeps the config's spacing (none given: Euler's linspace): 1 step runs at t = 0
    const plain = createScheduler(SD_SCHED, 'euler_a');
    plain.setTimesteps(1);
    expect([...plain.timesteps]).toEqual([0]);
    expect(createScheduler(SD_SCHED, 'dpm++2m_karras').config.use_karras_sigmas).toBe(true);
    expect(createScheduler(SD_SCHED, 'EULER_TRAILING').className).toBe('EulerDiscreteScheduler');
    expect(() => createScheduler(SD_SCHED, 'euler_a_leadin')).toThrow(/euler_a_trailing/);
  });
});

describe('generate picks the family', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'cli-family-'));
    buildTinySd2Folder(join(dir, 'sd2'), 'ddim', readSd2Manifest());
    buildTinySdxlFolder(join(dir, 'sdxl'), 'base', readSdxlManifest());
    // an LCM_Dreamshaper-style folder: SD components, an LCM-distilled UNet, LCMScheduler
    buildTinySdxlFolder(join(dir, 'lcm'), 'sd_lcm', readSdxlManifest());
    const index = join(dir, 'lcm', 'model_index.json');
    writeFileSync(index, JSON.stringify({ ...JSON.parse(readFileSync(index, 'utf8')), _class_name: 'LatentConsistencyModelPipeline' }));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('guesses SD 2.x from the folder, and runs it as SD-Turbo with --family sd-turbo (1 step, guidance off)', () => {
    const a = join(dir, 'a.png');
    const r = cli(['generate', '--model', join(dir, 'sd2'), '--prompt', 'a red cube', '--steps', '2', '--width', '32', '--height', '32', '--out', a]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/family: sd2 \(guessed from the folder; --family to change\): 2 steps, guidance 7.5, sampler the model's own/);
    expect(readGenerationParameters(readFileSync(a))?.params).toMatchObject({ steps: 2, guidanceScale: 7.5 });

    const b = join(dir, 'b.png');
    const t = cli(['generate', '--model', join(dir, 'sd2'), '--family', 'sd-turbo', '--prompt', 'a red cube', '--width', '32', '--height', '32', '--out', b]);
    expect(t.status, t.stderr).toBe(0);
    expect(t.stderr).toMatch(/family: sd-turbo: 1 step, guidance 0 \(off\), sampler euler_a_trailing/);
    const png = readFileSync(b);
    expect(readGenerationParameters(png)?.params).toMatchObject({ steps: 1, guidanceScale: 0, sampler: 'euler_a_trailing' });
    expect([PNG.sync.read(png).width, PNG.sync.read(png).height]).toEqual([32, 32]);
    // --from reruns exactly what the PNG says (no family defaults added) to the same bytes
    const c = join(dir, 'c.png');
    const f = cli(['generate', '--from', b, '--out', c]);
    expect(f.status, f.stderr).toBe(0);
    expect(f.stderr).not.toMatch(/family:/);
    expect(readFileSync(c).equals(png)).toBe(true);
  }, 240_000);

  it('runs an SDXL folder (family sdxl guessed: guidance 5)', () => {
    const a = join(dir, 'xl.png');
    const r = cli(['generate', '--model', join(dir, 'sdxl'), '--prompt', 'a red cube', '--steps', '2', '--width', '32', '--height', '32', '--out', a]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/family: sdxl \(guessed from the folder; --family to change\): 2 steps, guidance 5, sampler the model's own/);
    const png = readFileSync(a);
    expect(readGenerationParameters(png)?.params).toMatchObject({ steps: 2, guidanceScale: 5 });
    expect([PNG.sync.read(png).width, PNG.sync.read(png).height]).toEqual([32, 32]);
  }, 240_000);

  it('runs a LatentConsistencyModelPipeline folder as family lcm (4 steps, guidance 8.5 embedded by the UNet)', () => {
    const a = join(dir, 'lcm.png');
    const r = cli(['generate', '--model', join(dir, 'lcm'), '--prompt', 'a red cube', '--width', '32', '--height', '32', '--out', a]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/family: lcm \(guessed from the folder; --family to change\): 4 steps, guidance 8.5, sampler lcm/);
    expect(readGenerationParameters(readFileSync(a))?.params).toMatchObject({ steps: 4, guidanceScale: 8.5, sampler: 'lcm' });
  }, 240_000);

  it('runs an SD 2.x single file (family sd2 from its OpenCLIP keys, SD 2.1 scheduler), with the SD 1.x tokenizer folder', () => {
    const file = join(dir, 'sd21-tiny.safetensors');
    writeFileSync(file, buildSd2SingleFile(readSd2Manifest()));
    const m = readSd2Manifest();
    const configs = join(dir, 'configs.json');
    // the tiny sizes; the scheduler is left to the SD 2.1 default (DDIM, v_prediction)
    writeFileSync(configs, JSON.stringify({ unet: m.configs.unet, vae: m.configs.vae, text_encoder: m.configs.text_encoder }));
    const tok = join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14');
    const a = join(dir, 'single.png');
    const args = ['generate', '--model', file, '--tokenizer', tok, '--config', configs, '--prompt', 'a red cube', '--steps', '2', '--width', '32', '--height', '32', '--out', a];
    const r = cli(args);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/family: sd2 \(guessed from the file's keys; --family to change\): 2 steps, guidance 7.5/);
    const png = readFileSync(a);
    expect(readGenerationParameters(png)?.params).toMatchObject({ steps: 2, guidanceScale: 7.5, width: 32, height: 32 });
    expect(readTextChunks(png).parameters).toMatch(/Sampler: DDIM/);
    // without a tokenizer the prompt cannot be read: said before anything loads
    const n = cli(args.filter((x, i) => x !== '--tokenizer' && args[i - 1] !== '--tokenizer'));
    expect(n.status).toBe(1);
    expect(n.stderr).toMatch(/holds no tokenizer: add --tokenizer/);
    // the SD 2.1 default configs do not fit the tiny file: the loader names the tensor
    const d = cli(args.filter((x, i) => x !== '--config' && args[i - 1] !== '--config'));
    expect(d.status).toBe(1);
    expect(d.stderr).toMatch(/shape/);
  }, 240_000);

  it('SDXL single files are told by their sgm keys before anything loads: a refiner asks for --init-image and with it refines as the refiner folder, a wrong --family is refused', () => {
    const refiner = join(dir, 'refiner-tiny.safetensors');
    writeFileSync(refiner, buildTinySdxlSingleFile('refiner', readSdxlManifest()));
    const tok = join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14');
    const r = cli(['generate', '--model', refiner, '--tokenizer', tok, '--prompt', 'a red cube', '--out', join(dir, 'r.png')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/is an SDXL refiner \(StableDiffusionXLImg2ImgPipeline\): it refines an image: give --init-image/);
    // with --init-image it refines as the refiner folder does, pixel for pixel
    const m = readSdxlManifest();
    const { unet_refiner, vae, text_encoder_2, scheduler } = m.configs;
    const configs = join(dir, 'refiner-configs.json');
    writeFileSync(configs, JSON.stringify({ unet: unet_refiner, vae, text_encoder_2, scheduler: { _class_name: 'EulerDiscreteScheduler', ...scheduler } }));
    const init = new PNG({ width: 32, height: 32 });
    for (let i = 0; i < init.data.length; i++) init.data[i] = i % 4 === 3 ? 255 : (i * 37) % 256;
    writeFileSync(join(dir, 'init.png'), PNG.sync.write(init));
    const folder = join(dir, 'refiner-folder');
    buildTinySdxlFolder(folder, 'refiner', m);
    const img2img = ['--init-image', join(dir, 'init.png'), '--prompt', 'a red cube', '--steps', '4', '--seed', '3'];
    const a = cli(['generate', '--model', refiner, '--tokenizer', tok, '--config', configs, ...img2img, '--out', join(dir, 'ra.png')]);
    expect(a.status, a.stderr).toBe(0);
    const b = cli(['generate', '--model', folder, ...img2img, '--out', join(dir, 'rb.png')]);
    expect(b.status, b.stderr).toBe(0);
    const px = (f: string) => PNG.sync.read(readFileSync(join(dir, f))).data;
    expect(px('ra.png').equals(px('rb.png'))).toBe(true);
    expect(px('ra.png').equals(PNG.sync.read(PNG.sync.write(init)).data)).toBe(false);
    const base = join(dir, 'base-tiny.safetensors');
    writeFileSync(base, buildTinySdxlSingleFile('base', readSdxlManifest()));
    const f = cli(['generate', '--model', base, '--tokenizer', tok, '--prompt', 'a red cube', '--family', 'sd1', '--out', join(dir, 'f.png')]);
    expect(f.status).toBe(1);
    expect(f.stderr).toMatch(/--family sd1 is for StableDiffusionPipeline folders; .*StableDiffusionXLPipeline.*--family sdxl/);
    expect(f.stderr).not.toMatch(/adapter:/); // refused before the engine started
  }, 240_000);
});
