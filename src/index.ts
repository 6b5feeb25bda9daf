export { Engine, type EngineOptions, type EngineInfo } from './runtime/engine.js';
export { Tensor, type DType } from './runtime/tensor.js';
export * as ops from './kernels/index.js';
