// PyTorch checkpoints (torch.save zip archives: `<stem>/data.pkl` + `<stem>/data/<key>` storages)
// read safely and lazily, presented as the same tensor records as a safetensors file so every model
// loader takes either. Lightning checkpoints keep the weights under 'state_dict'; a bare
// torch.save(state_dict) is the dict itself. Tensor bytes are read from the archive when uploaded.

import type { SafetensorsTensorInfo } from '../runtime/safetensors.js';
import { SafetensorsFile } from '../runtime/safetensors.js';
import { openSafetensorsFile } from '../runtime/safetensors_sources.js';
import { isUrl, toPath, type IOOptions } from '../runtime/io.js';
import { WeightSource, type TensorFile } from '../runtime/weights.js';
import { PyObject, STORAGE_DTYPES, type StorageRef, type TensorRef, PyGlobal, unpickle } from './pickle.js';
import { CheckpointError, ZipArchive, openByteSource, type ByteReader, type ByteSource } from './zip.js';

export { CheckpointError } from './zip.js';

const ELEMENT_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
const MAX_PICKLE_BYTES = 512 * 1024 * 1024;

interface CkptTensor {
  info: SafetensorsTensorInfo;
  ref: TensorRef;
  entry: string;
}

export class CkptFile implements TensorFile {
  readonly label: string;
  readonly metadata: Record<string, string>;
  readonly dataBytes: number;
  /** top-level values that are neither weights nor plain data (inert placeholders), by key */
  readonly extras: Map<string, unknown>;
  private zip: ZipArchive | null;
  private tensors: Map<string, CkptTensor>;

  private constructor(label: string, zip: ZipArchive, tensors: Map<string, CkptTensor>, metadata: Record<string, string>, extras: Map<string, unknown>) {
    this.label = label;
    this.zip = zip;
    this.tensors = tensors;
    this.metadata = metadata;
    this.extras = extras;
    let total = 0;
    const seen = new Set<string>();
    for (const t of tensors.values()) if (!seen.has(t.entry)) (seen.add(t.entry), (total += zip.entries.get(t.entry)!.size));
    this.dataBytes = total;
  }

