import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  SafetensorsFile,
  writeSafetensors,
  parseSafetensorsHeader,
  MAX_HEADER_BYTES,
} from '../src/runtime/safetensors.js';
import { downloadSafetensorsFile, openSafetensorsFile } from '../src/runtime/safetensors_sources.js';
import { WeightSource, loadComponentFolder, fromConfigBytes, closeNames } from '../src/runtime/weights.js';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../src/runtime/half.js';
import { getEngine, randn, readF32 } from './helpers.js';
import { FIXTURES, readSafetensorsFile } from './fixture.js';

const LINEAR = join(FIXTURES, 'ops/linear/weights.safetensors');
const TAESD_DEC = join(FIXTURES, 'models/taesd/taesd_decoder.safetensors');

// ---------------------------------------------------------------- hand-built files

const enc = new TextEncoder();

/** length prefix + header (string or object, unpadded) + data */
function build(header: unknown, data: Uint8Array = new Uint8Array(0), lengthOverride?: number): Uint8Array {
  const h = typeof header === 'string' ? enc.encode(header) : header instanceof Uint8Array ? header : enc.encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  const dv = new DataView(out.buffer);
  const n = lengthOverride ?? h.byteLength;
  dv.setUint32(0, n % 2 ** 32, true);
  dv.setUint32(4, Math.floor(n / 2 ** 32), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

const f32 = (name: string, shape: number[], offs: [number, number]) => ({ [name]: { dtype: 'F32', shape, data_offsets: offs } });
/** The end of the last data_offsets in a header object: a data section the tensors cover exactly. */
function coveredBytes(header: unknown): number {
  let end = 0;
  if (typeof header === 'object' && header !== null) {
    for (const e of Object.values(header)) {
      const o = (e as { data_offsets?: unknown })?.data_offsets;
      if (Array.isArray(o) && typeof o[1] === 'number' && o[1] >= 0 && o[1] < 1e6) end = Math.max(end, o[1]);
    }
  }
  return end;
}
const bad = (header: unknown, dataBytes = coveredBytes(header)) => () => SafetensorsFile.fromBytes(build(header, new Uint8Array(dataBytes)), 'bad.safetensors');

function bitsOf(x: number): number {
  return new Uint32Array(Float32Array.of(x).buffer)[0];
}
function fromBits(u: number): number {
  return new Float32Array(Uint32Array.of(u).buffer)[0];
}

// ---------------------------------------------------------------- local http server

let server: Server;
let baseUrl = '';
const routes = new Map<string, (res: ServerResponse) => void>();

function serveBytes(path: string, bytes: Uint8Array, mode: 'length' | 'chunked' | 'truncated-length' | 'truncated-chunked' | 'stall' = 'length') {
  routes.set(path, (res) => {
    const chunk = 4096;
    const upTo = mode.startsWith('truncated') || mode === 'stall' ? Math.floor(bytes.byteLength / 2) : bytes.byteLength;
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
    if (mode === 'length' || mode === 'truncated-length' || mode === 'stall') headers['content-length'] = bytes.byteLength;
    res.writeHead(200, headers);
    let pos = 0;
    const pump = () => {
      while (pos < upTo) {
        const end = Math.min(upTo, pos + chunk);
        const ok = res.write(Buffer.from(bytes.buffer, bytes.byteOffset + pos, end - pos));
        pos = end;
        if (!ok) {
          res.once('drain', pump);
          return;
        }
      }
      if (mode === 'truncated-length') res.socket?.destroy();
      else if (mode !== 'stall') res.end();
    };
    pump();
  });
}

beforeAll(async () => {
  server = createServer((req, res) => {
    const h = routes.get(req.url ?? '');
    if (!h) {
      res.writeHead(404, { 'content-length': 9 });
      res.end('not found');
      return;
    }
    h(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections?.();
  await new Promise<void>((r) => server.close(() => r()));
});

const tmpDirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'st-test-'));
  tmpDirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

// ---------------------------------------------------------------- writer <-> reader

describe('writeSafetensors / SafetensorsFile round trip', () => {
  it('round-trips every dtype, empty and scalar tensors, and metadata', async () => {
    const a = randn(7 * 5, 1);
    const halfBits = f32ToF16Bits(randn(13, 2));
    const bfBits = f32ToBf16Bits(randn(9, 3));
    const ints = Int32Array.from({ length: 11 }, (_, i) => (i - 5) * 123457);
    const longs = BigInt64Array.from([-(2n ** 31n), -1n, 0n, 7n, 2n ** 31n - 1n]);
    const bytes = writeSafetensors(
      {
        'z.f32': { dtype: 'F32', shape: [7, 5], data: a },
        'b.f16': { dtype: 'F16', shape: [13], data: halfBits },
        'a.bf16': { dtype: 'BF16', shape: [3, 3], data: bfBits },
        'm.i32': { dtype: 'I32', shape: [11, 1], data: ints },
        'k.i64': { dtype: 'I64', shape: [5], data: longs },
        'e.empty': { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
        's.scalar': { dtype: 'F32', shape: [], data: [2.5] },
        'n.i64num': { dtype: 'I64', shape: [2], data: [-3, 40000000000] },
      },
      { format: 'pt', note: 'ünïcode' },
    );
    // header padded with spaces to a multiple of 8, names sorted, data packed in name order
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(headerText.trimEnd().endsWith('}')).toBe(true);
    expect(/^ *$/.test(headerText.slice(headerText.lastIndexOf('}') + 1))).toBe(true);
    const f = SafetensorsFile.fromBytes(bytes, 'roundtrip');
    expect(f.names()).toEqual(['a.bf16', 'b.f16', 'e.empty', 'k.i64', 'm.i32', 'n.i64num', 's.scalar', 'z.f32']);
    const order = f.names().map((k) => f.info(k)!).filter((t) => t.end > t.begin);
    for (let i = 1; i < order.length; i++) expect(order[i].begin).toBe(order[i - 1].end);
    expect(f.metadata).toEqual({ format: 'pt', note: 'ünïcode' });

    expect(await f.f32('z.f32')).toEqual(a);
    expect(f.info('z.f32')!.shape).toEqual([7, 5]);
    expect(await f.f16Bits('b.f16')).toEqual(halfBits);
    expect(await f.f32('b.f16')).toEqual(f16BitsToF32(halfBits));
    expect(new Uint16Array((await f.bytes('a.bf16')).slice().buffer)).toEqual(bfBits);
    expect(await f.f32('a.bf16')).toEqual(bf16BitsToF32(bfBits));
    expect(await f.i32('m.i32')).toEqual(ints);
    expect(await f.i32('k.i64')).toEqual(Int32Array.from([-(2 ** 31), -1, 0, 7, 2 ** 31 - 1]));
    expect(new BigInt64Array((await f.bytes('n.i64num')).slice().buffer)).toEqual(BigInt64Array.from([-3n, 40000000000n]));
    expect(await f.f32('e.empty')).toEqual(new Float32Array(0));
    expect(f.info('s.scalar')!.shape).toEqual([]);
    expect(await f.f32('s.scalar')).toEqual(Float32Array.of(2.5));
    // F32 -> f16 rounds once, BF16 -> f16 goes through the exact f32 value
    expect(await f.f16Bits('z.f32')).toEqual(f32ToF16Bits(a));
    expect(await f.f16Bits('a.bf16')).toEqual(f32ToF16Bits(bf16BitsToF32(bfBits)));
  });

  it('converts values given as numbers for F16 and BF16 with round-to-nearest-even', async () => {
    const vals = [1, -2.5, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 1e-8];
    const f = SafetensorsFile.fromBytes(
      writeSafetensors({ h: { dtype: 'F16', shape: [6], data: vals }, b: { dtype: 'BF16', shape: [3], data: [1 + 2 ** -8, 1 + 3 * 2 ** -8, -3] } }),
    );
    expect(Array.from(await f.f32('h'))).toEqual([1, -2.5, 1, 1 + 2 ** -9, Infinity, 0]);
    expect(Array.from(await f.f32('b'))).toEqual([1, 1 + 2 ** -6, -3]);
  });

  it('reads tensors at unaligned offsets (BF16 followed by F32 and I64)', async () => {
    const bytes = writeSafetensors({
      a: { dtype: 'BF16', shape: [3], data: [1, 2, 3] },
      b: { dtype: 'F32', shape: [2], data: [0.1, -7] },
      c: { dtype: 'I64', shape: [2], data: [5, -6] },
    });
    const f = SafetensorsFile.fromBytes(bytes);
    expect(f.info('b')!.begin).toBe(6);
    expect(await f.f32('b')).toEqual(Float32Array.of(0.1, -7));
    expect(await f.f16Bits('b')).toEqual(f32ToF16Bits([0.1, -7]));
    expect(await f.i32('c')).toEqual(Int32Array.of(5, -6));
    // and inside a larger buffer at an odd byte offset
    const shifted = new Uint8Array(bytes.byteLength + 1);
    shifted.set(bytes, 1);
    const g = SafetensorsFile.fromBytes(shifted.subarray(1));
    expect(await g.f32('b')).toEqual(Float32Array.of(0.1, -7));
    expect(await g.i32('c')).toEqual(Int32Array.of(5, -6));
  });

  it('rejects bad writer input', () => {
    expect(() => writeSafetensors({ a: { dtype: 'F32', shape: [3], data: [1, 2] } })).toThrow(/'a'.*8 bytes.*\[3\].*needs 12/);
    expect(() => writeSafetensors({ a: { dtype: 'F64' as 'F32', shape: [1], data: [1] } })).toThrow(/'a'.*unsupported dtype F64/);
    expect(() => writeSafetensors({ a: { dtype: 'I32', shape: [1], data: [1.5] } })).toThrow(/'a'.*1.5/);
    expect(() => writeSafetensors({ __metadata__: { dtype: 'F32', shape: [1], data: [1] } })).toThrow(/reserved/);
    expect(() => writeSafetensors({}, { a: 1 as unknown as string })).toThrow(/__metadata__.*'a'/);
  });
});

// ---------------------------------------------------------------- conversions

describe('host conversions', () => {
  it('f32 -> f16 rounds to nearest even, with subnormals, overflow and NaN', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff], // max half
      [65519.99, 0x7bff], // just below the overflow midpoint
      [65520, 0x7c00], // midpoint to the next binade rounds (to even) to infinity
      [1e6, 0x7c00],
      [-1e6, 0xfc00],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -14 - 2 ** -24, 0x03ff], // largest subnormal
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // tie between 0 and 2^-24: to even (0)
      [fromBits(bitsOf(2 ** -25) + 1), 0x0001], // just above the tie
      [3 * 2 ** -25, 0x0002], // tie between 1 and 2 ulps: to even (2)
      [5 * 2 ** -25, 0x0002], // tie between 2 and 3 ulps: to even (2)
      [-(2 ** -26), 0x8000],
      [1 + 2 ** -11, 0x3c00], // tie: to even
      [1 + 3 * 2 ** -11, 0x3c02],
      [2 ** -14 - 2 ** -25, 0x0400], // tie between largest subnormal and smallest normal: to even (0x400)
    ];
    const got = f32ToF16Bits(cases.map((c) => c[0]));
    cases.forEach(([x, want], i) => expect([x, got[i].toString(16)]).toEqual([x, want.toString(16)]));
    const nan = f32ToF16Bits([NaN])[0];
    expect((nan & 0x7c00) === 0x7c00 && (nan & 0x3ff) !== 0).toBe(true);
  });

  it('f32 -> f16 is exact on every half and rounds every midpoint to even', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const asF32 = f16BitsToF32(all);
    const back = f32ToF16Bits(asF32);
    for (let h = 0; h < 65536; h++) {
      const isNan = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (!isNan && back[h] !== h) throw new Error(`half ${h.toString(16)} -> ${asF32[h]} -> ${back[h].toString(16)}`);
    }
    // midpoints between neighbours (exact in f32) and their f32 neighbours on each side
    const mids: number[] = [];
    const want: number[] = [];
    for (const sign of [0, 0x8000]) {
      for (let h = 0; h < 0x7bff; h++) {
        const lo = asF32[sign | h];
        const hi = asF32[sign | (h + 1)];
        const mid = (lo + hi) / 2;
        if (Math.fround(mid) !== mid) throw new Error(`midpoint ${mid} is not an f32`);
        const m = bitsOf(mid);
        mids.push(mid, fromBits(m - 1), fromBits(m + 1));
        const even = h % 2 === 0 ? h : h + 1;
        // m - 1 / m + 1 move towards / away from zero in magnitude
        want.push(sign | even, sign | h, sign | (h + 1));
      }
    }
    const got = f32ToF16Bits(mids);
    for (let i = 0; i < mids.length; i++) {
      if (got[i] !== want[i]) throw new Error(`${mids[i]}: got ${got[i].toString(16)}, want ${want[i].toString(16)}`);
    }
  });

  it('f16 and bf16 -> f32 are exact', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const a = f16BitsToF32(all);
    // IEEE 754 binary16 decoded in float64: sign, 5-bit exponent (bias 15), 10-bit mantissa
    const ref = (h: number) => {
      const s = h & 0x8000 ? -1 : 1;
      const e = (h >>> 10) & 0x1f;
      const m = h & 0x3ff;
      if (e === 0x1f) return m ? NaN : s * Infinity;
      return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
    };
    for (let i = 0; i < 65536; i++) if (!Object.is(a[i], ref(i))) throw new Error(`half ${i.toString(16)}: ${a[i]} vs ${ref(i)}`);
    const bf = bf16BitsToF32(all);
    const u = new Uint32Array(bf.buffer);
    for (let i = 0; i < 65536; i++) if (u[i] !== i << 16 >>> 0) throw new Error(`bf16 ${i.toString(16)}`);
    // f32 -> bf16 round to nearest even, overflow and NaN
    expect(Array.from(f32ToBf16Bits([1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38, -Infinity]), (x) => x.toString(16))).toEqual(['3f80', '3f82', '7f80', 'ff80']);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits([NaN]))[0])).toBe(true);
  });

  it('I64 -> i32 checks the range', async () => {
    const f = SafetensorsFile.fromBytes(
      writeSafetensors({ ok: { dtype: 'I64', shape: [2], data: BigInt64Array.from([-(2n ** 31n), 2n ** 31n - 1n]) }, big: { dtype: 'I64', shape: [3], data: BigInt64Array.from([0n, 2n ** 31n, 1n]) }, neg: { dtype: 'I64', shape: [1], data: BigInt64Array.from([-(2n ** 40n)]) } }),
      'ints.safetensors',
    );
    expect(await f.i32('ok')).toEqual(Int32Array.of(-(2 ** 31), 2 ** 31 - 1));
    await expect(f.i32('big')).rejects.toThrow(/ints\.safetensors: tensor 'big'.*2147483648 at index 1.*i32/);
    await expect(f.i32('neg')).rejects.toThrow(/'neg'.*-1099511627776/);
    await expect(f.f32('ok')).rejects.toThrow(/ints\.safetensors: tensor 'ok' has dtype I64.*f32/);
    await expect(f.i32('nope')).rejects.toThrow(/ints\.safetensors: no tensor named 'nope'/);
  });
});

