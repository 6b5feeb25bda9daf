// Kernel benchmarks: each case runs in this engine and, on the same adapter in the same process,
// in TensorFlow.js's WebGPU backend written the way a TF.js user would (its native NHWC layout,
// its fused conv2d, attention as matMul/softmax/matMul since TF.js has no fused attention).
import { ops, autotune, type Engine, type Tensor } from '../src/index.js';
import { tunedFor, takeRecentProblems } from '../src/kernels/tune_cache.js';

/** storage dtype of our side of a case (TF.js's WebGPU backend has no f16 tensors: it stays f32) */
type Dt = 'f32' | 'f16';
import { timeIt, type Timing } from './timing.js';

type TF = typeof import('@tensorflow/tfjs-core');
type TFTensor = import('@tensorflow/tfjs-core').Tensor;

export interface OpCase {
  name: string;
  /** FLOPs of one call (multiply-add = 2) */
  flops: number;
  /** bytes one call must move at least (inputs + weights + outputs) */
  bytes: number;
  /** which figure says more about this op */
  bound: 'compute' | 'memory';
  /** tile: the config this row ran, when it is not a tuned GEMM */
  ours(engine: Engine, dtype: Dt): { run: () => Tensor; dispose: () => void; tile?: string };
  tfjs(tf: TF): { run: () => TFTensor; dispose: () => void };
}

function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296) * 2 - 1;
  }
  return a;
}

// FLOPs and bytes come from the kernels' own cost functions, so the bench and the profiler agree.
function conv3x3(n: number, c: number, h: number, cout: number): OpCase {
  return {
    name: `conv2d 3x3 ${n}x${c}x${h}x${h} -> ${cout}`,
    ...ops.conv2dCost({ x: [n, c, h, h], w: [cout, c, 3, 3], bias: true, padding: 1 }),
    bound: 'compute',
    ours(engine, dtype) {
      const x = engine.tensor(rand(n * c * h * h, 1), [n, c, h, h], dtype);
      const w = engine.tensor(rand(cout * c * 9, 2).map((v) => v * 0.05), [cout, c, 3, 3], dtype);
      const b = engine.tensor(rand(cout, 3), [cout], dtype);
      return { run: () => ops.conv2d(x, w, b, { padding: 1 }), dispose: () => [x, w, b].forEach((t) => t.dispose()) };
    },
    tfjs(tf) {
      const x = tf.tensor4d(rand(n * c * h * h, 1), [n, h, h, c]);
      const w = tf.tensor4d(rand(cout * c * 9, 2).map((v) => v * 0.05), [3, 3, c, cout]);
      const b = tf.tensor1d(rand(cout, 3));
      return { run: () => tf.fused.conv2d({ x, filter: w, bias: b, strides: 1, pad: 'same' }), dispose: () => tf.dispose([x, w, b]) };
    },
  };
}

function matmul(m: number, k: number, n: number): OpCase {
  return {
    name: `matmul ${m}x${k} @ ${k}x${n}`,
    ...ops.matmulCost({ a: [m, k], b: [k, n] }),
    bound: 'compute',
    ours(engine, dtype) {
      const a = engine.tensor(rand(m * k, 4), [m, k], dtype);
      const b = engine.tensor(rand(k * n, 5), [k, n], dtype);
      return { run: () => ops.matmul(a, b), dispose: () => [a, b].forEach((t) => t.dispose()) };
    },
    tfjs(tf) {
      const a = tf.tensor2d(rand(m * k, 4), [m, k]);
      const b = tf.tensor2d(rand(k * n, 5), [k, n]);
      return { run: () => tf.matMul(a, b), dispose: () => tf.dispose([a, b]) };
    },
  };
}

