// runtime/config.ts: the one config reader. Types, defaults, bounds on memory-sizing keys, lists,
// per-block values, and a ConfigError that names component, key and value; plus the models and
// schedulers refusing absurd configs before they allocate anything.
import { describe, it, expect } from 'vitest';
import { ConfigError, ConfigReader, LIMITS } from '../src/runtime/config.js';
import { DDIMScheduler } from '../src/schedulers/index.js';
import { UNet2DConditionModel } from '../src/models/unet_2d_condition.js';
import { AutoencoderKL } from '../src/models/autoencoder_kl.js';
import { clipTextShape } from '../src/text/clip_text_model.js';
import { getEngine } from './helpers.js';

const err = (f: () => unknown): ConfigError => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('did not throw');
};

describe('ConfigReader', () => {
  it('reads typed values with defaults and records them', () => {
    const c = new ConfigReader('M', { a: 3, b: 0.5, f: true, s: 'x', l: [1, 2, 3], n: null, inf: 'Infinity' });
    expect(c.int('a', 1)).toBe(3);
    expect(c.int('missing', 7)).toBe(7);
    expect(c.int('n', 9)).toBe(9); // JSON null reads as absent, as in diffusers
    expect(c.int('missing', null)).toBeNull();
    expect(c.num('b', 1)).toBe(0.5);
    expect(c.num('inf', 0)).toBe(Infinity);
    expect(c.bool('f', false)).toBe(true);
    expect(c.str('s', 'y')).toBe('x');
    expect(c.intList('l')).toEqual([1, 2, 3]);
    expect(c.perBlock('a', 1, 2)).toEqual([3, 3]);
    expect(c.perBlock('l', 1, 3)).toEqual([1, 2, 3]);
    expect(c.perBlockBool('missing2', false, 2)).toEqual([false, false]);
    expect(c.oneOf('s', ['x', 'y'], 'y')).toBe('x');
    expect(c.oneOf('kind', ['a', 'b'], 'a', { alias: 'b' })).toBe('a');
    expect(c.numArray('missing3')).toBeNull();
    expect(c.out).toMatchObject({ a: [3, 3], missing: null, b: 0.5, s: 'x', l: [1, 2, 3] });
  });

  it('names component, key and value in a typed error', () => {
    const c = new ConfigReader('UNetX', { ch: '8', f: 1.5, t: 'yes', kinds: ['A', 'Z'], hd: [8, 8], big: 1e12, in_channels: 0 });
    const e = err(() => c.int('ch', 4));
    expect(e).toMatchObject({ component: 'UNetX', key: 'ch', value: '8', message: `UNetX: config key 'ch' must be an integer, got "8"` });
    expect(err(() => c.num('ch', 4)).message).toMatch(/'ch' must be a number, got "8"/); // string-typed numbers are errors
    expect(err(() => c.int('f', 1)).message).toMatch(/'f' must be an integer, got 1\.5/);
    expect(err(() => c.bool('t', false)).message).toMatch(/'t' must be true or false, got "yes"/);
    expect(err(() => c.oneOfList('kinds', ['A', 'B'])).message).toBe(`UNetX: unsupported value "Z" for config key 'kinds[1]' (supported: "A", "B")`);
    expect(err(() => c.perBlock('hd', 8, 3)).message).toMatch(/'hd' must be an integer or a list of 3 integers, got \[8,8\]/);
    expect(err(() => c.intList('kinds')).key).toBe('kinds[0]');
    expect(err(() => c.int('big', 1, { max: 100 })).message).toMatch(/'big' must be an integer in \[-Infinity, 100\], got 1000000000000/);
    expect(err(() => c.int('in_channels', 3)).message).toMatch(/'in_channels' must be an integer in \[1, 32768\], got 0/);
    expect(err(() => c.int('required')).message).toMatch(/'required' is required/);
    new ConfigReader('S', {}).refuseTrue('thresholding', 'not implemented'); // absent reads false
    expect(err(() => new ConfigReader('S', { thresholding: true }).refuseTrue('thresholding', 'not implemented')).message).toBe(
      `S: config key 'thresholding' = true is not supported (not implemented)`,
    );
  });

  it('refuses a non-object config', () => {
    for (const bad of [null, [1], 'x', 3]) expect(() => new ConfigReader('S', bad)).toThrow(ConfigError);
  });

  it('bounds every memory-sizing key it knows', () => {
    for (const key of ['in_channels', 'block_out_channels', 'sample_size', 'num_train_timesteps', 'vocab_size', 'num_hidden_layers', 'layers_per_block']) {
      expect(LIMITS[key]?.max, key).toBeLessThanOrEqual(1 << 20);
    }
    expect(LIMITS.num_train_timesteps).toEqual({ min: 1, max: 100_000 });
  });
});

describe('absurd configs fail before allocating', () => {
  it('schedulers', () => {
    expect(() => new DDIMScheduler({ num_train_timesteps: 1e9 })).toThrow(/DDIMScheduler: config key 'num_train_timesteps' must be an integer in \[1, 100000\]/);
    expect(() => new DDIMScheduler({ num_train_timesteps: '1000' })).toThrow(ConfigError);
  });

  it('text encoder and models', async () => {
    expect(() => clipTextShape({ vocab_size: 1e9 })).toThrow(/CLIPTextModel: config key 'vocab_size' must be an integer in \[1, 1000000\]/);
    expect(() => clipTextShape({ hidden_size: '512' })).toThrow(ConfigError);
    const engine = await getEngine();
    const before = engine.memory().inUseBytes;
    const none = { has: () => false, names: () => [], get: () => Promise.reject(new Error('no weights')) } as never;
    await expect(UNet2DConditionModel.load(engine, { block_out_channels: [32, 1e7] }, none)).rejects.toThrow(/'block_out_channels\[1\]' must be an integer in \[1, 32768\]/);
    await expect(UNet2DConditionModel.load(engine, { layers_per_block: [1, 2, 3] }, none)).rejects.toThrow(/'layers_per_block' must be an integer or a list of 4 integers/);
    await expect(AutoencoderKL.load(engine, { latent_channels: 2 ** 40 }, none)).rejects.toThrow(ConfigError);
    expect(engine.memory().inUseBytes).toBe(before);
  });
});