  /** Opens a torch.save archive from a reader: reads its directory and data.pkl, no tensor data. */
  static async open(reader: ByteReader): Promise<CkptFile> {
    const label = reader.label;
    const zip = await ZipArchive.open(reader);
    const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkls.length !== 1) {
      throw new CheckpointError(`${label}: not a PyTorch checkpoint: expected one '<name>/data.pkl' in the archive, found ${pkls.length}`);
    }
    const prefix = pkls[0].slice(0, -'data.pkl'.length); // the file stem at save time; never assumed
    const pklEntry = zip.entry(pkls[0]);
    if (pklEntry.size > MAX_PICKLE_BYTES) throw new CheckpointError(`${label}: data.pkl is ${pklEntry.size} bytes (limit ${MAX_PICKLE_BYTES})`);
    const pkl = await zip.read(pkls[0]);
    const storages = new Map<string, StorageRef>();
    const root = unpickle(pkl, {
      label,
      persistentLoad: (pid) => {
        if (!Array.isArray(pid) || pid.length < 5 || pid[0] !== 'storage') throw new CheckpointError(`${label}: pickle: unknown persistent id`);
        const [, cls, key, , numel] = pid;
        const dtype = cls instanceof PyGlobal && (cls.module === 'torch' || cls.module === 'torch.storage') ? STORAGE_DTYPES[cls.name] : undefined;
        if (!dtype) throw new CheckpointError(`${label}: storage class ${cls instanceof PyGlobal ? cls.qualified : String(cls)} is not supported`);
        if (typeof key !== 'string' || !/^[\w.-]{1,64}$/.test(key)) throw new CheckpointError(`${label}: storage key ${String(key)} is invalid`);
        if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) throw new CheckpointError(`${label}: storage '${key}' has an invalid size`);
        const entry = `${prefix}data/${key}`;
        const e = zip.entries.get(entry);
        if (!e) throw new CheckpointError(`${label}: storage '${key}' has no '${entry}' in the archive`);
        if (e.size < numel * ELEMENT_BYTES[dtype]) {
          throw new CheckpointError(`${label}: storage '${key}' holds ${e.size} bytes, less than ${numel} ${dtype} elements need`);
        }
        const prev = storages.get(key);
        if (prev && prev.dtype !== dtype) throw new CheckpointError(`${label}: storage '${key}' is used as both ${prev.dtype} and ${dtype}`);
        const ref: StorageRef = prev ?? { kind: 'storage', dtype, key, numel };
        storages.set(key, ref);
        return ref;
      },
    });
    if (!(root instanceof Map)) throw new CheckpointError(`${label}: the checkpoint is not a dict (found ${describe(root)})`);
    const sd = root.get('state_dict');
    const dict = sd instanceof Map ? sd : root;
    const tensors = new Map<string, CkptTensor>();
    const metadata: Record<string, string> = { format: 'pt' };
    const extras = new Map<string, unknown>();
    for (const [k, v] of dict) {
      if (typeof k !== 'string') continue;
      if (isTensor(v)) {
        const dtype = v.storage.dtype;
        const n = v.shape.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[dtype];
        tensors.set(k, { info: { name: k, dtype, shape: [...v.shape], begin: 0, end: n }, ref: v, entry: `${prefix}data/${v.storage.key}` });
      } else if (dict === root) {
        if (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') metadata[k] = String(v);
        else extras.set(k, v);
      }
    }
    if (sd instanceof Map) {
      for (const [k, v] of root) {
        if (typeof k !== 'string' || k === 'state_dict') continue;
        if (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') metadata[k] = String(v);
        else extras.set(k, v);
      }
    }
    return new CkptFile(label, zip, tensors, metadata, extras);
  }

  names(): string[] {
    return [...this.tensors.keys()].sort();
  }

  info(name: string): SafetensorsTensorInfo | undefined {
    return this.tensors.get(name)?.info;
  }

  /** Row-major bytes of one tensor: a direct read when contiguous, else gathered by strides. */
  async bytes(name: string): Promise<Uint8Array> {
    const t = this.tensors.get(name);
    if (!t) throw new CheckpointError(`${this.label}: no tensor named '${name}'`);
    if (!this.zip) throw new CheckpointError(`${this.label}: file is closed`);
    const es = ELEMENT_BYTES[t.info.dtype];
    const { shape, stride, offset } = t.ref;
    const count = shape.reduce((a, b) => a * b, 1);
    if (count === 0) return new Uint8Array(0);
    let contiguous = true;
    for (let i = shape.length - 1, expect = 1; i >= 0; i--) {
      if (shape[i] !== 1 && stride[i] !== expect) contiguous = false;
      expect *= shape[i];
    }
    if (contiguous) return this.zip.read(t.entry, offset * es, count * es);
    let extent = 0;
    for (let i = 0; i < shape.length; i++) extent += (shape[i] - 1) * stride[i];
    const span = await this.zip.read(t.entry, offset * es, (extent + 1) * es);
    const out = new Uint8Array(count * es);
    const idx = new Array<number>(shape.length).fill(0);
    for (let j = 0; j < count; j++) {
      let src = 0;
      for (let d = 0; d < shape.length; d++) src += idx[d] * stride[d];
      out.set(span.subarray(src * es, src * es + es), j * es);
      for (let d = shape.length - 1; d >= 0; d--) {
        if (++idx[d] < shape[d]) break;
        idx[d] = 0;
      }
    }
    return out;
  }

  async close(): Promise<void> {
    const z = this.zip;
    this.zip = null;
    if (z) await z.reader.close();
  }
}

function isTensor(v: unknown): v is TensorRef {
  return !!v && typeof v === 'object' && (v as TensorRef).kind === 'tensor';
}

function describe(v: unknown): string {
  if (v instanceof PyObject) return `an instance of ${v.cls.qualified}`;
  if (Array.isArray(v)) return 'a list';
  return v === null ? 'None' : typeof v;
}

export type CheckpointSource = ByteSource | WeightSource;

/**
 * Opens a .ckpt/.pt (torch.save zip) or a .safetensors, told apart by their first bytes, from a
 * path (Node), a URL, a Blob/File or bytes. The result reads tensors lazily; close() it when done.
 */
export async function openCheckpoint(source: CheckpointSource, opts: IOOptions & { label?: string } = {}): Promise<WeightSource> {
  if (source instanceof WeightSource) return source;
  const reader = await openByteSource(source, opts);
  try {
    const head = await reader.read(0, Math.min(8, reader.size));
    if (head[0] === 0x50 && head[1] === 0x4b) return WeightSource.fromFiles([await CkptFile.open(reader)], reader.label, opts.onProgress);
    if (head[0] === 0x80 && head[1] <= 5) {
      throw new CheckpointError(`${reader.label}: a legacy (pre-1.6, non-zip) PyTorch file; re-save it with torch.save(..., _use_new_zipfile_serialization=True) or convert it to safetensors`);
    }
    // safetensors: its header parser is strict; the whole file is read only for in-memory sources
    if (source instanceof Uint8Array || source instanceof ArrayBuffer) return WeightSource.fromBytes(source, reader.label);
    if (typeof source === 'string' && !isUrl(source)) {
      await reader.close();
      return WeightSource.fromFiles([await openSafetensorsFile(toPath(source))], source, opts.onProgress);
    }
    const all = await reader.read(0, reader.size);
    await reader.close();
    return WeightSource.fromFiles([SafetensorsFile.fromBytes(all, reader.label)], reader.label, opts.onProgress);
  } catch (e) {
    await reader.close().catch(() => {});
    throw e;
  }
}
