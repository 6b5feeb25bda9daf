// LoRA (Hu et al., 2021) merged into the base weights as they are loaded:
//   W' = W + scale * (alpha / rank) * up @ down
// (down [rank, in, kh, kw] or [rank, in]; up [out, rank, 1, 1] or [out, rank]), which is what
// diffusers' fuse_lora computes. Each base tensor with a LoRA is read once on the host in f32, the
// deltas of every LoRA added, and uploaded once in the model's dtype: the GPU never holds a second
// copy of the base weights. This module parses the files, maps their names onto a component's
// weights and wraps the component's WeightSource; it imports no model (pipelines hand it sources).
//
// Names understood:
// - diffusers / PEFT: `unet.<module>.lora_A.weight` / `lora_B`, the older `<module>.lora.down.weight`
//   / `up`, attention processors (`attn1.processor.to_q_lora.down.weight`), `lora_linear_layer`;
//   prefixes `unet.`, `text_encoder.`, `text_encoder_2.` (a file without any is a UNet LoRA).
//   No alpha in these files: `<module>.alpha` or the spec's alpha if given, else diffusers 0.31's default
//   (alpha = the rank of the component's first layer: 1 x for uniform ranks; see defaultAlpha). A layer
//   without alpha in a file whose other layers have one takes their most common alpha (diffusers).
// - kohya: `lora_unet_<module_with_underscores>.lora_down.weight` / `.lora_up.weight` / `.alpha`,
//   `lora_te_` (SD 1.x text encoder), `lora_te1_` / `lora_te2_` (SDXL); UNet modules named after
//   diffusers' blocks or after the original checkpoint's (input_blocks / middle_block /
//   output_blocks, mapped through layers_per_block).
import type { Engine } from '../runtime/engine.js';
import { type DType, type Tensor, numel, shapeStr, DTYPE_BYTES } from '../runtime/tensor.js';
import { WeightSource, WeightError, closeNames, type UploadOptions } from '../runtime/weights.js';
import * as ops from '../kernels/index.js';
import type { IOOptions } from '../runtime/io.js';
import type { Config } from '../runtime/config.js';

/** The components a LoRA can touch (diffusers' component names). */
export type LoraComponent = 'unet' | 'text_encoder' | 'text_encoder_2';
export const LORA_COMPONENTS: readonly LoraComponent[] = ['unet', 'text_encoder', 'text_encoder_2'];

/** A LoRA safetensors file: a local path (Node), a URL, its bytes, or an opened WeightSource. */
export type LoraFileSource = string | URL | Uint8Array | ArrayBuffer | WeightSource;

export interface LoraSpec {
  source: LoraFileSource;
  /** the strength (diffusers' lora_scale / cross_attention_kwargs scale); default 1 */
  scale?: number;
  /** alpha for modules whose file has none (PEFT keeps lora_alpha in adapter_config.json); default: as diffusers 0.31,
   * the rank of the component's first layer (= each layer's rank when all ranks agree) */
  alpha?: number;
  /** name in reports and errors (default: the path, or 'LoRA #i') */
  label?: string;
}

/** What a load merged: `label: component.module` per merged layer, and `label: key` (why) per key left out. */
export interface LoraReport {
  applied: string[];
  ignored: string[];
}

/** A LoRA that does not fit the base model (names or shapes), or that cannot be read as a LoRA. */
export class LoraError extends Error {
  override readonly name = 'LoraError';
  constructor(
    /** the LoRA's label */
    readonly lora: string,
    /** the first few offending keys, each with the reason */
    readonly offenders: string[],
    /** how many offenders in all */
    readonly count: number,
    what: string,
  ) {
    super(`${lora}: ${what}${offenders.length ? `: ${offenders.join('; ')}${count > offenders.length ? `; ... (${count} in all)` : ''}` : ''}`);
  }
}

const SHOWN = 5;

type Part = 'down' | 'up' | 'alpha';

/** One LoRA layer of a file: its down/up/alpha keys and the module they name (not yet resolved). */
interface Layer {
  component: LoraComponent;
  /** kohya: the module with underscores; dotted: diffusers' module name */
  module: string;
  kohya: boolean;
  down?: string;
  up?: string;
  alpha?: string;
  /** the value of `alpha`, read when the file is opened */
  alphaValue?: number;
}

