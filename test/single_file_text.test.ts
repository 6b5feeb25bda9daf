// Text encoders from single-file checkpoints: the modern_text reference weights renamed back into the
// layouts the checkpoints use (SD 2.x OpenCLIP-H under cond_stage_model.model.*, SDXL's CLIP-L under
// conditioner.embedders.0.transformer.* and OpenCLIP-bigG under conditioner.embedders.1.model.*, the
// refiner's bigG under conditioner.embedders.0.model.*), loaded and checked against the same
// transformers / diffusers outputs as the diffusers-folder loads.
import { describe, it, expect } from 'vitest';
import { Engine, type Tensor } from '../src/index.js';
import { CLIPTextModel, CLIPTextModelWithProjection } from '../src/text/clip_text_model.js';
import { fromSingleFile } from '../src/loaders/single_file.js';
import { mapOpenClipKeys } from '../src/loaders/single_file_keys.js';
import { writeSafetensors, type TensorToWrite } from '../src/runtime/safetensors.js';
import { relL2, track } from './helpers.js';
import { seededValues, type ManifestEntry } from './seeded.js';
import { modernCase, idsOf } from './modern_text_case.js';
import type { FixtureCase } from './fixture.js';

let f32Engine: Promise<Engine> | null = null;
const getEngine = (): Promise<Engine> => (f32Engine ??= Engine.create({ f16: false }));

type Tensors = Record<string, TensorToWrite>;
const f32 = (shape: number[], data: Float32Array): TensorToWrite => ({ dtype: 'F32', shape, data });

/** The case's seeded weights by transformers name. */
function weightsOf(c: FixtureCase): Map<string, { shape: number[]; data: Float32Array }> {
  return new Map((c.caseInfo.weights as ManifestEntry[]).map((e) => [e.key, { shape: e.shape, data: seededValues(e.key, e.shape) }]));
}

/**
 * transformers weights -> an OpenCLIP text tower under `prefix` (what open_clip's state_dict holds):
 * q/k/v fused into in_proj, the projection stored [hidden, proj], plus `extraLayers` blocks and
 * logit_scale that a loader must skip.
 */
function toOpenClip(c: FixtureCase, prefix: string, opts: { extraLayers?: number; projection?: number } = {}): Tensors {
  const w = weightsOf(c);
  const H = c.config.hidden_size as number;
  const L = c.config.num_hidden_layers as number;
  const out: Tensors = {};
  const get = (k: string) => w.get(k) ?? { shape: [0], data: new Float32Array(0) };
  const put = (k: string, t: { shape: number[]; data: Float32Array }) => (out[prefix + k] = f32(t.shape, t.data));
  put('token_embedding.weight', get('text_model.embeddings.token_embedding.weight'));
  put('positional_embedding', get('text_model.embeddings.position_embedding.weight'));
  put('ln_final.weight', get('text_model.final_layer_norm.weight'));
  put('ln_final.bias', get('text_model.final_layer_norm.bias'));
  for (let i = 0; i < L + (opts.extraLayers ?? 0); i++) {
    const src = (n: string) => {
      const t = w.get(`text_model.encoder.layers.${Math.min(i, L - 1)}.${n}`)!;
      // the blocks past num_hidden_layers get other values: using one of them would show
      return i < L ? t : { shape: t.shape, data: seededValues(`extra.${i}.${n}`, t.shape) };
    };
    const b = `transformer.resblocks.${i}.`;
    const fused = (kind: 'weight' | 'bias') => {
      const parts = ['q', 'k', 'v'].map((p) => src(`self_attn.${p}_proj.${kind}`).data);
      const data = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
      parts.forEach((p, j) => data.set(p, j * p.length));
      return { shape: kind === 'weight' ? [3 * H, H] : [3 * H], data };
    };
    put(`${b}attn.in_proj_weight`, fused('weight'));
    put(`${b}attn.in_proj_bias`, fused('bias'));
    for (const [to, from] of [['ln_1', 'layer_norm1'], ['ln_2', 'layer_norm2'], ['attn.out_proj', 'self_attn.out_proj'], ['mlp.c_fc', 'mlp.fc1'], ['mlp.c_proj', 'mlp.fc2']]) {
      put(`${b}${to}.weight`, src(`${from}.weight`));
      put(`${b}${to}.bias`, src(`${from}.bias`));
    }
  }
  const proj = w.get('text_projection.weight');
  if (proj) {
    // Linear weight [proj, hidden] -> OpenCLIP's [hidden, proj] (used as x @ P)
    const [P, Hh] = proj.shape;
    const t = new Float32Array(P * Hh);
    for (let p = 0; p < P; p++) for (let h = 0; h < Hh; h++) t[h * P + p] = proj.data[p * Hh + h];
    put('text_projection', { shape: [Hh, P], data: t });
  } else if (opts.projection) put('text_projection', { shape: [H, opts.projection], data: seededValues('proj', [H, opts.projection]) });
  put('logit_scale', { shape: [], data: Float32Array.of(4.6052) });
  return out;
}

