// StableDiffusionPipeline.fromSingleFile on an SD 2.x checkpoint: the tiny SD 2.x pipeline of
// test/fixtures/sd2 written in the original layout (UNet/VAE CompVis names, OpenCLIP text tower with
// fused in_proj, plus the 24th-block-style extra layer diffusers drops), the layout being what
// diffusers 0.31's converters read (tools/pyref/gen_sd2_single_file.py checks the round trip). The
// family is told from the keys, the scheduler defaults to SD 2.1's (DDIM, v_prediction), and the image
// equals diffusers' from the same weights.
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensorsFile, FIXTURES } from './fixture.js';
import { getEngine, relL2, track, reportWorst } from './helpers.js';
import { readSd2Manifest, SD2_DIR, buildTinySd2Folder, buildSd2SingleFile, readSd2SingleFileLayout } from './tiny_sd2.js';
import { seededSafetensors, type ManifestEntry } from './seeded.js';
import { StableDiffusionPipeline, type Engine } from '../src/index.js';
import { sd2Configs, singleFileFamily, SD21_SCHEDULER } from '../src/pipelines/sd_configs.js';

const m = readSd2Manifest();
const refs = readSafetensorsFile(join(SD2_DIR, 'refs.safetensors'));
const layout = readSd2SingleFileLayout();

