// Command recording: every op encodes into one open compute pass of one command encoder, which is
// submitted on read(), sync() or flush(). Uniforms go into a host-side ring mirrored by one GPU
// buffer (dynamic offsets), uploaded with a single writeBuffer per submit, and bind groups are
// cached by (pipeline layout, buffers), so the steady state allocates nothing per dispatch.
import type { CompiledKernel } from './pipeline_cache.js';
import type { PooledBuffer } from './buffer_pool.js';
import type { Profiler } from './profiler.js';

const RING_BYTES = 1 << 20;
const MAX_BIND_GROUPS = 8192;

export class Recorder {
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private ring: GPUBuffer;
  private ringHost = new ArrayBuffer(RING_BYTES);
  private ringU32 = new Uint32Array(this.ringHost);
  private ringI32 = new Int32Array(this.ringHost);
  private ringF32 = new Float32Array(this.ringHost);
  private ringUsed = 0;
  private align: number;
  private bindGroups = new Map<string, GPUBindGroup>();
  private pending = new Set<number>();
  profiler: Profiler | null = null;
  stats = { submits: 0, dispatches: 0, bindGroupsCreated: 0 };

  constructor(private device: GPUDevice) {
    this.align = device.limits.minUniformBufferOffsetAlignment;
    this.ring = device.createBuffer({ label: 'uniform ring', size: RING_BYTES, usage: 0x40 | 0x8 /* UNIFORM | COPY_DST */ });
  }

  isPending(bufferId: number): boolean {
    return this.pending.has(bufferId);
  }

  private ensureEncoder(): GPUCommandEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    return this.encoder;
  }

  dispatch(
    k: CompiledKernel,
    entries: { binding: number; pb: PooledBuffer; size: number }[],
    uniforms: Record<string, number | readonly number[]>,
    wg: [number, number, number],
  ): void {
    let offset = 0;
    if (k.uniform) {
      const slot = Math.ceil(Math.max(k.uniform.size, 16) / this.align) * this.align;
      if (this.ringUsed + slot > RING_BYTES) this.flushIfPending();
      offset = this.ringUsed;
      this.ringUsed += slot;
      this.writeUniforms(k, offset, uniforms);
    } else if (Object.keys(uniforms).length) {
      throw new Error(`${k.name}: uniforms given but the kernel has no uniform block`);
    }
    const bg = this.bindGroup(k, entries);
    const profiling = this.profiler?.active ?? false;
    if (profiling && this.pass) this.endPass();
    if (!this.pass) {
      const enc = this.ensureEncoder();
      this.pass = enc.beginComputePass(profiling ? this.profiler!.passDescriptor(k.name) : undefined);
    }
    this.pass.setPipeline(k.pipeline);
    this.pass.setBindGroup(0, bg, k.uniform ? [offset] : []);
    this.pass.dispatchWorkgroups(wg[0], wg[1], wg[2]);
    for (const e of entries) this.pending.add(e.pb.id);
    this.stats.dispatches++;
    if (profiling) this.endPass();
  }

  private writeUniforms(k: CompiledKernel, offset: number, uniforms: Record<string, number | readonly number[]>): void {
    const fields = k.uniform!.fields;
    const base = offset / 4;
    for (const [name, f] of fields) {
      const v = uniforms[name];
      if (v === undefined) throw new Error(`${k.name}: uniform '${name}' was not given`);
      const vals = typeof v === 'number' ? [v] : v;
      if (vals.length !== f.count) throw new Error(`${k.name}: uniform '${name}' takes ${f.count} values, got ${vals.length}`);
      const arr = f.scalar === 'u32' ? this.ringU32 : f.scalar === 'i32' ? this.ringI32 : this.ringF32;
      for (let i = 0; i < vals.length; i++) arr[base + f.offset / 4 + i] = vals[i];
    }
    for (const name of Object.keys(uniforms)) {
      if (!fields.has(name)) throw new Error(`${k.name}: the kernel has no uniform named '${name}'`);
    }
  }

  private bindGroup(k: CompiledKernel, entries: { binding: number; pb: PooledBuffer; size: number }[]): GPUBindGroup {
    let key = `${k.id}`;
    for (const e of entries) key += `|${e.pb.id}:${e.size}`;
    let bg = this.bindGroups.get(key);
    if (!bg) {
      const list: GPUBindGroupEntry[] = entries.map((e) => ({ binding: e.binding, resource: { buffer: e.pb.buffer, offset: 0, size: e.size } }));
      if (k.uniform) list.push({ binding: k.uniform.binding, resource: { buffer: this.ring, offset: 0, size: k.uniform.size } });
      bg = this.device.createBindGroup({ layout: k.layout, entries: list });
      if (this.bindGroups.size >= MAX_BIND_GROUPS) this.bindGroups.clear();
      this.bindGroups.set(key, bg);
      this.stats.bindGroupsCreated++;
    }
    return bg;
  }

  /** Drops cached bind groups that reference a destroyed buffer. */
  forgetBuffer(id: number): void {
    const tag = `|${id}:`;
    for (const key of this.bindGroups.keys()) if (key.includes(tag)) this.bindGroups.delete(key);
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.endPass();
    this.ensureEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  flushIfPending(): void {
    if (!this.encoder) return;
    this.endPass();
    this.profiler?.beforeFinish(this.encoder);
    const cmd = this.encoder.finish();
    this.encoder = null;
    if (this.ringUsed > 0) this.device.queue.writeBuffer(this.ring, 0, this.ringHost, 0, this.ringUsed);
    this.device.queue.submit([cmd]);
    this.profiler?.afterSubmit();
    this.ringUsed = 0;
    this.pending.clear();
    this.stats.submits++;
  }
}
