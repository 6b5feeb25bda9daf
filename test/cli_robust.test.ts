// The command line under careless input and failure: negative option values, a missing output
// folder, steps the scheduler cannot make, atomic PNG writes, driver noise kept off stderr, and
// Ctrl-C while a download hangs (exit 130, after saying what it waits for).
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseGenerateArgs, UsageError, defaultModel, joinNegativeValues } from '../src/cli/main.js';
import { stepsProblem } from '../src/cli/generate.js';
import { outputPathProblem, writeFileAtomic } from '../src/cli/output.js';
import { filterDriverNoise, isDriverNoise } from '../src/cli/stderr.js';

const root = resolve(import.meta.dirname, '..');

/** Runs the CLI from source; `during` may act on the running process (e.g. send SIGINT). */
function runCli(args: string[], during?: (p: ReturnType<typeof spawn>, stderr: () => string) => void, timeoutMs = 120_000) {
  return new Promise<{ status: number | null; signal: string | null; stderr: string; stdout: string }>((done, fail) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    p.stderr!.on('data', (d) => (stderr += d));
    p.stdout!.on('data', (d) => (stdout += d));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      fail(new Error(`CLI timed out; stderr: ${stderr}`));
    }, timeoutMs);
    during?.(p, () => stderr);
    p.on('close', (status, signal) => {
      clearTimeout(timer);
      done({ status, signal, stderr, stdout });
    });
  });
}

describe('CLI: option values', () => {
  it('accepts negative numbers as values: --seed -1 is a random seed, --guidance -3 is kept', () => {
    const a = parseGenerateArgs(['--class', '3', '--seed', '-1', '--guidance', '-3']);
    expect(a.seedWasRandom).toBe(true);
    expect(Number.isInteger(a.seed) && a.seed >= 0 && a.seed < 2 ** 32).toBe(true);
    expect(a.guidance).toBe(-3);
    expect(parseGenerateArgs(['--guidance', '-0.5']).guidance).toBe(-0.5);
    expect(parseGenerateArgs(['--seed=-1']).seedWasRandom).toBe(true);
    // Other negatives get a message about the value, not "ambiguous".
    expect(() => parseGenerateArgs(['--seed', '-5'])).toThrow(/-1 for a random seed/);
    expect(() => parseGenerateArgs(['--steps', '-3'])).toThrow(/--steps must be between 1/);
    expect(() => parseGenerateArgs(['--steps', '-3'])).toThrow(UsageError);
    // A flag after an option still is a flag (no value swallowed).
    expect(() => parseGenerateArgs(['--prompt', '--class', '3'])).toThrow(UsageError);
    expect(joinNegativeValues(['--seed', '-1', '--out', '-x.png'], { seed: { type: 'string' }, out: { type: 'string' } })).toEqual(['--seed=-1', '--out', '-x.png']);
  });

  it('refuses steps the scheduler cannot make, naming the largest that works', () => {
    const cfg = JSON.parse(readFileSync(join(defaultModel(), 'scheduler', 'scheduler_config.json'), 'utf8'));
    expect(stepsProblem(cfg, undefined, 20)).toBeNull();
    expect(stepsProblem(cfg, 'euler', 50)).toBeNull();
    const msg = stepsProblem(cfg, undefined, 1000);
    expect(msg).toMatch(/--steps 1000 .*DDIMScheduler.*timestep 1000, outside 0\.\.999.*use --steps 999 or fewer/);
    expect(stepsProblem(cfg, 'nonsense', 10)).toMatch(/unsupported scheduler/);
  });
});

