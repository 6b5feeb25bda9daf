// The import graph of src/ (tools/import_graph.mjs): no cycles through value imports, and arrows
// point down the rooms (docs/ARCHITECTURE.md) except the listed single-file-loading ones.
import { describe, it, expect } from 'vitest';
// @ts-expect-error a plain .mjs tool without types
import { importGraph, cycles, upwardArrows } from '../tools/import_graph.mjs';

describe('src import graph', () => {
  const graph = importGraph(false) as Map<string, Set<string>>;

  it('has no import cycles', () => {
    expect(graph.size).toBeGreaterThan(80);
    expect(cycles(graph)).toEqual([]);
  });

  it('imports point down the rooms (runtime <- kernels <- models <- ... <- pipelines <- cli)', () => {
    expect(upwardArrows(graph)).toEqual([]);
  });

  it('the checks can fail', () => {
    const g = new Map([['a.ts', new Set(['b.ts'])], ['b.ts', new Set(['a.ts'])], ['runtime/x.ts', new Set(['pipelines/y.ts'])], ['pipelines/y.ts', new Set<string>()]]);
    expect(cycles(g)).toHaveLength(1);
    expect(upwardArrows(g)).toEqual(['runtime/x.ts -> pipelines/y.ts']);
  });
});
