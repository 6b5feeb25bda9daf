// StableDiffusionPipeline is reached lazily: through the public index when it exports it, else
// through its module file (running from source). A build without it still runs LDM folders and
// says clearly why a Stable Diffusion folder cannot run.
import type { Engine } from '../runtime/engine.js';
import type { PipelineOutput } from '../pipelines/ldm.js';
import type { StepInfo } from '../pipelines/common.js';

export interface SDGenerateOptions {
  prompt: string | string[];
  negativePrompt?: string | string[];
  steps?: number;
  guidanceScale?: number;
  seed?: number;
  width?: number;
  height?: number;
  sampler?: string;
  signal?: AbortSignal;
  onStep?: (s: StepInfo) => void | Promise<void>;
  preview?: boolean;
}

export interface SDPipelineLike {
  generate(opts: SDGenerateOptions): Promise<PipelineOutput>;
  dispose(): void;
  decodeLatents?(z: unknown): unknown;
  /** the folder's scheduler (its _class_name goes into the PNG's parameters) */
  scheduler?: { config: Record<string, unknown> };
}

export interface SDPipelineClass {
  fromPretrained(engine: Engine, pathOrUrl: string, opts?: Record<string, unknown>): Promise<SDPipelineLike>;
}

export async function loadStableDiffusion(): Promise<SDPipelineClass> {
  const tried: string[] = [];
  try {
    const lib = (await import('../index.js')) as Record<string, unknown>;
    if (lib.StableDiffusionPipeline) return lib.StableDiffusionPipeline as SDPipelineClass;
    tried.push('the package index does not export StableDiffusionPipeline');
  } catch (e) {
    tried.push((e as Error).message);
  }
  // A computed specifier: bundlers leave it alone, so a build without the module still builds.
  const spec = ['..', 'models', 'pipelines', 'stable_diffusion.js'].join('/');
  try {
    const mod = (await import(/* @vite-ignore */ spec)) as Record<string, unknown>;
    if (mod.StableDiffusionPipeline) return mod.StableDiffusionPipeline as SDPipelineClass;
    tried.push(`${spec} has no StableDiffusionPipeline export`);
  } catch (e) {
    tried.push(`${spec}: ${(e as Error).message.split('\n')[0]}`);
  }
  throw new Error(`this build of ldm-webgpu has no StableDiffusionPipeline (${tried.join('; ')}); LDMPipeline folders such as models/ldm-mnist work`);
}
