// The .ckpt reader: torch.save archives made by tools/pyref/gen_ckpt_cases.py (Lightning extras,
// f16/bf16/int storages, strided views, shared storages), hostile pickles, and a seeded fuzz of
// 10,000 in-memory mutations: each must load or fail with a CheckpointError, never crash or hang.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from './fixture.js';
import { CkptFile, CheckpointError, openCheckpoint } from '../src/loaders/ckpt.js';
import { readerFromBytes } from '../src/loaders/zip.js';
import { unpickle } from '../src/loaders/pickle.js';
import { writeSafetensors } from '../src/runtime/safetensors.js';

const DIR = join(FIXTURES, 'ckpt');
const expected = (JSON.parse(readFileSync(join(DIR, 'expected.json'), 'utf8')) as { tensors: Record<string, { shape: number[]; values: number[] }> }).tensors;

function mulberry32(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('ckpt reader', () => {
  it('reads a Lightning checkpoint: every tensor, dtype conversions, views, metadata', async () => {
    for (const src of [join(DIR, 'model.ckpt'), readFileSync(join(DIR, 'model.ckpt')), new Blob([readFileSync(join(DIR, 'model.ckpt'))])]) {
      const w = await openCheckpoint(src);
      expect(w.names()).toEqual(Object.keys(expected).sort());
      for (const [name, e] of Object.entries(expected)) {
        expect(w.info(name)!.shape).toEqual(e.shape);
        const dt = w.info(name)!.dtype;
        const got = dt === 'I64' || dt === 'I32' ? Array.from(await w.readI32(name)) : Array.from(await w.readF32(name));
        expect(got.length).toBe(e.values.length);
        got.forEach((v, i) => expect(v).toBeCloseTo(e.values[i], 6));
      }
      expect(w.info('model.half')!.dtype).toBe('F16');
      expect(w.info('model.bf16')!.dtype).toBe('BF16');
      expect(w.metadata.global_step).toBe('1234');
      expect(w.metadata['pytorch-lightning_version']).toBe('1.4.2');
      await w.close();
    }
  });

  it('keeps Lightning objects outside the state dict as inert placeholders', async () => {
    const f = await CkptFile.open(readerFromBytes(readFileSync(join(DIR, 'model.ckpt')), 'model.ckpt'));
    const hp = f.extras.get('hyper_parameters') as { cls: { qualified: string }; items: Map<string, unknown> };
    expect(hp.cls.qualified).toBe('pytorch_lightning.utilities.parsing.AttributeDict');
    expect(hp.items.get('linear_start')).toBe(0.0015);
    expect(f.extras.has('callbacks')).toBe(true);
  });

  it('reads a bare state dict saved under another archive stem', async () => {
    const w = await openCheckpoint(readFileSync(join(DIR, 'weights.pt')));
    expect(Array.from(await w.readF32('w'))).toEqual([0, 1, 2, 3, 4, 5]);
    expect(Array.from(await w.readF32('b'))).toEqual([0.5]);
  });

  it('refuses hostile globals by name, also in their Python 2 spellings', async () => {
    await expect(openCheckpoint(join(DIR, 'hostile_eval.ckpt'))).rejects.toThrow(/refuses the pickle global '__builtin__\.eval'/);
    await expect(openCheckpoint(join(DIR, 'hostile_system.ckpt'))).rejects.toThrow(/refuses the pickle global 'posix\.system'/);
    await expect(openCheckpoint(join(DIR, 'hostile_getattr.ckpt'))).rejects.toThrow(/'__builtin__\.getattr'/);
    // STACK_GLOBAL (protocol 4) and unknown opcodes
    const sg = new Uint8Array([0x80, 4, 0x8c, 8, ...new TextEncoder().encode('builtins'), 0x8c, 4, ...new TextEncoder().encode('exec'), 0x93, 0x2e]);
    expect(() => unpickle(sg, { label: 'x' })).toThrow(/builtins\.exec/);
    expect(() => unpickle(new Uint8Array([0x80, 2, 0x69, 0x2e]), { label: 'x' })).toThrow(CheckpointError);
    expect(() => unpickle(new Uint8Array([0x80, 2, 0x5d]), { label: 'x' })).toThrow(/ended without STOP/);
  });

  it('tells other formats apart: safetensors loads, a legacy torch file gets a clear error', async () => {
    const st = writeSafetensors({ x: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } });
    const w = await openCheckpoint(st);
    expect(Array.from(await w.readF32('x'))).toEqual([1, 2]);
    await expect(openCheckpoint(new Uint8Array([0x80, 2, 0x8a, 0x0a]))).rejects.toThrow(/legacy \(pre-1\.6/);
    await expect(openCheckpoint(new Uint8Array([0x50, 0x4b, 3, 4, 0, 0]))).rejects.toThrow(CheckpointError);
  });

  it('fuzz: 10,000 seeded mutations each load or fail with a CheckpointError', async () => {
    const orig = new Uint8Array(readFileSync(join(DIR, 'model.ckpt')));
    const pklAt = orig.indexOf(0x80); // data.pkl's PROTO byte: mutate the pickle half the time
    const rand = mulberry32(15);
    const counts = { loaded: 0, refused: 0 };
    for (let it = 0; it < 10000; it++) {
      let b = orig.slice();
      const kind = Math.floor(rand() * 5);
      const pos = () => (rand() < 0.5 ? pklAt + Math.floor(rand() * 1500) : Math.floor(rand() * b.length)) % b.length;
      if (kind === 0) for (let j = 0, n = 1 + Math.floor(rand() * 8); j < n; j++) b[pos()] ^= 1 << Math.floor(rand() * 8);
      else if (kind === 1) for (let j = 0, n = 1 + Math.floor(rand() * 4); j < n; j++) b[pos()] = [0, 0xff, 0x7f, 0x80][Math.floor(rand() * 4)];
      else if (kind === 2) b = b.slice(0, Math.floor(rand() * b.length));
      else if (kind === 3) {
        const p = pos();
        const ins = Uint8Array.from({ length: 1 + Math.floor(rand() * 16) }, () => Math.floor(rand() * 256));
        const c = new Uint8Array(b.length + ins.length);
        c.set(b.subarray(0, p));
        c.set(ins, p);
        c.set(b.subarray(p), p + ins.length);
        b = c;
      } else {
        const p = pos();
        const v = new DataView(b.buffer);
        if (p + 4 <= b.length) v.setUint32(p, [0xffffffff, 0x7fffffff, 0x10000, b.length][Math.floor(rand() * 4)], true);
      }
      try {
        const f = await CkptFile.open(readerFromBytes(b, `mutant ${it}`));
        for (const n of f.names()) {
          const info = f.info(n)!;
          const bytes = await f.bytes(n);
          expect(bytes.byteLength).toBe(info.end - info.begin);
        }
        counts.loaded++;
      } catch (e) {
        if (!(e instanceof CheckpointError)) throw new Error(`mutant ${it} (kind ${kind}): ${(e as Error).stack}`);
        counts.refused++;
      }
    }
    expect(counts.loaded).toBeGreaterThan(100);
    expect(counts.refused).toBeGreaterThan(1000);
  }, 120_000);
});
