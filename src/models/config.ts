// Reading diffusers config.json values: keys exactly as diffusers writes them; an unsupported value
// is an Error naming the component, the key and the value.

export type Config = Record<string, unknown>;

export function requireValues(component: string, key: string, value: unknown, allowed: readonly unknown[]): void {
  if (!allowed.includes(value)) {
    throw new Error(`${component}: unsupported value ${JSON.stringify(value)} for config key '${key}' (supported: ${allowed.map((a) => JSON.stringify(a)).join(', ')})`);
  }
}

export function configNumber(config: Config, key: string, def: number | undefined, component: string): number {
  const v = config[key] ?? def;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${component}: config key '${key}' must be a number, got ${JSON.stringify(config[key])}`);
  return v;
}

export function configOptionalNumber(config: Config, key: string, component: string): number | null {
  const v = config[key];
  if (v === undefined || v === null) return null;
  return configNumber(config, key, undefined, component);
}

export function configBool(config: Config, key: string, def: boolean, component: string): boolean {
  const v = config[key] ?? def;
  if (typeof v !== 'boolean') throw new Error(`${component}: config key '${key}' must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** A non-empty list whose elements have the type of the default's (strings without a default):
 * ["48"] where numbers are expected is an error naming the key, not a shape mismatch later. */
export function configList<T = number>(config: Config, key: string, def: T[] | undefined, component: string): T[] {
  const v = config[key] ?? def;
  if (!Array.isArray(v) || !v.length) throw new Error(`${component}: config key '${key}' must be a non-empty list, got ${JSON.stringify(config[key])}`);
  const kind = def && def.length ? typeof def[0] : 'string';
  const ok = (x: unknown) => typeof x === kind && (kind !== 'number' || (Number.isInteger(x) && (x as number) >= 0));
  if (!v.every(ok)) throw new Error(`${component}: config key '${key}' must be a list of ${kind === 'number' ? 'non-negative integers' : kind + 's'}, got ${JSON.stringify(v)}`);
  return v as T[];
}

/** A finite number > 0 (scaling_factor: 0 would divide the latents by zero). */
export function configPositive(config: Config, key: string, def: number, component: string): number {
  const v = configNumber(config, key, def, component);
  if (!(v > 0)) throw new Error(`${component}: config key '${key}' must be a number > 0, got ${JSON.stringify(config[key])}`);
  return v;
}

/** sample_size: a positive integer (square) or a list [height, width] of them, as diffusers allows;
 * `def` when absent. */
export function configSampleSize(config: Config, def: number, component: string): [number, number] {
  const v = config.sample_size ?? def;
  const okInt = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x > 0;
  if (okInt(v)) return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every(okInt)) return [v[0], v[1]];
  throw new Error(`${component}: config key 'sample_size' must be a positive integer or a list [height, width] of them, got ${JSON.stringify(config.sample_size)}`);
}

/** An int-or-list key (attention_head_dim, transformer_layers_per_block...) expanded to one per block. */
export function perBlock(config: Config, key: string, def: number | number[] | undefined, blocks: number, component: string): number[] {
  const v = config[key] ?? def;
  if (typeof v === 'number') return Array(blocks).fill(v);
  if (Array.isArray(v) && v.length === blocks && v.every((x) => typeof x === 'number')) return v as number[];
  throw new Error(`${component}: config key '${key}' must be a number or a list of ${blocks} numbers, got ${JSON.stringify(v)}`);
}
