// Finding a WebGPU implementation: the browser's navigator.gpu, or Dawn through the `webgpu`
// package in Node. Node-only code is reached through a dynamic import so browser bundles
// never pull in Node built-ins.

import { fileExists, isNode } from './io.js';

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

export function runningInNode(): boolean {
  return isNode() && typeof (globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu === 'undefined';
}

let nodeGpu: GPU | undefined;
// One Dawn instance per Vulkan ICD choice, made once and kept for the life of the process: devices
// need their instance alive, and a fresh instance per Engine.create() (kept alive in a growing
// list, as before) cost about 2.5 MB of RSS per create/destroy cycle that never came back.
const dawnInstances = new Map<string, GPU>();

/** @internal how many Dawn instances this process holds (bounded by the ICD choices: system, user, lavapipe, SwiftShader). */
export function dawnInstanceCount(): number {
  return dawnInstances.size;
}

/** Which kind of adapter runs the work: a GPU, Mesa's lavapipe or SwiftShader (both on the CPU), or the browser's own. */
export type AdapterKind = 'hardware' | 'lavapipe' | 'swiftshader' | 'browser';
const NODE_KINDS = ['hardware', 'lavapipe', 'swiftshader'] as const;
export type NodeAdapterKind = (typeof NODE_KINDS)[number];

/** Where Debian/Ubuntu's mesa-vulkan-drivers put lavapipe's ICD (the file name carries the arch on some). */
export const LAVAPIPE_ICDS = [
  '/usr/share/vulkan/icd.d/lvp_icd.json',
  '/usr/share/vulkan/icd.d/lvp_icd.x86_64.json',
  '/usr/share/vulkan/icd.d/lvp_icd.aarch64.json',
];

export interface AdapterRequest {
  powerPreference?: GPUPowerPreference;
  /** Node only: force one kind (else LDM_WEBGPU_ADAPTER, else hardware -> lavapipe -> SwiftShader). */
  adapterKind?: NodeAdapterKind;
}

export interface ChosenAdapter {
  adapter: GPUAdapter;
  kind: AdapterKind;
  /** one line: why this adapter (forced, VK_ICD_FILENAMES, or what the automatic order found) */
  reason: string;
}

/** Classifies an adapter from its info: CPU implementations say who they are. */
export function adapterKindOf(info: Partial<GPUAdapterInfo> | undefined): NodeAdapterKind {
  const text = [info?.vendor, info?.architecture, info?.device, info?.description].join(' ').toLowerCase();
  if (text.includes('swiftshader')) return 'swiftshader';
  if (text.includes('llvmpipe') || text.includes('lavapipe')) return 'lavapipe';
  return 'hardware';
}

/** Returns an adapter or throws an error that says how to get one. */
export async function requestAdapter(req: AdapterRequest = {}): Promise<GPUAdapter> {
  return (await chooseAdapter(req)).adapter;
}

/** Like requestAdapter, and says which kind of adapter it is and why it was chosen. */
export async function chooseAdapter(req: AdapterRequest = {}): Promise<ChosenAdapter> {
  const browserGpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (browserGpu) {
    const a = await browserGpu.requestAdapter({ powerPreference: req.powerPreference });
    if (!a) throw new Error('WebGPU is present but returned no adapter: enable hardware acceleration, or in Chromium start with --enable-unsafe-webgpu');
    return { adapter: a, kind: 'browser', reason: "the browser's navigator.gpu" };
  }
  if (!isNode()) {
    throw new Error('WebGPU is not available in this browser (no navigator.gpu): use a recent Chrome, Edge or Safari, or Firefox with WebGPU enabled');
  }
  return requestNodeAdapter(req);
}

function parseKind(value: string | undefined, from: string): NodeAdapterKind | undefined {
  if (value === undefined || value === '') return undefined;
  const v = value.trim().toLowerCase();
  if ((NODE_KINDS as readonly string[]).includes(v)) return v as NodeAdapterKind;
  throw new Error(`${from}: '${value}' is not an adapter kind; use one of ${NODE_KINDS.join(', ')}`);
}

/** the VK_ICD_FILENAMES value this module set last (told apart from a user's own setting) */
let icdWeSet: string | undefined;

async function requestNodeAdapter(req: AdapterRequest): Promise<ChosenAdapter> {
  // Validate before touching anything, so a typo is reported as such.
  const forced = req.adapterKind !== undefined
    ? { kind: parseKind(req.adapterKind, 'Engine.create({ adapterKind })')!, by: `adapterKind option '${req.adapterKind}'` }
    : process.env.LDM_WEBGPU_ADAPTER
      ? { kind: parseKind(process.env.LDM_WEBGPU_ADAPTER, 'LDM_WEBGPU_ADAPTER')!, by: `LDM_WEBGPU_ADAPTER=${process.env.LDM_WEBGPU_ADAPTER}` }
      : undefined;
  const webgpu = (await import('webgpu')) as unknown as {
    create: (flags: string[]) => GPU;
    globals: Record<string, unknown>;
  };
  Object.assign(globalThis, webgpu.globals);
  installNonSpinningWait();
  const present = await Promise.all(LAVAPIPE_ICDS.map((p) => fileExists(p)));
  const lavapipeIcd = LAVAPIPE_ICDS.find((_, i) => present[i]);
  const swiftshaderIcd = (await fileExists(SWIFTSHADER_ICD)) ? SWIFTSHADER_ICD : undefined;
  const tried: string[] = [];
  // VK_ICD_FILENAMES as the user set it (not as an earlier Engine.create in this process left it).
  const userIcd = process.env.VK_ICD_FILENAMES && process.env.VK_ICD_FILENAMES !== icdWeSet ? process.env.VK_ICD_FILENAMES : undefined;
  if (!userIcd) delete process.env.VK_ICD_FILENAMES;
  // The Vulkan loader reads VK_ICD_FILENAMES on every instance creation, so setting it before
  // webgpu.create() selects the driver; undefined leaves the variable as it is.
  const attempt = async (label: string, icd: string | null | undefined): Promise<{ a: GPUAdapter; kind: NodeAdapterKind } | null> => {
    const saved = process.env.VK_ICD_FILENAMES;
    if (icd === null) delete process.env.VK_ICD_FILENAMES;
    else if (icd !== undefined) process.env.VK_ICD_FILENAMES = icdWeSet = icd;
    // one Dawn instance per ICD choice, kept for the process (see dawnInstances)
    const key = process.env.VK_ICD_FILENAMES ?? '';
    let gpu = dawnInstances.get(key);
    if (!gpu) {
      gpu = webgpu.create([]);
      dawnInstances.set(key, gpu);
    }
    const a = await gpu.requestAdapter({ powerPreference: req.powerPreference ?? 'high-performance' });
    const kind = a ? adapterKindOf(a.info) : undefined;
    tried.push(`${label}: ${a ? `${kind} (${a.info?.description || a.info?.vendor || '?'})` : 'no adapter'}`);
    if (!a) {
      if (saved === undefined) delete process.env.VK_ICD_FILENAMES;
      else process.env.VK_ICD_FILENAMES = saved;
      return null;
    }
    nodeGpu = gpu;
    return { a, kind: kind! };
  };
  const fail = (why: string): never => {
    throw new Error(
      `No WebGPU adapter found in Node: ${why} (tried ${tried.join('; ') || 'nothing'}). ` +
        'Install a Vulkan driver and loader; for a CPU-only machine `bash scripts/setup.sh` installs Mesa lavapipe ' +
        "(Debian 12: mesa-vulkan-drivers from bookworm-backports) or Chromium's SwiftShader (`apt-get install -y chromium libvulkan1`).",
    );
  };

  if (forced) {
    const { kind, by } = forced;
    if (kind === 'hardware') {
      // The user's VK_ICD_FILENAMES (if any) still applies; a CPU adapter is not what was asked for.
      const r = await attempt('Vulkan ICDs', undefined);
      if (r?.kind === 'hardware') return { adapter: r.a, kind, reason: `forced by ${by}` };
      return fail(`${by} asks for a hardware adapter and the Vulkan drivers offer none${r ? ` (only ${r.kind})` : ''}`);
    }
    const icd = kind === 'lavapipe' ? lavapipeIcd : swiftshaderIcd;
    if (!icd) return fail(`${by}, but ${kind === 'lavapipe' ? `no lavapipe ICD (${LAVAPIPE_ICDS[0]})` : `no SwiftShader ICD (${SWIFTSHADER_ICD})`} is installed`);
    const r = await attempt(kind, icd);
    if (r) return { adapter: r.a, kind: r.kind, reason: `forced by ${by} (${icd})` };
    return fail(`${by}: the ${kind} driver gave no adapter`);
  }

  if (userIcd) {
    const r = await attempt(`VK_ICD_FILENAMES=${userIcd}`, undefined);
    if (r) return { adapter: r.a, kind: r.kind, reason: `VK_ICD_FILENAMES=${userIcd} (set by the user)` };
  }
  // Automatic order: a GPU; else lavapipe (fast, shader-f16); else SwiftShader.
  const sys = await attempt('system Vulkan ICDs', userIcd ? null : undefined);
  if (sys?.kind === 'hardware') return { adapter: sys.a, kind: 'hardware', reason: 'a hardware adapter (first in the automatic order hardware, lavapipe, SwiftShader)' };
  if (sys?.kind === 'lavapipe') return { adapter: sys.a, kind: 'lavapipe', reason: 'no hardware adapter; lavapipe is next in the order hardware, lavapipe, SwiftShader' };
  if (lavapipeIcd) {
    const r = await attempt('lavapipe', lavapipeIcd);
    if (r) return { adapter: r.a, kind: r.kind, reason: `no hardware adapter; lavapipe (${lavapipeIcd}) is next in the order hardware, lavapipe, SwiftShader` };
  }
  if (sys) return { adapter: sys.a, kind: sys.kind, reason: `no hardware adapter and no lavapipe; ${sys.kind} from the system Vulkan ICDs` };
  if (swiftshaderIcd) {
    const r = await attempt('SwiftShader', swiftshaderIcd);
    if (r) return { adapter: r.a, kind: r.kind, reason: `no hardware adapter and no lavapipe; SwiftShader (${swiftshaderIcd}) is last in the order hardware, lavapipe, SwiftShader` };
  }
  return fail('no Vulkan driver offered an adapter');
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