interface LoraFile {
  label: string;
  scale: number;
  alpha?: number;
  source: WeightSource;
  owned: boolean;
  layers: Layer[];
  /** keys that are not LoRA weights this loader uses, with the reason */
  ignored: string[];
}

/** A loaded model to merge into (the engine's Model: parameters by their checkpoint names). */
export interface MergeTarget {
  readonly config?: Config;
  parameterNames(): string[];
  parameter(name: string): Tensor | undefined;
}

/**
 * A source that is not one tensor file but lists its tensors by the model's names (what a converted
 * single-file text encoder offers): enough to plan a LoRA and merge it as each tensor uploads.
 */
export interface ListedTensorSource {
  readonly label?: string;
  names(): string[];
  shapeOf(name: string): readonly number[] | undefined;
  has(name: string): boolean;
  upload(engine: Engine, name: string, shape: readonly number[], opts: { dtype: DType; allowReshape?: boolean }): Promise<Tensor>;
}

function asListed(s: unknown): ListedTensorSource | null {
  const l = s as Partial<ListedTensorSource> | null;
  return l && typeof l.names === 'function' && typeof l.shapeOf === 'function' && typeof l.upload === 'function' ? (l as ListedTensorSource) : null;
}

/** One delta to add to a base weight. */
interface Delta {
  lora: LoraFile;
  layer: Layer;
  rank: number;
  /** scale * alpha / rank */
  factor: number;
}

// ---------------------------------------------------------------- key parsing

const KOHYA = /^lora_(unet|te|te1|te2)_(.+)\.(lora_down\.weight|lora_up\.weight|alpha)$/;
const KOHYA_COMPONENT: Record<string, LoraComponent> = { unet: 'unet', te: 'text_encoder', te1: 'text_encoder', te2: 'text_encoder_2' };
/** dotted suffixes -> part, longest first */
const DOTTED_PARTS: [string, Part][] = [
  ['.lora_linear_layer.down.weight', 'down'],
  ['.lora_linear_layer.up.weight', 'up'],
  ['_lora.down.weight', 'down'],
  ['_lora.up.weight', 'up'],
  ['.lora.down.weight', 'down'],
  ['.lora.up.weight', 'up'],
  ['.lora_A.weight', 'down'],
  ['.lora_B.weight', 'up'],
  ['.alpha', 'alpha'],
];

/** diffusers' old attention-processor names -> module names of each component */
function normalizeDotted(component: LoraComponent, module: string): string {
  let m = module.replace(/\.processor(?=\.|$)/, '').replace(/_lora$/, '');
  const te = component !== 'unet';
  const proc = /(^|\.)(to_q|to_k|to_v|to_out)$/.exec(m);
  if (proc) {
    const stem = m.slice(0, m.length - proc[2].length);
    if (te) m = stem + { to_q: 'q_proj', to_k: 'k_proj', to_v: 'v_proj', to_out: 'out_proj' }[proc[2]];
    else if (proc[2] === 'to_out') m = stem + 'to_out.0';
  }
  return m;
}