// ---------------------------------------------------------------- real files

describe('fixture files', () => {
  it('reads ops/linear weights (F32) from bytes and from a file', async () => {
    const ref = readSafetensorsFile(LINEAR);
    const mem = SafetensorsFile.fromBytes(readFileSync(LINEAR), 'linear');
    const file = await openSafetensorsFile(LINEAR);
    try {
      for (const f of [mem, file]) {
        expect(f.names()).toEqual(['bias', 'weight']);
        expect(f.metadata.format).toBe('pt');
        expect(f.info('weight')!.shape).toEqual([48, 32]);
        expect(await f.f32('weight')).toEqual(ref.weight.data);
        expect(await f.f32('bias')).toEqual(ref.bias.data);
      }
    } finally {
      await file.close();
    }
    await expect(file.f32('bias')).rejects.toThrow(/closed/);
  });

  it('reads the BF16 TAESD decoder from a file, one tensor at a time', async () => {
    const raw = readFileSync(TAESD_DEC);
    const f = await openSafetensorsFile(TAESD_DEC);
    try {
      expect(f.names().length).toBe(67);
      const info = f.info('1.weight')!;
      expect(info).toMatchObject({ dtype: 'BF16', shape: [64, 4, 3, 3] });
      const w = await f.f32('1.weight');
      expect(f.bytesRead).toBe(64 * 4 * 9 * 2); // only this tensor was read
      // independent decode: bf16 bits are the high half of the f32
      const base = 8 + Number(raw.readBigUInt64LE(0)) + info.begin;
      for (let i = 0; i < w.length; i++) {
        const u = raw.readUInt16LE(base + 2 * i) << 16;
        if (bitsOf(w[i]) !== u >>> 0) throw new Error(`1.weight[${i}]`);
      }
      let ss = 0;
      for (const v of w) ss += v * v;
      expect(ss).toBeGreaterThan(0);
      expect(await f.f16Bits('1.weight')).toEqual(f32ToF16Bits(w));
      for (const name of f.names()) expect(f.info(name)!.dtype).toBe('BF16');
    } finally {
      await f.close();
    }
  });
});

