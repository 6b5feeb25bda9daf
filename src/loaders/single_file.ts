// Stable Diffusion 1.x single-file checkpoints: one call that loads any of the three components.
// The key mapping itself lives in single_file_keys.ts.
import type { Engine } from '../runtime/engine.js';
import type { IOOptions } from '../runtime/io.js';
import type { TensorSource } from '../models/nn.js';
import { UNet2DConditionModel } from '../models/unet_2d_condition.js';
import { AutoencoderKL } from '../models/autoencoder_kl.js';
import { CLIPTextModel, CLIPTextModelWithProjection } from '../text/clip_text_model.js';
import type { Config } from '../runtime/config.js';
import type { WeightSource } from '../runtime/weights.js';
import { loadFromSingleFile, type SingleFileSource } from './single_file_keys.js';

export * from './single_file_keys.js';

export type SingleFileModels = { unet: UNet2DConditionModel; vae: AutoencoderKL; text_encoder: CLIPTextModel; text_encoder_2: CLIPTextModelWithProjection };
const LOADERS: { [K in keyof SingleFileModels]: (engine: Engine, config: Config, source: TensorSource) => Promise<SingleFileModels[K]> } = {
  unet: (e, c, s) => UNet2DConditionModel.load(e, c, s),
  vae: (e, c, s) => AutoencoderKL.load(e, c, s),
  text_encoder: (e, c, s) => CLIPTextModel.load(e, c, s),
  text_encoder_2: (e, c, s) => CLIPTextModelWithProjection.load(e, c, s),
};

/**
 * One component of a Stable Diffusion single-file checkpoint (CompVis key names): 'unet'
 * (model.diffusion_model.*), 'vae' (first_stage_model.*), 'text_encoder' (SD 1.x
 * cond_stage_model.transformer.*, SD 2.x OpenCLIP cond_stage_model.model.*, SDXL
 * conditioner.embedders.0.transformer.*) or 'text_encoder_2' (SDXL's OpenCLIP-bigG
 * conditioner.embedders.1.model.*, the refiner's embedders.0.model.*), built with the config given.
 */
export function fromSingleFile<K extends keyof SingleFileModels>(
  engine: Engine,
  source: SingleFileSource,
  component: K,
  opts: { config: Config; transformWeights?: (weights: WeightSource, config: Config) => WeightSource } & IOOptions,
): Promise<SingleFileModels[K]> {
  if (!opts?.config) return Promise.reject(new Error(`fromSingleFile(${component}): pass { config } (the diffusers config of the component)`));
  const load = LOADERS[component];
  const t = opts.transformWeights;
  // singleFileComponent hands the loader a WeightSource view; a transform (LoRA merge) wraps it
  const wrapped = t ? (e: Engine, c: Config, s: TensorSource) => load(e, c, t(s as WeightSource, c)) : load;
  return loadFromSingleFile(wrapped, engine, source, component, opts.config, opts);
}
