// The component configs of Stable Diffusion 1.5 and 2.1 (as diffusers writes them in the
// runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1 folders), used for
// single-file checkpoints, which carry no configs.
import type { Config } from '../runtime/config.js';

export const SD15_UNET: Config = {
  _class_name: 'UNet2DConditionModel',
  act_fn: 'silu',
  attention_head_dim: 8,
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  cross_attention_dim: 768,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  sample_size: 64,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
};

export const SD15_VAE: Config = {
  _class_name: 'AutoencoderKL',
  act_fn: 'silu',
  block_out_channels: [128, 256, 512, 512],
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  out_channels: 3,
  sample_size: 512,
  scaling_factor: 0.18215,
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
};

export const SD15_TEXT_ENCODER: Config = {
  architectures: ['CLIPTextModel'],
  bos_token_id: 0,
  eos_token_id: 2,
  hidden_act: 'quick_gelu',
  hidden_size: 768,
  intermediate_size: 3072,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  num_attention_heads: 12,
  num_hidden_layers: 12,
  pad_token_id: 1,
  projection_dim: 768,
  vocab_size: 49408,
};

export const SD15_SCHEDULER: Config = {
  _class_name: 'PNDMScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
};

// Stable Diffusion 2.x (stabilityai/stable-diffusion-2-1, as diffusers 0.31's single-file loader
// uses for every SD 2.x checkpoint): the 768 v-prediction model. 2.x-base (512, epsilon) differs in
// sample_size and prediction_type only: see sd2Configs.
export const SD21_UNET: Config = {
  ...SD15_UNET,
  attention_head_dim: [5, 10, 20, 20],
  cross_attention_dim: 1024,
  sample_size: 96,
  use_linear_projection: true,
  upcast_attention: true,
};

export const SD21_VAE: Config = { ...SD15_VAE, sample_size: 768 };

/** OpenCLIP ViT-H's text tower as transformers' CLIPTextModel: 23 of its 24 blocks (SD 2.x conditions
 * on the penultimate layer, so the last block is dropped), gelu. */
export const SD21_TEXT_ENCODER: Config = {
  architectures: ['CLIPTextModel'],
  bos_token_id: 0,
  eos_token_id: 2,
  hidden_act: 'gelu',
  hidden_size: 1024,
  intermediate_size: 4096,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  num_attention_heads: 16,
  num_hidden_layers: 23,
  pad_token_id: 1,
  projection_dim: 512,
  vocab_size: 49408,
};

export const SD21_SCHEDULER: Config = {
  _class_name: 'DDIMScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  prediction_type: 'v_prediction',
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
};

/**
 * The configs of an SD 2.x single file: 2.0 / 2.1 (768, v_prediction) by default, as diffusers; the
 * base models (2.0-base, 2.1-base: 512, epsilon) with predictionType 'epsilon', which also makes
 * 512 the default size. imageSize overrides the size.
 */
export function sd2Configs(opts: { predictionType?: 'epsilon' | 'v_prediction'; imageSize?: number } = {}): { unet: Config; vae: Config; textEncoder: Config; scheduler: Config } {
  const prediction = opts.predictionType ?? 'v_prediction';
  if (prediction !== 'epsilon' && prediction !== 'v_prediction') throw new Error(`SD 2.x: predictionType must be 'epsilon' or 'v_prediction', got ${JSON.stringify(prediction)}`);
  const size = opts.imageSize ?? (prediction === 'epsilon' ? 512 : 768);
  if (!Number.isInteger(size) || size < 64 || size % 64) throw new Error(`SD 2.x: imageSize must be a multiple of 64, got ${String(size)}`);
  return {
    unet: { ...SD21_UNET, sample_size: size / 8 },
    vae: { ...SD21_VAE, sample_size: size },
    textEncoder: SD21_TEXT_ENCODER,
    scheduler: { ...SD21_SCHEDULER, prediction_type: prediction },
  };
}

/**
 * Which Stable Diffusion a single file holds, by its key names: SD 2.x has an OpenCLIP text tower
 * (cond_stage_model.model.*) and cross-attends to 1024 wide text (diffusers checks the same to_k).
 */
export function singleFileFamily(names: readonly string[], shapeOf: (name: string) => readonly number[] | undefined): 'sd1' | 'sd2' {
  if (names.some((n) => n.startsWith('cond_stage_model.model.'))) return 'sd2';
  const toK = shapeOf('model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight');
  return toK && toK[toK.length - 1] === 1024 ? 'sd2' : 'sd1';
}

// Stable Diffusion XL 1.0 (stabilityai/stable-diffusion-xl-base-1.0 and -refiner-1.0, as diffusers
// writes them), for SDXL single files. text_encoder is CLIP ViT-L/14 (SD15_TEXT_ENCODER);
// text_encoder_2 is OpenCLIP ViT-bigG/14 with its projection.
export const SDXL_UNET: Config = {
  _class_name: 'UNet2DConditionModel',
  act_fn: 'silu',
  addition_embed_type: 'text_time',
  addition_embed_type_num_heads: 64,
  addition_time_embed_dim: 256,
  attention_head_dim: [5, 10, 20],
  block_out_channels: [320, 640, 1280],
  center_input_sample: false,
  cross_attention_dim: 2048,
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  projection_class_embeddings_input_dim: 2816,
  sample_size: 128,
  transformer_layers_per_block: [1, 2, 10],
  up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
  use_linear_projection: true,
};

/** The refiner: aesthetic-score time ids (5 x 256 + 1280 = 2560), cross-attends to text_encoder_2 only. */
export const SDXL_REFINER_UNET: Config = {
  ...SDXL_UNET,
  attention_head_dim: [6, 12, 24, 24],
  block_out_channels: [384, 768, 1536, 1536],
  cross_attention_dim: 1280,
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  projection_class_embeddings_input_dim: 2560,
  transformer_layers_per_block: 4,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
};

export const SDXL_VAE: Config = { ...SD15_VAE, force_upcast: true, sample_size: 1024, scaling_factor: 0.13025 };

export const SDXL_TEXT_ENCODER_2: Config = {
  architectures: ['CLIPTextModelWithProjection'],
  bos_token_id: 0,
  eos_token_id: 2,
  hidden_act: 'gelu',
  hidden_size: 1280,
  intermediate_size: 5120,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  num_attention_heads: 20,
  num_hidden_layers: 32,
  pad_token_id: 1,
  projection_dim: 1280,
  vocab_size: 49408,
};

export const SDXL_SCHEDULER: Config = {
  _class_name: 'EulerDiscreteScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  interpolation_type: 'linear',
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  steps_offset: 1,
  timestep_spacing: 'leading',
  trained_betas: null,
  use_karras_sigmas: false,
};
