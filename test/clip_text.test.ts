// CLIPTextModel against transformers (test/fixtures/clip_text/{quick_gelu,gelu}): outputs, every
// layer's hidden state, clip skip, the tokenizer -> encoder path, SD 1.x single-file loading,
// bad inputs and memory accounting.
import { fromSingleFile } from '../src/loaders/single_file.js';
import { describe, it, expect, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLIPTextModel } from '../src/text/clip_text_model.js';
import { CLIPTokenizer } from '../src/text/clip_tokenizer.js';
import { writeSafetensors, type TensorToWrite } from '../src/runtime/safetensors.js';
import { Engine, type Tensor } from '../src/index.js';
import { relL2, track, reportWorst } from './helpers.js';
import { randomClipTextModel, clipTextForwardFlops, SD15_TEXT_ENCODER } from '../bench/text_encoder.js';
import { loadCase, FIXTURES, readSafetensorsFile, type FixtureCase, type HostTensor } from './fixture.js';

afterAll(() => reportWorst('clip_text'));

const CASES = ['quick_gelu', 'gelu'] as const;
const TOK_DIR = join(FIXTURES, 'tokenizers', 'clip-vit-large-patch14');
const dirOf = (c: string) => join(FIXTURES, 'clip_text', c);

// The fixtures are f32 and checked to 1e-4, so these tests pin f32 storage even where the adapter
// has shader-f16 (engine.f16 would otherwise default on); the f16 path has its own test below.
let f32Engine: Promise<Engine> | null = null;
function getEngine(): Promise<Engine> {
  f32Engine ??= Engine.create({ f16: false });
  return f32Engine;
}

const cache = new Map<string, FixtureCase>();
function fixture(name: string): FixtureCase {
  if (!cache.has(name)) cache.set(name, loadCase(`clip_text/${name}`));
  return cache.get(name)!;
}

function idsOf(h: HostTensor): number[][] {
  const [B, T] = h.shape;
  return Array.from({ length: B }, (_, b) => Array.from(h.data.subarray(b * T, (b + 1) * T)));
}

/** |a-b| <= 1e-4 + 1e-4|b| everywhere, or relative L2 <= 1e-4. */
function expectNear(label: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  expect(got.length, label).toBe(want.length);
  const err = track(label, relL2(got, want));
  let bad = -1;
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= 1e-4 + 1e-4 * Math.abs(want[i]))) {
      bad = i;
      break;
    }
  }
  if (bad >= 0) expect(err, `${label}: element ${bad} got ${got[bad]} want ${want[bad]}; relL2`).toBeLessThanOrEqual(1e-4);
}

async function expectTensor(label: string, t: Tensor, want: HostTensor | { shape: number[]; data: ArrayLike<number> }, dispose = true): Promise<void> {
  expect(t.shape, label).toEqual(want.shape);
  expectNear(label, await t.readFloat(), want.data);
  if (dispose) t.dispose();
}

/** Entry i of a stacked [N, ...rest] host tensor. */
function slab(h: HostTensor, i: number): { shape: number[]; data: Float32Array } {
  const rest = h.shape.slice(1);
  const n = rest.reduce((a, b) => a * b, 1);
  return { shape: rest, data: Float32Array.from(h.data.subarray(i * n, (i + 1) * n)) };
}

/** float64 LayerNorm over the last axis (the clip-skip reference). */
function layerNormRef(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number>, eps: number): Float64Array {
  const H = w.length;
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / H; r++) {
    let mean = 0;
    for (let c = 0; c < H; c++) mean += x[r * H + c];
    mean /= H;
    let v = 0;
    for (let c = 0; c < H; c++) v += (x[r * H + c] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / H + eps);
    for (let c = 0; c < H; c++) out[r * H + c] = (x[r * H + c] - mean) * inv * w[c] + b[c];
  }
  return out;
}

