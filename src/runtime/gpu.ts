// Finding a WebGPU implementation: the browser's navigator.gpu, or Dawn through the `webgpu`
// package in Node. Node-only code is reached through a dynamic import so browser bundles
// never pull in Node built-ins.

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

const isNode =
  typeof process !== 'undefined' && !!(process as { versions?: { node?: string } }).versions?.node;

export function runningInNode(): boolean {
  return isNode && typeof (globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu === 'undefined';
}

let nodeGpu: GPU | undefined;
// One Dawn instance per Vulkan ICD choice, made once and kept for the life of the process: devices
// need their instance alive, and a fresh instance per Engine.create() (kept alive in a growing
// list, as before) cost about 2.5 MB of RSS per create/destroy cycle that never came back.
const dawnInstances = new Map<string, GPU>();

/** @internal how many Dawn instances this process holds (bounded by the ICD choices: at most 2). */
export function dawnInstanceCount(): number {
  return dawnInstances.size;
}

export interface AdapterRequest {
  powerPreference?: GPUPowerPreference;
}

/** Returns an adapter or throws an error that says how to get one. */
export async function requestAdapter(req: AdapterRequest = {}): Promise<GPUAdapter> {
  const browserGpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (browserGpu) {
    const a = await browserGpu.requestAdapter({ powerPreference: req.powerPreference });
    if (!a) throw new Error('WebGPU is present but returned no adapter: enable hardware acceleration, or in Chromium start with --enable-unsafe-webgpu');
    return a;
  }
  if (!isNode) {
    throw new Error('WebGPU is not available in this browser (no navigator.gpu): use a recent Chrome, Edge or Safari, or Firefox with WebGPU enabled');
  }
  return requestNodeAdapter(req);
}

async function requestNodeAdapter(req: AdapterRequest): Promise<GPUAdapter> {
  const webgpu = (await import('webgpu')) as unknown as {
    create: (flags: string[]) => GPU;
    globals: Record<string, unknown>;
  };
  Object.assign(globalThis, webgpu.globals);
  installNonSpinningWait();
  const tried: string[] = [];
  const attempt = async (label: string): Promise<GPUAdapter | null> => {
    const icd = process.env.VK_ICD_FILENAMES ?? '';
    let gpu = dawnInstances.get(icd);
    if (!gpu) {
      gpu = webgpu.create([]);
      dawnInstances.set(icd, gpu);
    }
    const a = await gpu.requestAdapter({ powerPreference: req.powerPreference ?? 'high-performance' });
    tried.push(`${label}: ${a ? 'ok' : 'no adapter'}`);
    if (a) nodeGpu = gpu;
    return a;
  };
  let adapter = await attempt('default Vulkan ICDs');
  if (!adapter) {
    const fs = await import('node:fs');
    if (fs.existsSync(SWIFTSHADER_ICD) && process.env.VK_ICD_FILENAMES !== SWIFTSHADER_ICD) {
      // The Vulkan loader reads this variable on every instance creation, so setting it now works.
      process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
      adapter = await attempt('SwiftShader');
    }
  }
  if (!adapter) {
    throw new Error(
      'No WebGPU adapter found in Node (' + tried.join('; ') + '). ' +
        'Install a Vulkan driver and loader, or for a CPU-only machine Chromium\'s SwiftShader: ' +
        '`apt-get install -y chromium libvulkan1` (then ' + SWIFTSHADER_ICD + ' is used automatically).',
    );
  }
  return adapter;
}

export function nodeGpuInstance(): GPU | undefined {
  return nodeGpu;
}

let patched = false;
/**
 * Dawn's Node binding keeps pending promises (mapAsync, onSubmittedWorkDone) alive by re-arming
 * a native callback with the global `setImmediate` until they settle, which spins the JS thread at
 * 100% and steals a core from the GPU (or from SwiftShader's CPU threads). We route exactly those
 * native callbacks through a 1 ms timer instead; everyone else's setImmediate is untouched.
 */
function installNonSpinningWait(): void {
  if (patched) return;
  patched = true;
  const g = globalThis as unknown as { setImmediate: (fn: (...a: unknown[]) => void, ...args: unknown[]) => unknown };
  const original = g.setImmediate;
  const toString = Function.prototype.toString;
  const wrapped = function (fn: (...a: unknown[]) => void, ...args: unknown[]) {
    if (typeof fn === 'function' && fn.name === '' && toString.call(fn).includes('[native code]')) {
      return setTimeout(fn, POLL_MS, ...args);
    }
    return original(fn, ...args);
  };
  Object.defineProperty(wrapped, 'name', { value: 'setImmediate' });
  g.setImmediate = Object.assign(wrapped, original);
}

/** Milliseconds between Dawn event polls while a GPU promise is pending in Node. */
export const POLL_MS = 1;
