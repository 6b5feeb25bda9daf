import { adapterKindOf, chooseAdapter, runningInNode, type AdapterKind, type NodeAdapterKind } from './gpu.js';
import { BufferPool, type PooledBuffer } from './buffer_pool.js';
import { PipelineCache, type KernelSource } from './pipeline_cache.js';
import { Tensor, type DType, DTYPE_BYTES, numel, shapeStr } from './tensor.js';
import { Recorder } from './recorder.js';
import { Profiler, type ProfileReport } from './profiler.js';
import { f16BitsToF32, f32ToF16Bits } from './half.js';
import { keep, openScope, type Scope } from './scope.js';

export interface EngineOptions {
  powerPreference?: GPUPowerPreference;
  /** Use f16 storage where the adapter has shader-f16 (default true). Models read engine.f16. */
  f16?: boolean;
  /** An adapter to use instead of requesting one. */
  adapter?: GPUAdapter;
  /** Node: force 'hardware', 'lavapipe' or 'swiftshader' (overrides LDM_WEBGPU_ADAPTER; default: the
   * first of hardware, lavapipe, SwiftShader that exists, or what VK_ICD_FILENAMES names). */
  adapterKind?: NodeAdapterKind;
}

export interface EngineInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** a one-line name for reports */
  name: string;
  features: string[];
  f16: boolean;
  timestampQuery: boolean;
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number; maxComputeWorkgroupStorageSize: number; maxComputeInvocationsPerWorkgroup: number };
  backend: 'browser' | 'node';
  /** which kind of adapter: 'hardware', 'lavapipe', 'swiftshader' (Node) or 'browser' */
  adapterKind: AdapterKind;
  /** why this adapter was chosen (forced by option or env, VK_ICD_FILENAMES, or the automatic order) */
  adapterReason: string;
}

export interface DispatchArgs {
  /** tensors by the names of their WGSL bindings */
  bindings: Record<string, Tensor>;
  /** values for the members of the kernel's uniform struct, by name */
  uniforms?: Record<string, number | readonly number[]>;
  /** workgroup counts; a count above the device limit is an error naming the op */
  workgroups: readonly [number, number?, number?];
  /** override constants */
  constants?: Record<string, number>;
  /** storage dtype that `T` stands for (default: the first bound tensor's float dtype) */
  dtype?: DType;
}

let nextEngineId = 1;

export class Engine {
  readonly device: GPUDevice;
  readonly adapter: GPUAdapter;
  readonly id = nextEngineId++;
  /** true when shader-f16 is enabled and the caller did not opt out */
  readonly f16: boolean;
  readonly hasShaderF16: boolean;
  readonly limits: GPUSupportedLimits;
  private pool: BufferPool;
  private pipelines: PipelineCache;
  private recorder: Recorder;
  readonly profiler: Profiler;
  private lostReason: string | null = null;
  private gpuError: string | null = null;
  private readonly backend: 'browser' | 'node';
  /** which kind of adapter runs the work, and why it was chosen */
  readonly adapterKind: AdapterKind;
  readonly adapterReason: string;
  /** @internal the current scopes, innermost last (see scope.ts) */
  readonly scopeStack: Scope[] = [];
  /** @internal test hook: the next dispatch() calls counted, and the 1-based call that throws */
  readonly faults = { dispatches: 0, failAt: 0 };
  /** @internal the bench's FLOP counter: while set, each op call reports its cost function's
   * result here (kernels/kit.ts countCost), so a whole forward's FLOPs are the ops' own figures */
  costSink: ((op: string, flops: number, bytes: number) => void) | null = null;

