// A restricted pickle reader for PyTorch checkpoints. It never calls anything: the few globals a
// state dict needs (OrderedDict, the tensor rebuild functions, the storage classes) are interpreted
// here; harmless unknown classes (Lightning callbacks, AttributeDict, optimizer classes) become
// inert PyObject placeholders that only record their arguments; globals that can run code
// (builtins eval/exec/getattr/__import__, os/posix/nt/subprocess, ...) are refused by name, in
// their Python 2 spellings too (__builtin__, posix), which protocol-2 pickles use.
//
// It is a flat loop over the opcodes (no recursion), every length is checked against the bytes
// left, and each opcode creates O(1) new values, so memory is bounded by the pickle's size.

import { CheckpointError } from './zip.js';

/** A class or function named by a GLOBAL opcode. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** An instance of a class this reader does not build: its constructor arguments and state, inert. */
export class PyObject {
  readonly items = new Map<unknown, unknown>();
  readonly list: unknown[] = [];
  state: unknown = undefined;
  constructor(
    readonly cls: PyGlobal,
    readonly args: unknown[],
  ) {}
}

export class PyTuple extends Array<unknown> {}

/** A persistent id ('storage', StorageClass, key, location, numel) resolved by the caller. */
export interface StorageRef {
  kind: 'storage';
  dtype: string;
  key: string;
  numel: number;
}

export interface TensorRef {
  kind: 'tensor';
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
}

/** PyTorch storage class -> safetensors dtype name */
export const STORAGE_DTYPES: Record<string, string> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

const TENSOR_REBUILDERS = new Set(['torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_tensor', 'torch._utils._rebuild_parameter', 'torch._utils._rebuild_parameter_with_state', 'torch._tensor._rebuild_from_type_v2']);

// Modules whose globals can execute code or touch the system when called by a real unpickler.
const REFUSED_MODULES = new Set([
  'os', 'posix', 'nt', 'subprocess', 'sys', 'shutil', 'socket', 'importlib', 'runpy', 'pickle', '_pickle', 'marshal',
  'types', 'code', 'codeop', 'pty', 'commands', 'ctypes', 'functools', 'operator', 'webbrowser', 'io', '_io', 'pathlib',
  'tempfile', 'multiprocessing', 'asyncio', 'signal', 'threading', '_thread', 'platform', 'pdb', 'timeit', 'inspect',
  'gc', 'site', 'zipimport', 'pkgutil', 'http', 'urllib', 'ftplib', 'smtplib', 'telnetlib', 'requests', 'dill',
  'torch.hub', 'torch.jit', 'torch.ops', 'torch.classes', 'torch.distributed', 'numpy.testing', 'numpy.f2py',
]);
// Builtins that are plain data constructors; every other builtin (eval, exec, getattr, ...) is refused.
const SAFE_BUILTINS = new Set(['set', 'frozenset', 'slice', 'complex', 'range', 'bytearray', 'object', 'bool', 'int', 'float', 'str', 'bytes', 'list', 'tuple', 'dict']);

function refusal(mod: string, name: string): string | null {
  const top = mod.split('.')[0];
  if (mod === 'builtins' || mod === '__builtin__' || mod === 'exceptions') return SAFE_BUILTINS.has(name) ? null : 'a builtin that can run code';
  if (REFUSED_MODULES.has(mod) || REFUSED_MODULES.has(top)) return 'a module that can run code or reach the system';
  if (name.startsWith('__') || name.includes('eval') || name.includes('exec') || name === 'system') return 'a name that can run code';
  return null;
}

export interface UnpickleOptions {
  label: string;
  /** resolves BINPERSID's persistent id; the default refuses persistent ids */
  persistentLoad?: (pid: unknown) => unknown;
}

const MAX_MEMO = 1 << 24;
const utf8 = new TextDecoder('utf-8', { fatal: true });
const latin1 = new TextDecoder('latin1');
const MARK = Symbol('mark');

