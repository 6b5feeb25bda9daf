// Seeded standard normal noise on the GPU: Philox4x32-10 keyed by the seed, counter = element index
// (+ offset) / 4, Box-Muller, four outputs per Philox call. Same numbers in every run, in the browser
// and in Node, on any GPU (to a few ulp; see randn.wgsl.ts), and randnHost() gives them on the CPU.
// Cost per element: ~100 integer ops (a quarter of 10 Philox rounds with emulated mulhi) + ~30 flops
// (log, sqrt, sin/cos polynomials); bytes: the output only.
import type { Engine } from '../runtime/engine.js';
import { numel, shapeStr, type DType, type Tensor } from '../runtime/tensor.js';
import { randnWgsl } from './randn.wgsl.js';
import { grid1d } from './check.js';
import { type Cost } from './kit.js';
import { checkOffset, seedKey } from './randn_host.js';

const src = { name: 'randn', wgsl: randnWgsl };
const OP = 'randn';

export function randnCost(args: { size: number; bytesPerElement?: number }): Cost {
  return { flops: 130 * args.size, bytes: (args.bytesPerElement ?? 4) * args.size };
}

export interface RandnOptions {
  /** f32 (default) or f16 */
  dtype?: DType;
  /** position in the stream of the first element (default 0): offset n continues a draw of n elements */
  offset?: number;
}

/** Standard normal noise of `shape`, a pure function of (seed, offset, element index). */
export function randn(engine: Engine, shape: readonly number[], seed: number, opts: RandnOptions = {}): Tensor {
  return draw(engine, shape, seed, 1, opts);
}

/** Noise for a batch under the engine's seed rule: item i of `shape[0]` is the stream of
 * `seed + i` (from `offset`), so item i of a batch equals a batch of one drawn with seed + i.
 * One dispatch for the whole batch. */
export function randnItems(engine: Engine, shape: readonly number[], seed: number, opts: RandnOptions = {}): Tensor {
  const items = Array.isArray(shape) && shape.length && Number.isInteger(shape[0]) && shape[0] > 1 ? shape[0] : 1;
  return draw(engine, shape, seed, items, opts);
}

function draw(engine: Engine, shape: readonly number[], seed: number, items: number, opts: RandnOptions): Tensor {
  if (!engine || typeof engine.dispatch !== 'function') throw new Error(`${OP}: the first argument must be an Engine`);
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`${OP}: invalid shape ${Array.isArray(shape) ? shapeStr(shape) : String(shape)}`);
  }
  const [key0, key1] = seedKey(OP, seed);
  seedKey(OP, seed + (items - 1)); // the last item's seed must be valid too
  const total = numel(shape);
  const n = total / items; // per item
  const offset = opts.offset ?? 0;
  checkOffset(OP, offset, n);
  const dtype = opts.dtype ?? 'f32';
  if (dtype === 'i32') throw new Error(`${OP}: dtype must be f32 or f16`);
  const y = engine.empty(shape, dtype, OP);
  if (total === 0) return y;
  const lane0 = offset % 4;
  const ctr = Math.floor(offset / 4);
  const threads = Math.ceil((n + lane0) / 4);
  const [gx, gy] = grid1d(engine, Math.ceil(threads / 256));
  try {
    engine.dispatch(src, {
      bindings: { y },
      uniforms: { n, lane0, ctrLo: ctr % 2 ** 32, ctrHi: Math.floor(ctr / 2 ** 32), key0, key1, rowStride: gx * 256 },
      workgroups: [gx, gy, items],
      dtype,
    });
  } catch (e) {
    y.dispose();
    throw e;
  }
  return y;
}