function parseFile(label: string, source: WeightSource): { layers: Layer[]; ignored: string[] } {
  const names = source.names();
  const byModule = new Map<string, Layer>();
  const ignored: string[] = [];
  const dora: string[] = [];
  const lycoris: string[] = [];
  const prefixed = names.some((n) => /^(base_model\.model\.)?(unet|text_encoder|text_encoder_2)\./.test(n));
  for (const key of names) {
    if (/dora_scale$|lora_magnitude_vector/.test(key)) {
      dora.push(key);
      continue;
    }
    // LyCORIS: a layer with lora_mid (CP decomposition), LoHa (hada_*) or LoKr (lokr_*) is not up @ down;
    // merging its down/up alone would be wrong, so the file is refused (diffusers 0.31 refuses it too)
    if (/\.(lora_mid\.weight|hada_[wt]\d_[ab]|lokr_[wt]\d(_[ab])?)$/.test(key)) {
      lycoris.push(key);
      continue;
    }
    let component: LoraComponent | undefined;
    let module = '';
    let part: Part | undefined;
    let kohya = false;
    const k = KOHYA.exec(key);
    if (k) {
      component = KOHYA_COMPONENT[k[1]];
      module = k[2];
      part = k[3] === 'alpha' ? 'alpha' : k[3].startsWith('lora_down') ? 'down' : 'up';
      kohya = true;
    } else {
      const suffix = DOTTED_PARTS.find(([s]) => key.endsWith(s));
      if (suffix) {
        let rest = key.slice(0, key.length - suffix[0].length).replace(/^base_model\.model\./, '');
        const pre = /^(unet|text_encoder_2|text_encoder)\./.exec(rest);
        if (pre) {
          component = pre[1] as LoraComponent;
          rest = rest.slice(pre[0].length);
        } else if (!prefixed) {
          component = 'unet';
        }
        if (component) {
          part = suffix[1];
          module = normalizeDotted(component, rest);
        }
      }
    }
    if (!component || !part || !module) {
      ignored.push(`${key} (not a LoRA weight)`);
      continue;
    }
    const id = `${component}|${kohya ? 'k' : 'd'}|${module}`;
    let layer = byModule.get(id);
    if (!layer) byModule.set(id, (layer = { component, module, kohya }));
    if (layer[part]) throw new LoraError(label, [`${layer[part]} and ${key}`], 1, `two ${part} tensors for one layer`);
    layer[part] = key;
  }
  if (dora.length) throw new LoraError(label, dora.slice(0, SHOWN), dora.length, 'DoRA LoRAs (dora_scale / lora_magnitude_vector) are not supported');
  if (lycoris.length) throw new LoraError(label, lycoris.slice(0, SHOWN), lycoris.length, 'LyCORIS layers (lora_mid, LoHa hada_*, LoKr lokr_*) are not supported');
  const layers: Layer[] = [];
  const half: string[] = [];
  for (const l of byModule.values()) {
    if (l.down && l.up) layers.push(l);
    else half.push(l.down ? `${l.down} (no up tensor)` : l.up ? `${l.up} (no down tensor)` : `${l.alpha} (an alpha without weights)`);
  }
  if (half.length) throw new LoraError(label, half.slice(0, SHOWN), half.length, 'incomplete LoRA layers');
  if (!layers.length) throw new LoraError(label, ignored.slice(0, SHOWN), ignored.length, 'no LoRA weights found (expected diffusers/PEFT lora_A/lora_B or kohya lora_down/lora_up keys)');
  return { layers, ignored };
}

/** diffusers' text-encoder rank order: attention modules layer by layer, then the MLPs */
const TE_RANK_ORDER = /^text_model_encoder_layers_(\d+)_(?:self_attn_(out|q|k|v)_proj|mlp_(fc1|fc2))$/;
const TE_SLOT: Record<string, number> = { out: 0, q: 1, k: 2, v: 3, fc1: 0, fc2: 1 };

/**
 * alpha for a component's layers when the file has no alpha: what diffusers 0.31 does
 * (utils/peft_utils.get_peft_kwargs: lora_alpha = the rank of the first lora_B in its rank dict, the
 * other ranks go to rank_pattern, no alpha_pattern): the first layer's rank, so every layer scales by
 * first_rank / own_rank (1 when all ranks agree). First = the UNet's first by sorted key (a file loads
 * in sorted key order); the text encoders' first attention module (out_proj, q, k, v by layer), else
 * the first MLP (fc1, fc2). Layers outside that order (none for diffusers) fall back to their rank.
 * A file with alphas on some layers only: the others take the component's most common alpha, as in
 * diffusers (which also drops a minority alpha of a text-encoder attention layer; here each layer
 * keeps its own, as kohya means it).
 */
