// Weights made on the GPU from a seed (nothing committed, nothing uploaded), scaled like a trained
// network's so activations have realistic sizes: conv/linear weights ~ N(0, 1/fan_in), norm gains
// around 1, biases small. And the 1/4-width Stable Diffusion 1.5 configs of the bench.
import { ops, SD15_UNET, SD15_VAE, type Engine, type Tensor, type DType } from '../../src/index.js';
import type { TensorSource } from '../../src/models/nn.js';

function nameSeed(name: string, seed: number): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

export function seededSource(seed: number): TensorSource {
  return {
    has: (name) => !name.endsWith('position_ids'),
    async upload(engine: Engine, name: string, shape: readonly number[], opts: { dtype: DType }): Promise<Tensor> {
      const r = ops.randn(engine, shape, nameSeed(name, seed), { dtype: opts.dtype as 'f32' | 'f16' });
      const isNorm = /norm\w*\.weight$/.test(name);
      const fanIn = shape.length >= 2 ? shape.slice(1).reduce((a, b) => a * b, 1) : 0;
      const [a, b] = isNorm ? [0.1, 1] : fanIn ? [1 / Math.sqrt(fanIn), 0] : [0.02, 0];
      const t = ops.scale(r, a, b);
      r.dispose();
      return t;
    },
  };
}

/** 1/4 of every width; GroupNorm keeps 32 groups where the widths allow it, else 16 (as the bench). */
export function quarter(c: Record<string, unknown>): Record<string, unknown> {
  const widths = (c.block_out_channels as number[]).map((v) => v / 4);
  return { ...c, block_out_channels: widths, norm_num_groups: widths.every((w) => w % 32 === 0) ? 32 : 16 };
}

export const UNET_QUARTER = quarter(SD15_UNET);
export const VAE_QUARTER = quarter(SD15_VAE);
