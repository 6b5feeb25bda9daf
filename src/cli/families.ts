// Model families for `generate --family` and the demo's model picker: the defaults each family is
// meant to run with (steps, guidance, sampler), and the family of a diffusers folder guessed from its
// model_index.json, scheduler config and UNet config when --family is not given.

export interface FamilyDefaults {
  steps: number;
  /** classifier-free guidance scale; <= 1 runs the UNet once per step (guidance off); undefined =
   * the pipeline's own default (LDMs: 3 with class labels, else 1) */
  guidance?: number;
  /** a sampler short name (src/pipelines/common.ts); undefined = the folder's own scheduler */
  sampler?: string;
}

export interface Family extends FamilyDefaults {
  label: string;
  /** image size the family is trained at (the folder's UNet sample_size gives it; for the text) */
  size: number;
  /** what else it needs on the command line */
  needs?: 'lora';
}

export const FAMILIES: Record<string, Family> = {
  sd1: { label: 'Stable Diffusion 1.x', size: 512, steps: 20, guidance: 7.5 },
  sd2: { label: 'Stable Diffusion 2.x (768 v-prediction, or 512 base)', size: 768, steps: 20, guidance: 7.5 },
  sdxl: { label: 'Stable Diffusion XL', size: 1024, steps: 20, guidance: 5 },
  'sd-turbo': { label: 'SD-Turbo / SDXL-Turbo (adversarial distillation)', size: 512, steps: 1, guidance: 0, sampler: 'euler_a_trailing' },
  // an LCM-distilled UNet (time_cond_proj_dim) takes the scale as an embedding, with no second pass
  lcm: { label: 'Latent Consistency Model (LCM-distilled UNet)', size: 512, steps: 4, guidance: 8.5, sampler: 'lcm' },
  'lcm-lora': { label: 'SD 1.5 / SDXL with LCM-LoRA', size: 512, steps: 4, guidance: 1, sampler: 'lcm', needs: 'lora' },
  ldm: { label: "the paper's latent diffusion models (LDMPipeline folders, --ckpt releases)", size: 256, steps: 20 },
};

export const FAMILY_NAMES = Object.keys(FAMILIES);

export function isFamily(name: string): boolean {
  return Object.prototype.hasOwnProperty.call(FAMILIES, name);
}

type Json = Record<string, unknown>;

/**
 * The family of a diffusers folder: the pipeline class first, then an LCM UNet or scheduler, then a
 * trailing-spaced Euler scheduler (how SD-Turbo and SDXL-Turbo ship), then the UNet: SD 2.x's has
 * use_linear_projection and cross-attends to OpenCLIP-H's 1024 wide text, SD 1.x's to CLIP-L's 768.
 */
export function detectFamily(index: Json, schedulerConfig: Json, unetConfig: Json | null): string {
  const kind = String(index._class_name ?? '');
  const sched = String(schedulerConfig._class_name ?? '');
  if (kind === 'LDMPipeline' || kind === 'LDMTextToImagePipeline' || kind === '') return 'ldm';
  if (kind === 'LatentConsistencyModelPipeline' || unetConfig?.time_cond_proj_dim != null) return 'lcm';
  // an LCM scheduler over an ordinary UNet: LCM-LoRA fused into the weights
  if (sched === 'LCMScheduler') return 'lcm-lora';
  if (sched.startsWith('Euler') && schedulerConfig.timestep_spacing === 'trailing') return 'sd-turbo';
  if (kind === 'StableDiffusionXLPipeline' || kind === 'StableDiffusionXLImg2ImgPipeline') return 'sdxl';
  // every SD 2.x UNet (768 v and 512 base) has linear proj_in/proj_out; SD 1.x's are 1x1 convs
  const cross = unetConfig?.cross_attention_dim;
  return unetConfig?.use_linear_projection === true || cross === 1024 ? 'sd2' : 'sd1';
}

const SDXL_KINDS = ['StableDiffusionXLPipeline', 'StableDiffusionXLImg2ImgPipeline']; // base, refiner
const SD_KINDS = ['StableDiffusionPipeline', 'LatentConsistencyModelPipeline', ...SDXL_KINDS];

/**
 * Why a --family given on the command line cannot be this folder's (its defaults would run the wrong
 * way: --family lcm over an ordinary UNet is classifier-free guidance 8.5 with an LCM sampler), or
 * null. Turbo and LCM-LoRA go over any Stable Diffusion folder; sd1 and sd2 share their defaults.
 */
export function familyConflict(family: string, index: Json, unetConfig: Json | null): string | null {
  const kind = String(index._class_name ?? '');
  const what = `this one is a${/^[AEIOU]/.test(kind) ? 'n' : ''} ${kind || 'LDMPipeline (no _class_name)'}`;
  const isLdm = kind === 'LDMPipeline' || kind === 'LDMTextToImagePipeline' || kind === '';
  if (family === 'ldm') return isLdm ? null : `--family ldm is for LDMPipeline folders; ${what} (model_index.json): drop --family to have it guessed`;
  if (isLdm) return `--family ${family} is for Stable Diffusion folders; this is an ${kind || 'LDMPipeline'} folder: --family ldm, or drop --family`;
  if (!SD_KINDS.includes(kind)) return null; // the generator names classes it does not run itself
  if (family === 'sdxl' && !SDXL_KINDS.includes(kind)) return `--family sdxl is for StableDiffusionXLPipeline folders; ${what} (model_index.json)`;
  if ((family === 'sd1' || family === 'sd2') && SDXL_KINDS.includes(kind)) return `--family ${family} is for StableDiffusionPipeline folders; ${what}: --family sdxl`;
  if (family === 'lcm' && unetConfig?.time_cond_proj_dim == null) {
    return `--family lcm is for LCM-distilled UNets (time_cond_proj_dim in unet/config.json); this UNet has none, so guidance would not be embedded: for an LCM-LoRA use --family lcm-lora --lora FILE`;
  }
  return null;
}

/** Fills what the command line left out with the family's defaults. */
export function withFamilyDefaults<T extends { steps?: number; guidance?: number; sampler?: string }>(args: T, family: string): T & { steps: number } {
  const f = FAMILIES[family];
  return { ...args, steps: args.steps ?? f.steps, guidance: args.guidance ?? f.guidance, sampler: args.sampler ?? f.sampler };
}

/** One line for stderr: what the family sets. */
export function describeDefaults(d: FamilyDefaults): string {
  const g = d.guidance === undefined ? "the model's default" : `${d.guidance}${d.guidance <= 1 ? ' (off)' : ''}`;
  return `${d.steps} step${d.steps === 1 ? '' : 's'}, guidance ${g}, sampler ${d.sampler ?? "the model's own"}`;
}