function defaultAlpha(lora: LoraFile, component: LoraComponent): number | undefined {
  const layers = lora.layers.filter((l) => l.component === component);
  // some layers with alpha: the most common one (diffusers' lora_alpha; ties go to the first in sorted key order)
  const withAlpha = layers.filter((l) => l.alphaValue !== undefined).sort((a, b) => (a.down! < b.down! ? -1 : 1));
  if (withAlpha.length) {
    const counts = new Map<number, number>();
    for (const l of withAlpha) counts.set(l.alphaValue!, (counts.get(l.alphaValue!) ?? 0) + 1);
    let best: number | undefined;
    for (const [a, n] of counts) if (best === undefined || n > counts.get(best)!) best = a;
    return best;
  }
  let first: Layer | undefined;
  if (component === 'unet') {
    for (const l of layers) if (!first || l.up! < first.up!) first = l;
  } else {
    let best: number[] | undefined;
    for (const l of layers) {
      const m = TE_RANK_ORDER.exec(l.module.replace(/\./g, '_'));
      if (!m) continue;
      const key = [m[2] ? 0 : 1, Number(m[1]), TE_SLOT[m[2] ?? m[3]]];
      const d = best ? key[0] - best[0] || key[1] - best[1] || key[2] - best[2] : -1;
      if (d < 0) [best, first] = [key, l];
    }
  }
  return first ? lora.source.info(first.down!)!.shape[0] : undefined;
}

// ---------------------------------------------------------------- original (SGM) UNet numbering

const RESNET_INNER: [RegExp, string][] = [
  [/^in_layers_2$/, 'conv1'],
  [/^out_layers_3$/, 'conv2'],
  [/^emb_layers_1$/, 'time_emb_proj'],
  [/^skip_connection$/, 'conv_shortcut'],
];

function resnetInner(rest: string): string {
  for (const [re, to] of RESNET_INNER) if (re.test(rest)) return to;
  return rest;
}

/**
 * Candidate diffusers module names (underscored) for a kohya UNet module named with the original
 * checkpoint's blocks: input_blocks.N (N = 1 + block * (L + 1) + layer; a downsampler at layer L),
 * middle_block.0/1/2 and output_blocks.N (N = block * (L + 1) + layer), L = layers_per_block.
 */
function sgmCandidates(raw: string, config: Config): string[] {
  const L = config.layers_per_block;
  if (typeof L !== 'number' || !Number.isInteger(L) || L < 1) return [];
  const S = L + 1;
  let m: RegExpExecArray | null;
  if (raw === 'input_blocks_0_0') return ['conv_in'];
  if (raw === 'out_2') return ['conv_out'];
  if ((m = /^time_embed_(0|2)$/.exec(raw))) return [`time_embedding_linear_${m[1] === '0' ? 1 : 2}`];
  if ((m = /^label_emb_0_(0|2)$/.exec(raw))) return [`add_embedding_linear_${m[1] === '0' ? 1 : 2}`];
  if ((m = /^input_blocks_(\d+)_(\d+)_(.+)$/.exec(raw))) {
    const n = Number(m[1]) - 1;
    const [b, l, inner, rest] = [Math.floor(n / S), n % S, Number(m[2]), m[3]];
    if (n < 0) return [];
    if (l === L) return rest === 'op' || rest === 'conv' ? [`down_blocks_${b}_downsamplers_0_conv`] : [];
    if (inner === 0) return [`down_blocks_${b}_resnets_${l}_${resnetInner(rest)}`];
    if (inner === 1) return [`down_blocks_${b}_attentions_${l}_${rest}`];
    return [];
  }
  if ((m = /^middle_block_(\d)_(.+)$/.exec(raw))) {
    const i = Number(m[1]);
    if (i === 1) return [`mid_block_attentions_0_${m[2]}`];
    if (i === 0 || i === 2) return [`mid_block_resnets_${i / 2}_${resnetInner(m[2])}`];
    return [];
  }
  if ((m = /^output_blocks_(\d+)_(\d+)_(.+)$/.exec(raw))) {
    const n = Number(m[1]);
    const [b, l, inner, rest] = [Math.floor(n / S), n % S, Number(m[2]), m[3]];
    if (inner === 0) return [`up_blocks_${b}_resnets_${l}_${resnetInner(rest)}`];
    const out: string[] = [];
    if (inner === 1) out.push(`up_blocks_${b}_attentions_${l}_${rest}`);
    if (rest === 'conv') out.push(`up_blocks_${b}_upsamplers_0_conv`);
    return out;
  }
  return [];
}

// ---------------------------------------------------------------- opening

