// Adapter choice in Node: the automatic order (hardware, lavapipe, SwiftShader), forcing one with
// the adapterKind option or LDM_WEBGPU_ADAPTER, and engine.info() saying which and why.
import { describe, it, expect, afterEach } from 'vitest';
import { existsSync } from 'node:fs';
import { Engine } from '../src/index.js';
import { LAVAPIPE_ICDS, SWIFTSHADER_ICD, adapterKindOf } from '../src/runtime/gpu.js';

const hasLavapipe = LAVAPIPE_ICDS.some((p) => existsSync(p));
const hasSwiftShader = existsSync(SWIFTSHADER_ICD);
const savedEnv = process.env.LDM_WEBGPU_ADAPTER;
afterEach(() => {
  if (savedEnv === undefined) delete process.env.LDM_WEBGPU_ADAPTER;
  else process.env.LDM_WEBGPU_ADAPTER = savedEnv;
});

describe('adapter choice', () => {
  it('classifies adapters from their info', () => {
    expect(adapterKindOf({ vendor: 'google', architecture: 'swiftshader', description: 'SwiftShader driver 5.0.0' })).toBe('swiftshader');
    expect(adapterKindOf({ vendor: 'mesa', architecture: 'software', description: 'llvmpipe: Mesa 25.0.7' })).toBe('lavapipe');
    expect(adapterKindOf({ vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H100' })).toBe('hardware');
  });

  it('the default engine says which adapter it got and why', async () => {
    delete process.env.LDM_WEBGPU_ADAPTER;
    const e = await Engine.create({ f16: false });
    const i = e.info();
    expect(['hardware', 'lavapipe', 'swiftshader']).toContain(i.adapterKind);
    expect(i.adapterReason.length).toBeGreaterThan(10);
    // the order: lavapipe before SwiftShader when there is no GPU
    if (i.adapterKind === 'swiftshader' && !process.env.VK_ICD_FILENAMES) expect(hasLavapipe).toBe(false);
    e.destroy();
  });

  it.runIf(hasSwiftShader)('adapterKind forces SwiftShader (no shader-f16 there)', async () => {
    const e = await Engine.create({ adapterKind: 'swiftshader' });
    expect(e.info().adapterKind).toBe('swiftshader');
    expect(e.info().adapterReason).toMatch(/forced by adapterKind option 'swiftshader'/);
    expect(e.f16).toBe(false);
    e.destroy();
  });

  it.runIf(hasLavapipe)('LDM_WEBGPU_ADAPTER=lavapipe forces lavapipe, which has shader-f16', async () => {
    process.env.LDM_WEBGPU_ADAPTER = 'lavapipe';
    const e = await Engine.create();
    expect(e.info().adapterKind).toBe('lavapipe');
    expect(e.info().adapterReason).toMatch(/forced by LDM_WEBGPU_ADAPTER=lavapipe/);
    expect(e.hasShaderF16).toBe(true);
    e.destroy();
  });

  it('a bad kind is a clear error', async () => {
    process.env.LDM_WEBGPU_ADAPTER = 'gpu-please';
    await expect(Engine.create()).rejects.toThrow("LDM_WEBGPU_ADAPTER: 'gpu-please' is not an adapter kind; use one of hardware, lavapipe, swiftshader");
    delete process.env.LDM_WEBGPU_ADAPTER;
    // @ts-expect-error not a kind
    await expect(Engine.create({ adapterKind: 'cpu' })).rejects.toThrow(/adapterKind.*'cpu' is not an adapter kind/);
  });
});
