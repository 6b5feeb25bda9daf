// Repeated Engine.create()/destroy() must not grow the process: one Dawn instance is reused (a
// fresh one per create, kept in a module-level list, grew RSS by ~2.5 MB per cycle) and a destroyed
// engine becomes garbage (the device's 'uncapturederror' listener kept every Engine reachable).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');

describe('Engine lifecycle', () => {
  it('50 create/destroy cycles: no engines stay alive, one Dawn instance, RSS levels off', () => {
    const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', join(root, 'test/child/engine_cycles.ts'), '50'], {
      cwd: root,
      encoding: 'utf8',
      timeout: 240_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const rows = r.stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { cycle: number; rssMiB: number; alive: number; dawnInstances: number });
    expect(rows.map((x) => x.cycle)).toEqual([10, 20, 30, 40, 50]);
    for (const row of rows) {
      // The engine of the last cycle may still be reachable from the stack; none of the earlier ones.
      expect(row.alive, JSON.stringify(row)).toBeLessThanOrEqual(1);
      expect(row.dawnInstances).toBe(1);
    }
    // Before the fix: +25 MB per 10 cycles, without end. After: the first ~20 cycles warm up the
    // allocators and caches, then RSS moves within a few MB.
    const growth = Math.max(...rows.slice(2).map((x) => x.rssMiB)) - rows[1].rssMiB;
    expect(growth, rows.map((x) => x.rssMiB.toFixed(1)).join(' -> ')).toBeLessThan(15);
  }, 300_000);
});
