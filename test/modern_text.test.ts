// The SD 2.x / SDXL text encoders against transformers 4.45 and diffusers 0.31 (test/fixtures/modern_text,
// made by tools/pyref/gen_modern_text.py; weights seeded on both sides, test/seeded.ts): CLIPTextModelWithProjection
// (text_embeds, last_hidden_state, every hidden state, the pooled row under both eos_token_id rules), hidden_states[i]
// without running the layers after i, SD 2.x's encode_prompt with clip_skip, SDXL's two-encoder encode_prompt, the
// pad token '!' from tokenizer_config.json, diffusers folders, memory.
import { describe, it, expect, afterAll } from 'vitest';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, type Tensor } from '../src/index.js';
import { CLIPTextModel, CLIPTextModelWithProjection, type TokenIds } from '../src/text/clip_text_model.js';
import { CLIPTokenizer } from '../src/text/clip_tokenizer.js';
import { relL2, track, reportWorst } from './helpers.js';
import { FIXTURES, type FixtureCase, type HostTensor } from './fixture.js';
import { seededSafetensors, type ManifestEntry } from './seeded.js';
import { modernCase, caseWeights, idsOf } from './modern_text_case.js';

const tempDirs: string[] = [];
afterAll(() => {
  reportWorst('modern_text');
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

const TOK_DIR = join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14');

// f32 storage: the references are f32 and checked to 1e-4 (test/f16/ runs the same cases in f16).
let f32Engine: Promise<Engine> | null = null;
const getEngine = (): Promise<Engine> => (f32Engine ??= Engine.create({ f16: false }));

/** Entry i of a stacked [N, ...rest] host tensor. */
function slab(h: HostTensor, i: number): { shape: number[]; data: Float32Array } {
  const rest = h.shape.slice(1);
  const n = rest.reduce((a, b) => a * b, 1);
  return { shape: rest, data: Float32Array.from(h.data.subarray(i * n, (i + 1) * n)) };
}

/** rel L2 <= 1e-4 (f32 against transformers / diffusers), shape equal; disposes t. */
async function expectRef(label: string, t: Tensor, want: { shape: number[]; data: ArrayLike<number> }): Promise<void> {
  expect(t.shape, label).toEqual(want.shape);
  const got = await t.readFloat();
  t.dispose();
  const err = track(label, relL2(got, want.data));
  expect(err, label).toBeLessThanOrEqual(1e-4);
}

/** [B, T, a] ++ [B, T, b] on the host (what the SDXL pipeline concatenates). */
function concatLast(x: Float32Array, a: number, y: Float32Array, b: number): Float32Array {
  const rows = x.length / a;
  const out = new Float32Array(rows * (a + b));
  for (let r = 0; r < rows; r++) {
    out.set(x.subarray(r * a, (r + 1) * a), r * (a + b));
    out.set(y.subarray(r * b, (r + 1) * b), r * (a + b) + a);
  }
  return out;
}

/** A diffusers component folder (config.json + model.safetensors) in a temp dir. */
function folderOf(c: FixtureCase): string {
  const dir = mkdtempSync(join(tmpdir(), 'modern-text-'));
  tempDirs.push(dir);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(c.config));
  writeFileSync(join(dir, 'model.safetensors'), caseWeights(c));
  return dir;
}

/** A tokenizer folder as SD 2.x / SDXL's tokenizer_2 ship it: CLIP-L's vocab with pad_token '!'. */
function bangTokenizerDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sd2-tokenizer-'));
  tempDirs.push(dir);
  for (const f of ['vocab.json', 'merges.txt']) copyFileSync(join(TOK_DIR, f), join(dir, f));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 77, pad_token: '!', tokenizer_class: 'CLIPTokenizer' }));
  return dir;
}

