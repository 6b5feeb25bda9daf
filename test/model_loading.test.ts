// The loading rules of the model classes: diffusers component folders (f32 and the .fp16 variant)
// from disk and over HTTP with progress, unsupported config values, missing / mis-shaped weights and
// configs that disagree with them (nothing leaks on failure), unexpected weights, malformed files,
// tensors over the device's binding limit, dispose() returning every byte, f16 engines, and a lost
// device failing fast instead of hanging.
import { describe, it, expect, afterAll, beforeAll, vi } from 'vitest';
import { readFileSync, mkdtempSync, mkdirSync, writeFileSync, openSync, writeSync, ftruncateSync, closeSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import {
  AutoencoderKL,
  AutoencoderTiny,
  CLIPTextModel,
  Engine,
  UNet2DConditionModel,
  UNet2DModel,
  VQModel,
  ops,
  writeSafetensors,
  type Tensor,
} from '../src/index.js';
import type { TensorToWrite } from '../src/runtime/safetensors.js';
import { getEngine, getF16Engine, readF32, relL2, track, reportWorst } from './helpers.js';
import { FIXTURES, loadCase, readSafetensorsFile, type FixtureCase, type HostTensor } from './fixture.js';

afterAll(() => reportWorst('model_loading'));

const WEIGHTS = 'diffusion_pytorch_model.safetensors';
const WEIGHTS_FP16 = 'diffusion_pytorch_model.fp16.safetensors';

const root = mkdtempSync(join(tmpdir(), 'model-loading-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;

function fixtureBytes(name: string): Uint8Array {
  return readFileSync(join(FIXTURES, name, 'weights.safetensors'));
}

function fixtureTensors(name: string): Record<string, HostTensor> {
  return readSafetensorsFile(join(FIXTURES, name, 'weights.safetensors'));
}

/** The fixture's tensors ready for writeSafetensors, in F32 or rounded to F16. */
function toWrite(tensors: Record<string, HostTensor>, dtype: 'F32' | 'F16' = 'F32'): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  for (const [k, t] of Object.entries(tensors)) out[k] = { dtype, shape: t.shape, data: t.data };
  return out;
}

/** A diffusers component folder: config.json plus the given files. */
function folder(config: Record<string, unknown>, files: Record<string, Uint8Array>): string {
  const dir = join(root, `c${dirCount++}`);
  mkdirSync(dir);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  for (const [f, b] of Object.entries(files)) writeFileSync(join(dir, f), b);
  return dir;
}

function up(engine: Engine, h: HostTensor): Tensor {
  return engine.tensor(Float32Array.from(h.data), h.shape);
}

/** Host values of a model output, disposing it. */
async function take(t: Tensor): Promise<Float32Array> {
  const v = await readF32(t);
  t.dispose();
  return v;
}

async function vaeDecode(engine: Engine, vae: AutoencoderKL, c: FixtureCase): Promise<Float32Array> {
  const z = up(engine, c.input('z'));
  const y = await take(vae.decode(z));
  z.dispose();
  return y;
}

async function unetCondOut(engine: Engine, unet: UNet2DConditionModel, c: FixtureCase): Promise<Float32Array> {
  const ctx = up(engine, c.input('encoder_hidden_states'));
  const x = up(engine, c.input('sample'));
  const y = await take(unet.forward(x, c.input('timestep').data[0], { encoderHiddenStates: ctx }));
  [ctx, x].forEach((t) => t.dispose());
  return y;
}

/** The error a promise rejects with (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    const v = await p;
    (v as { dispose?: () => void })?.dispose?.();
  } catch (e) {
    expect(e).toBeInstanceOf(Error);
    return e as Error;
  }
  throw new Error('expected the promise to reject, it resolved');
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ------------------------------------------------------------------ a local HTTP server

interface Served {
  url: string;
  requests: string[];
  close(): Promise<void>;
}

/** Serves files under /<prefix>/ on 127.0.0.1 in 16 KiB chunks with Content-Length; 404 otherwise. */
async function serve(files: Record<string, Uint8Array | string>): Promise<Served> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent((req.url ?? '/').split('?')[0]).replace(/^\/model\//, '');
    requests.push(path);
    const body = files[path];
    if (body === undefined) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    const bytes = typeof body === 'string' ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    res.writeHead(200, { 'Content-Length': String(bytes.byteLength), 'Content-Type': 'application/octet-stream' });
    // Several writes with pauses between them, so the client sees the body arrive in pieces.
    let pos = 0;
    const next = () => {
      if (pos >= bytes.byteLength) {
        res.end();
        return;
      }
      const chunk = bytes.subarray(pos, pos + 16384);
      pos += chunk.byteLength;
      res.write(chunk, () => setTimeout(next, 0));
    };
    next();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/model`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ------------------------------------------------------------------ 1. folders, fp16 variant

describe('fromPretrained from a local diffusers component folder', () => {
  const name = 'autoencoder_kl/small';
  let c: FixtureCase;
  beforeAll(() => {
    c = loadCase(name);
  });

  it('loads config.json + diffusion_pytorch_model.safetensors with the same results as fromConfig, reporting read progress', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    const bytes = fixtureBytes(name);
    const dir = folder(c.config, { [WEIGHTS]: bytes });
    const progress: [number, number][] = [];
    const a = await AutoencoderKL.fromPretrained(engine, dir, { onProgress: (l, t) => progress.push([l, t]) });
    const b = await AutoencoderKL.fromConfig(engine, c.config, bytes);
    expect(a.unexpectedWeights).toEqual([]);
    expect(a.parameterBytes).toBe(b.parameterBytes);
    const ya = await vaeDecode(engine, a, c);
    const yb = await vaeDecode(engine, b, c);
    expect(ya).toEqual(yb);
    expect(track(`${name} folder vs diffusers`, relL2(ya, c.output('decode').data))).toBeLessThan(1e-4);
    // read progress: strictly increasing, ending at the size of the data section
    expect(progress.length).toBeGreaterThan(10);
    const total = progress[0][1];
    for (let i = 1; i < progress.length; i++) {
      expect(progress[i][0]).toBeGreaterThan(progress[i - 1][0]);
      expect(progress[i][1]).toBe(total);
    }
    expect(progress[progress.length - 1][0]).toBe(total);
    [a, b].forEach((m) => m.dispose());
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it('loads the .fp16.safetensors variant on an f32 engine, converting F16 -> f32', async () => {
    const engine = await getEngine();
    expect(engine.f16).toBe(false);
    const base = engine.memory().inUseBytes;
    const f32Bytes = fixtureBytes(name);
    const f16Bytes = writeSafetensors(toWrite(fixtureTensors(name), 'F16'));
    const onlyFp16 = folder(c.config, { [WEIGHTS_FP16]: f16Bytes });
    // Both files; the plain one is broken so the test sees which one each call reads.
    const broken = f32Bytes.subarray(0, 1000);
    const both = folder(c.config, { [WEIGHTS]: broken, [WEIGHTS_FP16]: f16Bytes });

    const ref = await AutoencoderKL.fromConfig(engine, c.config, f32Bytes);
    const refF16 = await AutoencoderKL.fromConfig(engine, c.config, f16Bytes);
    const a = await AutoencoderKL.fromPretrained(engine, onlyFp16);
    const b = await AutoencoderKL.fromPretrained(engine, both, { variant: 'fp16' });
    // on an f32 engine the F16 weights are widened to f32 storage
    expect(a.parameterBytes).toBe(ref.parameterBytes);
    const y = await vaeDecode(engine, ref, c);
    const yF16 = await vaeDecode(engine, refF16, c);
    const ya = await vaeDecode(engine, a, c);
    const yb = await vaeDecode(engine, b, c);
    expect(ya).toEqual(yF16);
    expect(yb).toEqual(yF16);
    const err = track(`${name} fp16 weights vs f32 weights`, relL2(ya, y));
    expect(err).toBeGreaterThan(0); // the weights really were rounded
    expect(err).toBeLessThan(1e-3);
    // without the variant option the plain file comes first, and it is broken
    const e = await rejection(AutoencoderKL.fromPretrained(engine, both));
    expect(e.message).toContain(join(both, WEIGHTS));
    [ref, refF16, a, b].forEach((m) => m.dispose());
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it('a folder without safetensors weights, or without config.json, is an Error naming the folder / file', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    const empty = folder(c.config, { 'diffusion_pytorch_model.bin': new Uint8Array(16) });
    const e = await rejection(AutoencoderKL.fromPretrained(engine, empty));
    expect(e.message).toMatch(new RegExp(`^${escape(empty)}: no safetensors weights found \\(tried diffusion_pytorch_model\\.safetensors, .*\\); PyTorch \\.bin weights are not supported`));
    const noConfig = join(root, `c${dirCount++}`);
    mkdirSync(noConfig);
    writeFileSync(join(noConfig, WEIGHTS), fixtureBytes(name));
    const e2 = await rejection(AutoencoderKL.fromPretrained(engine, noConfig));
    expect(e2.message).toMatch(new RegExp(`^${escape(join(noConfig, 'config.json'))}: cannot read the component config`));
    expect(engine.memory().inUseBytes).toBe(base);
  });
});

// ------------------------------------------------------------------ 2. URLs

describe('fromPretrained from a URL (node:http on 127.0.0.1)', () => {
  it('downloads config.json and the weights, reporting increasing byte counts', async () => {
    const engine = await getEngine();
    const name = 'unet2d_condition/conv_proj';
    const c = loadCase(name);
    const bytes = fixtureBytes(name);
    const server = await serve({ 'config.json': JSON.stringify(c.config), [WEIGHTS]: bytes });
    try {
      const base = engine.memory().inUseBytes;
      const progress: [number, number][] = [];
      const unet = await UNet2DConditionModel.fromPretrained(engine, server.url, { onProgress: (l, t) => progress.push([l, t]) });
      expect(server.requests).toEqual(['config.json', WEIGHTS]);
      expect(progress.length).toBeGreaterThan(2);
      for (let i = 1; i < progress.length; i++) {
        expect(progress[i][0], `call ${i}`).toBeGreaterThan(progress[i - 1][0]);
        expect(progress[i][1]).toBe(bytes.byteLength);
      }
      expect(progress[progress.length - 1]).toEqual([bytes.byteLength, bytes.byteLength]);
      const ref = await UNet2DConditionModel.fromConfig(engine, c.config, bytes);
      const y = await unetCondOut(engine, unet, c);
      expect(y).toEqual(await unetCondOut(engine, ref, c));
      expect(track(`${name} url vs diffusers`, relL2(y, c.output('sample').data))).toBeLessThan(1e-4);
      [unet, ref].forEach((m) => m.dispose());
      expect(engine.memory().inUseBytes).toBe(base);
    } finally {
      await server.close();
    }
  });

  it('prefers the fp16 variant when asked, and fails naming the URL when nothing is there', async () => {
    const engine = await getEngine();
    const name = 'unet2d/uncond';
    const c = loadCase(name);
    const f16Bytes = writeSafetensors(toWrite(fixtureTensors(name), 'F16'));
    const server = await serve({ 'config.json': JSON.stringify(c.config), [WEIGHTS_FP16]: f16Bytes });
    try {
      const base = engine.memory().inUseBytes;
      const unet = await UNet2DModel.fromPretrained(engine, server.url, { variant: 'fp16' });
      expect(server.requests).toEqual(['config.json', WEIGHTS_FP16]);
      const ref = await UNet2DModel.fromConfig(engine, c.config, f16Bytes);
      const x = up(engine, c.input('sample'));
      expect(await take(unet.forward(x, 10))).toEqual(await take(ref.forward(x, 10)));
      x.dispose();
      [unet, ref].forEach((m) => m.dispose());
      const e = await rejection(UNet2DModel.fromPretrained(engine, `${server.url}/missing`));
      expect(e.message).toBe(`${server.url}/missing/config.json: HTTP 404 Not Found`);
      expect(engine.memory().inUseBytes).toBe(base);
    } finally {
      await server.close();
    }
  });
});

// ------------------------------------------------------------------ 3. unsupported config values

describe('unsupported config values', () => {
  const cases = [
    { cls: AutoencoderKL, fixture: 'autoencoder_kl/small', key: 'act_fn', value: 'gelu', component: 'AutoencoderKL' },
    { cls: UNet2DModel, fixture: 'unet2d/uncond', key: 'time_embedding_type', value: 'fourier', component: 'UNet2DModel' },
    { cls: UNet2DConditionModel, fixture: 'unet2d_condition/conv_proj', key: 'addition_embed_type', value: 'text_image', component: 'UNet2DConditionModel' },
    { cls: VQModel, fixture: 'vq_model/small', key: 'norm_type', value: 'spatial', component: 'VQModel' },
  ] as const;
  for (const k of cases) {
    it(`${k.component} ${k.key}: ${JSON.stringify(k.value)} -> Error naming the key and the value`, async () => {
      const engine = await getEngine();
      const base = engine.memory().inUseBytes;
      const c = loadCase(k.fixture);
      const config = { ...c.config, [k.key]: k.value };
      const e = await rejection((k.cls as typeof AutoencoderKL).fromConfig(engine, config, fixtureBytes(k.fixture)));
      expect(e.message).toMatch(new RegExp(`^${k.component}: unsupported value "${k.value}" for config key '${k.key}' \\(supported: `));
      // and through a folder
      const e2 = await rejection((k.cls as typeof AutoencoderKL).fromPretrained(engine, folder(config, { [WEIGHTS]: fixtureBytes(k.fixture) })));
      expect(e2.message).toBe(e.message);
      expect(engine.memory().inUseBytes).toBe(base);
    });
  }
});

// ------------------------------------------------------------------ 4. weights vs config

describe('weights that do not match the model', () => {
  it('a missing weight -> Error naming the tensor; nothing leaks', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    const name = 'unet2d/class_cond';
    const c = loadCase(name);
    const t = fixtureTensors(name);
    // conv_in is loaded after the down/mid/up blocks, so many tensors were uploaded before the failure
    delete t['conv_in.weight'];
    const dir = folder(c.config, { [WEIGHTS]: writeSafetensors(toWrite(t)) });
    const e = await rejection(UNet2DModel.fromPretrained(engine, dir));
    expect(e.message).toMatch(new RegExp(`^${escape(join(dir, WEIGHTS))}: missing weight 'conv_in\\.weight'; close names: conv_out\\.weight`));
    expect(engine.memory().inUseBytes).toBe(base);

    const vae = loadCase('autoencoder_kl/small');
    const tv = fixtureTensors('autoencoder_kl/small');
    delete tv['post_quant_conv.bias'];
    const e2 = await rejection(AutoencoderKL.fromConfig(engine, vae.config, writeSafetensors(toWrite(tv))));
    expect(e2.message).toMatch(/^weights: missing weight 'post_quant_conv\.bias'/);
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it('a mis-shaped weight -> Error naming the tensor, the expected and the actual shape; nothing leaks', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    const name = 'unet2d/class_cond';
    const c = loadCase(name);
    const t = toWrite(fixtureTensors(name));
    t['conv_in.weight'] = { dtype: 'F32', shape: [16, 3, 2, 2], data: new Float32Array(16 * 3 * 4).fill(0.5) };
    const dir = folder(c.config, { [WEIGHTS]: writeSafetensors(t) });
    const e = await rejection(UNet2DModel.fromPretrained(engine, dir));
    expect(e.message).toBe(`${join(dir, WEIGHTS)}: weight 'conv_in.weight' has shape [16, 3, 2, 2], expected [16, 3, 3, 3]`);
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it('a config that disagrees with the weights -> the same kind of Error; nothing leaks', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    {
      const name = 'unet2d/class_cond';
      const c = loadCase(name);
      const e = await rejection(UNet2DModel.fromConfig(engine, { ...c.config, block_out_channels: [16, 24] }, fixtureBytes(name)));
      expect(e.message).toBe(`weights: weight 'down_blocks.1.resnets.0.conv1.weight' has shape [32, 16, 3, 3], expected [24, 16, 3, 3]`);
      expect(engine.memory().inUseBytes).toBe(base);
    }
    {
      const name = 'vq_model/small';
      const c = loadCase(name);
      const e = await rejection(VQModel.fromConfig(engine, { ...c.config, num_vq_embeddings: 64 }, fixtureBytes(name)));
      expect(e.message).toBe(`weights: weight 'quantize.embedding.weight' has shape [32, 3], expected [64, 3]`);
      expect(engine.memory().inUseBytes).toBe(base);
    }
    {
      const name = 'unet2d_condition/conv_proj';
      const c = loadCase(name);
      const e = await rejection(UNet2DConditionModel.fromConfig(engine, { ...c.config, cross_attention_dim: 48 }, fixtureBytes(name)));
      expect(e.message).toMatch(/^weights: weight 'down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn2\.to_k\.weight' has shape \[16, 32\], expected \[16, 48\]$/);
      expect(engine.memory().inUseBytes).toBe(base);
    }
  });
});

// ------------------------------------------------------------------ 5. unexpected weights

describe('unexpected weights', () => {
  it('are listed in model.unexpectedWeights with a console.warn, and loading succeeds', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    const name = 'vq_model/small';
    const c = loadCase(name);
    const t = toWrite(fixtureTensors(name));
    t['extra.weight'] = { dtype: 'F32', shape: [3], data: [1, 2, 3] };
    t['decoder.up_blocks.9.resnets.0.conv1.bias'] = { dtype: 'F32', shape: [2], data: [0.5, -0.5] };
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const vq = await VQModel.fromPretrained(engine, folder(c.config, { [WEIGHTS]: writeSafetensors(t) }));
      expect(vq.unexpectedWeights).toEqual(['decoder.up_blocks.9.resnets.0.conv1.bias', 'extra.weight']);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0][0]).toBe('VQModel: 2 unexpected weight(s) ignored: decoder.up_blocks.9.resnets.0.conv1.bias, extra.weight');
      const x = up(engine, c.input('x'));
      const h = vq.encode(x);
      expect(track(`${name} with extra weights`, relL2(await readF32(h), c.output('latents').data))).toBeLessThan(1e-4);
      [x, h].forEach((v) => v.dispose());
      vq.dispose();
      // a clean file warns nothing
      const clean = await VQModel.fromConfig(engine, c.config, fixtureBytes(name));
      expect(clean.unexpectedWeights).toEqual([]);
      expect(warn).toHaveBeenCalledTimes(1);
      clean.dispose();
    } finally {
      warn.mockRestore();
    }
    expect(engine.memory().inUseBytes).toBe(base);
  });
});

// ------------------------------------------------------------------ 6. malformed files, binding limit

/** A safetensors file whose last tensor is declared but left as a hole (a sparse file: no disk use). */
function writeWithHugeTensor(path: string, tensors: Record<string, HostTensor>, huge: { name: string; shape: number[] }): void {
  const header: Record<string, unknown> = {};
  const names = Object.keys(tensors).sort();
  let off = 0;
  for (const n of names) {
    const len = tensors[n].data.length * 4;
    header[n] = { dtype: 'F32', shape: tensors[n].shape, data_offsets: [off, off + len] };
    off += len;
  }
  const hugeBytes = huge.shape.reduce((a, b) => a * b, 1) * 4;
  header[huge.name] = { dtype: 'F32', shape: huge.shape, data_offsets: [off, off + hugeBytes] };
  const json = Buffer.from(JSON.stringify(header).padEnd(Math.ceil(JSON.stringify(header).length / 8) * 8, ' '));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.byteLength));
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, json);
    for (const n of names) {
      const d = Float32Array.from(tensors[n].data);
      writeSync(fd, new Uint8Array(d.buffer));
    }
    ftruncateSync(fd, 8 + json.byteLength + off + hugeBytes);
  } finally {
    closeSync(fd);
  }
}

describe('malformed safetensors and oversized tensors through the model loader', () => {
  const name = 'autoencoder_kl/small';

  it('a truncated file -> Error naming the file', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    const c = loadCase(name);
    const bytes = fixtureBytes(name);
    const dir = folder(c.config, { [WEIGHTS]: bytes.subarray(0, bytes.byteLength - 1000) });
    const e = await rejection(AutoencoderKL.fromPretrained(engine, dir));
    expect(e.message).toMatch(new RegExp(`^${escape(join(dir, WEIGHTS))}: tensor '[^']+': data_offsets \\[\\d+, \\d+\\] lie outside the data section \\(\\d+ bytes\\)$`));
    // fewer than 8 bytes
    const dir2 = folder(c.config, { [WEIGHTS]: bytes.subarray(0, 5) });
    const e2 = await rejection(AutoencoderKL.fromPretrained(engine, dir2));
    expect(e2.message).toBe(`${join(dir2, WEIGHTS)}: not a safetensors file: 5 bytes, shorter than the 8-byte header length`);
    // in memory: the label names the source
    const e3 = await rejection(AutoencoderKL.fromConfig(engine, c.config, bytes.subarray(0, 100)));
    expect(e3.message).toMatch(/^weights: safetensors header length \d+ goes beyond the end of the file \(100 bytes\)$/);
    // over HTTP, a truncated download names the URL
    const server = await serve({ 'config.json': JSON.stringify(c.config), [WEIGHTS]: bytes.subarray(0, bytes.byteLength - 1000) });
    try {
      const e4 = await rejection(AutoencoderKL.fromPretrained(engine, server.url));
      expect(e4.message).toMatch(new RegExp(`^${escape(`${server.url}/${WEIGHTS}`)}: tensor '[^']+': data_offsets \\[\\d+, \\d+\\] lie outside the data section`));
    } finally {
      await server.close();
    }
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it('a header length beyond the end of the file -> Error naming the file', async () => {
    const engine = await getEngine();
    const c = loadCase(name);
    const bad = new Uint8Array(64);
    new DataView(bad.buffer).setUint32(0, 1_000_000, true);
    bad.set(new TextEncoder().encode('{"a":'), 8);
    const dir = folder(c.config, { [WEIGHTS]: bad });
    const e = await rejection(AutoencoderKL.fromPretrained(engine, dir));
    expect(e.message).toBe(`${join(dir, WEIGHTS)}: safetensors header length 1000000 goes beyond the end of the file (64 bytes)`);
    // a header length over the 100 MB cap
    new DataView(bad.buffer).setUint32(4, 1, true);
    const dir2 = folder(c.config, { [WEIGHTS]: bad });
    const e2 = await rejection(AutoencoderKL.fromPretrained(engine, dir2));
    expect(e2.message).toBe(`${join(dir2, WEIGHTS)}: safetensors header length 4295967296 exceeds the 16777216-byte limit (corrupt or not a safetensors file)`);
  });

  it('a header declaring a huge tensor that the short file does not hold fails header validation', async () => {
    const engine = await getEngine();
    const c = loadCase(name);
    const header = JSON.stringify({ 'conv_in.weight': { dtype: 'F32', shape: [65536, 65536], data_offsets: [0, 65536 * 65536 * 4] } });
    const json = new TextEncoder().encode(header.padEnd(Math.ceil(header.length / 8) * 8, ' '));
    const file = new Uint8Array(8 + json.byteLength + 16);
    new DataView(file.buffer).setUint32(0, json.byteLength, true);
    file.set(json, 8);
    const dir = folder(c.config, { [WEIGHTS]: file });
    const e = await rejection(AutoencoderKL.fromPretrained(engine, dir));
    expect(e.message).toBe(`${join(dir, WEIGHTS)}: tensor 'conv_in.weight': data_offsets [0, 17179869184] lie outside the data section (16 bytes)`);
  });

  it('a weight over maxStorageBufferBindingSize -> clear Error before its bytes are read; nothing leaks', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    const limit = engine.limits.maxStorageBufferBindingSize;
    const fx = 'unet2d/class_cond';
    const c = loadCase(fx);
    // class_embedding [num_class_embeds, 4 * 16] is loaded after nearly everything else
    const classes = Math.floor(limit / (64 * 4)) + 1;
    const t = fixtureTensors(fx);
    delete t['class_embedding.weight'];
    const dir = folder({ ...c.config, num_class_embeds: classes }, {});
    const path = join(dir, WEIGHTS);
    writeWithHugeTensor(path, t, { name: 'class_embedding.weight', shape: [classes, 64] });
    const e = await rejection(UNet2DModel.fromPretrained(engine, dir));
    expect(e.message).toBe(
      `${path}: weight 'class_embedding.weight' [${classes}, 64] needs ${classes * 256} bytes as f32, over this device's maxStorageBufferBindingSize (${limit}); this model does not fit this device`,
    );
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it('ops whose output is over maxStorageBufferBindingSize -> Error naming the op', async () => {
    const engine = await getEngine();
    const base = engine.memory().inUseBytes;
    const limit = engine.limits.maxStorageBufferBindingSize;
    const W = 16384;
    const H = Math.floor(limit / 4 / W) + 1;
    const lim = escape(`over this device's maxStorageBufferBindingSize (${limit})`);
    expect(() => ops.randn(engine, [1, 1, H, W], 1)).toThrow(new RegExp(`^randn: tensor \\[1, 1, ${H}, ${W}\\] f32 needs ${H * W * 4} bytes, ${lim}`));
    // an outer product: small inputs, an output over the limit
    const M = 32768;
    const N = Math.floor(limit / 4 / M) + 1;
    const a = engine.tensor(new Float32Array(M).fill(0.25), [M, 1]);
    const b = engine.tensor(new Float32Array(N).fill(0.5), [1, N]);
    expect(() => ops.matmul(a, b)).toThrow(new RegExp(`^matmul: tensor \\[${M}, ${N}\\] f32 needs ${M * N * 4} bytes, ${lim}`));
    [a, b].forEach((v) => v.dispose());
    expect(engine.memory().inUseBytes).toBe(base);
  });
});

// ------------------------------------------------------------------ 7. dispose

describe('dispose() returns every byte of every model class', () => {
  const run: Record<string, (engine: Engine) => Promise<{ model: { dispose(): void; parameterBytes: number }; outputs: Tensor[] }>> = {
    AutoencoderKL: async (engine) => {
      const c = loadCase('autoencoder_kl/small');
      const model = await AutoencoderKL.fromConfig(engine, c.config, fixtureBytes('autoencoder_kl/small'));
      const x = up(engine, c.input('x'));
      const { mean, logvar } = model.encode(x);
      const s = model.sample({ mean, logvar }, { seed: 3 });
      const y = model.decode(s);
      return { model, outputs: [x, mean, logvar, s, y] };
    },
    VQModel: async (engine) => {
      const c = loadCase('vq_model/small');
      const model = await VQModel.fromConfig(engine, c.config, fixtureBytes('vq_model/small'));
      const x = up(engine, c.input('x'));
      const h = model.encode(x);
      const { quantized, indices } = model.quantize(h);
      return { model, outputs: [x, h, quantized, indices, model.decode(h)] };
    },
    UNet2DModel: async (engine) => {
      const c = loadCase('unet2d/class_cond');
      const model = await UNet2DModel.fromConfig(engine, c.config, fixtureBytes('unet2d/class_cond'));
      const x = up(engine, c.input('sample'));
      return { model, outputs: [x, model.forward(x, [3, 700], { classLabels: [1, 9] })] };
    },
    UNet2DConditionModel: async (engine) => {
      const c = loadCase('unet2d_condition/linear_proj');
      const model = await UNet2DConditionModel.fromConfig(engine, c.config, fixtureBytes('unet2d_condition/linear_proj'));
      const x = up(engine, c.input('sample'));
      const ctx = up(engine, c.input('encoder_hidden_states'));
      return { model, outputs: [x, ctx, model.forward(x, 10, { encoderHiddenStates: ctx })] };
    },
    AutoencoderTiny: async (engine) => {
      const dir = join(FIXTURES, 'models', 'taesd');
      const model = await AutoencoderTiny.fromTaesd(engine, { encoder: join(dir, 'taesd_encoder.safetensors'), decoder: join(dir, 'taesd_decoder.safetensors') });
      const x = ops.randn(engine, [1, 3, 16, 16], 5);
      const z = model.encode(x);
      return { model, outputs: [x, z, model.decode(z)] };
    },
    CLIPTextModel: async (engine) => {
      const dir = join(FIXTURES, 'clip_text', 'gelu');
      const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
      const model = await CLIPTextModel.fromConfig(engine, config, readFileSync(join(dir, 'model.safetensors')));
      const out = model.forward([[49406, 320, 1125, 49407, 49407]], { outputHiddenStates: true, clipSkip: 1 });
      return { model, outputs: [out.lastHiddenState, out.poolerOutput, ...(out.hiddenStates ?? [])] };
    },
  };
  for (const [cls, fn] of Object.entries(run)) {
    it(cls, async () => {
      const engine = await getEngine();
      await engine.sync();
      const base = engine.memory().inUseBytes;
      const { model, outputs } = await fn(engine);
      expect(model.parameterBytes).toBeGreaterThan(0);
      expect(engine.memory().inUseBytes - base).toBeGreaterThanOrEqual(model.parameterBytes);
      for (const t of outputs) {
        const v = await t.read();
        expect(v.every((x) => Number.isFinite(x)), `${cls} output ${t.shape}`).toBe(true);
        t.dispose();
      }
      model.dispose();
      expect(engine.memory().inUseBytes).toBe(base);
      model.dispose(); // twice is harmless
      expect(engine.memory().inUseBytes).toBe(base);
    });
  }
});

// ------------------------------------------------------------------ 8. f16

describe('f16 weights and activations (needs shader-f16)', () => {
  const F16_TOL = 1e-2;
  const skipNote = 'the adapter has no shader-f16 feature (e.g. SwiftShader): f16 model tests skipped';

  async function f16Engine(ctx: { skip: (note?: string) => never }): Promise<Engine> {
    const engine = await getF16Engine();
    if (!engine.f16) {
      console.info(`[model_loading] ${skipNote}`);
      ctx.skip(skipNote);
    }
    return engine;
  }

  /** An f32 host tensor uploaded and cast to f16, as an f16 model takes it. */
  function up16(engine: Engine, h: HostTensor): Tensor {
    const t = up(engine, h);
    const t16 = ops.cast(t, 'f16');
    t.dispose();
    return t16;
  }

  async function close16(label: string, t: Tensor, ref: HostTensor): Promise<void> {
    expect(t.dtype).toBe('f16');
    expect(t.shape).toEqual(ref.shape);
    const err = track(`${label} (f16)`, relL2(await take(t), ref.data));
    expect(err, label).toBeLessThan(F16_TOL);
  }

  it('vq_model/small', async (ctx) => {
    const engine = await f16Engine(ctx);
    const name = 'vq_model/small';
    const c = loadCase(name);
    const base = engine.memory().inUseBytes;
    const vq = await VQModel.fromConfig(engine, c.config, fixtureBytes(name));
    expect(vq.codebook.dtype).toBe('f16');
    const x = up16(engine, c.input('x'));
    await close16(`${name} latents`, vq.encode(x), c.output('latents'));
    // decode from diffusers' latents: their nearest codebook entries are far enough apart that f16
    // rounding cannot change them, while f16 encoder output could (the closest gap is about 0.05)
    const h = up16(engine, c.output('latents'));
    const { quantized, indices } = vq.quantize(h);
    expect(Array.from(await indices.read())).toEqual(Array.from(c.output('indices').data));
    indices.dispose();
    await close16(`${name} quantized`, quantized, c.output('quantized'));
    await close16(`${name} decode`, vq.decode(h), c.output('decode'));
    await close16(`${name} decode_force_not_quantize`, vq.decode(h, { forceNotQuantize: true }), c.output('decode_force_not_quantize'));
    // f32 inputs are refused by an f16 model, with a message saying so
    const x32 = up(engine, c.input('x'));
    expect(() => vq.encode(x32)).toThrow('VQModel.encode: expected f16 input (the model runs in f16), got f32');
    [x, h, x32].forEach((t) => t.dispose());
    vq.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it('unet2d/class_cond', async (ctx) => {
    const engine = await f16Engine(ctx);
    const name = 'unet2d/class_cond';
    const c = loadCase(name);
    const base = engine.memory().inUseBytes;
    const unet = await UNet2DModel.fromConfig(engine, c.config, fixtureBytes(name));
    const f32 = await UNet2DModel.fromConfig(await getEngine(), c.config, fixtureBytes(name));
    expect(unet.parameterBytes * 2).toBe(f32.parameterBytes);
    f32.dispose();
    const x = up16(engine, c.input('sample'));
    const classLabels = Array.from(c.input('class_labels').data);
    for (const t of Array.from(c.input('timesteps_scalar').data)) {
      await close16(`${name} t${t}`, unet.forward(x, t, { classLabels }), c.output(`sample_t${t}`));
    }
    await close16(`${name} tbatch`, unet.forward(x, Array.from(c.input('timesteps_batch').data), { classLabels }), c.output('sample_tbatch'));
    x.dispose();
    unet.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
  });

  it('unet2d_condition/conv_proj', async (ctx) => {
    const engine = await f16Engine(ctx);
    const name = 'unet2d_condition/conv_proj';
    const c = loadCase(name);
    const base = engine.memory().inUseBytes;
    const unet = await UNet2DConditionModel.fromConfig(engine, c.config, fixtureBytes(name));
    const ctxT = up16(engine, c.input('encoder_hidden_states'));
    const x = up16(engine, c.input('sample'));
    await close16(`${name} sample`, unet.forward(x, c.input('timestep').data[0], { encoderHiddenStates: ctxT }), c.output('sample'));
    const x2 = up16(engine, c.input('sample2'));
    await close16(`${name} sample2`, unet.forward(x2, Array.from(c.input('timesteps2').data), { encoderHiddenStates: ctxT }), c.output('sample2'));
    [ctxT, x, x2].forEach((t) => t.dispose());
    unet.dispose();
    expect(engine.memory().inUseBytes).toBe(base);
  });
});

// ------------------------------------------------------------------ 9. lost device

/** Rejects when p takes longer than ms: a lost device must fail, not hang. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} hung for ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

describe('a lost device', () => {
  const LOST = /the GPU device was lost \((engine destroyed|destroyed: [^)]*)\); create a new Engine/;

  it('after engine.destroy(), forward, ops, reads, sync and loading throw Errors saying so', async () => {
    const engine = await Engine.create({ f16: false });
    const name = 'unet2d/uncond';
    const c = loadCase(name);
    const unet = await UNet2DModel.fromConfig(engine, c.config, fixtureBytes(name));
    const x = up(engine, c.input('sample'));
    // the engine works before (a model forward would too, but compiling its kernels on a fresh
    // engine costs seconds on SwiftShader; the parity suites cover it)
    const y = ops.add(x, x);
    expect((await y.read()).length).toBe(y.size);
    engine.destroy();
    expect(() => unet.forward(x, 5)).toThrow(LOST);
    expect(() => ops.add(x, x)).toThrow(new RegExp(`^add: ${LOST.source}`));
    expect(() => engine.tensor([1, 2], [2])).toThrow(new RegExp(`^tensor: ${LOST.source}`));
    const e1 = await within(rejection(y.read()), 10_000, 'read');
    expect(e1.message).toMatch(LOST);
    const e2 = await within(rejection(engine.sync()), 10_000, 'sync');
    expect(e2.message).toMatch(new RegExp(`^flush: ${LOST.source}`));
    const e3 = await within(rejection(UNet2DModel.fromConfig(engine, c.config, fixtureBytes(name))), 10_000, 'load');
    expect(e3.message).toMatch(new RegExp(`^upload down_blocks\\.0\\.resnets\\.0\\.norm1\\.weight: ${LOST.source}`));
    // disposing after the loss is harmless
    [x, y].forEach((t) => t.dispose());
    unet.dispose();
  });

  it('a device lost behind the engine\'s back (device.lost fires) is reported the same way', async () => {
    const engine = await Engine.create({ f16: false });
    const name = 'vq_model/small';
    const c = loadCase(name);
    const vq = await VQModel.fromConfig(engine, c.config, fixtureBytes(name));
    const x = up(engine, c.input('x'));
    engine.device.destroy();
    const info = await within(engine.device.lost, 10_000, 'device.lost');
    expect(info.reason).toBe('destroyed');
    const lost = /the GPU device was lost \(destroyed: [^)]*\); create a new Engine/;
    expect(() => vq.encode(x)).toThrow(lost);
    expect(() => ops.silu(x)).toThrow(new RegExp(`^silu: ${lost.source}`));
    const e = await within(rejection(x.read()), 10_000, 'read');
    expect(e.message).toMatch(lost);
    x.dispose();
    vq.dispose();
  });
});
