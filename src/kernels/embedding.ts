// ops.embedding(table [V, D], ids) -> [...idsShape, D]: token / class / position embeddings.
// Cost: reads and writes rows * D elements.
import { Tensor } from '../runtime/tensor.js';
import { embeddingWgsl } from './embedding.wgsl.js';
import { engineOf, floatDtype, rankIs } from './check.js';
import { flatWorkgroups } from './kit.js';

const src = { name: 'embedding', wgsl: embeddingWgsl };

export function embedding(table: Tensor, ids: Tensor | readonly number[]): Tensor {
  const op = 'embedding';
  const engine = engineOf(op, table, ids instanceof Tensor ? ids : undefined);
  const dtype = floatDtype(op, table);
  rankIs(op, table, 2, 'table');
  const [V, D] = table.shape;
  let idT: Tensor;
  if (ids instanceof Tensor) {
    if (ids.dtype !== 'i32') throw new Error(`${op}: ids must be i32, got ${ids.dtype}`);
    idT = ids;
  } else {
    for (const v of ids) {
      if (!Number.isInteger(v) || v < 0 || v >= V) throw new Error(`${op}: id ${v} is outside the table of ${V} rows`);
    }
    idT = engine.tensor(Int32Array.from(ids), [ids.length]);
  }
  const rows = idT.size;
  const y = engine.empty([...idT.shape, D], dtype, op);
  engine.dispatch(src, { bindings: { table, ids: idT, y }, uniforms: { rows, dim: D, tableRows: V }, workgroups: flatWorkgroups(engine, rows * D), dtype });
  if (idT !== ids) idT.dispose();
  return y;
}
