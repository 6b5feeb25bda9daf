// The safetensors format's own rules, enforced: tensor byte ranges tile the data section exactly
// (no duplicate names, gaps, overlaps or trailing bytes), the header is bounded in size, entry
// count and depth, and every failure is a SafetensorsError naming the file (and the tensor).
import { describe, expect, it } from 'vitest';
import { SafetensorsFile, SafetensorsError, MAX_HEADER_BYTES, MAX_TENSORS, writeSafetensors } from '../src/runtime/safetensors.js';
import { downloadSafetensorsFile } from '../src/runtime/safetensors_sources.js';
import { IOError } from '../src/runtime/io.js';

const enc = new TextEncoder();

function build(header: string, dataBytes: number, lengthOverride?: number): Uint8Array {
  const h = enc.encode(header);
  const out = new Uint8Array(8 + h.byteLength + dataBytes);
  const dv = new DataView(out.buffer);
  const n = lengthOverride ?? h.byteLength;
  dv.setUint32(0, n % 2 ** 32, true);
  dv.setUint32(4, Math.floor(n / 2 ** 32), true);
  out.set(h, 8);
  for (let i = 0; i < dataBytes; i++) out[8 + h.byteLength + i] = (i * 37 + 11) & 0xff;
  return out;
}

const entry = (dtype: string, shape: number[], begin: number, end: number) => `{"dtype":"${dtype}","shape":[${shape.join(',')}],"data_offsets":[${begin},${end}]}`;

function failure(bytes: Uint8Array, label = 'm.safetensors'): SafetensorsError {
  try {
    SafetensorsFile.fromBytes(bytes, label);
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    const err = e as SafetensorsError;
    expect(err.file).toBe(label);
    expect(err.message.startsWith(`${label}: `)).toBe(true);
    return err;
  }
  throw new Error('expected the file to be refused');
}

