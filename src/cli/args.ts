// The parsed arguments of `generate`, shared by the argument parser (main.ts) and the commands that
// run them (generate.ts, original.ts) without making those import each other.

export interface GenerateArgs {
  model: string;
  /** the model as written into the PNG: the --model text, or "ldm-mnist" for the bundled one */
  modelLabel: string;
  classLabels?: number[];
  prompt?: string;
  negativePrompt?: string;
  /** undefined: the family's default (src/cli/families.ts) */
  steps?: number;
  /** --family: a key of FAMILIES (its defaults fill steps / guidance / sampler not given) */
  family?: string;
  sampler?: string;
  /** --lora FILE[:SCALE] (repeatable): LoRAs merged into the UNet and text encoder at load */
  loras?: { source: string; scale: number }[];
  seed: number;
  /** no-progress timeout of downloads in ms (--timeout seconds; 0 = none) */
  timeoutMs?: number;
  /** --seed -1: the seed was drawn at random (the CLI prints it) */
  seedWasRandom?: boolean;
  guidance?: number;
  width?: number;
  height?: number;
  batch?: number;
  out: string;
  /** f16 storage where the adapter has shader-f16 (default); false forces f32 */
  f16?: boolean;
  /** the options come whole from a PNG (--from): no family defaults are added */
  exact?: boolean;
  /** rerun of a PNG: write only this image of the batch */
  batchIndex?: number;
  /** an original release (LatentDiffusion.fromOriginal): checkpoint + config.yaml */
  ckpt?: string;
  config?: string;
  tokenizer?: string;
  eta?: number;
  /** a .safetensors single file: SD 2.x's prediction type (config, tokenizer as above: JSON configs, CLIP tokenizer) */
  predictionType?: 'epsilon' | 'v_prediction';
  /** --init-image: a PNG whose pixels start an image-to-image run (Stable Diffusion / SDXL folders) */
  initImage?: string;
  /** --strength: how much of the schedule runs on the noised init image (default: the pipeline's) */
  strength?: number;
  /** --refiner: an SDXL refiner folder the base hands its latents to (diffusers' denoising_end/start) */
  refiner?: string;
  /** --denoising-end: where the base stops and the refiner starts (default 0.8) */
  denoisingEnd?: number;
}
