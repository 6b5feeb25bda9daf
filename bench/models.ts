// Model benchmarks with random weights drawn on the GPU (no checkpoint, nothing uploaded):
// UNet2DConditionModel at Stable Diffusion 1.5 shapes and at 1/4 width, AutoencoderKL decode at SD
// shapes (tiled when an activation exceeds the binding limit), and the whole text-to-image call.
// On a software adapter (SwiftShader) only the reduced rows run unless --full is given.
import { ops, AutoencoderKL, UNet2DConditionModel, StableDiffusionPipeline, createScheduler, SD15_UNET, SD15_VAE, SD15_SCHEDULER, type Engine, type Tensor } from '../src/index.js';
import { randomTensorSource, randomClipTextModel, SD15_TEXT_ENCODER } from './text_encoder.js';

export interface ModelRow {
  name: string;
  msPerForward: number;
  peakBytes: number;
  note?: string;
}

// 1/4 of every width; GroupNorm keeps 32 groups where the widths allow it, else 16 (80 = 16 x 5)
const quarter = (c: Record<string, unknown>, key: string) => {
  const widths = (c[key] as number[]).map((v) => v / 4);
  return { ...c, [key]: widths, norm_num_groups: widths.every((w) => w % 32 === 0) ? 32 : 16 };
};

async function timed(engine: Engine, run: () => Promise<Tensor | void>, reps: number): Promise<{ ms: number; peak: number }> {
  // warm-up compiles every pipeline
  const w = await run();
  if (w) {
    await w.read();
    w.dispose();
  }
  await engine.sync();
  const times: number[] = [];
  let peak = 0;
  for (let i = 0; i < reps; i++) {
    engine.resetPeakMemory();
    const t0 = performance.now();
    const out = await run();
    if (out) {
      await out.read();
      out.dispose();
    } else await engine.sync();
    times.push(performance.now() - t0);
    peak = Math.max(peak, engine.memory().peakInUseBytes);
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)], peak };
}

export async function benchModels(engine: Engine, opts: { quick?: boolean; full?: boolean; log?: (s: string) => void } = {}): Promise<ModelRow[]> {
  const log = opts.log ?? console.log;
  const software = /swiftshader|llvmpipe|lavapipe/i.test(engine.info().name);
  const full = opts.full ?? !software;
  const reps = software ? 1 : 5;
  const rows: ModelRow[] = [];
  const dtype = engine.f16 ? 'f16' : 'f32';
  // In an f16 run the VAE row measures the VAE in f16 (force_upcast off, as the fp16-fix VAEs);
  // text-to-image keeps the config's force_upcast, so its VAE runs in f32 beside the f16 UNet.
  const vaeRowConfig = (c: Record<string, unknown>) => (engine.f16 ? { ...c, force_upcast: false } : c);
  const add = (r: ModelRow) => {
    rows.push(r);
    log(`${r.name.padEnd(70)} ${r.msPerForward.toFixed(1).padStart(10)} ms   peak ${(r.peakBytes / 2 ** 20).toFixed(0)} MiB`);
  };

  const unetRow = async (label: string, config: Record<string, unknown>, size: number) => {
    const unet = await UNet2DConditionModel.load(engine, config, randomTensorSource(1));
    const x = ops.randn(engine, [2, 4, size, size], 5, { dtype });
    const ctx = ops.randn(engine, [2, 77, config.cross_attention_dim as number], 6, { dtype });
    const t = await timed(engine, async () => unet.forward(x, 981, { encoderHiddenStates: ctx }), reps);
    add({ name: label, msPerForward: t.ms, peakBytes: t.peak, note: `${(unet.parameterCount / 1e6).toFixed(0)}M params, ${dtype}` });
    [x, ctx].forEach((v) => v.dispose());
    unet.dispose();
  };
  if (full) await unetRow('UNet2DConditionModel SD 1.5, batch 2, 64x64 latents, 77 tokens', SD15_UNET, 64);
  await unetRow('UNet2DConditionModel 1/4 width, batch 2, 32x32 latents, 77 tokens', quarter(SD15_UNET, 'block_out_channels'), 32);
  await sdxlUNetRow(engine, dtype, reps, add, 32);

  const vaeRow = async (label: string, config: Record<string, unknown>, size: number) => {
    const vae = await AutoencoderKL.load(engine, vaeRowConfig(config), randomTensorSource(2));
    const z = ops.randn(engine, [1, 4, size, size], 7, { dtype: vae.dtype as 'f32' | 'f16' });
    const t = await timed(engine, async () => vae.decode(z), reps);
    const limit = engine.limits.maxStorageBufferBindingSize;
    add({ name: label, msPerForward: t.ms, peakBytes: t.peak, note: `binding limit ${(limit / 2 ** 20).toFixed(0)} MiB, ${vae.dtype}` });
    z.dispose();
    vae.dispose();
  };
  if (full) await vaeRow('AutoencoderKL decode SD 1.5, 1x4x64x64 -> 1x3x512x512', SD15_VAE, 64);
  await vaeRow('AutoencoderKL decode 1/4 width, 1x4x32x32 -> 1x3x256x256', quarter(SD15_VAE, 'block_out_channels'), 32);

  const t2iRow = async (label: string, unetCfg: Record<string, unknown>, vaeCfg: Record<string, unknown>, text: typeof SD15_TEXT_ENCODER, size: number, steps: number) => {
    // CLIP's token table (49408 x 768) is one tensor: 145 MiB in f32, over lavapipe's 128 MiB binding limit
    const tableBytes = text.vocab * text.hidden * (dtype === 'f16' ? 2 : 4);
    if (tableBytes > engine.limits.maxStorageBufferBindingSize) {
      log(`${label}: skipped in ${dtype}: CLIP's token table (${(tableBytes / 2 ** 20).toFixed(0)} MiB) is over this device's binding limit (${(engine.limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB)`);
      return;
    }
    const unet = await UNet2DConditionModel.load(engine, unetCfg, randomTensorSource(1));
    const vae = await AutoencoderKL.load(engine, vaeCfg, randomTensorSource(2));
    const textEncoder = await randomClipTextModel(engine, text);
    const { CLIPTokenizer } = await import('../src/index.js');
    const tokenizer = await CLIPTokenizer.fromPretrained(new URL('../test/fixtures/tokenizers/clip-vit-large-patch14', import.meta.url).pathname);
    const pipe = new StableDiffusionPipeline({ unet, vae, textEncoder, tokenizer, scheduler: createScheduler(SD15_SCHEDULER) });
    const f = 2 ** ((vaeCfg.block_out_channels as number[]).length - 1);
    const t = await timed(
      engine,
      async () => {
        const out = await pipe.generate({ prompt: 'a photograph of an astronaut riding a horse', steps, guidanceScale: 7.5, seed: 0, height: size * f, width: size * f });
        return out.images;
      },
      software ? 1 : 3,
    );
    add({ name: label, msPerForward: t.ms, peakBytes: t.peak, note: `${steps} PNDM steps, guidance 7.5, tokenizer + CLIP + UNet + VAE, ${dtype}${vae.dtype !== dtype ? ` (VAE ${vae.dtype}: force_upcast)` : ''}` });
    pipe.dispose();
  };
  if (full) await t2iRow('text-to-image SD 1.5 (CLIP 12x768), 512x512, 20 steps', SD15_UNET, SD15_VAE, SD15_TEXT_ENCODER, 64, 20);
  await t2iRow(
    'text-to-image 1/4 width (CLIP 12x768), 256x256, 2 steps',
    quarter(SD15_UNET, 'block_out_channels'),
    quarter(SD15_VAE, 'block_out_channels'),
    SD15_TEXT_ENCODER,
    32,
    2,
  );
  return rows;
}