describe('safetensors strictness', () => {
  it('accepts a file whose tensors tile the data section, empty tensors at a boundary', () => {
    const h = `{"a":${entry('F32', [2], 0, 8)},"e":${entry('F16', [0, 3], 8, 8)},"b":${entry('F16', [3], 8, 14)},"__metadata__":{"k":"v"}}`;
    const f = SafetensorsFile.fromBytes(build(h, 14), 'ok.safetensors');
    expect(f.names()).toEqual(['a', 'b', 'e']);
    expect(f.dataBytes).toBe(14);
  });

  it('refuses duplicate tensor names (JSON.parse would keep the last silently)', () => {
    const e = failure(build(`{"w":${entry('F32', [1], 0, 4)},"w":${entry('F32', [1], 4, 8)}}`, 8));
    expect(e.message).toMatch(/the header has the key 'w' twice/);
    expect(e.tensor).toBe('w');
    // also spelled with an escape, and keys repeated inside an entry
    expect(failure(build(`{"w":${entry('F32', [1], 0, 4)},"\\u0077":${entry('F32', [1], 4, 8)}}`, 8)).message).toMatch(/key 'w' twice/);
    expect(failure(build(`{"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}`, 4)).message).toMatch(/an entry of the header has the key 'dtype' twice/);
    expect(failure(build(`{"__metadata__":{"a":"1","a":"2"}}`, 0)).message).toMatch(/'a' twice/);
  });

  it('refuses gaps: at the start, between tensors, and trailing bytes', () => {
    expect(failure(build(`{"w":${entry('F32', [1], 4, 8)}}`, 8)).message).toMatch(/4 bytes \[0, 4\] belong to no tensor \(a gap at the start of the data section, before 'w'\)/);
    const gap = failure(build(`{"a":${entry('F32', [1], 0, 4)},"b":${entry('F32', [1], 12, 16)}}`, 16));
    expect(gap.message).toMatch(/8 bytes \[4, 12\] belong to no tensor \(a gap after tensor 'a' \[0, 4\], before 'b'\)/);
    expect(gap.tensor).toBe('b');
    expect(failure(build(`{"a":${entry('F32', [1], 0, 4)}}`, 10)).message).toMatch(/data section has 10 bytes but the tensors cover 4 \(6 trailing bytes/);
    expect(failure(build(`{}`, 3)).message).toMatch(/data section has 3 bytes but the tensors cover 0/);
    expect(failure(build(`{"e":${entry('F32', [0], 5, 5)}}`, 5)).message).toMatch(/a gap at the start/);
  });

  it('refuses overlaps and tensors past the end', () => {
    expect(failure(build(`{"a":${entry('F32', [2], 0, 8)},"b":${entry('F32', [2], 4, 12)}}`, 12)).message).toMatch(/tensor 'b' \[4, 12\] overlaps tensor 'a' \[0, 8\]/);
    expect(failure(build(`{"a":${entry('F32', [2], 0, 8)},"e":${entry('F32', [0], 4, 4)}}`, 8)).message).toMatch(/'e' \[4, 4\] overlaps tensor 'a'/);
    expect(failure(build(`{"a":${entry('F32', [2], 0, 8)}}`, 4)).message).toMatch(/lie outside the data section \(4 bytes\)/);
  });

  it(`caps the header at ${MAX_HEADER_BYTES} bytes and ${MAX_TENSORS} entries; a 1M-entry header fails from its length`, () => {
    expect(MAX_HEADER_BYTES).toBe(16 * 2 ** 20);
    // A real 1M-entry header (~56 MB): refused from the 8-byte length, before a byte of JSON is read.
    const parts: string[] = [];
    for (let i = 0; i < 1_000_000; i++) parts.push(`"t${i}":${entry('F32', [0], 0, 0)}`);
    const huge = `{${parts.join(',')}}`;
    expect(huge.length).toBeGreaterThan(MAX_HEADER_BYTES);
    const first8 = build('', 0, huge.length).subarray(0, 8);
    const withBody = new Uint8Array(8 + 16);
    withBody.set(first8);
    expect(failure(withBody).message).toMatch(new RegExp(`header length ${huge.length} exceeds the ${MAX_HEADER_BYTES}-byte limit`));
    // Within the size limit but over the entry cap: refused by the key scan, before JSON.parse.
    const many = `{${parts.slice(0, MAX_TENSORS + 1).join(',')}}`;
    expect(many.length).toBeLessThan(MAX_HEADER_BYTES);
    expect(failure(build(many, 0)).message).toMatch(/more than 100000 tensors/);
    // At the cap it loads.
    expect(SafetensorsFile.fromBytes(build(`{${parts.slice(0, MAX_TENSORS).join(',')}}`, 0)).names().length).toBe(MAX_TENSORS);
  });

  it('refuses absurd nesting without overflowing the stack', () => {
    const deep = `{"__metadata__":${'['.repeat(200_000)}${']'.repeat(200_000)}}`;
    expect(failure(build(deep, 0)).message).toMatch(/nests deeper than 8 levels/);
  });

  it('the writer produces files the strict reader accepts (empty tensors included)', () => {
    const bytes = writeSafetensors({
      b: { dtype: 'F16', shape: [3], data: [1, 2, 3] },
      a: { dtype: 'F32', shape: [0, 4], data: [] },
      c: { dtype: 'I64', shape: [2], data: [5, -6] },
    });
    const f = SafetensorsFile.fromBytes(bytes);
    expect(f.names()).toEqual(['a', 'b', 'c']);
  });

  it('every header failure is a SafetensorsError naming the file', () => {
    const cases = [
      new Uint8Array(3),
      build('{}', 0, 2 ** 40),
      build('{"a":', 0),
      build('[1]', 0),
      build(`{"w":{"dtype":"F32"}}`, 0),
      build(`{"w":${entry('Q7', [1], 0, 4)}}`, 4),
      build(`{"w":${entry('F32', [3], 0, 4)}}`, 4),
    ];
    for (const c of cases) failure(c);
  });
  it('a download without Content-Length: trailing bytes are refused, a short one is an IOError', async () => {
    const file = writeSafetensors({ a: { dtype: 'F32', shape: [3], data: [1, 2, 3] } });
    const streamed = (body: Uint8Array): typeof fetch =>
      (async () =>
        new Response(
          new ReadableStream<Uint8Array>({
            start(c) {
              for (let i = 0; i < body.length; i += 5) c.enqueue(body.slice(i, i + 5));
              c.close();
            },
          }),
        )) as typeof fetch;
    const longer = new Uint8Array(file.length + 3);
    longer.set(file);
    const e = await downloadSafetensorsFile('http://x.invalid/long.safetensors', { fetch: streamed(longer) }).catch((x) => x);
    expect(e).toBeInstanceOf(SafetensorsError);
    expect(e.message).toMatch(/long\.safetensors: 3 trailing bytes after the last tensor/);
    const cut = await downloadSafetensorsFile('http://x.invalid/cut.safetensors', { fetch: streamed(file.subarray(0, file.length - 2)) }).catch((x) => x);
    expect(cut).toBeInstanceOf(IOError);
    expect(cut.kind).toBe('truncated');
    expect(cut.message).toMatch(/cut\.safetensors: download truncated/);
    const ok = await downloadSafetensorsFile('http://x.invalid/ok.safetensors', { fetch: streamed(file) });
    expect([...(await ok.f32('a'))]).toEqual([1, 2, 3]);
  });
});