// ---------------------------------------------------------------- validation

describe('header validation', () => {
  const L = /bad\.safetensors/;
  it('file shorter than 8 bytes', () => {
    expect(() => SafetensorsFile.fromBytes(new Uint8Array(5), 'bad.safetensors')).toThrow(/bad\.safetensors.*5 bytes, shorter than the 8-byte/);
    expect(() => SafetensorsFile.fromBytes(new Uint8Array(0), 'bad.safetensors')).toThrow(/shorter than the 8-byte/);
  });
  it('header length over 16 MiB or beyond the file', () => {
    expect(MAX_HEADER_BYTES).toBe(16 * 2 ** 20);
    expect(() => SafetensorsFile.fromBytes(build('{}', undefined, MAX_HEADER_BYTES + 1), 'bad.safetensors')).toThrow(/bad\.safetensors.*exceeds the 16777216-byte limit/);
    expect(() => SafetensorsFile.fromBytes(build('{}', undefined, 2 ** 40), 'bad.safetensors')).toThrow(/exceeds/);
    expect(() => SafetensorsFile.fromBytes(build('{}', undefined, 3), 'bad.safetensors')).toThrow(/bad\.safetensors.*header length 3 goes beyond the end of the file \(10 bytes\)/);
  });
  it('header not UTF-8 / not JSON / not an object', () => {
    expect(() => SafetensorsFile.fromBytes(build(Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d)), 'bad.safetensors')).toThrow(/bad\.safetensors.*not valid UTF-8/);
    expect(() => SafetensorsFile.fromBytes(build('{"a": '), 'bad.safetensors')).toThrow(/bad\.safetensors.*not valid JSON/);
    expect(bad([1, 2])).toThrow(/bad\.safetensors.*must be a JSON object, got an array/);
    expect(bad(42)).toThrow(/must be a JSON object, got 42/);
    expect(bad(null)).toThrow(/must be a JSON object, got null/);
  });
  it('entry missing fields or with wrong types', () => {
    expect(bad({ w: { shape: [1], data_offsets: [0, 4] } })).toThrow(/bad\.safetensors: tensor 'w': missing 'dtype'/);
    expect(bad({ w: { dtype: 'F32', data_offsets: [0, 4] } })).toThrow(/tensor 'w': missing 'shape'/);
    expect(bad({ w: { dtype: 'F32', shape: [1] } })).toThrow(/tensor 'w': missing 'data_offsets'/);
    expect(bad({ w: 'F32' })).toThrow(/tensor 'w': entry must be an object/);
    expect(bad({ w: { dtype: 4, shape: [1], data_offsets: [0, 4] } })).toThrow(/tensor 'w': dtype must be a string/);
    expect(bad({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } })).toThrow(/tensor 'w': shape must be an array of non-negative integers/);
    expect(bad({ w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } })).toThrow(/tensor 'w': shape/);
    expect(bad({ w: { dtype: 'F32', shape: ['1'], data_offsets: [0, 4] } })).toThrow(/tensor 'w': shape/);
    expect(bad({ w: { dtype: 'F32', shape: 1, data_offsets: [0, 4] } })).toThrow(/tensor 'w': shape/);
    expect(bad({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4, 8] } })).toThrow(/tensor 'w': data_offsets must be two integers/);
    expect(bad({ w: { dtype: 'F32', shape: [1], data_offsets: ['0', '4'] } })).toThrow(/tensor 'w': data_offsets/);
    expect(bad({ w: { dtype: 'F32', shape: [1], data_offsets: [0.5, 4] } })).toThrow(/tensor 'w': data_offsets/);
  });
  it('offsets negative, reversed or outside the data section', () => {
    expect(bad(f32('w', [1], [-4, 0]))).toThrow(/bad\.safetensors: tensor 'w': negative data_offsets/);
    expect(bad(f32('w', [1], [8, 4]))).toThrow(/tensor 'w': data_offsets \[8, 4\] end before they begin/);
    expect(bad(f32('w', [2], [60, 68]), 64)).toThrow(/tensor 'w': data_offsets \[60, 68\] lie outside the data section \(64 bytes\)/);
    expect(bad(f32('w', [1], [2 ** 60, 2 ** 60 + 4]), 64)).toThrow(/tensor 'w'/);
  });
  it('overlapping tensors', () => {
    expect(bad({ ...f32('a', [4], [0, 16]), ...f32('b', [4], [12, 28]) })).toThrow(/bad\.safetensors: tensor 'b' \[12, 28\] overlaps tensor 'a' \[0, 16\]/);
    expect(bad({ ...f32('a', [4], [0, 16]), ...f32('b', [4], [0, 16]) })).toThrow(/overlaps/);
    // touching tensors and empty ones where the previous one ends are fine; not inside another
    expect(bad({ ...f32('a', [4], [0, 16]), ...f32('b', [4], [16, 32]), ...f32('c', [0], [16, 16]) })).not.toThrow();
    expect(bad({ ...f32('a', [4], [0, 16]), ...f32('b', [4], [16, 32]), ...f32('c', [0], [8, 8]) })).toThrow(/tensor 'c' \[8, 8\] overlaps tensor 'a'/);
  });
  it('byte length not matching shape x dtype size', () => {
    expect(bad(f32('w', [2, 3], [0, 20]))).toThrow(/bad\.safetensors: tensor 'w': 20 bytes at data_offsets \[0, 20\] but shape \[2, 3\] of F32 needs 24/);
    expect(bad({ w: { dtype: 'BF16', shape: [3], data_offsets: [0, 4] } })).toThrow(/tensor 'w'.*needs 6/);
  });
  it('unknown dtype; known but unsupported dtypes fail when read', async () => {
    expect(bad({ w: { dtype: 'X9', shape: [1], data_offsets: [0, 4] } })).toThrow(/bad\.safetensors: tensor 'w': unknown dtype 'X9'/);
    const f = bad({ w: { dtype: 'F64', shape: [2], data_offsets: [0, 16] }, u: { dtype: 'U8', shape: [3], data_offsets: [16, 19] } })();
    await expect(f.f32('w')).rejects.toThrow(/bad\.safetensors: tensor 'w' has dtype F64.*unsupported dtype/);
    await expect(f.f16Bits('u')).rejects.toThrow(/bad\.safetensors: tensor 'u' has dtype U8/);
    await expect(f.i32('u')).rejects.toThrow(/tensor 'u' has dtype U8/);
    expect((await f.bytes('u')).byteLength).toBe(3);
  });
  it('__metadata__ must map strings to strings', () => {
    expect(bad({ __metadata__: { format: 'pt' } })).not.toThrow();
    expect(bad({ __metadata__: { n: 1 } })).toThrow(/bad\.safetensors: __metadata__ value for key 'n' must be a string, got 1/);
    expect(bad({ __metadata__: ['a'] })).toThrow(/__metadata__ must be an object of strings/);
    expect(bad({ __metadata__: 'x' })).toThrow(/__metadata__ must be an object/);
  });
  it('validates files read from disk, naming the path', async () => {
    const d = tmp();
    const p = join(d, 'broken.safetensors');
    writeFileSync(p, build(f32('w', [2, 3], [0, 20]), new Uint8Array(20)));
    await expect(openSafetensorsFile(p)).rejects.toThrow(/broken\.safetensors: tensor 'w': 20 bytes/);
    const q = join(d, 'short.safetensors');
    writeFileSync(q, new Uint8Array(3));
    await expect(openSafetensorsFile(q)).rejects.toThrow(/short\.safetensors.*3 bytes, shorter than the 8-byte/);
    const r = join(d, 'long.safetensors');
    writeFileSync(r, build('{}', undefined, 1000));
    await expect(openSafetensorsFile(r)).rejects.toThrow(/long\.safetensors.*header length 1000 goes beyond/);
    expect(() => parseSafetensorsHeader(new Uint8Array(4))).toThrow(/safetensors bytes/);
  });
});