/** Unpickles protocol 0-5 binary pickles (the text opcodes are refused) without executing anything. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions): unknown {
  const label = opts.label;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const fail = (msg: string, at: number) => new CheckpointError(`${label}: pickle: ${msg} (at byte ${at})`);
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let p = 0;

  const need = (n: number, at: number) => {
    if (!Number.isSafeInteger(n) || n < 0 || p + n > data.length) throw fail(`needs ${n} bytes, ${data.length - p} left`, at);
  };
  const u8 = () => data[p++];
  const pop = (at: number): unknown => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) throw fail('stack underflow', at);
    return stack.pop();
  };
  const top = (at: number): unknown => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) throw fail('stack underflow', at);
    return stack[stack.length - 1];
  };
  const popMark = (at: number): unknown[] => {
    const m = marks.pop();
    if (m === undefined) throw fail('no MARK on the stack', at);
    return stack.splice(m);
  };
  const str = (n: number, at: number, enc: 'utf8' | 'latin1') => {
    need(n, at);
    const b = data.subarray(p, p + n);
    p += n;
    try {
      return enc === 'utf8' ? utf8.decode(b) : latin1.decode(b);
    } catch {
      throw fail('string is not valid UTF-8', at);
    }
  };
  const bytes = (n: number, at: number) => {
    need(n, at);
    const b = data.slice(p, p + n);
    p += n;
    return b;
  };
  const u32 = (at: number) => {
    need(4, at);
    const v = dv.getUint32(p, true);
    p += 4;
    return v;
  };
  const u64 = (at: number) => {
    need(8, at);
    const lo = dv.getUint32(p, true);
    const hi = dv.getUint32(p + 4, true);
    p += 8;
    if (hi >= 0x200000) throw fail('length beyond 2^53', at);
    return hi * 2 ** 32 + lo;
  };
  const long = (n: number, at: number): number | bigint => {
    need(n, at);
    if (n > 64) throw fail(`integer of ${n} bytes is too large`, at);
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[p + i]);
    if (n > 0 && data[p + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
    p += n;
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const setItem = (target: unknown, k: unknown, v: unknown, at: number) => {
    if (target instanceof Map) target.set(k, v);
    else if (target instanceof PyObject) target.items.set(k, v);
    else throw fail('SETITEM on something that is not a dict', at);
  };
  const append = (target: unknown, vs: unknown[], at: number) => {
    if (Array.isArray(target) && !(target instanceof PyTuple)) for (const v of vs) target.push(v);
    else if (target instanceof PyObject) target.list.push(...vs);
    else throw fail('APPEND to something that is not a list', at);
  };
  const global = (mod: string, name: string, at: number): PyGlobal => {
    const why = refusal(mod, name);
    if (why !== null) throw new CheckpointError(`${label}: refuses the pickle global '${mod}.${name}' (${why}); a checkpoint needs only tensors and containers`);
    void at;
    return new PyGlobal(mod, name);
  };
  const tuple = (items: unknown[]) => {
    const t = new PyTuple();
    for (const v of items) t.push(v);
    return t;
  };
  const call = (fn: unknown, args: unknown, at: number): unknown => {
    if (!(fn instanceof PyGlobal)) throw fail('REDUCE of something that is not a global', at);
    if (!Array.isArray(args)) throw fail(`arguments of ${fn.qualified} are not a tuple`, at);
    const q = fn.qualified;
    if (q === 'collections.OrderedDict') {
      const m = new Map<unknown, unknown>();
      if (args.length && Array.isArray(args[0])) for (const kv of args[0]) if (Array.isArray(kv) && kv.length === 2) m.set(kv[0], kv[1]);
      return m;
    }
    if (TENSOR_REBUILDERS.has(q)) return rebuildTensor(q, args, label, at);
    return new PyObject(fn, args);
  };

  while (true) {
    const at = p;
    if (p >= data.length) throw fail('ended without STOP', at);
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        need(1, at);
        if (data[p] > 5) throw fail(`protocol ${data[p]} is not supported`, at);
        p++;
        break;
      case 0x95: // FRAME
        u64(at);
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length) throw fail(`STOP with ${stack.length} values on the stack`, at);
        return stack[0];
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x30: // POP
        if (marks.length && stack.length === marks[marks.length - 1]) marks.pop();
        else pop(at);
        break;
      case 0x31: // POP_MARK
        popMark(at);
        break;
      case 0x32: // DUP
        stack.push(top(at));
        break;
      case 0x4a: // BININT
        need(4, at);
        stack.push(dv.getInt32(p, true));
        p += 4;
        break;
      case 0x4b: // BININT1
        need(1, at);
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        need(2, at);
        stack.push(dv.getUint16(p, true));
        p += 2;
        break;
      case 0x8a: // LONG1
        need(1, at);
        stack.push(long(u8(), at));
        break;
      case 0x8b: // LONG4
        stack.push(long(u32(at), at));
        break;
      case 0x47: // BINFLOAT (big-endian)
        need(8, at);
        stack.push(dv.getFloat64(p, false));
        p += 8;
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x58: // BINUNICODE
        stack.push(str(u32(at), at, 'utf8'));
        break;
      case 0x8c: // SHORT_BINUNICODE
        need(1, at);
        stack.push(str(u8(), at, 'utf8'));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(str(u64(at), at, 'utf8'));
        break;
      case 0x54: // BINSTRING (py2 str)
        stack.push(str(u32(at), at, 'latin1'));
        break;
      case 0x55: // SHORT_BINSTRING
        need(1, at);
        stack.push(str(u8(), at, 'latin1'));
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32(at), at));
        break;
      case 0x43: // SHORT_BINBYTES
        need(1, at);
        stack.push(bytes(u8(), at));
        break;
      case 0x8e: // BINBYTES8
        stack.push(bytes(u64(at), at));
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(new PyTuple());
        break;
      case 0x8f: // EMPTY_SET
        stack.push([]);
        break;
      case 0x74: // TUPLE
        stack.push(tuple(popMark(at)));
        break;
      case 0x85: // TUPLE1
        stack.push(tuple([pop(at)]));
        break;
      case 0x86: {
        // TUPLE2
        const b = pop(at);
        stack.push(tuple([pop(at), b]));
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop(at);
        const b = pop(at);
        stack.push(tuple([pop(at), b, c]));
        break;
      }
      case 0x6c: // LIST
        stack.push(popMark(at));
        break;
      case 0x64: {
        // DICT
        const items = popMark(at);
        if (items.length % 2) throw fail('DICT with an odd number of items', at);
        const m = new Map();
        for (let i = 0; i < items.length; i += 2) m.set(items[i], items[i + 1]);
        stack.push(m);
        break;
      }
      case 0x91: // FROZENSET
        stack.push(popMark(at));
        break;
      case 0x90: {
        // ADDITEMS
        const items = popMark(at);
        append(top(at), items, at);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop(at);
        append(top(at), [v], at);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark(at);
        append(top(at), items, at);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop(at);
        const k = pop(at);
        setItem(top(at), k, v, at);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark(at);
        if (items.length % 2) throw fail('SETITEMS with an odd number of items', at);
        const target = top(at);
        for (let i = 0; i < items.length; i += 2) setItem(target, items[i], items[i + 1], at);
        break;
      }
      case 0x71: // BINPUT
        need(1, at);
        memo.set(u8(), top(at));
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(at), top(at));
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top(at));
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        let i: number;
        if (op === 0x68) {
          need(1, at);
          i = u8();
        } else i = u32(at);
        if (!memo.has(i)) throw fail(`memo key ${i} was never stored`, at);
        stack.push(memo.get(i));
        break;
      }
      case 0x63: {
        // GLOBAL "module\nname\n"
        const readLine = () => {
          const nl = data.indexOf(0x0a, p);
          if (nl < 0 || nl - p > 256) throw fail('GLOBAL name is not terminated', at);
          const s = str(nl - p, at, 'utf8');
          p++;
          return s;
        };
        const mod = readLine();
        stack.push(global(mod, readLine(), at));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop(at);
        const mod = pop(at);
        if (typeof mod !== 'string' || typeof name !== 'string') throw fail('STACK_GLOBAL needs two strings', at);
        stack.push(global(mod, name, at));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop(at);
        const fn = pop(at);
        stack.push(call(fn, args, at));
        break;
      }
      case 0x81: {
        // NEWOBJ
        const args = pop(at);
        const cls = pop(at);
        if (!(cls instanceof PyGlobal)) throw fail('NEWOBJ of something that is not a class', at);
        stack.push(cls.qualified === 'collections.OrderedDict' ? new Map() : new PyObject(cls, Array.isArray(args) ? args : [args]));
        break;
      }
      case 0x92: {
        // NEWOBJ_EX
        pop(at);
        const args = pop(at);
        const cls = pop(at);
        if (!(cls instanceof PyGlobal)) throw fail('NEWOBJ_EX of something that is not a class', at);
        stack.push(new PyObject(cls, Array.isArray(args) ? args : [args]));
        break;
      }
      case 0x62: {
        // BUILD: state is kept for placeholders and ignored for containers/tensors (e.g. a
        // state dict's _metadata); it is never applied by calling anything.
        const state = pop(at);
        const obj = top(at);
        if (obj instanceof PyObject) obj.state = state;
        else if (!(obj instanceof Map) && !(obj && typeof obj === 'object')) throw fail('BUILD on a plain value', at);
        break;
      }
      case 0x51: {
        // BINPERSID
        const pid = pop(at);
        if (!opts.persistentLoad) throw fail('persistent id without a loader', at);
        stack.push(opts.persistentLoad(pid));
        break;
      }
      default:
        throw fail(`opcode 0x${op.toString(16).padStart(2, '0')} is not supported by this restricted reader`, at);
    }
    if (memo.size > MAX_MEMO) throw fail('memo too large', at);
  }
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

/** _rebuild_tensor_v2(storage, offset, size, stride, ...) and the wrappers around it. */
function rebuildTensor(q: string, args: unknown[], label: string, at: number): TensorRef {
  const bad = (what: string) => new CheckpointError(`${label}: pickle: ${q}: ${what} (at byte ${at})`);
  if (q === 'torch._utils._rebuild_parameter' || q === 'torch._utils._rebuild_parameter_with_state') {
    const t = args[0];
    if (!t || (t as TensorRef).kind !== 'tensor') throw bad('its data is not a tensor');
    return t as TensorRef;
  }
  if (q === 'torch._tensor._rebuild_from_type_v2') {
    // (func, new_type, args, state): func must itself be a tensor rebuilder
    const fn = args[0];
    if (!(fn instanceof PyGlobal) || !TENSOR_REBUILDERS.has(fn.qualified) || !Array.isArray(args[2])) throw bad('does not wrap a tensor rebuild');
    return rebuildTensor(fn.qualified, args[2], label, at);
  }
  const [storage, offset, size, stride] = args;
  const s = storage as StorageRef;
  if (!s || s.kind !== 'storage') throw bad('its first argument is not a storage');
  if (!isInt(offset) || offset < 0) throw bad(`storage offset ${String(offset)} is invalid`);
  if (!Array.isArray(size) || !size.every((d) => isInt(d) && d >= 0)) throw bad('size is not a tuple of non-negative integers');
  if (!Array.isArray(stride) || stride.length !== size.length || !stride.every((d) => isInt(d) && d >= 0)) throw bad('stride does not match size');
  let count = 1;
  let extent = 0;
  for (let i = 0; i < size.length; i++) {
    count *= size[i] as number;
    extent += ((size[i] as number) - 1) * (stride[i] as number);
  }
  if (!Number.isSafeInteger(count)) throw bad('too many elements');
  if (count > 0 && offset + extent >= s.numel) throw bad(`elements reach index ${offset + extent}, past the storage's ${s.numel}`);
  return { kind: 'tensor', storage: s, offset, shape: size as number[], stride: stride as number[] };
}