describe('SD 2.x single file', () => {
  let engine: Engine;
  let bytes: Uint8Array;
  beforeAll(async () => {
    engine = await getEngine();
    bytes = buildSd2SingleFile(m, true);
  });

  it('is told from SD 1.x by its keys; SD 2.1 configs by default, the base models with predictionType epsilon', () => {
    const names = Object.keys(layout);
    const none = () => undefined;
    expect(singleFileFamily(names, none)).toBe('sd2');
    expect(singleFileFamily(['model.diffusion_model.out.0.weight', 'cond_stage_model.transformer.text_model.final_layer_norm.weight'], none)).toBe('sd1');
    // without a text encoder, by the width the UNet cross-attends to (diffusers' own test)
    const toK = 'model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight';
    expect(singleFileFamily([toK], () => [640, 1024])).toBe('sd2');
    expect(singleFileFamily([toK], () => [640, 768])).toBe('sd1');
    const v = sd2Configs();
    expect([v.unet.sample_size, v.vae.sample_size, v.scheduler.prediction_type]).toEqual([96, 768, 'v_prediction']);
    expect(v.textEncoder).toMatchObject({ hidden_act: 'gelu', hidden_size: 1024, num_hidden_layers: 23 });
    expect(v.unet).toMatchObject({ use_linear_projection: true, attention_head_dim: [5, 10, 20, 20], cross_attention_dim: 1024 });
    const base = sd2Configs({ predictionType: 'epsilon' });
    expect([base.unet.sample_size, base.vae.sample_size, base.scheduler.prediction_type]).toEqual([64, 512, 'epsilon']);
    expect(() => sd2Configs({ predictionType: 'sample' as never })).toThrow(/epsilon' or 'v_prediction/);
    expect(() => sd2Configs({ imageSize: 700 })).toThrow(/multiple of 64/);
  });

  it('loads (OpenCLIP text tower, extra block dropped) and generates what diffusers does (DDIM v_prediction)', async () => {
    const before = engine.memory().inUseBytes;
    // the SD 1.x CLIP-L tokenizer folder: same vocabulary; SD 2.x's '!' padding is applied for this family
    const pipe = await StableDiffusionPipeline.fromSingleFile(engine, bytes, {
      unetConfig: m.configs.unet,
      vaeConfig: m.configs.vae,
      textEncoderConfig: m.configs.text_encoder,
      tokenizer: join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14'),
    });
    try {
      expect(pipe.scheduler.className).toBe('DDIMScheduler');
      expect(pipe.scheduler.predictionType).toBe('v_prediction');
      expect(pipe.scheduler.config.prediction_type).toBe(SD21_SCHEDULER.prediction_type);
      expect(pipe.tokenizer!.encode(m.prompt)).toEqual(Array.from(refs.input_ids.data));
      for (const model of [pipe.unet, pipe.vae, pipe.textEncoder!]) expect(model.unexpectedWeights).toEqual([]);
      const steps = refs['ddim.latents_steps'];
      const per = steps.data.length / steps.shape[0];
      const out = await pipe.generate({
        prompt: m.prompt,
        negativePrompt: m.negative_prompt,
        height: m.height,
        width: m.width,
        steps: m.steps,
        guidanceScale: m.guidance_scale,
        latents: refs.latents_T.data as Float32Array,
        onStep: async ({ step, latents }) => {
          expect(track('sd2 single file latents per step', relL2(await latents.read(), steps.data.subarray((step - 1) * per, step * per))), `step ${step}`).toBeLessThan(1e-4);
        },
      });
      expect(track('sd2 single file image', relL2(await out.images.read(), refs['ddim.image'].data))).toBeLessThan(1e-4);
      out.images.dispose();
    } finally {
      pipe.dispose();
    }
    expect(engine.memory().inUseBytes).toBe(before);
  }, 300_000);

  it('SD 2.x default configs on a file of another size fail clearly and free what they loaded', async () => {
    const before = engine.memory().inUseBytes;
    await expect(StableDiffusionPipeline.fromSingleFile(engine, bytes, { vaeConfig: m.configs.vae })).rejects.toThrow(/shape/);
    expect(engine.memory().inUseBytes).toBe(before);
    await expect(StableDiffusionPipeline.fromSingleFile(engine, bytes, { predictionType: 'eps' as never })).rejects.toThrow(/predictionType/);
  }, 120_000);

  it("kohya lora_te_ (transformers names) merges into the OpenCLIP-H text tower (q/k/v split from in_proj) as into the folder's encoder", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sd2-lora-'));
    buildTinySd2Folder(dir, 'ddim', m);
    const L = Number(m.configs.text_encoder.num_hidden_layers);
    const te = m.tensors.text_encoder.filter((e) => /layers\.(0|\d+)\.(self_attn\.(q|k|v|out)_proj|mlp\.fc1)\.weight$/.test(e.key) && /layers\.(0|LAST)\./.test(e.key.replace(`layers.${L - 1}.`, 'layers.LAST.')));
    const unet = m.tensors.unet.filter((e) => /attn2\.to_k\.weight$/.test(e.key)).slice(0, 2);
    expect(te.length).toBe(L > 1 ? 10 : 5);
    const entries: ManifestEntry[] = [...te.map((e) => ['lora_te_', e] as const), ...unet.map((e) => ['lora_unet_', e] as const)].flatMap(([pre, e]) => {
      const stem = pre + e.key.slice(0, -'.weight'.length).replace(/\./g, '_');
      return [
        { key: `${stem}.lora_down.weight`, shape: [4, e.shape[1]] },
        { key: `${stem}.lora_up.weight`, shape: [e.shape[0], 4] },
        { key: `${stem}.alpha`, shape: [], values: [8] },
      ];
    });
    const loras = [{ source: seededSafetensors(entries), scale: 0.7, label: 'te' }];
    const before = engine.memory().inUseBytes;
    const tokenizer = join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14');
    const a = await StableDiffusionPipeline.fromPretrained(engine, dir, { loras });
    const b = await StableDiffusionPipeline.fromSingleFile(engine, bytes, { unetConfig: m.configs.unet, vaeConfig: m.configs.vae, textEncoderConfig: m.configs.text_encoder, tokenizer, loras });
    const plain = await StableDiffusionPipeline.fromSingleFile(engine, bytes, { unetConfig: m.configs.unet, vaeConfig: m.configs.vae, textEncoderConfig: m.configs.text_encoder, tokenizer });
    try {
      expect(b.loraReport!.applied).toHaveLength(te.length + unet.length);
      expect([...b.loraReport!.applied].sort()).toEqual([...a.loraReport!.applied].sort());
      expect(b.textEncoder!.unexpectedWeights).toEqual([]);
      for (const e of [...te.map((e) => ['te', e] as const), ...unet.map((e) => ['unet', e] as const)]) {
        const of = (p: StableDiffusionPipeline) => (e[0] === 'te' ? p.textEncoder! : p.unet).parameter(e[1].key)!.read();
        const [wa, wb, wp] = [await of(a), await of(b), await of(plain)];
        expect(track('sd2 single file + LoRA vs folder + LoRA', relL2(wb, wa)), e[1].key).toBeLessThan(1e-6);
        expect(relL2(wp, wa), e[1].key).toBeGreaterThan(1e-3); // the LoRA did change it
      }
    } finally {
      [a, b, plain].forEach((p) => p.dispose());
      rmSync(dir, { recursive: true, force: true });
    }
    expect(engine.memory().inUseBytes).toBe(before);
    reportWorst('sd2 single file');
  }, 120_000);
});