// ---------------------------------------------------------------- URL

describe('fetch from a URL', () => {
  it('streams a file with Content-Length, reporting increasing progress and the total', async () => {
    const bytes = new Uint8Array(readFileSync(TAESD_DEC));
    serveBytes('/taesd.safetensors', bytes);
    const calls: [number, number][] = [];
    const f = await downloadSafetensorsFile(`${baseUrl}/taesd.safetensors`, { onProgress: (l, t) => calls.push([l, t]) });
    expect(calls.length).toBeGreaterThan(2);
    for (let i = 1; i < calls.length; i++) expect(calls[i][0]).toBeGreaterThan(calls[i - 1][0]);
    expect(calls.every(([, t]) => t === bytes.byteLength)).toBe(true);
    expect(calls[calls.length - 1]).toEqual([bytes.byteLength, bytes.byteLength]);
    const ref = await openSafetensorsFile(TAESD_DEC);
    try {
      expect(f.names()).toEqual(ref.names());
      expect(await f.f32('19.weight')).toEqual(await ref.f32('19.weight'));
    } finally {
      await ref.close();
    }
  });

  it('streams a chunked response without Content-Length (total from the header)', async () => {
    const bytes = new Uint8Array(readFileSync(TAESD_DEC));
    serveBytes('/chunked.safetensors', bytes, 'chunked');
    const calls: [number, number][] = [];
    const f = await downloadSafetensorsFile(new URL(`${baseUrl}/chunked.safetensors`), { onProgress: (l, t) => calls.push([l, t]) });
    for (let i = 1; i < calls.length; i++) expect(calls[i][0]).toBeGreaterThan(calls[i - 1][0]);
    expect(calls[calls.length - 1]).toEqual([bytes.byteLength, bytes.byteLength]);
    expect((await f.f32('1.bias')).length).toBe(64);
  });

  it('rejects truncated streams, bad headers and HTTP errors', async () => {
    const bytes = new Uint8Array(readFileSync(TAESD_DEC));
    serveBytes('/cut-length.safetensors', bytes, 'truncated-length');
    serveBytes('/cut-chunked.safetensors', bytes, 'truncated-chunked');
    await expect(downloadSafetensorsFile(`${baseUrl}/cut-length.safetensors`)).rejects.toThrow(/cut-length\.safetensors: (download failed|download truncated)/);
    await expect(downloadSafetensorsFile(`${baseUrl}/cut-chunked.safetensors`)).rejects.toThrow(
      /cut-chunked\.safetensors: download truncated: received 1225295 bytes, the tensors end at byte 2450590/,
    );
    // cut inside the header
    serveBytes('/cut-header.safetensors', bytes.subarray(0, 200), 'chunked');
    await expect(downloadSafetensorsFile(`${baseUrl}/cut-header.safetensors`)).rejects.toThrow(/cut-header\.safetensors: download truncated: safetensors header length 5520 goes beyond the 200 bytes/);
    serveBytes('/tiny.safetensors', Uint8Array.of(1, 2, 3), 'chunked');
    await expect(downloadSafetensorsFile(`${baseUrl}/tiny.safetensors`)).rejects.toThrow(/tiny\.safetensors.*3 bytes, shorter than the 8-byte/);
    // a huge header length is refused from the first 8 bytes
    serveBytes('/huge.safetensors', build('{}', new Uint8Array(100000), 2 ** 33), 'length');
    await expect(downloadSafetensorsFile(`${baseUrl}/huge.safetensors`)).rejects.toThrow(/huge\.safetensors.*exceeds the 16777216-byte limit/);
    serveBytes('/bad-offsets.safetensors', build(f32('w', [4], [0, 16]), new Uint8Array(8)), 'length');
    await expect(downloadSafetensorsFile(`${baseUrl}/bad-offsets.safetensors`)).rejects.toThrow(/bad-offsets\.safetensors: tensor 'w'.*outside the data section \(8 bytes\)/);
    serveBytes('/bad-offsets2.safetensors', build(f32('w', [4], [0, 16]), new Uint8Array(8)), 'chunked');
    await expect(downloadSafetensorsFile(`${baseUrl}/bad-offsets2.safetensors`)).rejects.toThrow(/bad-offsets2\.safetensors: download truncated/);
    await expect(downloadSafetensorsFile(`${baseUrl}/missing.safetensors`)).rejects.toThrow(/missing\.safetensors: HTTP 404/);
    await expect(downloadSafetensorsFile('http://127.0.0.1:1/x.safetensors')).rejects.toThrow(/x\.safetensors: fetch failed/);
  });

  it('a stalled download stops when its signal aborts', async () => {
    serveBytes('/stall.safetensors', new Uint8Array(readFileSync(TAESD_DEC)), 'stall');
    const ac = new AbortController();
    const p = downloadSafetensorsFile(`${baseUrl}/stall.safetensors`, { signal: ac.signal });
    setTimeout(() => ac.abort(), 200);
    await expect(p).rejects.toThrow(/stall\.safetensors/);
  });
});

