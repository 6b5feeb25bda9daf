// Child process of engine_lifecycle.test.ts (run with --expose-gc): creates and destroys engines,
// allocating a tensor and running one op each time, and prints JSON lines with RSS and the number of
// Engine objects the garbage collector has not reclaimed.
import { Engine, ops } from '../../src/index.js';
import { dawnInstanceCount } from '../../src/runtime/gpu.js';

const cycles = Number(process.argv[2] ?? 40);
let alive = 0;
const registry = new FinalizationRegistry<number>(() => {
  alive--;
});
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

for (let i = 1; i <= cycles; i++) {
  const engine = await Engine.create();
  alive++;
  registry.register(engine, i);
  const x = engine.tensor(Float32Array.from({ length: 300 }, (_, k) => Math.sin(k + i)), [3, 100]);
  const y = ops.silu(x);
  await y.read();
  engine.destroy();
  if (i % 10 === 0) {
    for (let k = 0; k < 3; k++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    const rssMiB = process.memoryUsage().rss / 2 ** 20;
    process.stdout.write(JSON.stringify({ cycle: i, rssMiB, alive, dawnInstances: dawnInstanceCount() }) + '\n');
  }
}
process.exit(0);
