// Input validation shared by the op launchers: every failure is an Error naming the op and shapes.
import type { Engine } from '../runtime/engine.js';
import { Tensor, shapeStr, type DType } from '../runtime/tensor.js';

export function describe(ts: readonly Tensor[]): string {
  return ts.map((t) => (t instanceof Tensor ? `${shapeStr(t.shape)} ${t.dtype}${t.disposed ? ' (disposed)' : ''}` : String(t))).join(', ');
}

/** Checks that the tensors are live, of one engine, and returns that engine. */
export function engineOf(op: string, ...ts: (Tensor | undefined | null)[]): Engine {
  const list = ts.filter((t): t is Tensor => t !== undefined && t !== null);
  if (!list.length) throw new Error(`${op}: no tensor given`);
  for (const t of list) {
    if (!(t instanceof Tensor)) throw new Error(`${op}: expected Tensors, got ${typeof t}`);
  }
  const engine = list[0].engine;
  for (const t of list) {
    if (t.engine !== engine) throw new Error(`${op}: tensors belong to different engines (${describe(list)})`);
    if (t.disposed) throw new Error(`${op}: a tensor was used after dispose() (${describe(list)})`);
  }
  return engine;
}

/** All float tensors of one dtype (f32 or f16); returns it. */
export function floatDtype(op: string, ...ts: (Tensor | undefined | null)[]): DType {
  const list = ts.filter((t): t is Tensor => !!t);
  const dt = list[0].dtype;
  for (const t of list) {
    if (t.dtype === 'i32') throw new Error(`${op}: expected float tensors, got i32 (${describe(list)})`);
    if (t.dtype !== dt) throw new Error(`${op}: mixed dtypes (${describe(list)})`);
  }
  return dt;
}

export function fail(op: string, msg: string, ts: readonly Tensor[]): never {
  throw new Error(`${op}: ${msg} (${describe(ts)})`);
}

export function rankIs(op: string, t: Tensor, rank: number, what = 'input'): void {
  if (t.rank !== rank) throw new Error(`${op}: ${what} must have rank ${rank}, got ${shapeStr(t.shape)}`);
}

/** Splits a large 1-D dispatch over x and y so neither exceeds the per-dimension limit. */
export function grid1d(engine: Engine, workgroups: number): [number, number] {
  const max = engine.limits.maxComputeWorkgroupsPerDimension;
  if (workgroups <= max) return [workgroups, 1];
  const y = Math.ceil(workgroups / max);
  return [Math.ceil(workgroups / y), y];
}