// ---------------------------------------------------------------- WeightSource

describe('WeightSource', () => {
  const w = randn(6 * 5, 11);
  const b = randn(6, 12);
  const bytes = writeSafetensors({
    'layer.weight': { dtype: 'F32', shape: [6, 5], data: w },
    'layer.bias': { dtype: 'BF16', shape: [6], data: b },
    'layer.half': { dtype: 'F16', shape: [3], data: [1, -0.5, 3e-7] },
    'proj.weight': { dtype: 'F32', shape: [6, 5, 1, 1], data: w },
    'pos_ids': { dtype: 'I64', shape: [4], data: [0, 1, 2, 3] },
  });

  it('lists names, shapes and dtypes and uploads f32 with shape checks', async () => {
    const engine = await getEngine();
    const src = WeightSource.fromBytes(bytes, 'mem.safetensors');
    expect(src.names()).toEqual(['layer.bias', 'layer.half', 'layer.weight', 'pos_ids', 'proj.weight']);
    expect(src.info('layer.bias')).toEqual({ name: 'layer.bias', dtype: 'BF16', shape: [6] });
    expect(src.list().map((i) => i.dtype)).toEqual(['BF16', 'F16', 'F32', 'I64', 'F32']);
    const tw = await src.upload(engine, 'layer.weight', [6, 5], { dtype: 'f32' });
    expect(tw.shape).toEqual([6, 5]);
    expect(await readF32(tw)).toEqual(w);
    const tb = await src.upload(engine, 'layer.bias', [6], { dtype: 'f32' });
    expect(await readF32(tb)).toEqual(bf16BitsToF32(f32ToBf16Bits(b)));
    // a [6,5,1,1] conv weight as a [6,5] linear only when asked
    await expect(src.upload(engine, 'proj.weight', [6, 5], { dtype: 'f32' })).rejects.toThrow(
      /mem\.safetensors: weight 'proj\.weight' has shape \[6, 5, 1, 1\], expected \[6, 5\]/,
    );
    const tp = await src.upload(engine, 'proj.weight', [6, 5], { dtype: 'f32', allowReshape: true });
    expect(tp.shape).toEqual([6, 5]);
    const ti = await src.upload(engine, 'pos_ids', [4], { dtype: 'i32' });
    expect(Array.from(await ti.read())).toEqual([0, 1, 2, 3]);
    await expect(src.upload(engine, 'pos_ids', [4], { dtype: 'f32' })).rejects.toThrow(/'pos_ids' has dtype I64, which cannot be uploaded as f32/);
    await expect(src.upload(engine, 'layer.weight', [6], { dtype: 'i32' })).rejects.toThrow(/shape/);
    expect(src.unusedNames()).toEqual(['layer.half']);
    src.markUsed('layer.half');
    expect(src.unusedNames()).toEqual([]);
    expect(() => src.assertAllUsed()).not.toThrow();
    for (const t of [tw, tb, tp, ti]) t.dispose();
  });

  it('uploads f16 bits into an f16 tensor (default dtype follows engine.f16)', async () => {
    const engine = await getEngine();
    const src = WeightSource.fromBytes(bytes, 'mem.safetensors');
    const th = await src.upload(engine, 'layer.half', [3], { dtype: 'f16' });
    expect(th.dtype).toBe('f16');
    expect(Array.from(await readF32(th))).toEqual(Array.from(f16BitsToF32(f32ToF16Bits([1, -0.5, 3e-7]))));
    const tw = await src.upload(engine, 'layer.weight', [6, 5], { dtype: 'f16' });
    expect(await readF32(tw)).toEqual(f16BitsToF32(f32ToF16Bits(w)));
    const td = await src.upload(engine, 'layer.bias', [6]);
    expect(td.dtype).toBe(engine.f16 ? 'f16' : 'f32');
    for (const t of [th, tw, td]) t.dispose();
  });

  it('names missing tensors with close names, and reports unused ones', async () => {
    const engine = await getEngine();
    const src = WeightSource.fromBytes(bytes, 'mem.safetensors');
    await expect(src.upload(engine, 'layer.weights', [6, 5])).rejects.toThrow(/mem\.safetensors: missing weight 'layer\.weights'; close names: layer\.weight/);
    await expect(src.upload(engine, 'totally.different.name.here', [1])).rejects.toThrow(/missing weight 'totally\.different\.name\.here'; the source has 5 tensors, e\.g\./);
    expect(src.unusedNames()).toEqual(src.names());
    expect(() => src.assertAllUsed('TestModel')).toThrow(/mem\.safetensors: 5 weight\(s\) not used by the TestModel: layer\.bias/);
    expect(closeNames('down_blocks.0.resnets.1.conv1.weight', ['down_blocks.0.resnets.0.conv1.weight', 'down_blocks.0.resnets.1.conv2.weight', 'up_blocks.3.attentions.2.proj_out.bias'])).toEqual([
      'down_blocks.0.resnets.0.conv1.weight',
      'down_blocks.0.resnets.1.conv2.weight',
    ]);
  });

  it('prefix and renamed views share the used set', async () => {
    const engine = await getEngine();
    const src = WeightSource.fromBytes(bytes, 'mem.safetensors');
    const layer = src.withPrefix('layer.');
    expect(layer.names()).toEqual(['bias', 'half', 'weight']);
    const renamed = src.renamed((n) => (n.startsWith('proj.') ? n.replace('proj.', 'to_out.') : null));
    expect(renamed.names()).toEqual(['to_out.weight']);
    await expect(renamed.upload(engine, 'to_out.weight', [6, 5, 1, 2])).rejects.toThrow(/'to_out\.weight' \(stored as 'proj\.weight'\) has shape \[6, 5, 1, 1\], expected \[6, 5, 1, 2\]/);
    const t = await renamed.upload(engine, 'to_out.weight', [6, 5, 1, 1], { dtype: 'f32' });
    expect(await layer.readF32('weight', [6, 5])).toEqual(w);
    expect(layer.unusedNames()).toEqual(['bias', 'half']);
    expect(src.unusedNames()).toEqual(['layer.bias', 'layer.half', 'pos_ids']);
    expect(() => src.renamed(() => 'same')).toThrow(/both map to 'same'/);
    t.dispose();
  });
});