async function openLora(spec: LoraSpec, i: number, io: IOOptions): Promise<LoraFile> {
  if (!spec || typeof spec !== 'object' || spec.source === undefined || spec.source === null) {
    throw new LoraError(`LoRA #${i + 1}`, [], 0, 'expected { source, scale? }');
  }
  const src = spec.source;
  const label = spec.label ?? (typeof src === 'string' || src instanceof URL ? String(src) : src instanceof WeightSource ? src.label : `LoRA #${i + 1}`);
  const scale = spec.scale ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new LoraError(label, [], 0, `scale must be a finite number, got ${String(scale)}`);
  if (spec.alpha !== undefined && !(typeof spec.alpha === 'number' && Number.isFinite(spec.alpha))) {
    throw new LoraError(label, [], 0, `alpha must be a finite number, got ${String(spec.alpha)}`);
  }
  const owned = !(src instanceof WeightSource);
  const source =
    src instanceof WeightSource ? src : typeof src === 'string' || src instanceof URL ? await WeightSource.open(src, io) : WeightSource.fromBytes(src, label);
  try {
    const parsed = parseFile(label, source);
    // alphas are read now (one number each), so a bad one fails before any model loads
    const bad: string[] = [];
    for (const l of parsed.layers) {
      if (!l.alpha) continue;
      const a = await source.readF32(l.alpha);
      if (a.length !== 1 || !Number.isFinite(a[0])) bad.push(`${l.alpha} (${a.length === 1 ? a[0] : `${a.length} values`})`);
      else l.alphaValue = a[0];
    }
    if (bad.length) throw new LoraError(label, bad.slice(0, SHOWN), bad.length, 'an alpha must be one finite number');
    return { label, scale, alpha: spec.alpha, source, owned, ...parsed };
  } catch (e) {
    if (owned) await source.close();
    throw e;
  }
}

/**
 * Several LoRAs, each with its scale, merged into the components they name as those load.
 * `wrap(component, weights, config)` returns the source a model's `load` reads (the base source when
 * no LoRA touches that component); `report()` after the loads; `close()` releases the files.
 */
export class LoraMerger {
  private wrapped = new Set<LoraComponent>();
  private applied: string[] = [];
  /** per wrapped component: target weight -> deltas not yet merged */
  private pending = new Map<string, Delta[]>();

  private constructor(readonly loras: LoraFile[]) {}

  static async open(specs: readonly LoraSpec[], io: IOOptions = {}): Promise<LoraMerger> {
    if (!Array.isArray(specs)) throw new LoraError('loras', [], 0, 'expected an array of { source, scale? }');
    const files: LoraFile[] = [];
    try {
      for (let i = 0; i < specs.length; i++) files.push(await openLora(specs[i], i, io));
    } catch (e) {
      await Promise.all(files.filter((f) => f.owned).map((f) => f.source.close()));
      throw e;
    }
    return new LoraMerger(files);
  }

  /** Components at least one LoRA names. */
  get components(): LoraComponent[] {
    return LORA_COMPONENTS.filter((c) => this.loras.some((f) => f.layers.some((l) => l.component === c)));
  }

  /**
   * The source `component`'s model loads from: `weights` with every LoRA layer of that component
   * merged into its base tensor on upload. Checks every layer's name and shapes first (LoraError
   * naming the first offenders), so a LoRA that does not fit fails before anything is uploaded.
   */
  wrap(component: LoraComponent, weights: WeightSource, config: Config = {}): WeightSource {
    if (this.wrapped.has(component)) throw new Error(`LoraMerger.wrap: ${component} was already wrapped`);
    const plainFile = weights instanceof WeightSource;
    const listed = plainFile ? null : asListed(weights);
    if (!plainFile && !listed) {
      const touching = this.loras.find((f) => f.layers.some((l) => l.component === component));
      if (touching) throw new LoraError(touching.label, [], 0, `cannot merge into this ${component}: its weights do not list their names and shapes`);
      this.wrapped.add(component);
      return weights;
    }
    // a converted source (an OpenCLIP single-file text tower, q/k/v split from in_proj) lists its
    // tensors by diffusers names: the LoRA applies to those, after the key map
    const shapes = new Map<string, readonly number[]>();
    const label = plainFile ? weights.label : (listed!.label ?? component);
    if (plainFile) for (const n of weights.names()) shapes.set(n, weights.info(n)!.shape);
    else for (const n of listed!.names()) shapes.set(n, listed!.shapeOf(n)!);
    const plan = this.plan(component, shapes, config, label);
    this.wrapped.add(component);
    if (!plan.size) return weights;
    for (const [k, v] of plan) this.pending.set(`${component}|${k}`, v);
    const base = weights as unknown as ListedTensorSource;
    const upload = (engine: Engine, name: string, shape?: readonly number[], opts: UploadOptions = {}): Promise<Tensor> => {
      const deltas = plan.get(name);
      if (!deltas) return base.upload(engine, name, shape as number[], opts as { dtype: DType });
      return this.mergeUpload(component, label, base, shapes.get(name)!, engine, name, deltas, shape, opts);
    };
    if (plainFile) return Object.assign(weights.renamed((n) => n), { upload });
    // fromSingleFile hands converted sources through the WeightSource-typed hook; only TensorSource's
    // members (and unusedNames) are used on them
    return { ...listed!, upload } as unknown as WeightSource;
  }