describe('CLIPTextModel vs transformers', () => {
  for (const name of CASES) {
    it(`${name}: last_hidden_state, pooler_output and all hidden_states`, async () => {
      const engine = await getEngine();
      const c = fixture(name);
      const base = engine.memory().inUseBytes;
      const te = await CLIPTextModel.fromPretrained(engine, dirOf(name));
      expect(te.unexpectedWeights).toEqual([]);
      expect(te.shape.act).toBe(name === 'gelu' ? 'gelu' : 'quickGelu');
      expect(engine.memory().inUseBytes - base).toBeGreaterThanOrEqual(te.parameterBytes);

      for (const [input, prefix] of [['input_ids', ''], ['input_ids_b', 'b.']] as const) {
        const out = te.forward(idsOf(c.input(input)), { outputHiddenStates: true });
        const L = `${name} ${prefix || 'a.'}`;
        await expectTensor(`${L}last_hidden_state`, out.lastHiddenState, c.output(`${prefix}last_hidden_state`));
        await expectTensor(`${L}pooler_output`, out.poolerOutput, c.output(`${prefix}pooler_output`));
        const hs = c.output(`${prefix}hidden_states`);
        expect(out.hiddenStates!.length).toBe(hs.shape[0]);
        for (let i = 0; i < hs.shape[0]; i++) await expectTensor(`${L}hidden_states`, out.hiddenStates![i], slab(hs, i));
      }

      const un = te.forward(idsOf(c.input('input_ids_unpadded')));
      expect(un.hiddenStates).toBeUndefined();
      await expectTensor(`${name} unpadded last_hidden_state`, un.lastHiddenState, c.output('unpadded.last_hidden_state'));
      await expectTensor(`${name} unpadded pooler_output`, un.poolerOutput, c.output('unpadded.pooler_output'));

      // SD passes no padding mask; the masked run must agree on every row up to the EOS
      const masked = te.forward(idsOf(c.input('input_ids')));
      const got = await masked.lastHiddenState.readFloat();
      const want = c.output('last_hidden_state_masked');
      const [, T, H] = want.shape;
      const eos = (c.caseInfo.eos_positions as Record<string, number[]>).input_ids;
      eos.forEach((e, b) => {
        const rows = (t: ArrayLike<number>) => Array.from({ length: (e + 1) * H }, (_, i) => t[b * T * H + i]);
        expectNear(`${name} masked rows <= EOS`, rows(got), rows(want.data));
      });
      await expectTensor(`${name} pooler_output_masked`, masked.poolerOutput, c.output('pooler_output_masked'));
      masked.lastHiddenState.dispose();

      te.dispose();
      expect(engine.memory().inUseBytes).toBe(base);
    });
  }

  it('fromConfig (config + bytes in memory) and clipSkip', async () => {
    const engine = await getEngine();
    const name = 'quick_gelu';
    const c = fixture(name);
    const bytes = readFileSync(join(dirOf(name), 'model.safetensors'));
    const base = engine.memory().inUseBytes;
    const te = await CLIPTextModel.fromConfig(engine, c.config, bytes);
    expect(te.unexpectedWeights).toEqual([]);
    const ids = idsOf(c.input('input_ids'));
    const plain = te.forward(ids);
    await expectTensor(`${name} fromConfig last_hidden_state`, plain.lastHiddenState, c.output('last_hidden_state'));
    plain.poolerOutput.dispose();

    // diffusers' clip_skip = 1: final_layer_norm(hidden_states[-2]); the pooler stays the full model's
    const w = readSafetensorsFile(join(dirOf(name), 'model.safetensors'));
    const hs = c.output('hidden_states');
    const ref = layerNormRef(slab(hs, hs.shape[0] - 2).data, w['text_model.final_layer_norm.weight'].data, w['text_model.final_layer_norm.bias'].data, 1e-5);
    const skipped = te.forward(ids, { clipSkip: 1 });
    await expectTensor(`${name} clipSkip=1`, skipped.lastHiddenState, { shape: c.output('last_hidden_state').shape, data: ref });
    await expectTensor(`${name} clipSkip=1 pooler`, skipped.poolerOutput, c.output('pooler_output'));
    te.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it('pooler row: argmax(ids) for legacy eos_token_id 2, else the first eos_token_id', async () => {
    const engine = await getEngine();
    // 49406 (BOS) is the largest id here and 49407 is absent: the two rules disagree
    const ids = [
      [320, 49406, 2, 7, 49406],
      [49406, 320, 49407, 49407, 5],
    ];
    const want = { quick_gelu: [1, 2], gelu: [0, 2] };
    for (const name of CASES) {
      const te = await CLIPTextModel.fromPretrained(engine, dirOf(name));
      expect(te.poolIndices(ids)).toEqual(want[name]);
      const out = te.forward(ids);
      const last = await out.lastHiddenState.readFloat();
      const pooled = await out.poolerOutput.readFloat();
      const H = te.shape.hidden;
      want[name].forEach((t, b) => {
        const row = last.subarray((b * ids[0].length + t) * H, (b * ids[0].length + t + 1) * H);
        expect(Array.from(pooled.subarray(b * H, (b + 1) * H))).toEqual(Array.from(row));
      });
      [out.lastHiddenState, out.poolerOutput].forEach((t) => t.dispose());
      te.dispose();
    }
  });
});

describe('CLIPTextModel in f16', () => {
  it('f16 storage stays close to the f32 reference (needs shader-f16)', async (ctx) => {
    if (!(await getEngine()).hasShaderF16) return ctx.skip();
    const engine = await Engine.create({ f16: true });
    expect(engine.f16).toBe(true);
    for (const name of CASES) {
      const c = fixture(name);
      const te = await CLIPTextModel.fromPretrained(engine, dirOf(name));
      const out = te.forward(idsOf(c.input('input_ids')));
      expect(out.lastHiddenState.dtype).toBe('f16');
      for (const [t, ref] of [[out.lastHiddenState, 'last_hidden_state'], [out.poolerOutput, 'pooler_output']] as const) {
        const err = track(`${name} f16 ${ref}`, relL2(await t.readFloat(), c.output(ref).data));
        expect(err, `${name} f16 ${ref}`).toBeLessThan(1e-2);
        t.dispose();
      }
      te.dispose();
    }
  });
});

describe('CLIPTokenizer -> CLIPTextModel', () => {
  it('the fixture prompts tokenize to the fixture ids and encode to the same outputs', async () => {
    const engine = await getEngine();
    const tok = await CLIPTokenizer.fromPretrained(TOK_DIR);
    for (const name of CASES) {
      const c = fixture(name);
      const prompts = c.caseInfo.prompts as Record<string, string[]>;
      const te = await CLIPTextModel.fromPretrained(engine, dirOf(name));
      for (const [input, prefix] of [['input_ids', ''], ['input_ids_b', 'b.']] as const) {
        const ids = prompts[input].map((p) => tok.encode(p));
        expect(ids).toEqual(idsOf(c.input(input)));
        const out = te.forward(ids);
        await expectTensor(`${name} tokenizer ${input} last_hidden_state`, out.lastHiddenState, c.output(`${prefix}last_hidden_state`));
        await expectTensor(`${name} tokenizer ${input} pooler_output`, out.poolerOutput, c.output(`${prefix}pooler_output`));
      }
      const un = prompts.input_ids_unpadded.map((p) => tok.encodeUnpadded(p));
      expect(un).toEqual(idsOf(c.input('input_ids_unpadded')));
      const out = te.forward(un);
      await expectTensor(`${name} tokenizer unpadded`, out.lastHiddenState, c.output('unpadded.last_hidden_state'));
      out.poolerOutput.dispose();
      te.dispose();
    }
  });
});

describe('CLIPTextModel.fromSingleFile (SD 1.x cond_stage_model.transformer.*)', () => {
  it('loads the renamed weights, ignores position_ids and other components', async () => {
    const engine = await getEngine();
    const name = 'quick_gelu';
    const c = fixture(name);
    const keys = JSON.parse(readFileSync(join(FIXTURES, 'clip_text', 'sd_single_file_keys.json'), 'utf8')) as {
      prefix: string;
      mapping: { sd: string; transformers: string | null; shape: number[] }[];
    };
    const w = readSafetensorsFile(join(dirOf(name), 'model.safetensors'));
    const tensors: Record<string, TensorToWrite> = {};
    for (const m of keys.mapping) {
      if (m.transformers === null) {
        expect(m.sd.endsWith('position_ids')).toBe(true);
        tensors[m.sd] = { dtype: 'I64', shape: m.shape, data: BigInt64Array.from({ length: 77 }, (_, i) => BigInt(i)) };
        continue;
      }
      const t = w[m.transformers];
      expect(t, m.transformers).toBeDefined();
      expect(t.shape).toEqual(m.shape);
      tensors[m.sd] = { dtype: 'F32', shape: t.shape, data: t.data };
    }
    expect(Object.keys(tensors).length).toBe(Object.keys(w).length + 1);
    // a UNet / VAE tensor of the same checkpoint is not the text encoder's business
    tensors['model.diffusion_model.conv_in.bias'] = { dtype: 'F32', shape: [4], data: [0.1, 0.2, 0.3, 0.4] };
    tensors['first_stage_model.quant_conv.bias'] = { dtype: 'F32', shape: [2], data: [0.5, 0.6] };
    const bytes = writeSafetensors(tensors);

    const base = engine.memory().inUseBytes;
    const te = await fromSingleFile(engine, bytes, 'text_encoder', { config: c.config });
    expect(te.unexpectedWeights).toEqual([]);
    const out = te.forward(idsOf(c.input('input_ids')));
    await expectTensor(`${name} single-file last_hidden_state`, out.lastHiddenState, c.output('last_hidden_state'));
    await expectTensor(`${name} single-file pooler_output`, out.poolerOutput, c.output('pooler_output'));
    te.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
    const te2 = await CLIPTextModel.fromSingleFile(engine, bytes, { config: c.config });
    const out2 = te2.forward(idsOf(c.input('input_ids')));
    out2.poolerOutput.dispose();
    await expectTensor(`${name} CLIPTextModel.fromSingleFile`, out2.lastHiddenState, c.output('last_hidden_state'));
    te2.dispose();

    await expect(fromSingleFile(engine, bytes, 'text_encoder', undefined as never)).rejects.toThrow(/config/);
    const noText = writeSafetensors({ 'model.diffusion_model.conv_in.bias': tensors['model.diffusion_model.conv_in.bias'] });
    await expect(fromSingleFile(engine, noText, 'text_encoder', { config: c.config })).rejects.toThrow(/cond_stage_model\.transformer\./);
    expect(engine.memory().inUseBytes).toBe(base);
  });
});

describe('CLIPTextModel errors', () => {
  it('bad token ids, lengths and options are refused with clear errors', async () => {
    const engine = await getEngine();
    const c = fixture('gelu');
    const base = engine.memory().inUseBytes;
    const te = await CLIPTextModel.fromPretrained(engine, dirOf('gelu'));
    const held = engine.memory().inUseBytes;
    const ok = [49406, 320, 49407];
    expect(() => te.forward([[49406, 49408, 49407]])).toThrow(/token id 49408 at inputIds\[0\]\[1\] is outside the vocabulary of 49408/);
    expect(() => te.forward([[49406, -1]])).toThrow(/token id -1/);
    expect(() => te.forward([[49406, 1.5]])).toThrow(/token id 1.5/);
    expect(() => te.forward([[49406, Number.NaN]])).toThrow(/token id NaN/);
    expect(() => te.forward([Array(78).fill(320)])).toThrow(/sequence length 78 exceeds max_position_embeddings 77/);
    expect(() => te.forward([ok, [49406, 49407]])).toThrow(/same length.*inputIds\[1\] has 2/);
    expect(() => te.forward([])).toThrow(/non-empty/);
    expect(() => te.forward([[]])).toThrow(/non-empty/);
    expect(() => te.forward('a cat' as never)).toThrow(/non-empty array/);
    expect(() => te.forward([ok], { clipSkip: 2 })).toThrow(/clipSkip must be an integer in \[0, 1\]/);
    expect(() => te.forward([ok], { clipSkip: -1 })).toThrow(/clipSkip/);
    // nothing was allocated by the refused calls
    expect(engine.memory().inUseBytes).toBe(held);
    // the full length is fine, typed rows too
    const out = te.forward([Int32Array.from(Array(77).fill(320))]);
    expect(out.lastHiddenState.shape).toEqual([1, 77, 32]);
    [out.lastHiddenState, out.poolerOutput].forEach((t) => t.dispose());
    te.dispose();
    expect(() => te.forward([ok])).toThrow(/CLIPTextModel.forward: the model was disposed/);
    expect(engine.memory().inUseBytes).toBe(base);
    void c;
  });

  it('bad configs and weights are refused without leaking', async () => {
    const engine = await getEngine();
    const c = fixture('gelu');
    const bytes = readFileSync(join(dirOf('gelu'), 'model.safetensors'));
    const base = engine.memory().inUseBytes;
    await expect(CLIPTextModel.fromConfig(engine, { ...c.config, hidden_act: 'gelu_new' }, bytes)).rejects.toThrow(
      /CLIPTextModel: unsupported value "gelu_new" for config key 'hidden_act' \(supported: "quick_gelu", "gelu"\)/,
    );
    await expect(CLIPTextModel.fromConfig(engine, { ...c.config, num_attention_heads: 5 }, bytes)).rejects.toThrow(/hidden_size 32 does not split into 5/);
    await expect(CLIPTextModel.fromConfig(engine, { ...c.config, hidden_size: '32' }, bytes)).rejects.toThrow(/hidden_size/);
    // shapes the config implies must match the file (fails after some uploads: those are freed)
    await expect(CLIPTextModel.fromConfig(engine, { ...c.config, intermediate_size: 48 }, bytes)).rejects.toThrow(/fc1\.weight/);
    await expect(CLIPTextModel.fromConfig(engine, { ...c.config, num_hidden_layers: 3 }, bytes)).rejects.toThrow(/layers\.2\./);
    await expect(CLIPTextModel.fromConfig(engine, { ...c.config, max_position_embeddings: 64 }, bytes)).rejects.toThrow(/position_embedding/);
    expect(engine.memory().inUseBytes).toBe(base);
  });
});

describe('bench/text_encoder randomClipTextModel', () => {
  it('builds a random-weight model of the requested shape on the GPU and runs it', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    const shape = { layers: 2, hidden: 48, heads: 3, intermediate: 96, vocab: 500 };
    const te = await randomClipTextModel(engine, shape);
    const H = shape.hidden;
    const perLayer = 4 * (H * H + H) + 2 * 2 * H + (H * shape.intermediate + shape.intermediate) + (shape.intermediate * H + H);
    expect(te.parameterCount).toBe(shape.vocab * H + 77 * H + shape.layers * perLayer + 2 * H);
    expect(te.shape.act).toBe('quickGelu');
    const ids = [[499, 3, 17, 2, 0, 1, 250], [5, 6, 7, 8, 9, 10, 11]];
    const out = te.forward(ids);
    const last = await out.lastHiddenState.readFloat();
    expect(out.lastHiddenState.shape).toEqual([2, 7, H]);
    expect(last.every(Number.isFinite)).toBe(true);
    // gains ~1, everything else ~N(0, 0.02^2): the final LayerNorm output has unit-ish spread
    const rms = Math.sqrt(last.reduce((s, v) => s + v * v, 0) / last.length);
    expect(rms).toBeGreaterThan(0.5);
    expect(rms).toBeLessThan(2);
    // same seed, same weights
    const again = await randomClipTextModel(engine, shape);
    const out2 = again.forward(ids);
    expect(Array.from(await out2.lastHiddenState.readFloat())).toEqual(Array.from(last));
    [out.lastHiddenState, out.poolerOutput, out2.lastHiddenState, out2.poolerOutput].forEach((t) => t.dispose());
    te.dispose();
    again.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
    expect(clipTextForwardFlops(SD15_TEXT_ENCODER, 2, 77)).toBeGreaterThan(2e10);
  });
});
