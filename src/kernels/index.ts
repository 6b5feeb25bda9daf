// The public ops: thin launchers that validate inputs, then record one or more dispatches.
export { silu, gelu, quickGelu, scale, relu, softClamp, exp } from './unary.js';
export { conv2d, conv2dCost, conv2dOutputShape, type Conv2dOptions, type Conv2dCostArgs } from './conv2d.js';
export { matmul, linear, linearGeglu, gegluFused, matmulCost, linearCost, linearGegluCost, type MatmulOptions, type LinearOptions, type Activation as LinearActivation } from './matmul.js';
export { attention, attentionCost, type AttentionOptions, type AttentionCostArgs } from './attention.js';
export { softmax, softmaxCost, type SoftmaxOptions } from './softmax.js';
export { groupNorm, layerNorm, groupNormCost, layerNormCost, type GroupNormOptions, type LayerNormOptions } from './norm.js';
export { embedding } from './embedding.js';
export { timestepEmbedding, timestepEmbeddingCost, timestepFrequencies, type TimestepEmbeddingOptions } from './timestep_embedding.js';
export { vqLookup, vqLookupCost } from './vq_lookup.js';
export { randn, randnItems, randnCost, type RandnOptions } from './randn.js';
export { randnHost, philox4x32 } from './randn_host.js';
export { add, sub, mul, geglu, clamp, cast, broadcastShape, binaryCost, addCost, mulCost, gegluCost, clampCost, castCost } from './elementwise.js';
export { concat, slice, upsampleNearest2x, nchwToTokens, tokensToNchw, concatCost, sliceCost, upsampleNearest2xCost, transposeCost, nchwToTokensCost, tokensToNchwCost } from './layout.js';
export { schedulerStep, schedulerStepCost, addNoise, addNoiseCost, type SchedulerStepArgs } from './scheduler_step.js';
export { classifierFreeGuidance, type GuidanceOptions } from './guidance.js';
export { countNonFinite } from './finite.js';