function attention(tokens: number, heads: number, dHead: number): OpCase {
  const c = heads * dHead;
  return {
    name: `attention ${heads} heads x ${dHead}, ${tokens} tokens`,
    ...ops.attentionCost({ batch: 1, lq: tokens, lk: tokens, channels: c, heads }),
    bound: 'compute',
    ours(engine, dtype) {
      const q = engine.tensor(rand(tokens * c, 6), [1, tokens, c], dtype);
      const k = engine.tensor(rand(tokens * c, 7), [1, tokens, c], dtype);
      const v = engine.tensor(rand(tokens * c, 8), [1, tokens, c], dtype);
      return { run: () => ops.attention(q, k, v, { heads }), dispose: () => [q, k, v].forEach((t) => t.dispose()) };
    },
    tfjs(tf) {
      const split = (t: TFTensor) => tf.transpose(tf.reshape(t, [1, tokens, heads, dHead]), [0, 2, 1, 3]);
      const q = tf.tensor3d(rand(tokens * c, 6), [1, tokens, c]);
      const k = tf.tensor3d(rand(tokens * c, 7), [1, tokens, c]);
      const v = tf.tensor3d(rand(tokens * c, 8), [1, tokens, c]);
      const scale = 1 / Math.sqrt(dHead);
      return {
        run: () =>
          tf.tidy(() => {
            const s = tf.mul(tf.matMul(split(q), split(k), false, true), scale);
            const o = tf.matMul(tf.softmax(s), split(v));
            return tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [1, tokens, c]);
          }),
        dispose: () => tf.dispose([q, k, v]),
      };
    },
  };
}

function groupNorm(n: number, c: number, h: number, groups: number): OpCase {
  const elems = n * c * h * h;
  return {
    name: `groupNorm ${groups} groups ${n}x${c}x${h}x${h}`,
    ...ops.groupNormCost({ shape: [n, c, h, h], groups }),
    bound: 'memory',
    ours(engine, dtype) {
      const x = engine.tensor(rand(elems, 9), [n, c, h, h], dtype);
      const g = engine.tensor(rand(c, 10), [c], dtype);
      const b = engine.tensor(rand(c, 11), [c], dtype);
      return { run: () => ops.groupNorm(x, g, b, { groups, eps: 1e-5 }), dispose: () => [x, g, b].forEach((t) => t.dispose()) };
    },
    tfjs(tf) {
      const x = tf.tensor4d(rand(elems, 9), [n, h, h, c]);
      const g = tf.tensor1d(rand(c, 10));
      const b = tf.tensor1d(rand(c, 11));
      return {
        run: () =>
          tf.tidy(() => {
            const xg = tf.reshape(x, [n, h * h, groups, c / groups]);
            const { mean, variance } = tf.moments(xg, [1, 3], true);
            const y = tf.reshape(tf.mul(tf.sub(xg, mean), tf.rsqrt(tf.add(variance, 1e-5))), [n, h, h, c]);
            return tf.add(tf.mul(y, g), b);
          }),
        dispose: () => tf.dispose([x, g, b]),
      };
    },
  };
}

// The roofline row: a plain vec4 buffer copy, the most bytes per second a kernel can move here.
// TF.js has no copy kernel (clone shares storage), so its side is x * 1, also one read + one write.
// The copy shape follows the adapter: on CPU adapters a workgroup is one SIMD register of lanes
// (8 on llvmpipe), and a lane that walks 64 vec4s (strided by the workgroup, so the lanes stay
// side by side) moves about twice the bytes per second of one vec4 per lane at 256 lanes, which
// pays per-invocation setup and bounds checks per element; GPUs want wide workgroups.
function copyKernel(wg: number, per: number) {
  return {
    name: `bench_copy_${wg}x${per}`,
    wgsl: `struct Params { n: u32, }
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let base = (wid.y * nwg.x + wid.x) * ${wg * per}u + lid;
  for (var k = 0u; k < ${per}u; k++) {
    let i = base + k * ${wg}u;
    if (i < p.n) { y[i] = x[i]; }
  }
}
`,
  };
}

function copy(mib: number): OpCase {
  const n = (mib * 2 ** 20) / 4;
  return {
    name: `copy ${mib} MiB (roofline)`,
    flops: 0,
    bytes: 8 * n,
    bound: 'memory',
    ours(engine) {
      const x = engine.tensor(rand(n, 12), [n]);
      const [wg, per] = engine.adapterKind === 'lavapipe' || engine.adapterKind === 'swiftshader' ? [8, 64] : [256, 4];
      const kernel = copyKernel(wg, per);
      return {
        tile: `wg${wg}x${per}`,
        run: () => {
          const y = engine.empty([n], 'f32', 'copy');
          const groups = Math.ceil(n / 4 / (wg * per));
          const max = engine.limits.maxComputeWorkgroupsPerDimension;
          const gy = Math.ceil(groups / max);
          engine.dispatch(kernel, { bindings: { x, y }, uniforms: { n: n / 4 }, workgroups: [Math.ceil(groups / gy), gy] });
          return y;
        },
        dispose: () => x.dispose(),
      };
    },
    tfjs(tf) {
      const x = tf.tensor1d(rand(n, 12));
      return { run: () => tf.mul(x, 1), dispose: () => tf.dispose([x]) };
    },
  };
}

