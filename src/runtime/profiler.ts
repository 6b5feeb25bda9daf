// Optional per-kernel GPU timing. With `timestamp-query`, each profiled dispatch gets its own compute
// pass whose begin/end timestamps are resolved at submit and read back on sync. Without it, the
// report holds the wall time of the whole profiled region and dispatch counts per kernel.
/** What the profiler needs of the engine (not the Engine type, so the modules do not import each other). */
export interface ProfiledDevice {
  readonly device: GPUDevice;
  sync(): Promise<void>;
}

const CAPACITY = 4096; // queries per submit (2 per dispatch)

export interface KernelTiming {
  name: string;
  count: number;
  /** total GPU milliseconds (null when the adapter has no timestamp queries) */
  ms: number | null;
}

export interface ProfileReport {
  method: 'timestamp-query' | 'wall-time';
  wallMs: number;
  kernels: KernelTiming[];
}

interface InFlight {
  names: string[];
  readback: GPUBuffer;
}

export class Profiler {
  active = false;
  private querySet: GPUQuerySet | null = null;
  private names: string[] = [];
  private untimed = new Map<string, number>();
  private inFlight: InFlight[] = [];
  private totals = new Map<string, { count: number; ns: number }>();

  constructor(private engine: ProfiledDevice, readonly timestamps: boolean) {}

  passDescriptor(name: string): GPUComputePassDescriptor | undefined {
    if (!this.timestamps || this.names.length * 2 >= CAPACITY) {
      this.untimed.set(name, (this.untimed.get(name) ?? 0) + 1);
      return undefined;
    }
    if (!this.querySet) this.querySet = this.engine.device.createQuerySet({ type: 'timestamp', count: CAPACITY });
    const i = this.names.length;
    this.names.push(name);
    return { timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } };
  }

  beforeFinish(encoder: GPUCommandEncoder): void {
    if (!this.names.length || !this.querySet) return;
    const bytes = this.names.length * 16;
    const dev = this.engine.device;
    const resolve = dev.createBuffer({ size: bytes, usage: 0x200 | 0x4 /* QUERY_RESOLVE | COPY_SRC */ });
    const readback = dev.createBuffer({ size: bytes, usage: 0x1 | 0x8 /* MAP_READ | COPY_DST */ });
    encoder.resolveQuerySet(this.querySet, 0, this.names.length * 2, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, readback, 0, bytes);
    this.inFlight.push({ names: this.names, readback });
    this.names = [];
    // the resolve buffer is only used by this submit; destroying it after submit is allowed
    queueMicrotask(() => resolve.destroy());
  }

  afterSubmit(): void {}

  /** Reads back resolved timestamps of finished submits. */
  async collect(): Promise<void> {
    const list = this.inFlight;
    this.inFlight = [];
    for (const f of list) {
      await f.readback.mapAsync(1);
      const t = new BigUint64Array(f.readback.getMappedRange());
      f.names.forEach((name, i) => {
        const ns = Number(t[2 * i + 1] - t[2 * i]);
        const e = this.totals.get(name) ?? { count: 0, ns: 0 };
        e.count++;
        e.ns += ns > 0 ? ns : 0;
        this.totals.set(name, e);
      });
      f.readback.unmap();
      f.readback.destroy();
    }
  }

  async run(fn: () => unknown | Promise<unknown>): Promise<ProfileReport> {
    await this.engine.sync();
    this.totals.clear();
    this.untimed.clear();
    this.active = true;
    const t0 = performance.now();
    try {
      await fn();
      await this.engine.sync();
    } finally {
      this.active = false;
    }
    const wallMs = performance.now() - t0;
    await this.collect();
    const kernels: KernelTiming[] = [];
    for (const [name, e] of this.totals) kernels.push({ name, count: e.count, ms: e.ns / 1e6 });
    for (const [name, count] of this.untimed) {
      const k = kernels.find((x) => x.name === name);
      if (k) k.count += count;
      else kernels.push({ name, count, ms: null });
    }
    kernels.sort((a, b) => (b.ms ?? 0) - (a.ms ?? 0));
    return { method: this.timestamps ? 'timestamp-query' : 'wall-time', wallMs, kernels };
  }
}