  /** target weight name -> deltas, for the base weights `shapes` (name -> shape); LoraError when a layer does not fit. */
  private plan(component: LoraComponent, shapes: ReadonlyMap<string, readonly number[]>, config: Config, where: string): Map<string, Delta[]> {
    const plan = new Map<string, Delta[]>();
    // base modules: weights of rank 2 (linear) or 4 (conv), by dotted and underscored name
    const modules = new Map<string, readonly number[]>();
    const underscored = new Map<string, string>();
    for (const [n, shape] of shapes) {
      if (!n.endsWith('.weight')) continue;
      if (shape.length !== 2 && shape.length !== 4) continue;
      const mod = n.slice(0, -'.weight'.length);
      modules.set(mod, shape);
      underscored.set(mod.replace(/\./g, '_'), mod);
    }
    for (const lora of this.loras) {
      const offenders: string[] = [];
      const targets = new Map<string, string>();
      let noAlpha: number | undefined;
      for (const layer of lora.layers) {
        if (layer.component !== component) continue;
        const candidates = layer.kohya ? [layer.module, ...(component === 'unet' ? sgmCandidates(layer.module, config) : [])] : [layer.module];
        let target: string | undefined;
        for (const c of candidates) {
          target = layer.kohya ? underscored.get(c) : modules.has(c) ? c : underscored.get(c.replace(/\./g, '_'));
          if (target) break;
        }
        if (!target) {
          const close = closeNames(layer.module, layer.kohya ? [...underscored.keys()] : [...modules.keys()], 2);
          offenders.push(`${layer.down} (no layer '${layer.module}' in the ${component}${close.length ? `; close: ${close.join(', ')}` : ''})`);
          continue;
        }
        const prev = targets.get(target);
        if (prev) {
          offenders.push(`${layer.down} (layer ${target} already has ${prev})`);
          continue;
        }
        targets.set(target, layer.down!);
        const base = modules.get(target)!;
        const down = lora.source.info(layer.down!)!.shape;
        const up = lora.source.info(layer.up!)!.shape;
        const rank = down[0];
        const fits =
          down.length >= 2 &&
          up.length >= 2 &&
          rank > 0 &&
          up[1] === rank &&
          up.slice(2).every((d) => d === 1) &&
          up[0] === base[0] &&
          numel(down) / rank === numel(base) / base[0] &&
          (down.length === 2 || base.length === 4);
        if (!fits) {
          offenders.push(`${layer.down} (down ${shapeStr(down)}, up ${shapeStr(up)} do not fit ${component}.${target}.weight ${shapeStr(base)})`);
          continue;
        }
        // the file's own alpha (kohya) wins over the spec's, which wins over diffusers' default
        const alpha = layer.alphaValue ?? lora.alpha ?? (noAlpha ??= defaultAlpha(lora, component)) ?? rank;
        const list = plan.get(`${target}.weight`) ?? [];
        list.push({ lora, layer, rank, factor: lora.scale * (alpha / rank) });
        plan.set(`${target}.weight`, list);
      }
      if (offenders.length) {
        throw new LoraError(lora.label, offenders.slice(0, SHOWN), offenders.length, `does not fit the ${component} (${where})`);
      }
    }
    return plan;
  }

