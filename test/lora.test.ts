// LoRA merged at load (src/loaders/lora.ts) vs diffusers 0.31 + peft (tools/pyref/gen_lora.py): merged
// weights of the tiny SD UNet and CLIP text encoder for PEFT, kohya and original-numbering (SGM) kohya
// files (linear, 1x1 and 3x3 conv layers), two LoRAs with their scales, whole pipelines (DDIM, and an
// LCM-LoRA-shaped file with LCMScheduler at 4 steps, guidance 1.5), errors and the ignored-keys report.
// The LoRA files are built here from test/seeded.ts with the keys and shapes case.json lists.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StableDiffusionPipeline, StableDiffusionXLPipeline, WeightSource, LoraMerger, LoraError, loadWithLoras, UNet2DConditionModel, type LoraSpec } from '../src/index.js';
import { getEngine, relL2, track, reportWorst } from './helpers.js';
import { FIXTURES, readSafetensorsFile, loadCase } from './fixture.js';
import { seededSafetensors, seededValues, type ManifestEntry } from './seeded.js';
import { buildTinySdFolder } from './tiny_sd.js';
import { buildTinySdxlFolder, buildTinySdxlSingleFile, readSdxlManifest } from './tiny_sdxl.js';
import { singleFileComponent } from '../src/loaders/single_file_keys.js';

afterAll(() => reportWorst('lora'));

const DIR = join(FIXTURES, 'lora');
interface CaseJson {
  prompt: string;
  prompt_ids: number[];
  files: Record<string, ManifestEntry[]>;
  cases: Record<string, { loras: { file: string; scale: number }[]; weights?: string[]; scheduler?: string; steps?: number; guidance_scale?: number; seed?: number; timesteps?: number[] }>;
}
const meta = JSON.parse(readFileSync(join(DIR, 'case.json'), 'utf8')) as CaseJson;
const refs = readSafetensorsFile(join(DIR, 'refs.safetensors'));
const fileBytes = new Map<string, Uint8Array>();
function loraBytes(name: string): Uint8Array {
  if (!fileBytes.has(name)) fileBytes.set(name, seededSafetensors(meta.files[name]));
  return fileBytes.get(name)!;
}
const specs = (c: { loras: { file: string; scale: number }[] }): LoraSpec[] => c.loras.map((l) => ({ source: loraBytes(l.file), scale: l.scale, label: l.file }));

const sd = loadCase('pipelines/txt2img_cfg_ddim');
const unetConfig = (sd.config as Record<string, Record<string, unknown>>).unet;
const sdBytes = readFileSync(join(sd.dir, 'weights.safetensors'));
const teBytes = readFileSync(join(FIXTURES, 'clip_text', 'quick_gelu', 'model.safetensors'));
const bases = () => ({ unet: WeightSource.fromBytes(sdBytes, 'unet').withPrefix('unet.'), text_encoder: WeightSource.fromBytes(teBytes, 'te') });

/** Merged f32 weights of `names` (component.module.weight) through the merger's wrapped sources. */
async function mergedWeights(loras: LoraSpec[], names: string[]): Promise<Map<string, Float32Array>> {
  const engine = await getEngine();
  const merger = await LoraMerger.open(loras);
  const b = bases();
  const src = { unet: merger.wrap('unet', b.unet, unetConfig), text_encoder: merger.wrap('text_encoder', b.text_encoder) };
  const out = new Map<string, Float32Array>();
  for (const n of names) {
    const [comp, ...rest] = n.split('.');
    const name = rest.join('.');
    const s = src[comp as 'unet' | 'text_encoder'];
    const t = await s.upload(engine, name, s.info(name)!.shape, { dtype: 'f32' });
    out.set(n, (await t.read()) as Float32Array);
    t.dispose();
  }
  await merger.close();
  return out;
}

