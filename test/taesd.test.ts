// TAESD on its real trained weights: encode then decode a photo, PSNR against the input; the
// diffusers AutoencoderTiny layout; the SDXL / SD3 / FLUX.1 variants (latent width from weights).
import { describe, it, expect } from 'vitest';
import { readFileSync, mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { PNG } from 'pngjs';
import { AutoencoderTiny, ops, writeSafetensors, SafetensorsFile, type Engine, type Tensor } from '../src/index.js';
import { getEngine, randArray, relL2 } from './helpers.js';
import { FIXTURES } from './fixture.js';
import { conv2dRef } from './ref/conv2d.js';
import { bytesToF32 } from '../src/runtime/safetensors.js';
import { openSafetensorsFile } from '../src/runtime/safetensors_sources.js';

const TAESD = join(FIXTURES, 'models', 'taesd');
const VARIANTS = join(FIXTURES, 'models', 'taesd-variants');

/** astronaut.png as [1, 3, S, S] in [-1, 1], box-downscaled to S. */
function astronaut(engine: Engine, size: number): { t: Tensor; pixels: Float32Array } {
  const png = PNG.sync.read(readFileSync(join(FIXTURES, 'images', 'astronaut.png')));
  const f = png.width / size;
  const pixels = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        let s = 0;
        for (let dy = 0; dy < f; dy++) for (let dx = 0; dx < f; dx++) s += png.data[((y * f + dy) * png.width + (x * f + dx)) * 4 + c];
        pixels[(c * size + y) * size + x] = s / (f * f) / 255;
      }
    }
  }
  return { t: engine.tensor(pixels.map((v) => v * 2 - 1), [1, 3, size, size]), pixels };
}

function psnr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.min(1, Math.max(0, a[i])) - b[i];
    se += d * d;
  }
  return 10 * Math.log10(1 / (se / a.length));
}

async function roundTrip(taesd: AutoencoderTiny, engine: Engine, size: number): Promise<number> {
  const { t, pixels } = astronaut(engine, size);
  const z = taesd.encode(t);
  expect(z.shape).toEqual([1, 4, size / 8, size / 8]);
  const y = taesd.decode(z);
  const img = ops.scale(y, 0.5, 0.5);
  const p = psnr(await img.read(), pixels);
  [t, z, y, img].forEach((v) => v.dispose());
  return p;
}

// float64 TAESD written straight from the published architecture (taesd.py): the engine's graph
// must equal it on the real weights.
type Img = { d: ArrayLike<number>; s: number[] };
async function loadF64(path: string): Promise<Map<string, { d: Float32Array; s: number[] }>> {
  const f = await openSafetensorsFile(path);
  const m = new Map<string, { d: Float32Array; s: number[] }>();
  for (const n of f.names()) {
    const i = f.info(n)!;
    m.set(n, { d: bytesToF32(await f.bytes(n), i, path), s: i.shape });
  }
  await f.close();
  return m;
}
function cpuTaesd(enc: Map<string, { d: Float32Array; s: number[] }>, dec: Map<string, { d: Float32Array; s: number[] }>, x01: Img): { z: Img; y: Img } {
  const conv = (w: typeof enc, k: string, x: Img, stride = 1): Img => {
    const W = w.get(`${k}.weight`)!;
    const B = w.get(`${k}.bias`);
    const r = conv2dRef(x.d, x.s, W.d, W.s, B ? B.d : null, { padding: [1, 1, 1, 1], stride: [stride, stride] });
    return { d: r.data, s: r.shape };
  };
  const relu = (x: Img): Img => ({ d: Array.from(x.d, (v) => Math.max(0, v)), s: x.s });
  const block = (w: typeof enc, k: string, x: Img): Img => {
    const h = conv(w, `${k}.conv.4`, relu(conv(w, `${k}.conv.2`, relu(conv(w, `${k}.conv.0`, x)))));
    return relu({ d: Array.from(h.d, (v, i) => v + x.d[i]), s: h.s });
  };
  const up = (x: Img): Img => {
    const [n, c, h, w] = x.s;
    const o = new Float64Array(n * c * h * w * 4);
    for (let p = 0; p < n * c; p++) for (let y = 0; y < 2 * h; y++) for (let xx = 0; xx < 2 * w; xx++) o[(p * 2 * h + y) * 2 * w + xx] = x.d[(p * h + (y >> 1)) * w + (xx >> 1)];
    return { d: o, s: [n, c, 2 * h, 2 * w] };
  };
  let x = block(enc, '1', conv(enc, '0', x01));
  for (const [c, blocks] of [[2, [3, 4, 5]], [6, [7, 8, 9]], [10, [11, 12, 13]]] as const) {
    x = conv(enc, String(c), x, 2);
    for (const b of blocks) x = block(enc, String(b), x);
  }
  const z = conv(enc, '14', x);
  let h = relu(conv(dec, '1', { d: Array.from(z.d, (v) => 3 * Math.tanh(v / 3)), s: z.s }));
  for (const [blocks, c] of [[[3, 4, 5], 7], [[8, 9, 10], 12], [[13, 14, 15], 17]] as const) {
    for (const b of blocks) h = block(dec, String(b), h);
    h = conv(dec, String(c), up(h));
  }
  return { z, y: conv(dec, '19', block(dec, '18', h)) };
}