export const OP_CASES: OpCase[] = [
  copy(16),
  conv3x3(1, 64, 32, 64),
  conv3x3(1, 128, 16, 128),
  conv3x3(1, 320, 16, 320),
  matmul(512, 512, 512),
  matmul(1024, 320, 320),
  attention(256, 8, 40),
  attention(1024, 8, 40),
  groupNorm(1, 320, 32, 32),
];

/** The cases whose name contains `filter` (all without one); none matching is an error. */
export function selectOpCases(filter?: string): OpCase[] {
  if (!filter) return OP_CASES;
  // `a|b` picks the cases matching any of the alternatives
  const picked = OP_CASES.filter((c) => filter.split('|').some((f) => c.name.includes(f)));
  if (picked.length === 0) throw new Error(`no op benchmark matches ${JSON.stringify(filter)} (cases: ${OP_CASES.map((c) => c.name).join('; ')})`);
  return picked;
}

export interface OpRow {
  name: string;
  flops: number;
  bytes: number;
  bound: 'compute' | 'memory';
  ours: Timing & { gflops: number; gbps: number };
  tfjs: (Timing & { gflops: number; gbps: number }) | null;
  /** TF.js time / our time: above 1 means we are faster */
  speedup: number | null;
  /** the GEMM tile the autotuner chose for this row on this adapter ('-': not a GEMM) */
  tile: string;
  /** our dispatches per call */
  dispatches: number;
}

/** bytesScale: 0.5 for our f16 rows (every tensor of these cases is a float tensor) */
function rates(t: Timing, c: OpCase, bytesScale = 1) {
  return { ...t, gflops: c.flops / (t.medianMs * 1e6), gbps: (c.bytes * bytesScale) / (t.medianMs * 1e6) };
}

export async function benchOps(engine: Engine, tf: TF | null, cases = OP_CASES, log = console.log, dtype: Dt = 'f32'): Promise<OpRow[]> {
  const rows: OpRow[] = [];
  for (const c of cases) {
    const o = c.ours(engine, dtype);
    // One call first: it compiles, counts the dispatches, and tells the tuner the GEMM problems
    // of this row, which it then measures on every candidate tile before the timing starts.
    takeRecentProblems(engine);
    const d0 = engine.stats().dispatches;
    o.run().dispose();
    const dispatches = engine.stats().dispatches - d0;
    const keys = [...new Set(takeRecentProblems(engine))];
    if (keys.length) await autotune(engine, { persist: false, log });
    const tile = keys.map((k) => tunedFor(engine, k)?.tile ?? '?').join(', ') || o.tile || '-';
    let last: Tensor | null = null;
    const ours = await timeIt(
      () => {
        last?.dispose();
        last = o.run();
      },
      async () => {
        if (last) await last.read();
      },
    );
    (last as Tensor | null)?.dispose();
    o.dispose();
    let tfT: Timing | null = null;
    if (tf) {
      const t = c.tfjs(tf);
      let out: TFTensor | null = null;
      tfT = await timeIt(
        () => {
          out?.dispose();
          out = t.run();
        },
        async () => {
          if (out) await out.data();
        },
      );
      (out as TFTensor | null)?.dispose();
      t.dispose();
    }
    const row: OpRow = {
      name: dtype === 'f32' ? c.name : `${c.name} ${dtype}`,
      flops: c.flops,
      bytes: c.bytes,
      bound: c.bound,
      ours: rates(ours, c, dtype === 'f16' ? 0.5 : 1),
      tfjs: tfT ? rates(tfT, c) : null,
      speedup: tfT ? tfT.medianMs / ours.medianMs : null,
      tile,
      dispatches,
    };
    log(
      `${row.name.padEnd(42)} ours ${ours.medianMs.toFixed(3).padStart(9)} ms` +
        (tfT ? `   tfjs ${tfT.medianMs.toFixed(3).padStart(9)} ms   x${row.speedup!.toFixed(2)}` : '') +
        `   tile ${tile}, ${dispatches} dispatch${dispatches === 1 ? '' : 'es'}`,
    );
    rows.push(row);
  }
  return rows;
}
