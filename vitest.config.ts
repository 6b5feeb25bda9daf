import { defineConfig } from 'vitest/config';

// Two projects, both run by `npm test`:
// - default: every test except test/f16, in f32 on the default adapter (hardware, else lavapipe,
//   else SwiftShader; see src/runtime/gpu.ts);
// - f16: test/f16 on Mesa lavapipe, which has shader-f16 (SwiftShader has not), none skipped.
export default defineConfig({
  test: {
    // Software adapters run the GPU on the CPU with their own threads: one test file at a time.
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: { name: 'default', include: ['test/**/*.test.ts'], exclude: ['test/f16/**', '**/node_modules/**'] },
      },
      {
        extends: true,
        test: { name: 'f16', include: ['test/f16/**/*.test.ts'], env: { LDM_WEBGPU_ADAPTER: 'lavapipe' } },
      },
    ],
  },
});
