// Reuses freed storage buffers. Sizes are rounded up to a size class (at most 1/16 waste above
// 4 KiB) so that tensors of nearly equal size share buffers across denoising steps.

export const STORAGE_USAGE =
  GPUBufferUsageFlagsValue('STORAGE') | GPUBufferUsageFlagsValue('COPY_SRC') | GPUBufferUsageFlagsValue('COPY_DST');

function GPUBufferUsageFlagsValue(name: 'STORAGE' | 'COPY_SRC' | 'COPY_DST' | 'MAP_READ' | 'UNIFORM'): number {
  // Constants from the WebGPU spec, so this module does not need the GPUBufferUsage global at load time.
  return { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 }[name];
}

export function sizeClass(bytes: number): number {
  const b = Math.max(16, bytes);
  if (b <= 4096) return Math.ceil(b / 256) * 256;
  const step = 2 ** Math.ceil(Math.log2(b)) / 16;
  return Math.ceil(b / step) * step;
}

let nextBufferId = 1;
export interface PooledBuffer {
  buffer: GPUBuffer;
  size: number;
  id: number;
  /** tensors sharing this buffer (views made by reshape) */
  refs: number;
}

export class BufferPool {
  private free = new Map<number, PooledBuffer[]>();
  heldBytes = 0;
  inUseBytes = 0;
  peakInUseBytes = 0;

  constructor(private device: GPUDevice, private onDestroy: (b: PooledBuffer) => void) {}

  /** A buffer of at least `bytes`; `avoid` skips free buffers the caller must not get (e.g. ones
   * still read by unsubmitted work, for a host upload). */
  acquire(bytes: number, avoid?: (pb: PooledBuffer) => boolean): PooledBuffer {
    const size = sizeClass(bytes);
    const list = this.free.get(size);
    let pb: PooledBuffer | undefined;
    if (list && list.length) {
      if (!avoid) pb = list.pop();
      else {
        for (let i = list.length - 1; i >= 0; i--) {
          if (!avoid(list[i])) {
            pb = list[i];
            list.splice(i, 1);
            break;
          }
        }
      }
    }
    if (!pb) {
      const buffer = this.device.createBuffer({ size, usage: STORAGE_USAGE });
      pb = { buffer, size, id: nextBufferId++, refs: 0 };
      this.heldBytes += size;
    }
    pb.refs = 1;
    this.inUseBytes += size;
    this.peakInUseBytes = Math.max(this.peakInUseBytes, this.inUseBytes);
    return pb;
  }

  /** Back to the free list. Safe while recorded work still reads it: later writes are ordered after. */
  release(pb: PooledBuffer): void {
    if (--pb.refs > 0) return;
    this.inUseBytes -= pb.size;
    let list = this.free.get(pb.size);
    if (!list) this.free.set(pb.size, (list = []));
    list.push(pb);
  }

  /** Destroys every free buffer (call after the GPU has finished with them). */
  trim(): void {
    for (const list of this.free.values()) {
      for (const pb of list) {
        this.onDestroy(pb);
        pb.buffer.destroy();
        this.heldBytes -= pb.size;
      }
    }
    this.free.clear();
  }

  freeBytes(): number {
    return this.heldBytes - this.inUseBytes;
  }
}
