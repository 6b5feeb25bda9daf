// Vector quantisation (VQModel.quantize): each latent pixel of z [B, C, H, W] snaps to its nearest
// codebook entry (codebook [K, C]) by squared L2 distance, first minimum on ties.
// Two paths:
//  - on the GEMM core (the default): s = z . e^T for every pixel and entry as one 1x1 conv2d with the
//    codebook as its weight (f32 scores; f16 inputs are widened first so the scores keep f32
//    precision), then a small argmin kernel over |e|^2 - 2 s that gathers the winners. The scores
//    take 4 * B*H*W * K bytes; past VQ_GEMM_MAX_BYTES (or the binding limit) the direct kernel runs.
//  - the direct kernel (vq_lookup.wgsl.ts): exact sum_c (z_c - e_c)^2 in one tiled pass, no scores
//    in memory. Its cost: 3 flops (sub, mul, add) per pixel x entry x channel = 3 * B*H*W * K * C;
//    bytes: z and quantized (2 * B*C*H*W), the indices (B*H*W i32), the codebook once per 64 pixels.
//    (The GEMM path's conv2d reports its own cost.)
import type { Tensor } from '../runtime/tensor.js';
import { vqArgminWgsl, vqLookupWgsl } from './vq_lookup.wgsl.js';
import { conv2d } from './conv2d.js';
import { cast } from './elementwise.js';
import { engineOf, fail, floatDtype, grid1d, rankIs } from './check.js';
import { countCost, type Cost } from './kit.js';

const src = { name: 'vqLookup', wgsl: vqLookupWgsl };
const argminSrc = { name: 'vqArgmin', wgsl: vqArgminWgsl };
const OP = 'vqLookup';
const TP = 64;
/** Largest score matrix (bytes) the GEMM path makes; bigger problems take the direct kernel. */
export const VQ_GEMM_MAX_BYTES = 64 * 2 ** 20;

export function vqLookupCost(args: { pixels: number; channels: number; entries: number; bytesPerElement?: number }): Cost {
  const { pixels, channels, entries } = args;
  const eb = args.bytesPerElement ?? 4;
  return {
    flops: 3 * pixels * entries * channels,
    bytes: eb * (2 * pixels * channels + Math.ceil(pixels / TP) * entries * channels) + 4 * pixels,
  };
}

/** z [B, C, H, W], codebook [K, C] -> quantized [B, C, H, W] and indices i32 [B*H*W] (flat over b, h, w).
 * `path` (tests): force the GEMM-core path or the direct kernel; by default the GEMM path unless its
 * score matrix would pass VQ_GEMM_MAX_BYTES or the binding limit. */
export function vqLookup(z: Tensor, codebook: Tensor, opts: { path?: 'gemm' | 'direct' } = {}): { quantized: Tensor; indices: Tensor } {
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
  const scoreBytes = 4 * npix * K;
  const path = opts.path ?? (scoreBytes <= Math.min(VQ_GEMM_MAX_BYTES, engine.limits.maxStorageBufferBindingSize) ? 'gemm' : 'direct');
  if (path === 'gemm') {
    const [gx, gy] = grid1d(engine, Math.ceil(npix / TP));
    try {
      engine.scope(() => {
        const wide = (t: Tensor) => (t.dtype === 'f32' ? t : cast(t, 'f32'));
        const s = conv2d(wide(z), wide(codebook).reshape([K, C, 1, 1])); // [B, K, H, W] = z . e
        engine.dispatch(argminSrc, {
          bindings: { s, codebook, quantized, indices },
          uniforms: { npix, hw: H * W, channels: C, entries: K, rowStride: gx },
          workgroups: [gx, gy],
          dtype,
        });
      });
    } catch (e) {
      quantized.dispose();
      indices.dispose();
      throw e;
    }
    return { quantized, indices };
  }
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