describe('LoRA merge = diffusers fuse_lora (W + scale * alpha / rank * up @ down)', () => {
  for (const c of ['peft', 'kohya', 'sgm', 'two']) {
    it(`merge/${c}: every merged layer (linear, 1x1 and 3x3 conv; UNet and text encoder)`, async () => {
      const cs = meta.cases[`merge/${c}`];
      const got = await mergedWeights(specs(cs), cs.weights!);
      const b = bases();
      for (const n of cs.weights!) {
        const ref = refs[`merge/${c}/${n}`].data;
        expect(track(`merge/${c}`, relL2(got.get(n)!, ref)), n).toBeLessThan(1e-6);
        // the LoRA changed the weight (so the check above can fail)
        const [comp, ...rest] = n.split('.');
        const base = await b[comp as 'unet' | 'text_encoder'].readF32(rest.join('.'));
        expect(relL2(base, ref), n).toBeGreaterThan(1e-2);
      }
      expect(cs.weights!.some((n) => refs[`merge/${c}/${n}`].shape.length === 4 && refs[`merge/${c}/${n}`].shape[2] === 3)).toBe(true);
    });
  }

  it('older diffusers names (lora.down / processor to_q_lora / lora_linear_layer) merge like PEFT ones', async () => {
    const entries = meta.files.peft.map((e) => {
      let key = e.key.replace('.lora_A.weight', '.lora.down.weight').replace('.lora_B.weight', '.lora.up.weight');
      key = key
        .replace(/\.attn1\.to_q\.lora\./, '.attn1.processor.to_q_lora.')
        .replace(/\.attn1\.to_out\.0\.lora\./, '.attn1.processor.to_out_lora.')
        .replace(/\.self_attn\.q_proj\.lora\./, '.self_attn.to_q_lora.')
        .replace(/\.self_attn\.out_proj\.lora\./, '.self_attn.to_out_lora.')
        .replace(/\.mlp\.fc1\.lora\./, '.mlp.fc1.lora_linear_layer.');
      return { key, shape: e.shape, values: Array.from(readSeeded(e)) };
    });
    expect(entries.some((e) => e.key.includes('processor.to_out_lora'))).toBe(true);
    expect(entries.some((e) => e.key.includes('self_attn.to_q_lora'))).toBe(true);
    const cs = meta.cases['merge/peft'];
    const got = await mergedWeights([{ source: seededSafetensors(entries), scale: 0.8 }], cs.weights!);
    for (const n of cs.weights!) expect(track('merge/old-diffusers', relL2(got.get(n)!, refs[`merge/peft/${n}`].data)), n).toBeLessThan(1e-6);
  });

  it("PEFT files without component prefixes (base_model.model.*) are UNet LoRAs; the spec's alpha replaces alpha = rank", async () => {
    const cs = meta.cases['merge/peft'];
    const unetOnly = meta.files.peft
      .filter((e) => e.key.startsWith('unet.'))
      .map((e) => ({ key: `base_model.model.${e.key.slice('unet.'.length)}`, shape: e.shape, values: Array.from(readSeeded(e)) }));
    const names = cs.weights!.filter((n) => n.startsWith('unet.'));
    // scale 0.4 with alpha 8 (rank 4) = scale 0.8 with alpha = rank
    const got = await mergedWeights([{ source: seededSafetensors(unetOnly), scale: 0.4, alpha: 8 }], names);
    for (const n of names) expect(track('merge/peft-unprefixed', relL2(got.get(n)!, refs[`merge/peft/${n}`].data)), n).toBeLessThan(1e-6);
  });

  it('merge/peft_mixed: PEFT without alpha, ranks 2/4/8 mixed: alpha = the first rank as diffusers takes it (UNet by sorted key, text encoder by module order)', async () => {
    const cs = meta.cases['merge/peft_mixed'];
    const mixed = readSafetensorsFile(join(DIR, 'peft_mixed_refs.safetensors'));
    // written in reverse order: the first layer is found by diffusers' order, not the file's
    const entries = [...meta.files.peft_mixed].reverse();
    const rank = (n: string) => entries.find((e) => e.key === `${n.slice(0, -'.weight'.length)}.lora_A.weight`)!.shape[0];
    expect(new Set(cs.weights!.map(rank))).toEqual(new Set([2, 4, 8]));
    const got = await mergedWeights([{ source: seededSafetensors(entries), scale: 0.8 }], cs.weights!);
    for (const n of cs.weights!) expect(track('merge/peft_mixed', relL2(got.get(n)!, mixed[`merge/peft_mixed/${n}`].data)), n).toBeLessThan(1e-6);
    // alpha = each layer's own rank would differ (the check above can fail)
    const own = await mergedWeights([{ source: seededSafetensors(entries), scale: 0.8, alpha: 4 }], cs.weights!);
    const n4 = cs.weights!.find((n) => n.startsWith('unet.') && rank(n) === 4)!;
    expect(relL2(own.get(n4)!, mixed[`merge/peft_mixed/${n4}`].data)).toBeGreaterThan(1e-3);
  });

  it('merge/kohya_partial_alpha: layers without alpha in a kohya file whose others have one take the most common alpha (diffusers)', async () => {
    const cs = meta.cases['merge/kohya_partial_alpha'];
    const mixed = readSafetensorsFile(join(DIR, 'peft_mixed_refs.safetensors'));
    const entries = meta.files.kohya_partial_alpha;
    const downs = entries.filter((e) => e.key.endsWith('lora_down.weight')).length;
    expect(entries.filter((e) => e.key.endsWith('.alpha')).length).toBeLessThan(downs);
    const got = await mergedWeights([{ source: seededSafetensors(entries), scale: 0.8 }], cs.weights!);
    for (const n of cs.weights!) expect(track('merge/kohya_partial_alpha', relL2(got.get(n)!, mixed[`merge/kohya_partial_alpha/${n}`].data)), n).toBeLessThan(1e-6);
  });

  it('legacy UNet-only attention-processor files without any prefix (load_attn_procs format) merge like PEFT ones', async () => {
    const cs = meta.cases['merge/peft'];
    const entries = meta.files.peft
      .filter((e) => e.key.startsWith('unet.'))
      .map((e) => {
        const key = e.key
          .slice('unet.'.length)
          .replace(/\.(attn[12])\.(to_q|to_k|to_v)\.lora_([AB])\.weight$/, (_m, a, p, ab) => `.${a}.processor.${p}_lora.${ab === 'A' ? 'down' : 'up'}.weight`)
          .replace(/\.(attn[12])\.to_out\.0\.lora_([AB])\.weight$/, (_m, a, ab) => `.${a}.processor.to_out_lora.${ab === 'A' ? 'down' : 'up'}.weight`)
          .replace('.lora_A.weight', '.lora.down.weight')
          .replace('.lora_B.weight', '.lora.up.weight');
        return { key, shape: e.shape, values: Array.from(readSeeded(e)) };
      });
    expect(entries.some((e) => /^down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn1\.processor\.to_out_lora\.down\.weight$/.test(e.key))).toBe(true);
    const names = cs.weights!.filter((n) => n.startsWith('unet.'));
    const got = await mergedWeights([{ source: seededSafetensors(entries), scale: 0.8 }], names);
    for (const n of names) expect(track('merge/legacy-attn-procs', relL2(got.get(n)!, refs[`merge/peft/${n}`].data)), n).toBeLessThan(1e-6);
  });

  it('a LoRA in f16 storage merges into an f16 upload', async () => {
    const engine = await getEngine();
    const cs = meta.cases['merge/kohya'];
    const merger = await LoraMerger.open(specs(cs));
    const src = merger.wrap('unet', bases().unet, unetConfig);
    const name = 'down_blocks.0.resnets.0.conv1.weight';
    const t = await src.upload(engine, name, src.info(name)!.shape, { dtype: 'f16' });
    const back = await t.read();
    t.dispose();
    await merger.close();
    expect(relL2(back, refs[`merge/kohya/unet.${name}`].data)).toBeLessThan(1e-3);
  });
});