describe('CLI: output files', () => {
  it('names a missing or unwritable output folder', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-out-'));
    try {
      expect(outputPathProblem(join(dir, 'a.png'))).toBeNull();
      expect(outputPathProblem(join(dir, 'missing', 'a.png'))).toMatch(/folder .*missing does not exist/);
      writeFileSync(join(dir, 'file'), 'x');
      expect(outputPathProblem(join(dir, 'file', 'a.png'))).toMatch(/is not a folder/);
      mkdirSync(join(dir, 'd.png'));
      expect(outputPathProblem(join(dir, 'd.png'))).toMatch(/is a folder/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes atomically: temp file + rename, nothing left over, a failed write keeps the old file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-atomic-'));
    try {
      const target = join(dir, 'x.png');
      writeFileAtomic(target, new Uint8Array([1, 2, 3]));
      writeFileAtomic(target, new Uint8Array([4, 5]));
      expect([...readFileSync(target)]).toEqual([4, 5]);
      expect(readdirSync(dir)).toEqual(['x.png']);
      mkdirSync(join(dir, 'blocked.png'));
      writeFileSync(join(dir, 'blocked.png', 'keep'), 'k');
      expect(() => writeFileAtomic(join(dir, 'blocked.png'), new Uint8Array([9]))).toThrow(/cannot write .*blocked\.png/);
      expect(readdirSync(dir).sort()).toEqual(['blocked.png', 'x.png']);
      expect(readFileSync(join(dir, 'blocked.png', 'keep'), 'utf8')).toBe('k');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses --out into a missing folder and impossible --steps before loading anything', async () => {
    const r = await runCli(['generate', '--class', '3', '--out', '/nonexistent-dir-ldm/x.png']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/\/nonexistent-dir-ldm does not exist/);
    expect(r.stderr).not.toMatch(/adapter:/);
    const s = await runCli(['generate', '--class', '3', '--steps', '1000', '--out', join(tmpdir(), 'never.png')]);
    expect(s.status).toBe(1);
    expect(s.stderr).toMatch(/use --steps 999 or fewer/);
    expect(s.stderr).not.toMatch(/adapter:/);
    expect(existsSync(join(tmpdir(), 'never.png'))).toBe(false);
  }, 120_000);
});

/** A server with the bundled model's JSON files whose safetensors requests never get an answer. */
async function hangingServer() {
  const model = defaultModel();
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
    requests.push(path);
    if (path.endsWith('.safetensors')) return; // never answers
    const file = join(model, path);
    if (!existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(readFileSync(file));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const close = () => {
    server.closeAllConnections();
    server.close();
  };
  return { url, requests, close };
}

describe('CLI: stderr and Ctrl-C', () => {
  it('filters driver lines and keeps its own', () => {
    for (const l of [
      'Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.',
      'error: XDG_RUNTIME_DIR is invalid or not set in the environment.',
      'Vulkan shaderUniform*ArrayDynamicIndexing required.',
      'WARNING: lavapipe is not a conformant vulkan implementation, testing use only.',
    ]) expect(isDriverNoise(l), l).toBe(true);
    for (const l of ['adapter: mesa / llvmpipe (node, f16)', 'ldm-webgpu: --steps 1000 does not work', 'wrote out.png (32x32) in 3.1 s']) {
      expect(isDriverNoise(l), l).toBe(false);
    }
    const chunk = 'adapter: x\nWarning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit.\nloading |###   | 1.0/2.0 MiB';
    expect(filterDriverNoise(chunk)).toBe('adapter: x\nloading |###   | 1.0/2.0 MiB');
  });

  it('a download that hangs: says what it waits for, Ctrl-C exits 130, no driver noise on stderr', async () => {
    const srv = await hangingServer();
    try {
      const out = join(tmpdir(), `hang-${process.pid}.png`);
      const r = await runCli(['generate', '--model', srv.url, '--class', '3', '--steps', '2', '--out', out], (p, stderr) => {
        const poll = setInterval(() => {
          if (/waiting for http:\/\/127\.0\.0\.1:\d+\/\w+\/diffusion_pytorch_model\.safetensors/.test(stderr())) {
            clearInterval(poll);
            p.kill('SIGINT');
          }
        }, 100);
        p.on('close', () => clearInterval(poll));
      });
      expect(r.status, r.stderr).toBe(130);
      expect(r.stderr).toMatch(/cancelled/);
      expect(srv.requests).toContain('/model_index.json');
      for (const line of r.stderr.split('\n')) expect(isDriverNoise(line), line).toBe(false);
      expect(existsSync(out)).toBe(false);
    } finally {
      srv.close();
    }
  }, 120_000);

  it('--timeout: a download without progress fails after that many seconds, naming the URL', async () => {
    expect(parseGenerateArgs([]).timeoutMs).toBe(30_000);
    expect(parseGenerateArgs(['--timeout', '0']).timeoutMs).toBe(0);
    expect(() => parseGenerateArgs(['--timeout', '-2'])).toThrow(/--timeout must be 0/);
    const srv = await hangingServer();
    try {
      const r = await runCli(['generate', '--model', srv.url, '--class', '3', '--timeout', '1.5', '--out', join(tmpdir(), `to-${process.pid}.png`)]);
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/http:\/\/127\.0\.0\.1:\d+\/\w+\/diffusion_pytorch_model\.safetensors: no progress for 1500 ms/);
    } finally {
      srv.close();
    }
  }, 120_000);
});