  private constructor(adapter: GPUAdapter, device: GPUDevice, opts: EngineOptions, backend: 'browser' | 'node', choice: { kind: AdapterKind; reason: string }) {
    this.adapter = adapter;
    this.adapterKind = choice.kind;
    this.adapterReason = choice.reason;
    this.device = device;
    this.backend = backend;
    this.limits = device.limits;
    this.hasShaderF16 = device.features.has('shader-f16');
    this.f16 = this.hasShaderF16 && opts.f16 !== false;
    this.pipelines = new PipelineCache(device);
    this.recorder = new Recorder(device);
    this.pool = new BufferPool(device, (pb) => this.recorder.forgetBuffer(pb.id));
    this.profiler = new Profiler(this, device.features.has('timestamp-query'));
    this.recorder.profiler = this.profiler;
    device.lost.then((info) => {
      this.lostReason = `${info.reason ?? 'unknown'}: ${info.message}`;
    });
    this.onUncapturedError = (ev: Event) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      if (!this.gpuError) this.gpuError = e?.message ?? String(e);
    };
    device.addEventListener?.('uncapturederror', this.onUncapturedError);
  }

  // Removed again in destroy(): Dawn's Node binding keeps a device's listeners (and through this
  // closure the whole Engine, its pool and caches) reachable after device.destroy().
  private readonly onUncapturedError: (ev: Event) => void;

  static async create(opts: EngineOptions = {}): Promise<Engine> {
    const backend = runningInNode() ? 'node' : 'browser';
    const choice = opts.adapter
      ? { adapter: opts.adapter, kind: backend === 'node' ? adapterKindOf(opts.adapter.info) : ('browser' as const), reason: 'passed in as EngineOptions.adapter' }
      : await chooseAdapter({ powerPreference: opts.powerPreference, adapterKind: opts.adapterKind });
    const adapter = choice.adapter;
    const requiredFeatures: GPUFeatureName[] = [];
    // subgroups: the GEMM core's subgroup-broadcast tiles (kernels/gemm.ts) on adapters with 8-lane subgroups
    for (const f of ['shader-f16', 'timestamp-query', 'subgroups'] as GPUFeatureName[]) {
      if (adapter.features.has(f)) requiredFeatures.push(f);
    }
    const L = adapter.limits;
    const requiredLimits: Record<string, number> = {
      maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
      maxBufferSize: L.maxBufferSize,
      maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: L.maxComputeWorkgroupSizeY,
      maxComputeWorkgroupsPerDimension: L.maxComputeWorkgroupsPerDimension,
      maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
    };
    const device = await adapter.requestDevice({ requiredFeatures, requiredLimits, label: 'ldm-webgpu' });
    return new Engine(adapter, device, opts, backend, choice);
  }

  info(): EngineInfo {
    const i = this.adapter.info ?? ({} as GPUAdapterInfo);
    const name = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' / ') || 'unknown adapter';
    const L = this.limits;
    return {
      vendor: i.vendor ?? '',
      architecture: i.architecture ?? '',
      device: i.device ?? '',
      description: i.description ?? '',
      name,
      features: [...this.device.features].sort(),
      f16: this.f16,
      timestampQuery: this.device.features.has('timestamp-query'),
      limits: {
        maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
        maxBufferSize: L.maxBufferSize,
        maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
      },
      backend: this.backend,
      adapterKind: this.adapterKind,
      adapterReason: this.adapterReason,
    };
  }

  // ---------------------------------------------------------------- tensors

  /** Uploads host data. dtype defaults to i32 for Int32Array, else f32 (f16 stores the rounded values). */
  tensor(data: Float32Array | Int32Array | readonly number[], shape: readonly number[], dtype?: DType): Tensor {
    this.checkAlive('tensor');
    const dt: DType = dtype ?? (data instanceof Int32Array ? 'i32' : 'f32');
    if (numel(shape) !== data.length) {
      throw new Error(`engine.tensor: ${data.length} values do not fill shape ${shapeStr(shape)} (${numel(shape)} elements)`);
    }
    const t = this.empty(shape, dt, 'engine.tensor', true);
    let bytes: ArrayBufferView;
    if (dt === 'i32') bytes = data instanceof Int32Array ? data : Int32Array.from(data);
    else if (dt === 'f32') bytes = data instanceof Float32Array ? data : Float32Array.from(data);
    else bytes = f32ToF16Bits(data);
    this.writeTensor(t, bytes);
    return t;
  }

  /** Writes raw little-endian bytes into a tensor (ordered before any work recorded after this call). */
  writeTensor(t: Tensor, bytes: ArrayBufferView): void {
    this.checkTensor('writeTensor', t);
    if (bytes.byteLength !== t.byteLength) {
      throw new Error(`writeTensor: ${bytes.byteLength} bytes for tensor ${shapeStr(t.shape)} ${t.dtype} (${t.byteLength} bytes)`);
    }
    // queue.writeBuffer runs before unsubmitted work: if that work uses this buffer, submit it first.
    if (this.recorder.isPending(t.pooled().id)) this.recorder.flushIfPending();
    let n = bytes.byteLength;
    if (n % 4 !== 0) {
      const padded = new Uint8Array(Math.ceil(n / 4) * 4);
      padded.set(new Uint8Array(bytes.buffer, bytes.byteOffset, n));
      bytes = padded;
      n = padded.byteLength;
    }
    this.device.queue.writeBuffer(t.buffer, 0, bytes.buffer, bytes.byteOffset, n);
  }

  /** An uninitialised tensor from the pool. */
  empty(shape: readonly number[], dtype: DType = 'f32', op = 'empty', forUpload = false): Tensor {
    this.checkAlive(op);
    const bytes = numel(shape) * DTYPE_BYTES[dtype];
    const limit = this.limits.maxStorageBufferBindingSize;
    if (bytes > limit) {
      throw new Error(
        `${op}: tensor ${shapeStr(shape)} ${dtype} needs ${bytes} bytes, over this device's maxStorageBufferBindingSize (${limit}); split the work (e.g. tiled decoding) or use a device with larger limits`,
      );
    }
    const pb = this.pool.acquire(Math.max(4, bytes), forUpload ? (p) => this.recorder.isPending(p.id) : undefined);
    return new Tensor(this, pb, shape, dtype);
  }

  /** @internal */
  releaseBuffer(pb: PooledBuffer): void {
    this.pool.release(pb);
  }

  memory(): { heldBytes: number; inUseBytes: number; peakInUseBytes: number } {
    return { heldBytes: this.pool.heldBytes, inUseBytes: this.pool.inUseBytes, peakInUseBytes: this.pool.peakInUseBytes };
  }

  resetPeakMemory(): void {
    this.pool.peakInUseBytes = this.pool.inUseBytes;
  }

  /** Frees pooled buffers no tensor uses (after pending work finishes). */
  async releaseCached(): Promise<void> {
    await this.sync();
    this.pool.trim();
  }

  // ---------------------------------------------------------------- lifetimes

  /**
   * Runs fn and disposes every tensor created inside it when it returns or throws, except the
   * tensors it returns (in any nesting of arrays and plain objects; they go to the enclosing scope)
   * and those passed to keep(). fn may be async: it then owns tensors made in its synchronous start
   * and, after an await, those made inside `s.run(() => ...)` and child scopes `s.scope(...)`; the
   * returned Promise settles after the cleanup.
   */
  scope<T>(fn: (s: Scope) => T): T {
    return openScope(this, this.scopeStack[this.scopeStack.length - 1] ?? null, fn);
  }

  /** Takes t out of every scope: the caller disposes it. */
  keep<T extends Tensor>(t: T): T {
    return keep(t);
  }

  // ---------------------------------------------------------------- recording


  /** Records one compute dispatch. Validates bindings against the kernel's reflected WGSL. */
  dispatch(src: KernelSource, args: DispatchArgs): void {
    this.checkAlive(src.name);
    if (this.faults.failAt && ++this.faults.dispatches === this.faults.failAt) throw new Error(`${src.name}: injected failure at dispatch ${this.faults.failAt}`);
    const first = Object.values(args.bindings).find((t) => t.dtype !== 'i32');
    const dtype: DType = args.dtype ?? first?.dtype ?? 'f32';
    if (dtype === 'f16' && !this.hasShaderF16) throw new Error(`${src.name}: f16 tensors need the shader-f16 feature, which this adapter lacks`);
    const k = this.pipelines.get(src, dtype, args.constants);
    const limit = this.limits.maxStorageBufferBindingSize;
    const entries: { binding: number; pb: PooledBuffer; size: number }[] = [];
    for (const b of k.bindings) {
      if (b.kind === 'uniform') continue;
      const t = args.bindings[b.name];
      if (!t) throw new Error(`${src.name}: binding '${b.name}' was not given (have ${Object.keys(args.bindings).join(', ')})`);
      this.checkTensor(src.name, t);
      if (t.byteLength > limit) throw new Error(`${src.name}: tensor ${shapeStr(t.shape)} (${t.byteLength} bytes) exceeds maxStorageBufferBindingSize ${limit}`);
      const pb = t.pooled(src.name);
      entries.push({ binding: b.binding, pb, size: Math.min(pb.size, Math.max(16, Math.ceil(t.byteLength / 4) * 4)) });
    }
    for (const name of Object.keys(args.bindings)) {
      if (!k.bindings.some((b) => b.name === name)) throw new Error(`${src.name}: the kernel has no binding named '${name}'`);
    }
    const maxWg = this.limits.maxComputeWorkgroupsPerDimension;
    const wg: [number, number, number] = [args.workgroups[0], args.workgroups[1] ?? 1, args.workgroups[2] ?? 1];
    for (const w of wg) {
      if (!Number.isInteger(w) || w < 0) throw new Error(`${src.name}: bad workgroup count ${wg.join('x')}`);
      if (w > maxWg) throw new Error(`${src.name}: ${wg.join('x')} workgroups exceed the device limit of ${maxWg} per dimension; the input is too large for this op`);
    }
    if (wg[0] * wg[1] * wg[2] === 0) return;
    this.recorder.dispatch(k, entries, args.uniforms ?? {}, wg);
  }

  /** Records a buffer copy between tensors (byte offsets and size multiples of 4). */
  copy(src: Tensor, srcOffset: number, dst: Tensor, dstOffset: number, bytes: number): void {
    this.checkTensor('copy', src);
    this.checkTensor('copy', dst);
    this.recorder.copy(src.pooled().buffer, srcOffset, dst.pooled().buffer, dstOffset, bytes);
  }

  /** Submits recorded work to the GPU. */
  flush(): void {
    this.checkAlive('flush');
    this.recorder.flushIfPending();
  }

  /** Submits recorded work and waits until the GPU has finished it. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.profiler.collect();
    this.throwIfFailed('sync');
  }

  /** @internal */
  async readTensor(t: Tensor): Promise<Float32Array | Int32Array> {
    this.checkTensor('read', t);
    const bytes = Math.max(4, Math.ceil(t.byteLength / 4) * 4);
    const staging = this.device.createBuffer({ size: bytes, usage: 0x1 | 0x8 /* MAP_READ | COPY_DST */ });
    this.recorder.copy(t.buffer, 0, staging, 0, bytes);
    this.recorder.flushIfPending();
    try {
      await staging.mapAsync(1 /* GPUMapMode.READ */);
    } catch (e) {
      staging.destroy();
      this.throwIfFailed('read');
      throw new Error(`read: mapping the result of ${shapeStr(t.shape)} failed: ${(e as Error).message}`);
    }
    const raw = staging.getMappedRange().slice(0, t.byteLength);
    staging.unmap();
    staging.destroy();
    this.throwIfFailed('read');
    await this.profiler.collect();
    if (t.dtype === 'i32') return new Int32Array(raw);
    if (t.dtype === 'f32') return new Float32Array(raw);
    return f16BitsToF32(new Uint16Array(raw));
  }

  /** Per-kernel GPU time of the work recorded inside fn (timestamp queries, else wall time). */
  async profile(fn: () => unknown | Promise<unknown>): Promise<ProfileReport> {
    return this.profiler.run(fn);
  }

  // ---------------------------------------------------------------- checks

  /** @internal throws an Error naming the op when t is unusable here */
  checkTensor(op: string, t: Tensor): void {
    if (!(t instanceof Tensor)) throw new Error(`${op}: expected a Tensor, got ${t === null ? 'null' : typeof t}`);
    if (t.engine !== this) throw new Error(`${op}: tensor ${shapeStr(t.shape)} belongs to another engine`);
    t.pooled(op);
  }

  /** @internal */
  checkAlive(op: string): void {
    if (this.lostReason) throw new Error(`${op}: the GPU device was lost (${this.lostReason}); create a new Engine`);
  }

  private throwIfFailed(op: string): void {
    this.checkAlive(op);
    if (this.gpuError) {
      const e = this.gpuError;
      this.gpuError = null;
      throw new Error(`${op}: the GPU reported an error: ${e}`);
    }
  }

  /** Releases the device. Tensors of this engine become unusable. */
  destroy(): void {
    this.recorder.flushIfPending();
    this.pool.trim();
    this.device.removeEventListener?.('uncapturederror', this.onUncapturedError);
    this.device.destroy();
    this.lostReason = 'engine destroyed';
  }

  /** @internal counters for tests */
  stats(): { compiles: number; submits: number; dispatches: number; bindGroupsCreated: number } {
    return { compiles: this.pipelines.compiles, ...this.recorder.stats };
  }
}
