// The modern_text reference cases (SDXL's CLIPTextModelWithProjection, SD 2.x's gelu encoder with clip_skip,
// SDXL's two-encoder prompt embeds) with f16 weights and activations against transformers' / diffusers' f32
// outputs: relative L2 <= 1e-2 (measured errors printed at the end).
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { CLIPTextModel, CLIPTextModelWithProjection, type Engine, type Tensor } from '../../src/index.js';
import { getF16Engine, relL2, track, reportWorst } from '../helpers.js';
import type { HostTensor } from '../fixture.js';
import { modernCase, caseWeights, idsOf } from '../modern_text_case.js';

afterAll(() => reportWorst('f16 text encoders vs transformers f32'));

const TOL = 1e-2;
let e: Engine;
beforeAll(async () => {
  e = await getF16Engine();
  expect(e.f16).toBe(true);
});

/** rows [i] of a stacked [N, ...] reference */
function slab(h: HostTensor, i: number): { shape: number[]; data: Float32Array } {
  const rest = h.shape.slice(1);
  const n = rest.reduce((a, b) => a * b, 1);
  return { shape: rest, data: Float32Array.from(h.data.subarray(i * n, (i + 1) * n)) };
}

async function close(label: string, t: Tensor, ref: { shape: number[]; data: ArrayLike<number> }): Promise<Float32Array> {
  expect(t.dtype, label).toBe('f16');
  expect(t.shape, label).toEqual(ref.shape);
  const got = await t.readFloat();
  t.dispose();
  expect(track(label, relL2(got, ref.data)), label).toBeLessThan(TOL);
  return got;
}

describe('text encoders in f16 vs transformers / diffusers f32', () => {
  for (const name of ['with_projection_legacy_eos', 'with_projection_first_eos']) {
    it(`CLIPTextModelWithProjection ${name}`, async () => {
      const c = modernCase(name);
      const base = e.memory().inUseBytes;
      const te = await CLIPTextModelWithProjection.fromConfig(e, c.config, caseWeights(c));
      expect(te.dtype).toBe('f16');
      const hs = c.output('hidden_states');
      const o = te.forward(idsOf(c.input('input_ids')), { hiddenStateIndex: -2 });
      await close(`${name} text_embeds`, o.textEmbeds, c.output('text_embeds'));
      await close(`${name} last_hidden_state`, o.lastHiddenState, c.output('last_hidden_state'));
      await close(`${name} hidden_states[-2]`, o.hiddenState!, slab(hs, hs.shape[0] - 2));
      const a = te.forward(idsOf(c.input('input_ids_added')));
      await close(`${name} added text_embeds`, a.textEmbeds, c.output('added.text_embeds'));
      a.lastHiddenState.dispose();
      te.dispose();
      expect(e.memory().inUseBytes).toBe(base);
    });
  }

  it('SD 2.x gelu CLIPTextModel with clip_skip 0/1/2 (diffusers encode_prompt)', async () => {
    const c = modernCase('sd2_openclip');
    const base = e.memory().inUseBytes;
    const te = await CLIPTextModel.fromConfig(e, c.config, caseWeights(c));
    const ids = idsOf(c.input('input_ids'));
    for (const skip of [0, 1, 2]) {
      const o = te.forward(ids, { clipSkip: skip });
      if (skip) o.poolerOutput.dispose();
      else await close('sd2 pooler_output', o.poolerOutput, c.output('pooler_output'));
      await close(`sd2 prompt_embeds clip_skip ${skip}`, o.lastHiddenState, c.output(`prompt_embeds_clip_skip_${skip}`));
    }
    te.dispose();
    expect(e.memory().inUseBytes).toBe(base);
  });

  it('SDXL encode_prompt: concat of both hidden_states[-2], pooled text_embeds', async () => {
    const c1 = modernCase('sdxl_encode_prompt');
    const c2 = modernCase('with_projection_legacy_eos');
    const base = e.memory().inUseBytes;
    const te1 = await CLIPTextModel.fromConfig(e, c1.config, caseWeights(c1));
    const te2 = await CLIPTextModelWithProjection.fromConfig(e, c2.config, caseWeights(c2));
    const h1 = te1.hiddenState(idsOf(c1.input('input_ids')), -2);
    const o2 = te2.forward(idsOf(c1.input('input_ids_2')), { hiddenStateIndex: -2 });
    o2.lastHiddenState.dispose();
    await close('sdxl pooled_prompt_embeds', o2.textEmbeds, c1.output('pooled_prompt_embeds'));
    const want = c1.output('prompt_embeds_clip_skip_0');
    const [A, B] = [te1.shape.hidden, te2.shape.hidden];
    const part = (t: Tensor, off: number, w: number) => {
      const rows = want.data.length / (A + B);
      const d = new Float32Array(rows * w);
      for (let r = 0; r < rows; r++) d.set(want.data.subarray(r * (A + B) + off, r * (A + B) + off + w), r * w);
      return close(`sdxl prompt_embeds[..., ${off}:${off + w}]`, t, { shape: [...want.shape.slice(0, 2), w], data: d });
    };
    await part(h1, 0, A);
    await part(o2.hiddenState!, A, B);
    te1.dispose();
    te2.dispose();
    expect(e.memory().inUseBytes).toBe(base);
  });
});