/** The values of a manifest entry (seeded from its own key). */
function readSeeded(e: ManifestEntry): Float32Array {
  return e.values ? Float32Array.from(e.values) : seededValues(e.key, e.shape);
}

describe('StableDiffusionPipeline with LoRAs vs diffusers (fuse_lora, then the pipeline)', () => {
  let dir = '';
  beforeAll(() => {
    dir = buildTinySdFolder();
  });

  for (const name of ['kohya_ddim', 'two_ddim', 'lcm']) {
    it(`pipe/${name}: latents at every step and the image (f32, rel L2 <= 1e-4)`, async () => {
      const engine = await getEngine();
      const c = meta.cases[`pipe/${name}`];
      const pipe = await StableDiffusionPipeline.fromPretrained(engine, dir, { loras: specs(c) });
      expect(Array.from(pipe.tokenizer!.encode(meta.prompt))).toEqual(meta.prompt_ids);
      const nLayers = c.loras.reduce((s, l) => s + meta.files[l.file].filter((e) => e.key.endsWith('down.weight') || e.key.endsWith('lora_A.weight')).length, 0);
      expect(pipe.loraReport!.applied).toHaveLength(nLayers);
      expect(pipe.loraReport!.ignored).toEqual([]);
      const steps = refs[`pipe/${name}/latents`];
      const per = steps.data.length / steps.shape[0];
      const seen: number[] = [];
      const out = await pipe.generate({
        prompt: meta.prompt,
        negativePrompt: '',
        steps: c.steps,
        guidanceScale: c.guidance_scale,
        seed: c.seed,
        sampler: c.scheduler === 'lcm' ? 'lcm' : undefined,
        onStep: async ({ step, timestep, latents }) => {
          seen.push(timestep);
          const got = await latents.read();
          expect(track(`pipe/${name} latents`, relL2(got, steps.data.subarray((step - 1) * per, step * per))), `step ${step}`).toBeLessThan(1e-4);
        },
      });
      expect(seen).toEqual(c.timesteps);
      const image = await out.images.read();
      expect(track(`pipe/${name} image`, relL2(image, refs[`pipe/${name}/image`].data))).toBeLessThan(1e-4);
      out.images.dispose();
      const loraBytesOnGpu = pipe.unet.parameterBytes + pipe.textEncoder!.parameterBytes;
      pipe.dispose();
      // without the LoRA the same call gives another image: the comparison above sees the LoRA
      if (name === 'lcm') {
        const plain = await StableDiffusionPipeline.fromPretrained(engine, dir);
        expect(plain.loraReport).toBeNull();
        // merging left no extra GPU copy: the merged models hold exactly the plain models' bytes
        expect(plain.unet.parameterBytes + plain.textEncoder!.parameterBytes).toBe(loraBytesOnGpu);
        const o = await plain.generate({ prompt: meta.prompt, negativePrompt: '', steps: c.steps, guidanceScale: c.guidance_scale, seed: c.seed, sampler: 'lcm' });
        expect(relL2(await o.images.read(), refs[`pipe/${name}/image`].data)).toBeGreaterThan(1e-2);
        o.images.dispose();
        plain.dispose();
      }
    });
  }
});