/** transformers weights under `prefix` as they are (SDXL's CLIP-L keeps its HF names). */
function withPrefix(c: FixtureCase, prefix: string): Tensors {
  const out: Tensors = {};
  for (const [k, t] of weightsOf(c)) out[prefix + k] = f32(t.shape, t.data);
  return out;
}

async function expectRef(label: string, t: Tensor, want: { shape: number[]; data: ArrayLike<number> }): Promise<void> {
  expect(t.shape, label).toEqual(want.shape);
  const got = await t.readFloat();
  t.dispose();
  expect(track(label, relL2(got, want.data)), label).toBeLessThanOrEqual(1e-4);
}

/** Entry i of a stacked [N, ...rest] host tensor. */
function slab(h: { shape: number[]; data: ArrayLike<number> }, i: number): { shape: number[]; data: Float32Array } {
  const rest = h.shape.slice(1);
  const n = rest.reduce((a, b) => a * b, 1);
  return { shape: rest, data: Float32Array.from(Array.prototype.slice.call(h.data, i * n, (i + 1) * n)) };
}

const UNET_TENSOR = { 'model.diffusion_model.conv_in.bias': f32([4], Float32Array.of(0.1, 0.2, 0.3, 0.4)) };

describe('SD 2.x single file: OpenCLIP-H text tower (cond_stage_model.model.*)', () => {
  it('splits in_proj into q/k/v, skips the 24th-style block, text_projection and logit_scale, matches diffusers', async () => {
    const engine = await getEngine();
    const c = modernCase('sd2_openclip');
    const bytes = writeSafetensors({ ...toOpenClip(c, 'cond_stage_model.model.', { extraLayers: 1, projection: 20 }), ...UNET_TENSOR });
    const ids = idsOf(c.input('input_ids'));
    const base = engine.memory().inUseBytes;
    for (const load of [
      () => fromSingleFile(engine, bytes, 'text_encoder', { config: c.config }),
      () => CLIPTextModel.fromSingleFile(engine, bytes, { config: c.config }),
    ]) {
      const te = await load();
      expect(te.unexpectedWeights).toEqual([]);
      const out = te.forward(ids);
      await expectRef('sd2 single-file last_hidden_state', out.lastHiddenState, c.output('last_hidden_state'));
      await expectRef('sd2 single-file pooler_output', out.poolerOutput, c.output('pooler_output'));
      const skipped = te.forward(ids, { clipSkip: 1 });
      skipped.poolerOutput.dispose();
      await expectRef('sd2 single-file clip_skip 1', skipped.lastHiddenState, c.output('prompt_embeds_clip_skip_1'));
      te.dispose();
    }
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it('reports tensors it cannot place, refuses a misshapen in_proj and frees what it loaded', async () => {
    const engine = await getEngine();
    const c = modernCase('sd2_openclip');
    const t = toOpenClip(c, 'cond_stage_model.model.');
    const odd = writeSafetensors({ ...t, 'cond_stage_model.model.transformer.resblocks.0.attn.q_norm.weight': f32([3], Float32Array.of(1, 2, 3)), 'cond_stage_model.model.visual.proj': f32([2], Float32Array.of(1, 2)) });
    const base = engine.memory().inUseBytes;
    const te = await fromSingleFile(engine, odd, 'text_encoder', { config: c.config });
    expect(te.unexpectedWeights).toEqual(['transformer.resblocks.0.attn.q_norm.weight', 'visual.proj']);
    te.dispose();
    const H = c.config.hidden_size as number;
    const bad = writeSafetensors({ ...t, 'cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight': f32([2 * H, H], new Float32Array(2 * H * H).fill(0.5)) });
    await expect(fromSingleFile(engine, bad, 'text_encoder', { config: c.config })).rejects.toThrow(
      new RegExp(`'transformer\\.resblocks\\.1\\.attn\\.in_proj_weight' .*has shape \\[${2 * H}, ${H}\\], expected \\[${3 * H}, ${H}\\]`),
    );
    // a missing block is a missing weight under its transformers name
    const missing = Object.fromEntries(Object.entries(t).filter(([k]) => !k.includes('resblocks.2.mlp.c_fc.weight')));
    await expect(fromSingleFile(engine, writeSafetensors(missing), 'text_encoder', { config: c.config })).rejects.toThrow(/text_model\.encoder\.layers\.2\.mlp\.fc1\.weight/);
    expect(engine.memory().inUseBytes).toBe(base);
  });
});

describe('SDXL single file: conditioner.embedders.0 (CLIP-L) and .1 (OpenCLIP-bigG)', () => {
  it('loads text_encoder and text_encoder_2, and their outputs make diffusers encode_prompt', async () => {
    const engine = await getEngine();
    const c1 = modernCase('sdxl_encode_prompt');
    const c2 = modernCase('with_projection_legacy_eos');
    const bytes = writeSafetensors({
      ...withPrefix(c1, 'conditioner.embedders.0.transformer.'),
      ...toOpenClip(c2, 'conditioner.embedders.1.model.'),
      ...UNET_TENSOR,
    });
    const base = engine.memory().inUseBytes;
    const te1 = await fromSingleFile(engine, bytes, 'text_encoder', { config: c1.config });
    const te2 = await fromSingleFile(engine, bytes, 'text_encoder_2', { config: c2.config });
    expect(te1).toBeInstanceOf(CLIPTextModel);
    expect(te2).toBeInstanceOf(CLIPTextModelWithProjection);
    expect(te1.unexpectedWeights).toEqual([]);
    expect(te2.unexpectedWeights).toEqual([]);
    const ids2 = idsOf(c2.input('input_ids'));
    const o = te2.forward(ids2, { outputHiddenStates: true });
    await expectRef('sdxl te2 single-file text_embeds', o.textEmbeds, c2.output('text_embeds'));
    await expectRef('sdxl te2 single-file last_hidden_state', o.lastHiddenState, c2.output('last_hidden_state'));
    const hs = c2.output('hidden_states');
    o.hiddenStates!.forEach((t, i) => (i === hs.shape[0] - 2 ? void 0 : t.dispose()));
    await expectRef('sdxl te2 single-file hidden_states[-2]', o.hiddenStates![hs.shape[0] - 2], slab(hs, hs.shape[0] - 2));
    // the prompt embeds diffusers makes: [te1 hidden_states[-2], te2 hidden_states[-2]] on the last axis
    const ids1 = idsOf(c1.input('input_ids'));
    const h1 = te1.hiddenState(ids1, -2);
    const a = await h1.readFloat();
    h1.dispose();
    const h2 = te2.hiddenState(ids2, -2);
    const b = await h2.readFloat();
    h2.dispose();
    const want = c1.output('prompt_embeds_clip_skip_0');
    const [A, Bw] = [te1.shape.hidden, te2.shape.hidden];
    const got = new Float32Array(want.data.length);
    for (let r = 0; r < got.length / (A + Bw); r++) {
      got.set(a.subarray(r * A, (r + 1) * A), r * (A + Bw));
      got.set(b.subarray(r * Bw, (r + 1) * Bw), r * (A + Bw) + A);
    }
    expect(track('sdxl single-file prompt_embeds', relL2(got, want.data))).toBeLessThanOrEqual(1e-4);
    te1.dispose();
    te2.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it("the refiner's bigG (conditioner.embedders.0.model.*) is text_encoder_2; the file has no text_encoder", async () => {
    const engine = await getEngine();
    const c2 = modernCase('with_projection_first_eos');
    const bytes = writeSafetensors({ ...toOpenClip(c2, 'conditioner.embedders.0.model.'), ...UNET_TENSOR });
    const base = engine.memory().inUseBytes;
    const te2 = await CLIPTextModelWithProjection.fromSingleFile(engine, bytes, { config: c2.config });
    expect(te2.unexpectedWeights).toEqual([]);
    const o = te2.forward(idsOf(c2.input('input_ids_added')));
    await expectRef('refiner te2 single-file text_embeds', o.textEmbeds, c2.output('added.text_embeds'));
    o.lastHiddenState.dispose();
    te2.dispose();
    await expect(fromSingleFile(engine, bytes, 'text_encoder', { config: c2.config })).rejects.toThrow(/no 'cond_stage_model\.transformer\.\*'.*not a Stable Diffusion single-file checkpoint with a text_encoder/);
    const sd1 = writeSafetensors(UNET_TENSOR);
    await expect(CLIPTextModelWithProjection.fromSingleFile(engine, sd1, { config: c2.config })).rejects.toThrow(/conditioner\.embedders\.1\.model\..*text_encoder_2/);
    await expect(CLIPTextModelWithProjection.fromSingleFile(engine, bytes, undefined as never)).rejects.toThrow(/pass \{ config \}/);
    expect(engine.memory().inUseBytes).toBe(base);
  });
});

describe('mapOpenClipKeys', () => {
  it('names every OpenCLIP text tensor, q/k/v as row blocks of in_proj', () => {
    const names = [
      'token_embedding.weight', 'positional_embedding', 'ln_final.weight', 'text_projection', 'logit_scale',
      'transformer.resblocks.0.attn.in_proj_weight', 'transformer.resblocks.0.attn.in_proj_bias', 'transformer.resblocks.0.mlp.c_proj.bias',
      'transformer.resblocks.1.ln_2.weight', 'transformer.resblocks.1.weird',
    ];
    const { recipes, skipped } = mapOpenClipKeys(names, 8, { layers: 1, dropExtraLayers: true, projection: true });
    expect(skipped).toEqual(['logit_scale', 'transformer.resblocks.1.ln_2.weight', 'transformer.resblocks.1.weird']);
    expect(Object.fromEntries(recipes)).toEqual({
      'text_model.embeddings.token_embedding.weight': { from: 'token_embedding.weight' },
      'text_model.embeddings.position_embedding.weight': { from: 'positional_embedding' },
      'text_model.final_layer_norm.weight': { from: 'ln_final.weight' },
      'text_projection.weight': { from: 'text_projection', transpose: true },
      'text_model.encoder.layers.0.self_attn.q_proj.weight': { from: 'transformer.resblocks.0.attn.in_proj_weight', rows: [0, 8] },
      'text_model.encoder.layers.0.self_attn.k_proj.weight': { from: 'transformer.resblocks.0.attn.in_proj_weight', rows: [8, 8] },
      'text_model.encoder.layers.0.self_attn.v_proj.weight': { from: 'transformer.resblocks.0.attn.in_proj_weight', rows: [16, 8] },
      'text_model.encoder.layers.0.self_attn.q_proj.bias': { from: 'transformer.resblocks.0.attn.in_proj_bias', rows: [0, 8] },
      'text_model.encoder.layers.0.self_attn.k_proj.bias': { from: 'transformer.resblocks.0.attn.in_proj_bias', rows: [8, 8] },
      'text_model.encoder.layers.0.self_attn.v_proj.bias': { from: 'transformer.resblocks.0.attn.in_proj_bias', rows: [16, 8] },
      'text_model.encoder.layers.0.mlp.fc2.bias': { from: 'transformer.resblocks.0.mlp.c_proj.bias' },
    });
    const kept = mapOpenClipKeys(names, 8, { layers: 1, dropExtraLayers: false, projection: false });
    expect(kept.skipped).toEqual(['text_projection', 'logit_scale']);
    expect(kept.recipes.get('text_model.encoder.layers.1.layer_norm2.weight')).toEqual({ from: 'transformer.resblocks.1.ln_2.weight' });
    expect(kept.recipes.get('unmapped:transformer.resblocks.1.weird')).toEqual({ from: 'transformer.resblocks.1.weird' });
  });
});