  /**
   * Merges into models already loaded, in place: each target weight is read back, the deltas added
   * on the host and written into the same buffer (no second copy; in f16 the base is the f16 one, so
   * the result can differ from a merge at load by f16 rounding). Every LoRA is checked against every
   * model and all LoRA tensors are read before the first weight changes, so a LoRA that does not fit
   * changes nothing. A negative scale takes a LoRA merged earlier out again (up to rounding).
   */
  async mergeInto(models: readonly { component: LoraComponent; model: MergeTarget }[], beforeWrite?: () => void): Promise<void> {
    const jobs: { component: LoraComponent; model: MergeTarget; plan: Map<string, Delta[]> }[] = [];
    for (const { component, model } of models) {
      if (this.wrapped.has(component)) throw new Error(`LoraMerger.mergeInto: ${component} was already merged`);
      const shapes = new Map<string, readonly number[]>();
      for (const n of model.parameterNames()) shapes.set(n, model.parameter(n)!.shape);
      jobs.push({ component, model, plan: this.plan(component, shapes, model.config ?? {}, model.constructor.name) });
    }
    // every LoRA tensor read and checked before the first weight changes
    const work: { component: LoraComponent; t: Tensor; name: string; deltas: Delta[]; parts: LowRank[] }[] = [];
    for (const { component, model, plan } of jobs) {
      for (const [name, deltas] of plan) {
        const t = model.parameter(name)!;
        const parts: LowRank[] = [];
        for (const d of deltas) parts.push(lowRankFactors(d, await d.lora.source.readF32(d.layer.up!), await d.lora.source.readF32(d.layer.down!), t.shape[0]));
        work.push({ component, t, name, deltas, parts });
      }
    }
    beforeWrite?.();
    for (const { component } of jobs) this.wrapped.add(component);
    for (const { component, t, name, deltas, parts } of work) {
      const out = t.shape[0];
      const engine = t.engine;
      const merged = engine.scope(() => {
        const base = t.dtype === 'f32' ? t.reshape([out, t.size / out]) : ops.cast(t, 'f32').reshape([out, t.size / out]);
        const w = addLowRankGpu(engine, base, parts);
        return t.dtype === 'f32' ? w : ops.cast(w, t.dtype);
      });
      t.adopt(merged); // the same Tensor object (held by its layer) now has the merged storage
      for (const d of deltas) this.applied.push(`${d.lora.label}: ${component}.${name.slice(0, -'.weight'.length)}`);
    }
  }

  /**
   * One base weight with its deltas: the base uploaded in f32 by its own source (a plain file, or a
   * converted one such as a row block of a fused in_proj), the deltas added by the GEMM, stored once
   * in the model's dtype; the f32 temporaries are freed at once.
   */
  private async mergeUpload(
    component: LoraComponent,
    label: string,
    base: ListedTensorSource,
    stored: readonly number[],
    engine: Engine,
    name: string,
    deltas: Delta[],
    expected: readonly number[] | undefined,
    opts: UploadOptions,
  ): Promise<Tensor> {
    const shape = expected ?? stored;
    const dtype: DType = opts.dtype ?? (engine.f16 ? 'f16' : 'f32');
    if (dtype === 'i32') throw new WeightError(label, `weight '${name}' has a LoRA but is loaded as i32`, name);
    const need = numel(shape) * DTYPE_BYTES[dtype];
    if (need > engine.limits.maxStorageBufferBindingSize) {
      throw new WeightError(label, `weight '${name}' ${shapeStr(shape)} needs ${need} bytes as ${dtype}, over this device's maxStorageBufferBindingSize`, name);
    }
    if (numel(shape) * 4 > engine.limits.maxStorageBufferBindingSize) {
      throw new WeightError(label, `weight '${name}' ${shapeStr(shape)} is merged with its LoRA in f32, which needs more than this device's maxStorageBufferBindingSize`, name);
    }
    const out = shape[0];
    const parts: LowRank[] = [];
    for (const d of deltas) {
      const src = d.lora.source;
      parts.push(lowRankFactors(d, await src.readF32(d.layer.up!), await src.readF32(d.layer.down!), out));
    }
    // the source checks the stored shape against `shape` (and reshapes where allowed)
    const b = await base.upload(engine, name, shape, { ...opts, dtype: 'f32' });
    let t: Tensor;
    try {
      t = engine.scope(() => {
        const merged = addLowRankGpu(engine, b.reshape([out, b.size / out]), parts);
        return (dtype === 'f32' ? merged : ops.cast(merged, dtype)).reshape(shape);
      });
    } finally {
      b.dispose();
    }
    for (const d of deltas) this.applied.push(`${d.lora.label}: ${component}.${name.slice(0, -'.weight'.length)}`);
    this.pending.delete(`${component}|${name}`);
    return t;
  }