// ---------------------------------------------------------------- component folders

describe('loadComponentFolder', () => {
  const config = { _class_name: 'AutoencoderKL', latent_channels: 4, act_fn: 'silu' };
  const weights = writeSafetensors({ 'conv.weight': { dtype: 'F32', shape: [2, 2], data: [1, 2, 3, 4] } });
  const half = writeSafetensors({ 'conv.weight': { dtype: 'F16', shape: [2, 2], data: [5, 6, 7, 8] } });
  const shardA = writeSafetensors({ a: { dtype: 'F32', shape: [1], data: [1] } });
  const shardB = writeSafetensors({ b: { dtype: 'F32', shape: [2], data: [2, 3] } });
  const index = JSON.stringify({ metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } });

  function folder(files: Record<string, string | Uint8Array>): string {
    const d = tmp();
    for (const [n, c] of Object.entries(files)) writeFileSync(join(d, n), c);
    return d;
  }

  it('reads a local folder, its fp16 variant, model.safetensors and shards', async () => {
    const progress: [number, number][] = [];
    const d = folder({ 'config.json': JSON.stringify(config), 'diffusion_pytorch_model.safetensors': weights, 'diffusion_pytorch_model.fp16.safetensors': half });
    const c = await loadComponentFolder(d, { onProgress: (l, t) => progress.push([l, t]) });
    expect(c.config).toEqual(config);
    expect(Array.from(await c.weights.readF32('conv.weight'))).toEqual([1, 2, 3, 4]);
    expect(progress).toEqual([[16, 16]]);
    await c.weights.close();
    const v = await loadComponentFolder(`file://${d}`, { variant: 'fp16' });
    expect(Array.from(await v.weights.readF32('conv.weight'))).toEqual([5, 6, 7, 8]);
    await v.weights.close();

    const only16 = folder({ 'config.json': '{}', 'diffusion_pytorch_model.fp16.safetensors': half });
    const o = await loadComponentFolder(only16);
    expect(o.weights.info('conv.weight')!.dtype).toBe('F16');
    await o.weights.close();

    const te = folder({ 'config.json': '{"hidden_size": 8}', 'model.safetensors': weights });
    const t = await loadComponentFolder(te + '/');
    expect(t.config.hidden_size).toBe(8);
    expect(t.weights.names()).toEqual(['conv.weight']);
    await t.weights.close();

    const sh = folder({ 'config.json': '{}', 'model.safetensors.index.json': index, 'model-00001-of-00002.safetensors': shardA, 'model-00002-of-00002.safetensors': shardB });
    const s = await loadComponentFolder(sh);
    expect(s.weights.names()).toEqual(['a', 'b']);
    expect(Array.from(await s.weights.readF32('b'))).toEqual([2, 3]);
    await s.weights.close();
  });

  it('reports missing files and bad configs clearly', async () => {
    const none = folder({ 'config.json': '{}', 'diffusion_pytorch_model.bin': 'x' });
    await expect(loadComponentFolder(none)).rejects.toThrow(/no safetensors weights found \(tried diffusion_pytorch_model\.safetensors.*\.bin weights are not supported/);
    const noConfig = folder({ 'diffusion_pytorch_model.safetensors': weights });
    await expect(loadComponentFolder(noConfig)).rejects.toThrow(/config\.json: cannot read the component config/);
    const badConfig = folder({ 'config.json': '{"a": ', 'diffusion_pytorch_model.safetensors': weights });
    await expect(loadComponentFolder(badConfig)).rejects.toThrow(/config\.json: invalid JSON/);
    const arrConfig = folder({ 'config.json': '[1]', 'diffusion_pytorch_model.safetensors': weights });
    await expect(loadComponentFolder(arrConfig)).rejects.toThrow(/config\.json: invalid JSON \(expected an object, got an array\)/);
    const badWeights = folder({ 'config.json': '{}', 'diffusion_pytorch_model.safetensors': new Uint8Array(4) });
    await expect(loadComponentFolder(badWeights)).rejects.toThrow(/diffusion_pytorch_model\.safetensors.*shorter than the 8-byte/);
  });

  it('reads a base URL with progress, falling back to model.safetensors and shards', async () => {
    routes.set('/vae/config.json', (res) => res.end(JSON.stringify(config)));
    serveBytes('/vae/diffusion_pytorch_model.safetensors', weights);
    const progress: [number, number][] = [];
    const c = await loadComponentFolder(`${baseUrl}/vae`, { onProgress: (l, t) => progress.push([l, t]) });
    expect(c.config).toEqual(config);
    expect(Array.from(await c.weights.readF32('conv.weight'))).toEqual([1, 2, 3, 4]);
    expect(progress[progress.length - 1]).toEqual([weights.byteLength, weights.byteLength]);

    routes.set('/te/config.json', (res) => res.end('{"x": 1}'));
    serveBytes('/te/model.fp16.safetensors', half, 'chunked');
    const t = await loadComponentFolder(`${baseUrl}/te/`);
    expect(Array.from(await t.weights.readF32('conv.weight'))).toEqual([5, 6, 7, 8]);

    routes.set('/sh/config.json', (res) => res.end('{}'));
    routes.set('/sh/diffusion_pytorch_model.safetensors.index.json', (res) => res.end(index));
    serveBytes('/sh/model-00001-of-00002.safetensors', shardA);
    serveBytes('/sh/model-00002-of-00002.safetensors', shardB);
    const sp: [number, number][] = [];
    const s = await loadComponentFolder(`${baseUrl}/sh`, { onProgress: (l, t) => sp.push([l, t]) });
    expect(s.weights.names()).toEqual(['a', 'b']);
    expect(sp[sp.length - 1]).toEqual([shardA.byteLength + shardB.byteLength, shardA.byteLength + shardB.byteLength]);

    await expect(loadComponentFolder(`${baseUrl}/nothing`)).rejects.toThrow(/nothing\/config\.json: HTTP 404/);
    routes.set('/empty/config.json', (res) => res.end('{}'));
    await expect(loadComponentFolder(`${baseUrl}/empty`)).rejects.toThrow(/empty: no safetensors weights found/);
    routes.set('/broken/config.json', (res) => res.end('{}'));
    serveBytes('/broken/diffusion_pytorch_model.safetensors', weights, 'truncated-chunked');
    await expect(loadComponentFolder(`${baseUrl}/broken`)).rejects.toThrow(/broken\/diffusion_pytorch_model\.safetensors: download truncated/);
  });

  it('fromConfigBytes', async () => {
    const c = fromConfigBytes(JSON.stringify(config), weights);
    expect(c.config.latent_channels).toBe(4);
    expect(c.weights.names()).toEqual(['conv.weight']);
    expect(fromConfigBytes(config, weights.buffer as ArrayBuffer).config).toBe(config);
    expect(() => fromConfigBytes('nope', weights)).toThrow(/config: invalid JSON/);
  });
});
