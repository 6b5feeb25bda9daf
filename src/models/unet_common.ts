// Argument checks shared by the UNets.

/** One timestep per batch item from a number (broadcast) or a list. */
export function timestepList(op: string, timestep: number | readonly number[], batch: number): number[] {
  const ts = typeof timestep === 'number' ? Array(batch).fill(timestep) : [...timestep];
  if (ts.length !== batch) throw new Error(`${op}: ${ts.length} timesteps for a batch of ${batch}`);
  for (const t of ts) if (!Number.isFinite(t)) throw new Error(`${op}: timestep ${t} is not a finite number`);
  return ts;
}

export function checkClassLabels(op: string, labels: readonly number[] | undefined, batch: number, numClasses: number): number[] {
  if (!labels) throw new Error(`${op}: this model is class-conditional: pass classLabels (0..${numClasses - 1}, one per batch item)`);
  if (labels.length !== batch) throw new Error(`${op}: ${labels.length} class labels for a batch of ${batch}`);
  for (const c of labels) {
    if (!Number.isInteger(c) || c < 0 || c >= numClasses) throw new Error(`${op}: class label ${c} outside 0..${numClasses - 1}`);
  }
  return [...labels];
}