describe('LoRAs that do not fit, and keys left out', () => {
  let dir = '';
  beforeAll(() => {
    dir = buildTinySdFolder();
  });

  /** the kohya file with some entries renamed or reshaped */
  function kohyaWith(edit: (e: ManifestEntry) => ManifestEntry | ManifestEntry[]): Uint8Array {
    return seededSafetensors(meta.files.kohya.flatMap(edit));
  }

  it('unknown layer names: one LoraError naming the first offenders and the count; nothing stays on the GPU', async () => {
    const engine = await getEngine();
    const bad = kohyaWith((e) => (e.key.includes('attn1_to_') ? { ...e, key: e.key.replace('attn1_to_', 'attn9_to_') } : e));
    const before = engine.memory().inUseBytes;
    const err = await StableDiffusionPipeline.fromPretrained(engine, dir, { loras: [{ source: bad, label: 'bad.safetensors' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoraError);
    const le = err as LoraError;
    expect(le.lora).toBe('bad.safetensors');
    expect(le.count).toBe(4);
    expect(le.offenders[0]).toMatch(/attn9_to_/);
    expect(le.message).toMatch(/does not fit the unet/);
    expect(engine.memory().inUseBytes).toBe(before);
  });

  it('shapes that do not fit (a LoRA for a wider model): LoraError with the shapes', async () => {
    const engine = await getEngine();
    const bad = kohyaWith((e) => (e.key.startsWith('lora_te_') && e.key.endsWith('q_proj.lora_down.weight') ? { ...e, shape: [4, 48] } : e));
    const before = engine.memory().inUseBytes;
    const err = await StableDiffusionPipeline.fromPretrained(engine, dir, { loras: [{ source: bad }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoraError);
    expect((err as LoraError).message).toMatch(/\[4, 48\].*do not fit text_encoder\.text_model\.encoder\.layers\.0\.self_attn\.q_proj\.weight \[32, 32\]/);
    expect(engine.memory().inUseBytes).toBe(before);
  });

  it('a 3x3 conv layer given a linear LoRA is refused', async () => {
    const bad = kohyaWith((e) => (e.key === 'lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight' ? { ...e, shape: [4, 16] } : e));
    const merger = await LoraMerger.open([{ source: bad }]);
    expect(() => merger.wrap('unet', bases().unet, unetConfig)).toThrow(/conv1\.lora_down\.weight \(down \[4, 16\]/);
    await merger.close();
  });

  it('incomplete layers, DoRA, and files with no LoRA weights are LoraErrors', async () => {
    const noUp = kohyaWith((e) => (e.key.endsWith('conv1.lora_up.weight') ? [] : e));
    await expect(LoraMerger.open([{ source: noUp }])).rejects.toThrow(/incomplete LoRA layers: lora_unet_down_blocks_0_resnets_0_conv1\.lora_down\.weight \(no up tensor\)/);
    const dora = kohyaWith((e) => (e.key.endsWith('conv1.alpha') ? [e, { key: e.key.replace('.alpha', '.dora_scale'), shape: [16, 1, 1, 1] }] : e));
    await expect(LoraMerger.open([{ source: dora }])).rejects.toThrow(/DoRA/);
    // LyCORIS layers are not up @ down: merging their down/up alone would be wrong
    const mid = kohyaWith((e) => (e.key.endsWith('conv1.alpha') ? [e, { key: e.key.replace('.alpha', '.lora_mid.weight'), shape: [4, 4, 3, 3] }] : e));
    await expect(LoraMerger.open([{ source: mid }])).rejects.toThrow(/LyCORIS layers.*conv1\.lora_mid\.weight/);
    const loha = seededSafetensors(['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b'].map((k) => ({ key: `lora_unet_down_blocks_0_resnets_0_conv1.${k}`, shape: [4, 4] })));
    await expect(LoraMerger.open([{ source: loha }])).rejects.toThrow(/LyCORIS layers \(lora_mid, LoHa hada_\*, LoKr lokr_\*\).*\(4 in all\)|LyCORIS layers/);
    await expect(LoraMerger.open([{ source: seededSafetensors([{ key: 'model.weight', shape: [4, 4] }]) }])).rejects.toThrow(LoraError);
    await expect(LoraMerger.open([{ source: loraBytes('kohya'), scale: Number.NaN }])).rejects.toThrow(/scale must be a finite number/);
  });

  it('NaN/Inf: an alpha fails when the file opens, up/down values fail the load (memory back) or loadLoraWeights (nothing changed)', async () => {
    const engine = await getEngine();
    const nanAlpha = kohyaWith((e) => (e.key.endsWith('conv1.alpha') ? { ...e, values: [Number.NaN] } : e));
    await expect(LoraMerger.open([{ source: nanAlpha }])).rejects.toThrow(/conv1\.alpha \(NaN\).*|an alpha must be one finite number/);
    const withNaN = (): Uint8Array => {
      const entries = meta.files.kohya.map((e) => (e.key.endsWith('conv1.lora_up.weight') ? { ...e, values: Array.from(readSeeded(e), (v, i) => (i === 3 ? Number.POSITIVE_INFINITY : v)) } : e));
      return seededSafetensors(entries);
    };
    const before = engine.memory().inUseBytes;
    const err = await StableDiffusionPipeline.fromPretrained(engine, dir, { loras: [{ source: withNaN() }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoraError);
    expect((err as Error).message).toMatch(/NaN\/Inf values: lora_unet_down_blocks_0_resnets_0_conv1\.lora_up\.weight \(1 of/);
    expect(engine.memory().inUseBytes).toBe(before);
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, dir);
    const w = pipe.unet.parameter('down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight')!;
    const w0 = await w.read();
    await expect(pipe.loadLoraWeights([{ source: withNaN() }])).rejects.toThrow(LoraError);
    expect(relL2(await w.read(), w0)).toBe(0);
    pipe.dispose();
  });

  it('loras must be an array of { source, scale? }; an empty one merges nothing', async () => {
    const engine = await getEngine();
    const before = engine.memory().inUseBytes;
    await expect(StableDiffusionPipeline.fromPretrained(engine, dir, { loras: { source: loraBytes('kohya') } as never })).rejects.toThrow(LoraError);
    await expect(StableDiffusionPipeline.fromPretrained(engine, dir, { loras: [{ source: loraBytes('kohya'), scale: '0.5' as never }] })).rejects.toThrow(/scale must be a finite number/);
    expect(engine.memory().inUseBytes).toBe(before);
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, dir, { loras: [] });
    expect(pipe.loraReport).toEqual({ applied: [], ignored: [] });
    pipe.dispose();
  });

  it('report: keys that are not LoRA weights and components not loaded are listed as ignored', async () => {
    const engine = await getEngine();
    const extra = kohyaWith((e) =>
      e.key === 'lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha'
        ? [e, { key: 'lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight', shape: [4, 32] }, { key: 'lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight', shape: [32, 4] }, { key: 'ss_network_dim', shape: [1] }]
        : e,
    );
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, dir, { loras: [{ source: extra, label: 'x' }] });
    const r = pipe.loraReport!;
    expect(r.applied).toHaveLength(20);
    expect(r.ignored).toEqual(['x: ss_network_dim (not a LoRA weight)', 'x: lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight (no text_encoder_2 loaded)']);
    pipe.dispose();
  });

  it("loadWithLoras: a model's own load with LoRAs merged (the UNet alone; text encoder keys reported as ignored)", async () => {
    const engine = await getEngine();
    const { model, lora } = await loadWithLoras((s) => UNet2DConditionModel.load(engine, unetConfig, s), 'unet', bases().unet, unetConfig, specs(meta.cases['merge/kohya']));
    expect(lora.applied).toHaveLength(14);
    expect(lora.ignored).toHaveLength(6);
    expect(lora.ignored[0]).toMatch(/lora_te_.*\(no text_encoder loaded\)/);
    model.dispose();
  });

  it('original (SGM) numbering: the upsampler at output_blocks.N.1.conv of a block without attention', async () => {
    // diffusers 0.31 maps every output_blocks.N.1 to attentions (so it cannot load this one); the
    // engine picks the layer that exists: up_blocks.0 (UpBlock2D) has its upsampler there
    const engine = await getEngine();
    const e = [
      { key: 'lora_unet_output_blocks_1_1_conv.lora_down.weight', shape: [4, 32, 3, 3] },
      { key: 'lora_unet_output_blocks_1_1_conv.lora_up.weight', shape: [32, 4, 1, 1] },
    ];
    const merger = await LoraMerger.open([{ source: seededSafetensors(e) }]);
    const src = merger.wrap('unet', bases().unet, unetConfig);
    const name = 'up_blocks.0.upsamplers.0.conv.weight';
    const t = await src.upload(engine, name, src.info(name)!.shape, { dtype: 'f32' });
    const got = await t.read();
    t.dispose();
    const base = await bases().unet.readF32(name);
    const down = readSeeded(e[0]);
    const up = readSeeded(e[1]);
    let worst = 0;
    for (let o = 0; o < 32; o++) {
      for (let j = 0; j < 32 * 9; j++) {
        let d = 0;
        for (let r = 0; r < 4; r++) d += up[o * 4 + r] * down[r * 288 + j];
        worst = Math.max(worst, Math.abs(got[o * 288 + j] - (base[o * 288 + j] + d)));
      }
    }
    expect(worst).toBeLessThan(1e-5);
    expect(merger.report().applied).toEqual(['LoRA #1: unet.up_blocks.0.upsamplers.0.conv']);
    await merger.close();
  });
});

describe('LoRAs on a single-file checkpoint', () => {
  it('StableDiffusionPipeline.fromSingleFile({ loras }) merges into the UNet as a diffusers-named load does', async () => {
    const engine = await getEngine();
    const c = loadCase('original_layout/sd_single_file');
    const cfg = c.config as { unet: Record<string, unknown>; vae: Record<string, unknown> };
    const bytes = readFileSync(join(c.dir, 'weights.safetensors'));
    const diffusersNamed = () => singleFileComponent(WeightSource.fromBytes(bytes), 'unet', cfg.unet) as WeightSource;
    // a kohya LoRA (original numbering, so the SGM mapping with layers_per_block 2 is used) on some layers
    const targets = diffusersNamed()
      .names()
      .filter((n) => /(attn1\.to_q|attn2\.to_k|proj_in|resnets\.\d\.conv1)\.weight$/.test(n));
    expect(targets.length).toBeGreaterThan(8);
    const entries: ManifestEntry[] = [
      ...targets.flatMap((n) => {
        const shape = diffusersNamed().info(n)!.shape;
        const stem = `lora_unet_${n.slice(0, -'.weight'.length).replace(/\./g, '_')}`;
        const down = shape.length === 2 ? [4, shape[1]] : [4, shape[1], shape[2], shape[3]];
        const up = shape.length === 2 ? [shape[0], 4] : [shape[0], 4, 1, 1];
        return [
          { key: `${stem}.lora_down.weight`, shape: down },
          { key: `${stem}.lora_up.weight`, shape: up },
          { key: `${stem}.alpha`, shape: [], values: [8] },
        ];
      }),
      // the same layer named with the original numbering: input_blocks.1 = down_blocks.0 layer 0 (attention part 1)
      { key: 'lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_k.lora_down.weight', shape: [4, 16] },
      { key: 'lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_k.lora_up.weight', shape: [16, 4] },
    ];
    const loras = [{ source: seededSafetensors(entries), scale: 0.6, label: 'sf' }];
    const pipe = await StableDiffusionPipeline.fromSingleFile(engine, bytes, { unetConfig: cfg.unet, vaeConfig: cfg.vae, loras });
    expect(pipe.loraReport!.applied).toHaveLength(targets.length + 1);
    expect(pipe.loraReport!.applied).toContain('sf: unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k');
    const { model: ref } = await loadWithLoras((s) => UNet2DConditionModel.load(engine, cfg.unet, s), 'unet', diffusersNamed(), cfg.unet, loras);
    const plain = await UNet2DConditionModel.load(engine, cfg.unet, diffusersNamed());
    const x = engine.tensor(Float32Array.from(c.input('unet.sample').data), c.input('unet.sample').shape);
    const ctx = engine.tensor(Float32Array.from(c.input('unet.encoder_hidden_states').data), c.input('unet.encoder_hidden_states').shape);
    const t = c.input('unet.timestep').data[0];
    const run = async (m: UNet2DConditionModel) => {
      const y = m.forward(x, t, { encoderHiddenStates: ctx });
      const v = await y.read();
      y.dispose();
      return v;
    };
    const [a, b, p] = [await run(pipe.unet), await run(ref), await run(plain)];
    expect(relL2(a, b)).toBeLessThan(1e-6);
    expect(relL2(p, b)).toBeGreaterThan(1e-3);
    [x, ctx].forEach((t) => t.dispose());
    [ref, plain].forEach((m) => m.dispose());
    pipe.dispose();
  });
});

describe('loadLoraWeights: merging into a loaded pipeline in place', () => {
  it('equals the merge at load, a negative scale takes it out again, a LoRA that does not fit changes nothing', async () => {
    const engine = await getEngine();
    const dir = buildTinySdFolder();
    const c = meta.cases['pipe/kohya_ddim'];
    const run = async (p: StableDiffusionPipeline) => {
      const o = await p.generate({ prompt: meta.prompt, negativePrompt: '', steps: c.steps, guidanceScale: c.guidance_scale, seed: c.seed });
      const v = await o.images.read();
      o.images.dispose();
      return v;
    };
    const pipe = await StableDiffusionPipeline.fromPretrained(engine, dir);
    const plain = await run(pipe);
    const q = pipe.unet.parameter('down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight')!;
    const q0 = await q.read();
    const held = engine.memory().inUseBytes;

    const bad = seededSafetensors(meta.files.kohya.map((e) => (e.key.includes('conv1.lora_down') ? { ...e, shape: [4, 16] } : e)));
    await expect(pipe.loadLoraWeights([{ source: bad }])).rejects.toThrow(LoraError);
    expect(relL2(await q.read(), q0)).toBe(0);

    // not while a generate() runs: its steps would mix old and merged weights
    const running = pipe.generate({ prompt: meta.prompt, steps: 2, seed: 1 });
    await expect(pipe.loadLoraWeights(specs(c))).rejects.toThrow(/generate\(\) call\(s\) running/);
    (await running).images.dispose();
    expect(relL2(await q.read(), q0)).toBe(0);

    const r = await pipe.loadLoraWeights(specs(c));
    expect(r.applied).toHaveLength(20);
    expect(engine.memory().inUseBytes).toBe(held); // in place: no new buffers
    expect(track('loadLoraWeights image', relL2(await run(pipe), refs['pipe/kohya_ddim/image'].data))).toBeLessThan(1e-4);

    await pipe.loadLoraWeights(c.loras.map((l) => ({ source: loraBytes(l.file), scale: -l.scale })));
    expect(relL2(await q.read(), q0)).toBeLessThan(1e-6);
    expect(track('loadLoraWeights undone', relL2(await run(pipe), plain))).toBeLessThan(1e-5);
    pipe.dispose();
  });
});

describe('SDXL: kohya original numbering (layers_per_block 2, two-block transformers), lora_te1_/lora_te2_, PEFT text_encoder_2', () => {
  it('merge/sdxl: every merged weight of StableDiffusionXLPipeline.fromPretrained({ loras }) = diffusers', async () => {
    const engine = await getEngine();
    const xrefs = readSafetensorsFile(join(DIR, 'sdxl_refs.safetensors'));
    const dir = mkdtempSync(join(tmpdir(), 'lora-sdxl-'));
    buildTinySdxlFolder(dir, 'base');
    const cs = meta.cases['merge/sdxl'];
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, dir, { loras: specs(cs) });
    const models = { unet: pipe.unet, text_encoder: pipe.textEncoder!, text_encoder_2: pipe.textEncoder2! };
    for (const n of cs.weights!) {
      const [comp, ...rest] = n.split('.');
      const p = models[comp as keyof typeof models].parameter(rest.join('.'));
      expect(p, n).toBeDefined();
      expect(track('merge/sdxl', relL2(await p!.read(), xrefs[`merge/sdxl/${n}`].data)), n).toBeLessThan(1e-6);
    }
    expect(cs.weights!.some((n) => n.startsWith('text_encoder_2.'))).toBe(true);
    expect(cs.weights!).toContain('unet.up_blocks.0.upsamplers.0.conv.weight');
    pipe.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it("kohya lora_te2_text_projection (diffusers' kohya conversion keeps it) and q_proj: folder = formula, single file (bigG transposed projection, in_proj split) = folder", async () => {
    const engine = await getEngine();
    const m = readSdxlManifest();
    const dir = mkdtempSync(join(tmpdir(), 'lora-sdxl-'));
    buildTinySdxlFolder(dir, 'base', m);
    const plain = await StableDiffusionXLPipeline.fromPretrained(engine, dir);
    const names = ['text_projection.weight', 'text_model.encoder.layers.0.self_attn.q_proj.weight'];
    const base = await Promise.all(names.map(async (n) => ({ n, shape: plain.textEncoder2!.parameter(n)!.shape, w: (await plain.textEncoder2!.parameter(n)!.read()) as Float32Array })));
    plain.dispose();
    const entries: ManifestEntry[] = base.flatMap(({ n, shape }) => {
      const stem = `lora_te2_${n.slice(0, -'.weight'.length).replace(/\./g, '_')}`;
      return [
        { key: `${stem}.lora_down.weight`, shape: [4, shape[1]] },
        { key: `${stem}.lora_up.weight`, shape: [shape[0], 4] },
        { key: `${stem}.alpha`, shape: [], values: [2] },
      ];
    });
    const loras = [{ source: seededSafetensors(entries), scale: 0.5 }];
    const a = await StableDiffusionXLPipeline.fromPretrained(engine, dir, { loras });
    const b = await StableDiffusionXLPipeline.fromSingleFile(engine, buildTinySdxlSingleFile('base', m), {
      unetConfig: m.configs.unet,
      vaeConfig: m.configs.vae,
      textEncoderConfig: m.configs.text_encoder,
      textEncoder2Config: m.configs.text_encoder_2,
      tokenizer: join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14'),
      loras,
    });
    try {
      expect(a.loraReport!.applied).toEqual(expect.arrayContaining([expect.stringMatching(/text_encoder_2\.text_projection$/)]));
      for (const { n, shape, w } of base) {
        const stem = `lora_te2_${n.slice(0, -'.weight'.length).replace(/\./g, '_')}`;
        const down = seededValues(`${stem}.lora_down.weight`, [4, shape[1]]);
        const up = seededValues(`${stem}.lora_up.weight`, [shape[0], 4]);
        const want = new Float64Array(w.length);
        for (let o = 0; o < shape[0]; o++) {
          for (let i = 0; i < shape[1]; i++) {
            let d = 0;
            for (let r = 0; r < 4; r++) d += up[o * 4 + r] * down[r * shape[1] + i];
            want[o * shape[1] + i] = w[o * shape[1] + i] + 0.5 * (2 / 4) * d;
          }
        }
        const wa = await a.textEncoder2!.parameter(n)!.read();
        expect(track('kohya te2 text_projection', relL2(wa, want)), n).toBeLessThan(1e-6);
        expect(relL2(w, want), n).toBeGreaterThan(1e-3);
        expect(relL2(await b.textEncoder2!.parameter(n)!.read(), wa), n).toBeLessThan(1e-6);
      }
    } finally {
      a.dispose();
      b.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('StableDiffusionXLPipeline.loadLoraWeights: in place = diffusers, no new memory, refused during generate(), a misfit changes nothing, undone by -scale', async () => {
    const engine = await getEngine();
    const xrefs = readSafetensorsFile(join(DIR, 'sdxl_refs.safetensors'));
    const dir = mkdtempSync(join(tmpdir(), 'lora-sdxl-'));
    buildTinySdxlFolder(dir, 'base');
    const cs = meta.cases['merge/sdxl'];
    const pipe = await StableDiffusionXLPipeline.fromPretrained(engine, dir);
    const models = { unet: pipe.unet, text_encoder: pipe.textEncoder!, text_encoder_2: pipe.textEncoder2! };
    const param = (n: string) => {
      const [comp, ...rest] = n.split('.');
      return models[comp as keyof typeof models].parameter(rest.join('.'))!;
    };
    const plain = new Map<string, Float32Array>();
    for (const n of cs.weights!) plain.set(n, (await param(n).read()) as Float32Array);
    const held = engine.memory().inUseBytes;

    // a text_encoder_2 layer of the wrong width: refused before any weight (of any component) changes
    const bad = seededSafetensors(meta.files.sdxl_kohya.map((e) => (e.key.startsWith('lora_te2_') && e.key.endsWith('lora_down.weight') ? { ...e, shape: [4, e.shape[1] + 1] } : e)));
    await expect(pipe.loadLoraWeights([{ source: bad }])).rejects.toThrow(/does not fit the text_encoder_2/);
    const running = pipe.generate({ prompt: 'a cat', steps: 1, seed: 1 });
    await expect(pipe.loadLoraWeights(specs(cs))).rejects.toThrow(/generate\(\) call\(s\) running/);
    (await running).images.dispose();
    for (const n of cs.weights!) expect(relL2(await param(n).read(), plain.get(n)!), n).toBe(0);

    const r = await pipe.loadLoraWeights(specs(cs));
    expect(r.applied.some((a) => a.includes(': text_encoder_2.'))).toBe(true);
    expect(engine.memory().inUseBytes).toBe(held); // in place: no new buffers
    for (const n of cs.weights!) expect(track('sdxl loadLoraWeights', relL2(await param(n).read(), xrefs[`merge/sdxl/${n}`].data)), n).toBeLessThan(1e-6);

    await pipe.loadLoraWeights(cs.loras.map((l) => ({ source: loraBytes(l.file), scale: -l.scale })));
    for (const n of cs.weights!) expect(track('sdxl loadLoraWeights undone', relL2(await param(n).read(), plain.get(n)!)), n).toBeLessThan(1e-6);
    pipe.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
});
