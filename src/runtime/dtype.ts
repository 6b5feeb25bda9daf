// Element types of tensors, in their own module so that low-level parts (the pipeline cache) can
// name them without importing Tensor.
export type DType = 'f32' | 'f16' | 'i32';

export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, i32: 4 };
