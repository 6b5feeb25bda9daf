// Vector quantisation (VQModel.quantize): each latent pixel of z [B, C, H, W] snaps to its nearest
// codebook entry (codebook [K, C]) by squared L2 distance, first minimum on ties.
// Cost: 3 flops (sub, mul, add) per pixel x entry x channel = 3 * B*H*W * K * C;
// bytes: z and quantized (2 * B*C*H*W), the indices (B*H*W i32), and the codebook once per 64 pixels.
import type { Tensor } from '../runtime/tensor.js';
import { vqLookupWgsl } from './vq_lookup.wgsl.js';
import { engineOf, fail, floatDtype, grid1d, rankIs } from './check.js';
import { countCost, type Cost } from './kit.js';

const src = { name: 'vqLookup', wgsl: vqLookupWgsl };
const OP = 'vqLookup';
const TP = 64;

export function vqLookupCost(args: { pixels: number; channels: number; entries: number; bytesPerElement?: number }): Cost {
  const { pixels, channels, entries } = args;
  const eb = args.bytesPerElement ?? 4;
  return {
    flops: 3 * pixels * entries * channels,
    bytes: eb * (2 * pixels * channels + Math.ceil(pixels / TP) * entries * channels) + 4 * pixels,
  };
}

/** z [B, C, H, W], codebook [K, C] -> quantized [B, C, H, W] and indices i32 [B*H*W] (flat over b, h, w). */
export function vqLookup(z: Tensor, codebook: Tensor): { quantized: Tensor; indices: Tensor } {
  const engine = engineOf(OP, z, codebook);
  const dtype = floatDtype(OP, z, codebook);
  rankIs(OP, z, 4, 'z');
  rankIs(OP, codebook, 2, 'codebook');
  const [B, C, H, W] = z.shape;
  const [K, Ce] = codebook.shape;
  if (Ce !== C) fail(OP, `codebook width ${Ce} does not match the ${C} channels of z`, [z, codebook]);
  if (K < 1 || C < 1) fail(OP, 'empty codebook or zero channels', [z, codebook]);
  const npix = B * H * W;
  const quantized = engine.empty(z.shape, dtype, OP);
  const indices = engine.empty([npix], 'i32', OP);
  if (npix === 0) return { quantized, indices };
  // Deeper channel chunks mean fewer barriers; shallow ones waste nothing on small C (3, 4).
  const TC = C <= 4 ? 4 : C <= 8 ? 8 : 16;
  const [gx, gy] = grid1d(engine, Math.ceil(npix / TP));
  try {
    engine.dispatch(src, {
      bindings: { z, codebook, quantized, indices },
      uniforms: { npix, hw: H * W, channels: C, entries: K, rowStride: gx },
      workgroups: [gx, gy],
      constants: { TC },
    });
  } catch (e) {
    quantized.dispose();
    indices.dispose();
    throw e;
  }
  countCost(engine, OP, () => vqLookupCost({ pixels: npix, channels: C, entries: K, bytesPerElement: dtype === 'f16' ? 2 : 4 }));
  return { quantized, indices };
}
