// `ldm-webgpu generate --ckpt model.ckpt --config config.yaml`: one of the paper's original releases
// through LatentDiffusion.fromOriginal, sampled with CompVis DDIM, written as PNGs.
import { FAMILIES } from './families.js';
import { Engine } from '../runtime/engine.js';
import { LatentDiffusion } from '../pipelines/latent_diffusion.js';
import type { GenerateArgs } from './args.js';
import { encodePng, outputNames } from './output.js';
import { writeFileAtomic } from './output.js';

export async function generateOriginal(args: GenerateArgs, abort: AbortController): Promise<number> {
  const t0 = performance.now();
  const engine = await Engine.create({ f16: args.f16 });
  const info = engine.info();
  process.stderr.write(`adapter: ${info.name} (${info.backend}${info.f16 ? ', f16' : ''})\n`);
  const ldm = await LatentDiffusion.fromOriginal(engine, { checkpoint: args.ckpt!, config: args.config!, tokenizer: args.tokenizer, signal: abort.signal });
  try {
    const n = args.classLabels?.length ?? args.batch ?? 1;
    const out = await ldm.generate({
      classLabels: args.classLabels,
      prompt: args.prompt !== undefined ? Array(n).fill(args.prompt) : undefined,
      batchSize: args.classLabels || args.prompt !== undefined ? undefined : n,
      steps: args.steps ?? FAMILIES.ldm.steps,
      eta: args.eta ?? 0,
      guidanceScale: args.guidance ?? 1,
      seed: args.seed,
      signal: abort.signal,
      onStep: ({ step, total, timestep }) => process.stderr.write(`\rstep ${step}/${total} t=${timestep}   `),
    });
    process.stderr.write('\n');
    out.images.dispose();
    out.latents.dispose();
    const names = outputNames(args.out, out.rgba.length);
    out.rgba.forEach((img, i) => writeFileAtomic(names[i], encodePng(img)));
    process.stderr.write(`wrote ${names.join(', ')} (${out.rgba[0].width}x${out.rgba[0].height}) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    return 0;
  } finally {
    ldm.dispose();
  }
}
