// The public API (docs/ARCHITECTURE.md maps the source tree): the engine and tensors, the ops, the models, the schedulers and
// the pipelines. Node-only helpers (PNG output, the CLI) live behind separate entries.
export { Engine, type EngineOptions, type EngineInfo } from './runtime/engine.js';
export type { AdapterKind, NodeAdapterKind } from './runtime/gpu.js';
export { Tensor, type DType } from './runtime/tensor.js';
export type { Scope } from './runtime/scope.js';
export * as ops from './kernels/index.js';
export { autotune, loadTuning, type AutotuneOptions, type AutotuneResult } from './kernels/autotune.js';
export { SafetensorsFile, SafetensorsError, writeSafetensors } from './runtime/safetensors.js';
export { openSafetensors } from './runtime/safetensors_sources.js';
export { IOError, type IOErrorKind, type IOOptions, type ProgressCallback } from './runtime/io.js';
export { WeightSource, WeightError, loadComponentFolder } from './runtime/weights.js';
export { AutoencoderKL } from './models/autoencoder_kl.js';
export { VQModel } from './models/vq_model.js';
export { AutoencoderTiny } from './models/autoencoder_tiny.js';
export { UNet2DModel } from './models/unet_2d.js';
export { UNet2DConditionModel, type AddedCondKwargs, type UNet2DConditionForwardOptions } from './models/unet_2d_condition.js';
export {
  DDPMScheduler,
  DDIMScheduler,
  PNDMScheduler,
  EulerDiscreteScheduler,
  EulerAncestralDiscreteScheduler,
  DPMSolverMultistepScheduler,
  LMSDiscreteScheduler,
  LCMScheduler,
  type SchedulerConfig,
} from './schedulers/index.js';
export { LDMPipeline, type LDMGenerateOptions, type PipelineOutput } from './pipelines/ldm.js';
export { createScheduler, toRgba, type StepInfo, type RgbaImage } from './pipelines/common.js';
export { StableDiffusionPipeline, type SDGenerateOptions } from './pipelines/stable_diffusion.js';
export { StableDiffusionXLPipeline, type SDXLGenerateOptions, type SDXLPromptEmbeds } from './pipelines/stable_diffusion_xl.js';
export { fromSingleFile } from './loaders/single_file.js';
export { LoraMerger, LoraError, loadWithLoras, type LoraSpec, type LoraReport, type LoraComponent, type LoraFileSource } from './loaders/lora.js';
export { CLIPTextModel, CLIPTextModelWithProjection, type ClipTextForwardOptions, type ClipTextOutput, type ClipTextWithProjectionOutput } from './text/clip_text_model.js';
export { CLIPTokenizer } from './text/clip_tokenizer.js';
export { SchedulerBase, parseConfigJson } from './schedulers/index.js';
export { SD15_UNET, SD15_VAE, SD15_TEXT_ENCODER, SD15_SCHEDULER, SDXL_UNET, SDXL_REFINER_UNET, SDXL_VAE, SDXL_TEXT_ENCODER_2, SDXL_SCHEDULER } from './pipelines/sd_configs.js';
export {
  withGenerationParameters,
  readGenerationParameters,
  formatParameters,
  parseParameters,
  readTextChunks,
  withTextChunks,
  a1111SamplerName,
  a1111Sampler,
  modelName,
  type GenerationParameters,
} from './image/png_metadata.js';
export { BertTokenizer, type BertTokenizerOptions } from './text/bert_tokenizer.js';
export { openCheckpoint, CkptFile, CheckpointError, type CheckpointSource } from './loaders/ckpt.js';
export { LDMBertModel } from './text/ldm_bert.js';
export {
  LatentDiffusion,
  ClassEmbedder,
  BERTEmbedder,
  SpatialRescaler,
  FirstStageConditioning,
  type FromOriginalOptions,
  type LatentDiffusionGenerateOptions,
  type LatentDiffusionOutput,
} from './pipelines/latent_diffusion.js';
export { OriginalConfigError } from './loaders/original.js';
export { LDMTextToImagePipeline, type LDMText2ImgOptions } from './pipelines/ldm_text2img.js';