describe('CLIPTextModelWithProjection vs transformers', () => {
  for (const name of ['with_projection_legacy_eos', 'with_projection_first_eos']) {
    it(`${name}: text_embeds, last_hidden_state, every hidden state, the pooled row`, async () => {
      const engine = await getEngine();
      const c = modernCase(name);
      const base = engine.memory().inUseBytes;
      const te = await CLIPTextModelWithProjection.fromPretrained(engine, folderOf(c));
      expect(te.unexpectedWeights).toEqual([]);
      expect(te.shape.projectionDim).toBe(24);
      const pools = c.caseInfo.pool_positions as Record<string, number[]>;
      const hs = c.output('hidden_states');
      const ids = idsOf(c.input('input_ids'));
      expect(te.poolIndices(ids)).toEqual(pools.input_ids);

      const out = te.forward(ids, { outputHiddenStates: true });
      expect('poolerOutput' in out).toBe(false);
      await expectRef(`${name} text_embeds`, out.textEmbeds, c.output('text_embeds'));
      await expectRef(`${name} last_hidden_state`, out.lastHiddenState, c.output('last_hidden_state'));
      expect(out.hiddenStates!.length).toBe(hs.shape[0]);
      for (let i = 0; i < hs.shape[0]; i++) await expectRef(`${name} hidden_states[${i}]`, out.hiddenStates![i], slab(hs, i));

      // SDXL's prompt embeds: hidden_states[-2] with the full outputs, or alone
      const sd = te.forward(ids, { hiddenStateIndex: -2 });
      expect(sd.hiddenStates).toBeUndefined();
      await expectRef(`${name} hidden_states[-2]`, sd.hiddenState!, slab(hs, hs.shape[0] - 2));
      await expectRef(`${name} text_embeds (with hiddenStateIndex)`, sd.textEmbeds, c.output('text_embeds'));
      sd.lastHiddenState.dispose();
      await expectRef(`${name} hiddenState(-2)`, te.hiddenState(ids, -2), slab(hs, hs.shape[0] - 2));
      await expectRef(`${name} hiddenState(0)`, te.hiddenState(ids, 0), slab(hs, 0));
      await expectRef(`${name} hiddenState(3)`, te.hiddenState(ids, 3), slab(hs, 3));

      // an added token (id > EOS) before the EOS: argmax(ids) under the legacy eos_token_id 2, else the first EOS
      const added = idsOf(c.input('input_ids_added'));
      expect(te.poolIndices(added)).toEqual(pools.input_ids_added);
      expect(pools.input_ids_added).toEqual(name.includes('legacy') ? [3, 5] : pools.input_ids);
      const o2 = te.forward(added);
      await expectRef(`${name} added text_embeds`, o2.textEmbeds, c.output('added.text_embeds'));
      await expectRef(`${name} added last_hidden_state`, o2.lastHiddenState, c.output('added.last_hidden_state'));

      te.dispose();
      expect(engine.memory().inUseBytes).toBe(base);
    });
  }

  it('hiddenState(i) runs only the layers up to i and frees what it does not return', async () => {
    const engine = await getEngine();
    const c = modernCase('with_projection_legacy_eos');
    const te = await CLIPTextModelWithProjection.fromConfig(engine, c.config, caseWeights(c));
    const ids = idsOf(c.input('input_ids'));
    const held = engine.memory().inUseBytes;
    const dispatches = (f: () => Tensor): number => {
      const before = engine.stats().dispatches;
      const t = f();
      const n = engine.stats().dispatches - before;
      expect(engine.memory().inUseBytes - held).toBeGreaterThanOrEqual(t.byteLength);
      expect(engine.memory().inUseBytes - held).toBeLessThan(2 * t.byteLength);
      t.dispose();
      expect(engine.memory().inUseBytes).toBe(held);
      return n;
    };
    const d0 = dispatches(() => te.hiddenState(ids, 0));
    const d1 = dispatches(() => te.hiddenState(ids, 1));
    const d3 = dispatches(() => te.hiddenState(ids, -1));
    const perLayer = d1 - d0;
    expect(perLayer).toBeGreaterThan(0);
    expect(d3).toBe(d0 + 3 * perLayer);
    const full = te.forward(ids);
    const dFull = engine.stats().dispatches;
    [full.textEmbeds, full.lastHiddenState].forEach((t) => t.dispose());
    expect(dFull).toBeGreaterThan(0);
    expect(engine.memory().inUseBytes).toBe(held);
    te.dispose();
  });

  it('bad indices and inputs are refused with clear errors, nothing allocated', async () => {
    const engine = await getEngine();
    const c = modernCase('with_projection_first_eos');
    const te = await CLIPTextModelWithProjection.fromConfig(engine, c.config, caseWeights(c));
    const held = engine.memory().inUseBytes;
    const ok = [[49406, 320, 49407]];
    expect(() => te.hiddenState(ok, 4)).toThrow(/CLIPTextModelWithProjection\.hiddenState: hidden state index must be an integer in \[-4, 3\].*got 4/);
    expect(() => te.hiddenState(ok, -5)).toThrow(/in \[-4, 3\]/);
    expect(() => te.hiddenState(ok, 1.5)).toThrow(/hidden state index/);
    expect(() => te.forward(ok, { hiddenStateIndex: 9 })).toThrow(/CLIPTextModelWithProjection\.forward: hidden state index/);
    expect(() => te.forward([[49406, 49410]])).toThrow(/token id 49410 at inputIds\[0\]\[1\] is outside the vocabulary of 49410/);
    expect(() => te.forward(ok, { clipSkip: 3 })).toThrow(/clipSkip must be an integer in \[0, 2\]/);
    expect(engine.memory().inUseBytes).toBe(held);
    // a CLIPTextModel checkpoint has no text_projection: refused, nothing kept
    const base = engine.memory().inUseBytes;
    const noProj = (c.caseInfo.weights as ManifestEntry[]).filter((e) => e.key !== 'text_projection.weight');
    await expect(CLIPTextModelWithProjection.fromConfig(engine, c.config, seededSafetensors(noProj))).rejects.toThrow(/text_projection\.weight/);
    // projection_dim from the config decides the shape it expects
    await expect(CLIPTextModelWithProjection.fromConfig(engine, { ...c.config, projection_dim: 32 }, caseWeights(c))).rejects.toThrow(
      /text_projection\.weight.*\[24, 40\].*expected \[32, 40\]/,
    );
    expect(engine.memory().inUseBytes).toBe(base);
    te.dispose();
    expect(() => te.hiddenState(ok, 0)).toThrow(/disposed/);
  });
});

