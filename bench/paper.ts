// ms per denoising step of the paper's releases at their REAL sizes, without their checkpoints: each
// release's UNet is built from its own config.yaml (planUNet, the same construction as
// LatentDiffusion.fromOriginal) with random weights drawn on the device, and one step is timed: the
// UNet forward at the release's latent size, batch 2 ([uncond, cond]) where its sampling script uses
// guidance, else batch 1. The scheduler update and the guidance mix are elementwise and not included.
//
//   npx tsx bench/paper.ts <latent-diffusion checkout> [--dtype f32|f16] [--adapter lavapipe] [--limit-s 60] [release ...]
//
// Each release runs in its own child process under a wall-clock limit; one that does not finish is
// reported as skipped (with the limit), not estimated.
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Engine, ops, UNet2DConditionModel, UNet2DModel } from '../src/index.js';
import { parseReleaseConfig, planUNet, subConfig, type TargetConfig } from '../src/loaders/original.js';
import { randomTensorSource } from './text_encoder.js';

/** release -> config path in the latent-diffusion repo, and whether its sampling script guides */
export const RELEASES: Record<string, { config: string; guided: boolean }> = {
  'cin256-v2': { config: 'configs/latent-diffusion/cin256-v2.yaml', guided: true },
  'txt2img-1p4B': { config: 'configs/latent-diffusion/txt2img-1p4B-eval.yaml', guided: true },
  text2img256: { config: 'models/ldm/text2img256/config.yaml', guided: true },
  cin256: { config: 'models/ldm/cin256/config.yaml', guided: false },
  celeba256: { config: 'models/ldm/celeba256/config.yaml', guided: false },
  ffhq256: { config: 'models/ldm/ffhq256/config.yaml', guided: false },
  lsun_beds256: { config: 'models/ldm/lsun_beds256/config.yaml', guided: false },
  lsun_churches256: { config: 'models/ldm/lsun_churches256/config.yaml', guided: false },
  bsr_sr: { config: 'models/ldm/bsr_sr/config.yaml', guided: false },
  semantic_synthesis256: { config: 'models/ldm/semantic_synthesis256/config.yaml', guided: false },
  semantic_synthesis512: { config: 'models/ldm/semantic_synthesis512/config.yaml', guided: false },
  'layout2img-openimages256': { config: 'models/ldm/layout2img-openimages256/config.yaml', guided: false },
  inpainting_big: { config: 'models/ldm/inpainting_big/config.yaml', guided: false },
};

/** Context length and width of the cond stage (crossattn releases): class token 1, BERT 77, layout max_seq_len. */
function contextShape(p: Record<string, unknown>): [number, number] {
  const c = p.cond_stage_config as TargetConfig;
  const cp = c.params ?? {};
  if (c.target.endsWith('ClassEmbedder')) return [1, cp.embed_dim as number];
  if (c.target.endsWith('BERTEmbedder')) return [(cp.max_seq_len as number) ?? 77, cp.n_embed as number];
  throw new Error(`no context shape for cond stage ${c.target}`);
}

async function one(root: string, name: string, dtype: 'f32' | 'f16', adapter: string | undefined): Promise<void> {
  const rel = RELEASES[name];
  if (!rel) throw new Error(`unknown release '${name}' (known: ${Object.keys(RELEASES).join(', ')})`);
  const model = parseReleaseConfig(readFileSync(join(root, rel.config), 'utf8'), rel.config);
  const p = model.params;
  const u = subConfig(p, 'unet_config', rel.config) as TargetConfig;
  const plan = planUNet(u);
  const engine = await Engine.create({ f16: dtype === 'f16', adapterKind: adapter as never });
  const size = (u.params.image_size ?? p.image_size) as number;
  const B = rel.guided ? 2 : 1;
  const t0 = performance.now();
  const src = randomTensorSource(1);
  const unet = plan.kind === 'UNet2DConditionModel' ? await UNet2DConditionModel.load(engine, plan.config, src) : await UNet2DModel.load(engine, plan.config, src);
  await engine.sync();
  const loadMs = performance.now() - t0;
  const x = ops.randn(engine, [B, plan.config.in_channels as number, size, size], 5, { dtype });
  const ctx = plan.kind === 'UNet2DConditionModel' ? ops.randn(engine, [B, ...contextShape(p)], 6, { dtype }) : null;
  const step = async () => {
    const t = performance.now();
    const eps = ctx ? (unet as UNet2DConditionModel).forward(x, 981, { encoderHiddenStates: ctx }) : (unet as UNet2DModel).forward(x, 981);
    await eps.read();
    eps.dispose();
    return performance.now() - t;
  };
  console.error(`${name}: ${(unet.parameterCount / 1e6).toFixed(0)}M params, weights drawn in ${Math.round(loadMs)} ms`);
  const first = await step(); // compiles every pipeline
  console.error(`${name}: first step ${Math.round(first)} ms`);
  const second = await step();
  const info = engine.info();
  console.log(
    JSON.stringify({ release: name, adapter: info.name, dtype, latent: [B, plan.config.in_channels, size, size], guided: rel.guided, params: unet.parameterCount, loadMs: Math.round(loadMs), firstMs: Math.round(first), msPerStep: Math.round(second) }),
  );
  unet.dispose();
  engine.destroy();
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { dtype: { type: 'string', default: 'f32' }, adapter: { type: 'string' }, 'limit-s': { type: 'string', default: '60' }, child: { type: 'boolean', default: false } },
  });
  const [root, ...names] = positionals;
  if (!root) throw new Error('usage: npx tsx bench/paper.ts <latent-diffusion checkout> [--dtype f32|f16] [--adapter lavapipe] [--limit-s 60] [release ...]');
  const dtype = values.dtype as 'f32' | 'f16';
  if (values.child) return one(root, names[0], dtype, values.adapter);
  const limit = Number(values['limit-s']);
  for (const name of names.length ? names : Object.keys(RELEASES)) {
    const args = ['--import', 'tsx', new URL(import.meta.url).pathname, root, name, '--child', '--dtype', dtype, ...(values.adapter ? ['--adapter', values.adapter] : [])];
    const t = performance.now();
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: limit * 1000, killSignal: 'SIGKILL' });
    process.stderr.write(r.stderr ?? '');
    const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
    if (line) console.log(line);
    else {
      // a run cut off after its first step still tells that step's time (shader compilation included)
      const first = /first step (\d+) ms/.exec(r.stderr ?? '');
      const why = r.error || r.signal ? `did not finish within ${limit} s` : `exit ${r.status}`;
      console.log(JSON.stringify({ release: name, dtype, skipped: why, firstMs: first ? Number(first[1]) : undefined, wallS: Math.round((performance.now() - t) / 1000) }));
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
