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

export function configList<T = number>(config: Config, key: string, def: T[] | undefined, component: string): T[] {
  const v = config[key] ?? def;
  if (!Array.isArray(v) || !v.length) throw new Error(`${component}: config key '${key}' must be a non-empty list, got ${JSON.stringify(config[key])}`);
  return v as T[];
}

/** An int-or-list key (attention_head_dim, transformer_layers_per_block...) expanded to one per block. */
export function perBlock(config: Config, key: string, def: number | number[] | undefined, blocks: number, component: string): number[] {
  const v = config[key] ?? def;
  if (typeof v === 'number') return Array(blocks).fill(v);
  if (Array.isArray(v) && v.length === blocks && v.every((x) => typeof x === 'number')) return v as number[];
  throw new Error(`${component}: config key '${key}' must be a number or a list of ${blocks} numbers, got ${JSON.stringify(v)}`);
}