describe('AutoencoderTiny (TAESD) on real trained weights', () => {
  it('equals a float64 implementation of the published architecture', async () => {
    const engine = await getEngine();
    const taesd = await AutoencoderTiny.fromTaesd(engine, { encoder: join(TAESD, 'taesd_encoder.safetensors'), decoder: join(TAESD, 'taesd_decoder.safetensors') });
    const S = 24;
    const img = randArray(3 * S * S, 11, 0, 1);
    const ref = cpuTaesd(await loadF64(join(TAESD, 'taesd_encoder.safetensors')), await loadF64(join(TAESD, 'taesd_decoder.safetensors')), { d: img, s: [1, 3, S, S] });
    const x = engine.tensor(img.map((v) => 2 * v - 1), [1, 3, S, S]);
    const z = taesd.encode(x);
    expect(relL2(await z.read(), ref.z.d)).toBeLessThan(1e-5);
    const y = taesd.decode(z);
    const y01 = Array.from(await y.read(), (v) => v * 0.5 + 0.5); // diffusers' [-1, 1] back to TAESD's [0, 1]
    expect(relL2(y01, ref.y.d)).toBeLessThan(1e-5);
    [x, z, y].forEach((t) => t.dispose());
    taesd.dispose();
  });

  // Measured here: 22.2 dB at 256x256 and 25.4 dB at 512x512 (19.3 dB at 128x128), with a graph
  // that equals the float64 reference above. The issue asked for >= 30 dB; that is not reachable
  // with these weights and the published architecture (see the closing note), so the bounds below
  // guard the measured quality instead, with a small margin.
  it('encode -> decode of a 256x256 and a 512x512 photo: PSNR as measured (22.2 / 25.4 dB)', async () => {
    const engine = await getEngine();
    const taesd = await AutoencoderTiny.fromTaesd(engine, { encoder: join(TAESD, 'taesd_encoder.safetensors'), decoder: join(TAESD, 'taesd_decoder.safetensors') });
    expect(taesd.unexpectedWeights).toEqual([]);
    const p256 = await roundTrip(taesd, engine, 256);
    console.log(`TAESD astronaut 256x256: PSNR ${p256.toFixed(2)} dB`);
    expect(p256).toBeGreaterThanOrEqual(21.5);
    const p512 = await roundTrip(taesd, engine, 512);
    console.log(`TAESD astronaut 512x512: PSNR ${p512.toFixed(2)} dB`);
    expect(p512).toBeGreaterThanOrEqual(24.5);
    taesd.dispose();
  });

  it('loads a diffusers AutoencoderTiny folder with the same results', async () => {
    const engine = await getEngine();
    // build the diffusers layout from the original files: encoder.layers.N, decoder.layers.(N-1)
    const dir = mkdtempSync(join(tmpdir(), 'taesd-'));
    mkdirSync(join(dir, 'vae'));
    const tensors: Record<string, { dtype: 'BF16'; shape: number[]; data: Uint8Array }> = {};
    for (const [part, shift] of [['encoder', 0], ['decoder', 1]] as const) {
      const f = await openSafetensorsFile(join(TAESD, `taesd_${part}.safetensors`));
      for (const n of f.names()) {
        const m = /^(\d+)\.(.*)$/.exec(n)!;
        const info = f.info(n)!;
        tensors[`${part}.layers.${Number(m[1]) - shift}.${m[2]}`] = { dtype: 'BF16', shape: info.shape, data: await f.bytes(n) };
      }
      await f.close();
    }
    writeFileSync(join(dir, 'vae', 'diffusion_pytorch_model.safetensors'), writeSafetensors(tensors));
    writeFileSync(join(dir, 'vae', 'config.json'), JSON.stringify({ _class_name: 'AutoencoderTiny', act_fn: 'relu', latent_channels: 4, scaling_factor: 1.0 }));
    const a = await AutoencoderTiny.fromPretrained(engine, join(dir, 'vae'));
    const b = await AutoencoderTiny.fromTaesd(engine, { decoder: join(TAESD, 'taesd_decoder.safetensors') });
    const z = ops.randn(engine, [1, 4, 8, 8], 3);
    const ya = await a.decode(z).read();
    const yb = await b.decode(z).read();
    expect(ya).toEqual(yb);
    expect(() => b.encode(z)).toThrow(/no encoder weights/);
    [a, b].forEach((m) => m.dispose());
    z.dispose();
  });

  it('reads the latent width from the weights: SDXL (4), SD3 and FLUX.1 (16) decoders', async () => {
    const engine = await getEngine();
    for (const [name, ch] of [['taesdxl', 4], ['taesd3', 16], ['taef1', 16]] as const) {
      const m = await AutoencoderTiny.fromTaesd(engine, { decoder: join(VARIANTS, `${name}_decoder.safetensors`) });
      expect(m.shape.latentChannels, name).toBe(ch);
      const z = ops.randn(engine, [1, ch, 4, 4], 1);
      const y = m.decode(z);
      expect(y.shape).toEqual([1, 3, 32, 32]);
      const v = await y.read();
      expect(v.every((x) => Number.isFinite(x))).toBe(true);
      [z, y].forEach((t) => t.dispose());
      m.dispose();
    }
  });
});
