import { describe, it, expect, afterAll } from 'vitest';
import { performance } from 'node:perf_hooks';
import { Engine, ops } from '../src/index.js';
import { getEngine, randArray, relL2, track, reportWorst } from './helpers.js';

afterAll(() => reportWorst('runtime'));

describe('Engine', () => {
  it('creates a device and names the adapter', async () => {
    const e = await getEngine();
    const info = e.info();
    expect(info.name.length).toBeGreaterThan(0);
    expect(info.limits.maxStorageBufferBindingSize).toBeGreaterThan(0);
    expect(Array.isArray(info.features)).toBe(true);
    console.log('adapter:', info.name, 'f16:', info.f16, 'features:', info.features.join(','));
  });

  it('round-trips f32 and i32 tensors', async () => {
    const e = await getEngine();
    const a = randArray(1001, 1);
    const t = e.tensor(a, [7, 11, 13]);
    expect(t.shape).toEqual([7, 11, 13]);
    expect(await t.read()).toEqual(a);
    const ints = Int32Array.from({ length: 37 }, (_, i) => i * 7 - 100);
    const ti = e.tensor(ints, [37]);
    expect(ti.dtype).toBe('i32');
    expect(await ti.read()).toEqual(ints);
    t.dispose();
    ti.dispose();
  });

  it('rejects use after dispose, other engines and wrong sizes', async () => {
    const e = await getEngine();
    const t = e.tensor(randArray(6, 2), [2, 3]);
    t.dispose();
    await expect(t.read()).rejects.toThrow(/after dispose/);
    expect(() => ops.silu(t)).toThrow(/silu.*dispose/);
    expect(() => e.tensor(new Float32Array(5), [2, 3])).toThrow(/do not fill shape \[2, 3\]/);
    const e2 = await Engine.create();
    const other = e2.tensor(randArray(4, 3), [4]);
    await expect(e.readTensor(other)).rejects.toThrow(/another engine/);
    e2.destroy();
  });

  it('refuses a tensor over the binding limit with a clear error', async () => {
    const e = await getEngine();
    const limit = e.limits.maxStorageBufferBindingSize;
    const elems = Math.floor(limit / 4) + 1;
    expect(() => e.empty([elems], 'f32', 'test-op')).toThrow(/test-op.*maxStorageBufferBindingSize/);
  });

  it('reuses pooled buffers and reports memory', async () => {
    const e = await getEngine();
    await e.releaseCached();
    const before = e.memory();
    const a = e.tensor(randArray(4096, 4), [4096]);
    const m1 = e.memory();
    expect(m1.inUseBytes - before.inUseBytes).toBeGreaterThanOrEqual(4096 * 4);
    a.dispose();
    const m2 = e.memory();
    expect(m2.inUseBytes).toBe(before.inUseBytes);
    expect(m2.heldBytes).toBe(m1.heldBytes);
    const b = e.tensor(randArray(4000, 5), [4000]); // same size class: no new buffer
    expect(e.memory().heldBytes).toBe(m1.heldBytes);
    b.dispose();
    await e.releaseCached();
    expect(e.memory().heldBytes).toBe(before.heldBytes);
  });

  it('records many dispatches into one submit and creates no bind groups in steady state', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(300, 6), [300]);
    const step = () => {
      let h = ops.scale(x, 0.5, 0.1);
      for (let i = 0; i < 5; i++) {
        const n = ops.silu(h);
        h.dispose();
        h = n;
      }
      return h;
    };
    step().dispose();
    step().dispose();
    await e.sync();
    const s0 = e.stats();
    const out = step();
    const r = await out.read();
    const s1 = e.stats();
    expect(s1.submits - s0.submits).toBe(1);
    expect(s1.dispatches - s0.dispatches).toBe(6);
    expect(s1.bindGroupsCreated - s0.bindGroupsCreated).toBe(0);
    expect(s1.compiles - s0.compiles).toBe(0);
    // float64 reference
    const xs = await x.read();
    const ref = Array.from(xs, (v) => {
      let h = 0.5 * v + 0.1;
      for (let i = 0; i < 5; i++) h = h / (1 + Math.exp(-h));
      return h;
    });
    expect(track('scale+silu chain', relL2(r, ref))).toBeLessThan(1e-5);
    out.dispose();
    x.dispose();
  });

  it('reshape shares the buffer until the last view is disposed', async () => {
    const e = await getEngine();
    const base = e.memory().inUseBytes;
    const a = e.tensor(randArray(24, 7), [2, 3, 4]);
    const b = a.reshape([6, 4]);
    a.dispose();
    expect(await b.read()).toHaveLength(24);
    b.dispose();
    expect(e.memory().inUseBytes).toBe(base);
  });

  it('waits for the GPU without spinning the JS thread', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(1 << 20, 8), [1 << 20]);
    let h = x;
    for (let i = 0; i < 40; i++) {
      const n = ops.silu(h);
      if (h !== x) h.dispose();
      h = n;
    }
    const { eventLoopUtilization } = performance;
    const elu0 = eventLoopUtilization();
    const t0 = performance.now();
    await h.read();
    const wall = performance.now() - t0;
    const elu = eventLoopUtilization(elu0);
    // A loop re-armed with setImmediate is busy ~100% of the wait; timer polling leaves it idle.
    console.log(`read wait: wall ${wall.toFixed(0)} ms, event loop utilisation ${(elu.utilization * 100).toFixed(1)}%`);
    expect(wall).toBeGreaterThan(50);
    expect(elu.utilization).toBeLessThan(0.5);
    h.dispose();
    x.dispose();
  });

  it('profiles kernels', async () => {
    const e = await getEngine();
    const x = e.tensor(randArray(5000, 9), [5000]);
    const rep = await e.profile(() => {
      ops.silu(x).dispose();
      ops.gelu(x).dispose();
    });
    expect(rep.kernels.map((k) => k.name)).toContain('unary');
    expect(rep.kernels.reduce((s, k) => s + k.count, 0)).toBe(2);
    console.log('profile:', JSON.stringify(rep));
    x.dispose();
  });
});
