// Keeps stderr for the project's own messages. Dawn, the Vulkan loader and the drivers print from
// native code straight to file descriptor 2 ("XDG_RUNTIME_DIR is invalid", "Vulkan
// shaderUniform*ArrayDynamicIndexing required.", "maxDynamic...Layout artificially reduced"), which
// JavaScript cannot intercept in-process. So the command runs itself once more as a child whose
// stderr is a pipe: the parent drops the driver lines and passes everything else through unchanged
// (progress bars included: the child is told its stderr is a terminal of the parent's width).
// `--verbose` (or LDM_VERBOSE=1) runs in-process and shows everything.
import { spawn } from 'node:child_process';

/** Lines printed by Dawn, the Vulkan loader, Mesa or SwiftShader, not by this project. */
export const DRIVER_NOISE: readonly RegExp[] = [
  /XDG_RUNTIME_DIR/,
  /shaderUniform\*ArrayDynamicIndexing/,
  /artificially reduced from \d+ to \d+/,
  /not a conformant vulkan implementation/i,
  /^MESA-LOADER:/,
  /^(?:WARNING|Warning|warning): .*(?:Vulkan|vulkan|Dawn|dawn|ICD|llvmpipe|lavapipe|SwiftShader)/,
];

export function isDriverNoise(line: string): boolean {
  return DRIVER_NOISE.some((re) => re.test(line));
}

/**
 * Removes complete driver lines from a chunk of stderr. A trailing partial line passes through at
 * once (progress bars redraw without newlines); native code writes each of its lines in one go.
 */
export function filterDriverNoise(chunk: string): string {
  return chunk
    .split(/(?<=\n)/)
    .filter((part) => !(part.endsWith('\n') && isDriverNoise(part.replace(/\r?\n$/, ''))))
    .join('');
}

const CHILD_ENV = 'LDM_CLI_CHILD';
const TTY_ENV = 'LDM_CLI_STDERR_COLUMNS';

/** Whether this process should re-run itself with filtered stderr. */
export function wantsFilteredStderr(argv: readonly string[]): boolean {
  if (process.env[CHILD_ENV] || process.env.LDM_VERBOSE === '1') return false;
  if (argv.includes('--verbose')) return false;
  return argv[0] === 'generate' || argv[0] === 'bench';
}

/** In the child: treat the piped stderr as the terminal the parent has, so progress bars draw. */
export function adoptParentTerminal(): void {
  const cols = Number(process.env[TTY_ENV]);
  if (!process.env[CHILD_ENV] || !(cols > 0)) return;
  const err = process.stderr as NodeJS.WriteStream & { columns: number };
  Object.defineProperty(err, 'isTTY', { value: true, configurable: true });
  Object.defineProperty(err, 'columns', { value: cols, configurable: true });
}

/** Runs this command again as a child with stderr filtered; resolves to the exit code to use. */
export function runWithFilteredStderr(script: string, argv: readonly string[]): Promise<number> {
  const env: NodeJS.ProcessEnv = { ...process.env, [CHILD_ENV]: '1' };
  if (process.stderr.isTTY) env[TTY_ENV] = String(process.stderr.columns || 80);
  const child = spawn(process.execPath, [...process.execArgv, script, ...argv], { stdio: ['inherit', 'inherit', 'pipe'], env });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => {
    const kept = filterDriverNoise(s);
    if (kept) process.stderr.write(kept);
  });
  // Ctrl-C reaches the whole process group (the child too); a signal sent to this process alone is
  // passed on. The child treats a repeated SIGINT like the first.
  const forward = (sig: NodeJS.Signals) => () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
  };
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return new Promise((resolve) => {
    child.on('error', (e) => {
      process.stderr.write(`ldm-webgpu: cannot start ${process.execPath}: ${e.message}\n`);
      resolve(1);
    });
    child.on('close', (code, signal) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      if (signal === 'SIGINT') resolve(130);
      else if (signal) resolve(128 + (signal === 'SIGTERM' ? 15 : signal === 'SIGKILL' ? 9 : 1));
      else resolve(code ?? 1);
    });
  });
}