describe('SD 2.x text encoder (OpenCLIP-H shape as CLIPTextModel, gelu, pad "!") vs diffusers', () => {
  it('outputs, encode_prompt with clip_skip 0/1/2, and the tokenizer with pad_token "!"', async () => {
    const engine = await getEngine();
    const c = modernCase('sd2_openclip');
    const base = engine.memory().inUseBytes;
    const te = await CLIPTextModel.fromPretrained(engine, folderOf(c));
    expect(te.shape.act).toBe('gelu');
    const tok = await CLIPTokenizer.fromPretrained(bangTokenizerDir());
    expect(tok.padTokenId).toBe(0);
    const prompts = c.caseInfo.prompts as string[];
    const ids = prompts.map((p) => tok.encode(p));
    expect(ids).toEqual(idsOf(c.input('input_ids')));
    expect(ids[0].slice(-3)).toEqual([0, 0, 0]);
    const neg = (c.caseInfo.negative_prompts as string[]).map((p) => tok.encode(p));
    expect(neg).toEqual(idsOf(c.input('negative_input_ids')));

    const out = te.forward(ids, { outputHiddenStates: true });
    await expectRef('sd2 last_hidden_state', out.lastHiddenState, c.output('last_hidden_state'));
    await expectRef('sd2 pooler_output', out.poolerOutput, c.output('pooler_output'));
    const hs = c.output('hidden_states');
    for (let i = 0; i < hs.shape[0]; i++) await expectRef(`sd2 hidden_states[${i}]`, out.hiddenStates![i], slab(hs, i));
    for (const skip of [0, 1, 2]) {
      const o = te.forward(ids, { clipSkip: skip });
      o.poolerOutput.dispose();
      await expectRef(`sd2 encode_prompt clip_skip ${skip}`, o.lastHiddenState, c.output(`prompt_embeds_clip_skip_${skip}`));
    }
    const n = te.forward(neg);
    n.poolerOutput.dispose();
    await expectRef('sd2 negative_prompt_embeds', n.lastHiddenState, c.output('negative_prompt_embeds'));
    te.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
  });
});