/**
 * SDXL's UNet at 1/4 width (block_out_channels 80/160/320, head dim 16, cross-attention 512 = 2048/4,
 * pooled text embeds 320 + 6 time ids of 64 for the text_time embedding), DownBlock2D at level 0 and
 * transformer depth 1/2/10 scaled to 1/1/2 (the mid block: 2); random weights drawn on the GPU.
 */
export const SDXL_UNET_QUARTER: Record<string, unknown> = {
  block_out_channels: [80, 160, 320],
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
  up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
  layers_per_block: 2,
  transformer_layers_per_block: [1, 1, 2],
  attention_head_dim: [5, 10, 20],
  cross_attention_dim: 512,
  use_linear_projection: true,
  addition_embed_type: 'text_time',
  addition_time_embed_dim: 64,
  projection_class_embeddings_input_dim: 320 + 6 * 64,
  norm_num_groups: 16,
  sample_size: 32,
};

export async function sdxlUNetRow(engine: Engine, dtype: 'f32' | 'f16', reps: number, add: (r: ModelRow) => void, size: number): Promise<void> {
  const unet = await UNet2DConditionModel.load(engine, SDXL_UNET_QUARTER, randomTensorSource(1));
  const x = ops.randn(engine, [2, 4, size, size], 5, { dtype });
  const ctx = ops.randn(engine, [2, 77, 512], 6, { dtype });
  const textEmbeds = ops.randn(engine, [2, 320], 8, { dtype });
  const px = size * 8;
  const timeIds = [
    [px, px, 0, 0, px, px],
    [px, px, 0, 0, px, px],
  ];
  const t = await timed(engine, async () => unet.forward(x, 981, { encoderHiddenStates: ctx, addedCondKwargs: { textEmbeds, timeIds } }), reps);
  add({
    name: `UNet2DConditionModel SDXL-shaped 1/4 width, batch 2, ${size}x${size} latents, 77 tokens`,
    msPerForward: t.ms,
    peakBytes: t.peak,
    note: `${(unet.parameterCount / 1e6).toFixed(0)}M params, ${dtype}, text_time`,
  });
  [x, ctx, textEmbeds].forEach((v) => v.dispose());
  unet.dispose();
}