  /** Layers merged, and keys left out: not LoRA weights, for components not loaded, or never uploaded. */
  report(): LoraReport {
    const ignored: string[] = [];
    for (const f of this.loras) {
      for (const k of f.ignored) ignored.push(`${f.label}: ${k}`);
      for (const l of f.layers) if (!this.wrapped.has(l.component)) ignored.push(`${f.label}: ${l.down} (no ${l.component} loaded)`);
    }
    for (const [k, ds] of this.pending) {
      const [component, name] = k.split('|');
      for (const d of ds) ignored.push(`${d.lora.label}: ${d.layer.down} (${component} never loaded ${name})`);
    }
    return { applied: [...this.applied], ignored };
  }

  /** Closes the files this merger opened (sources passed in as WeightSource stay open). */
  async close(): Promise<void> {
    await Promise.all(this.loras.filter((f) => f.owned).map((f) => f.source.close()));
  }
}

/** One delta as the GEMM takes it: factor * up [out, rank] and down transposed [cols, rank]. */
interface LowRank {
  up: Float32Array;
  downT: Float32Array;
  rank: number;
  cols: number;
}

function lowRankFactors(d: Delta, up: Float32Array, down: Float32Array, out: number): LowRank {
  const { rank, factor } = d;
  // NaN/Inf in a LoRA would silently poison the merged weight: name the tensor instead
  for (const [key, v] of [[d.layer.up!, up], [d.layer.down!, down]] as const) {
    let bad = 0;
    for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) bad++;
    if (bad) throw new LoraError(d.lora.label, [`${key} (${bad} of ${v.length} values)`], 1, 'NaN/Inf values');
  }
  const cols = down.length / rank;
  const u = new Float32Array(out * rank);
  for (let i = 0; i < u.length; i++) u[i] = up[i] * factor;
  const downT = new Float32Array(cols * rank);
  for (let r = 0; r < rank; r++) for (let j = 0; j < cols; j++) downT[j * rank + r] = down[r * cols + j];
  return { up: u, downT, rank, cols };
}

/**
 * base [out, cols] + sum of (factor * up) @ down on the GPU in f32: the engine's GEMM (linear with a
 * residual), K = rank. The host-side alternative costs out * cols * rank multiply-adds in JavaScript
 * (seconds per large 3x3 conv at rank 64); here each delta is one dispatch. Runs inside the caller's
 * scope: every intermediate but the result is freed with it.
 */
function addLowRankGpu(engine: Engine, base: Tensor, parts: readonly LowRank[]): Tensor {
  const out = base.shape[0];
  let w = base;
  for (const p of parts) {
    const up = engine.tensor(p.up, [out, p.rank], 'f32');
    const downT = engine.tensor(p.downT, [p.cols, p.rank], 'f32');
    w = ops.linear(up, downT, null, { residual: w });
  }
  return w;
}

/** Opens `loras`, wraps one component's weights, loads with `load`, and closes the files. For the
 * models' own `load(engine, config, source)`: the report of what merged comes back beside the model. */
export async function loadWithLoras<T>(
  load: (source: WeightSource) => Promise<T>,
  component: LoraComponent,
  weights: WeightSource,
  config: Config,
  loras: readonly LoraSpec[],
  io: IOOptions = {},
): Promise<{ model: T; lora: LoraReport }> {
  const merger = await LoraMerger.open(loras, io);
  try {
    const model = await load(merger.wrap(component, weights, config));
    return { model, lora: merger.report() };
  } finally {
    await merger.close();
  }
}