/** SDXL's encode_prompt from the two encoders: concat of hidden_states[-(k+2)], pooled = text_embeds. */
async function sdxlEncode(te1: CLIPTextModel, te2: CLIPTextModelWithProjection, ids1: TokenIds, ids2: TokenIds, clipSkip = 0) {
  const h1 = te1.hiddenState(ids1, -(clipSkip + 2));
  const o2 = te2.forward(ids2, { hiddenStateIndex: -(clipSkip + 2) });
  o2.lastHiddenState.dispose();
  const a = te1.shape.hidden;
  const b = te2.shape.hidden;
  const embeds = concatLast(await h1.readFloat(), a, await o2.hiddenState!.readFloat(), b);
  h1.dispose();
  o2.hiddenState!.dispose();
  return { embeds, shape: [ids1.length, ids1[0].length, a + b], pooled: o2.textEmbeds };
}

describe('SDXL encode_prompt (CLIP-L-shaped text_encoder + CLIPTextModelWithProjection text_encoder_2) vs diffusers', () => {
  it('prompt_embeds (clip_skip 0 and 1), pooled and negative embeds', async () => {
    const engine = await getEngine();
    const c = modernCase('sdxl_encode_prompt');
    const c2 = modernCase('with_projection_legacy_eos');
    const base = engine.memory().inUseBytes;
    const te1 = await CLIPTextModel.fromConfig(engine, c.config, caseWeights(c));
    const te2 = await CLIPTextModelWithProjection.fromConfig(engine, c2.config, caseWeights(c2));
    const tok1 = await CLIPTokenizer.fromPretrained(TOK_DIR);
    const tok2 = await CLIPTokenizer.fromPretrained(bangTokenizerDir());
    const prompts = c.caseInfo.prompts as string[];
    const negatives = c.caseInfo.negative_prompts as string[];
    const ids1 = prompts.map((p) => tok1.encode(p));
    const ids2 = prompts.map((p) => tok2.encode(p));
    expect(ids1).toEqual(idsOf(c.input('input_ids')));
    expect(ids2).toEqual(idsOf(c.input('input_ids_2')));
    for (const skip of [0, 1]) {
      const r = await sdxlEncode(te1, te2, ids1, ids2, skip);
      const want = c.output(`prompt_embeds_clip_skip_${skip}`);
      expect(r.shape).toEqual(want.shape);
      expect(track(`sdxl prompt_embeds clip_skip ${skip}`, relL2(r.embeds, want.data))).toBeLessThanOrEqual(1e-4);
      if (skip === 0) await expectRef('sdxl pooled_prompt_embeds', r.pooled, c.output('pooled_prompt_embeds'));
      else r.pooled.dispose();
    }
    const n = await sdxlEncode(te1, te2, negatives.map((p) => tok1.encode(p)), negatives.map((p) => tok2.encode(p)));
    expect(track('sdxl negative_prompt_embeds', relL2(n.embeds, c.output('negative_prompt_embeds').data))).toBeLessThanOrEqual(1e-4);
    await expectRef('sdxl negative_pooled_prompt_embeds', n.pooled, c.output('negative_pooled_prompt_embeds'));
    te1.dispose();
    te2.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
  });
});
