// `ldm-webgpu generate`: loads a pipeline folder (LDMPipeline, or StableDiffusionPipeline /
// StableDiffusionXLPipeline when the folder's model_index.json says so), denoises with a progress bar on stderr and writes PNGs that
// carry their generation parameters (src/image/png_metadata.ts), so `--from x.png` reruns one.
import { ConfigReader } from '../runtime/config.js';
import cliProgress from 'cli-progress';
import { Engine } from '../runtime/engine.js';
import { LDMPipeline } from '../pipelines/ldm.js';
import { isSafetensorsName, joinPath, readJson } from '../runtime/io.js';
import { createScheduler, type RgbaImage, type StepInfo } from '../pipelines/common.js';
import { StableDiffusionPipeline } from '../pipelines/stable_diffusion.js';
import { StableDiffusionXLPipeline } from '../pipelines/stable_diffusion_xl.js';
import type { Tensor } from '../runtime/tensor.js';
import type { GenerateArgs } from './args.js';
import { encodePng, outputNames, writeFileAtomic } from './output.js';
import { readFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import { withGenerationParameters, type GenerationParameters } from '../image/png_metadata.js';
import { describeDefaults, detectFamily, familyConflict, withFamilyDefaults } from './families.js';
import { openSingleFile } from '../loaders/single_file.js';
import { SD15_SCHEDULER, SD15_TEXT_ENCODER, SD15_UNET, SD15_VAE, SDXL_REFINER_UNET, SDXL_SCHEDULER, SDXL_TEXT_ENCODER_2, SDXL_UNET, SDXL_VAE, sd2Configs, singleFileFamily } from '../pipelines/sd_configs.js';
import type { Config } from '../runtime/config.js';
import type { IOOptions } from '../runtime/io.js';

export { encodePng, outputNames } from './output.js';

function bar(format: string): cliProgress.SingleBar {
  return new cliProgress.SingleBar(
    { format, stream: process.stderr, hideCursor: true, clearOnComplete: false, etaBuffer: 20, fps: 10 },
    cliProgress.Presets.shades_classic,
  );
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);

/**
 * Why `steps` cannot run with this scheduler config (and sampler), or null. Checked before loading:
 * e.g. DDIM with steps_offset 1 makes timestep 1000 at 1000 steps, past num_train_timesteps - 1,
 * which would otherwise fail only at the first step.
 */
export function stepsProblem(schedulerConfig: Record<string, unknown>, sampler: string | undefined, steps: number): string | null {
  const check = (n: number): string | null => {
    let ts: readonly number[];
    let T: number;
    try {
      const s = createScheduler(schedulerConfig, sampler);
      s.setTimesteps(n);
      ts = s.timesteps;
      T = s.numTrainTimesteps;
    } catch (e) {
      return (e as Error).message;
    }
    const bad = ts.find((t) => !(t >= 0 && t <= T - 1));
    return bad === undefined ? null : `makes timestep ${bad}, outside 0..${T - 1} (num_train_timesteps ${T})`;
  };
  const why = check(steps);
  if (why === null) return null;
  let ok = 0;
  for (let n = steps - 1; n >= 1 && !ok; n--) if (check(n) === null) ok = n;
  const name = sampler ?? String(schedulerConfig._class_name ?? 'the scheduler');
  return `--steps ${steps} does not work with ${name} and this model's scheduler config: ${why}${ok ? `; use --steps ${ok} or fewer` : ''}`;
}

/**
 * A fetch that says what it is waiting for: when a server has not answered after `quietMs`, a line
 * on stderr names the URL (again every 10 s), so a stalled download is not a silent hang.
 */
export function announcingFetch(inner: typeof fetch = globalThis.fetch, quietMs = 3000): typeof fetch {
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const t0 = performance.now();
    let timer = setTimeout(function tell() {
      process.stderr.write(`\nwaiting for ${url} (no answer for ${((performance.now() - t0) / 1000).toFixed(0)} s; Ctrl-C cancels)\n`);
      timer = setTimeout(tell, 10_000);
    }, quietMs);
    try {
      return await inner(input, init);
    } finally {
      clearTimeout(timer);
    }
  }) as typeof fetch;
}

export async function runGenerate(args: GenerateArgs): Promise<number> {
  const abort = new AbortController();
  // Installed first, so Ctrl-C while the model is still downloading also ends with 130. It stays on
  // (a repeated SIGINT, e.g. one forwarded by the parent process, is the same request).
  const onSigint = () => abort.abort();
  process.on('SIGINT', onSigint);
  try {
    if (args.ckpt) return await (await import('./original.js')).generateOriginal(args, abort);
    return await generateWith(args, abort);
  } catch (e) {
    if (abort.signal.aborted) throw Object.assign(new Error('cancelled'), { name: 'AbortError', cause: e });
    throw e;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/**
 * A Stable Diffusion single file: the component configs (--config JSON over the defaults of the family
 * its keys tell: SD 1.5's, SD 2.1's with --prediction-type, or SDXL's: base with both text encoders,
 * refiner with bigG only), checked before anything loads, and a model_index stand-in for the family guess.
 */
type SingleComponent = 'unet' | 'vae' | 'text_encoder' | 'text_encoder_2' | 'scheduler';
async function singleFileConfigs(args: GenerateArgs, io: IOOptions): Promise<{ index: Record<string, unknown>; configs: Partial<Record<SingleComponent, Config>> & Record<'unet' | 'vae' | 'scheduler', Config> }> {
  if (!args.tokenizer && args.prompt !== undefined) throw new Error(`${args.model}: a single file holds no tokenizer: add --tokenizer <folder with vocab.json and merges.txt>`);
  const file = await openSingleFile(args.model, io);
  let fam: 'sd1' | 'sd2' | 'sdxl' | 'sdxl-refiner';
  try {
    const names = file.names();
    // sgm checkpoints: the base has CLIP-L as embedders.0 and bigG as embedders.1, the refiner bigG only
    if (names.some((n) => n.startsWith('conditioner.embedders.'))) fam = names.some((n) => n.startsWith('conditioner.embedders.1.model.')) ? 'sdxl' : 'sdxl-refiner';
    else if (!names.some((n) => n.startsWith('model.diffusion_model.'))) throw new Error(`${args.model}: no model.diffusion_model.* tensors: not a Stable Diffusion single-file checkpoint`);
    else fam = singleFileFamily(names, (n) => file.info(n)?.shape);
  } finally {
    await file.close();
  }
  if (fam === 'sd1' && args.predictionType) throw new Error(`${args.model}: --prediction-type chooses between SD 2.x models; this is an SD 1.x checkpoint`);
  const sdxl = fam === 'sdxl' || fam === 'sdxl-refiner';
  const known: SingleComponent[] = sdxl ? ['unet', 'vae', 'text_encoder', 'text_encoder_2', 'scheduler'] : ['unet', 'vae', 'text_encoder', 'scheduler'];
  const given = (args.config ? await readJson(args.config, io) : {}) as Record<string, Config>;
  for (const [k, c] of Object.entries(given)) {
    if (!(known as string[]).includes(k)) throw new Error(`--config ${args.config}: unknown component "${k}" (${known.join(', ')})`);
    if (!c || typeof c !== 'object' || Array.isArray(c)) throw new Error(`--config ${args.config}: "${k}" must be a config object`);
  }
  if (sdxl) {
    const refiner = fam === 'sdxl-refiner';
    // SDXL's scheduler is epsilon; --prediction-type serves the v-prediction finetunes
    const scheduler = given.scheduler ?? (args.predictionType ? { ...SDXL_SCHEDULER, prediction_type: args.predictionType } : SDXL_SCHEDULER);
    return {
      index: { _class_name: refiner ? 'StableDiffusionXLImg2ImgPipeline' : 'StableDiffusionXLPipeline', unet: ['diffusers', 'UNet2DConditionModel'] },
      configs: {
        unet: given.unet ?? (refiner ? SDXL_REFINER_UNET : SDXL_UNET),
        vae: given.vae ?? SDXL_VAE,
        ...(refiner ? {} : { text_encoder: given.text_encoder ?? SD15_TEXT_ENCODER }),
        text_encoder_2: given.text_encoder_2 ?? SDXL_TEXT_ENCODER_2,
        scheduler,
      },
    };
  }
  const d = fam === 'sd2' ? sd2Configs({ predictionType: args.predictionType }) : { unet: SD15_UNET, vae: SD15_VAE, textEncoder: SD15_TEXT_ENCODER, scheduler: SD15_SCHEDULER };
  return {
    index: { _class_name: 'StableDiffusionPipeline', unet: ['diffusers', 'UNet2DConditionModel'] },
    configs: { unet: given.unet ?? d.unet, vae: given.vae ?? d.vae, text_encoder: given.text_encoder ?? d.textEncoder, scheduler: given.scheduler ?? d.scheduler },
  };
}

async function generateWith(given: GenerateArgs, abort: AbortController): Promise<number> {
  const fetch = announcingFetch();
  const io = { fetch, signal: abort.signal, timeoutMs: given.timeoutMs };
  const single = isSafetensorsName(given.model) ? await singleFileConfigs(given, io) : null;
  const index = single?.index ?? (await readJson(joinPath(given.model, 'model_index.json'), io));
  const kind = String(index._class_name ?? '');
  const schedulerConfig = single?.configs.scheduler ?? (await readJson(joinPath(given.model, 'scheduler', 'scheduler_config.json'), io));
  // the family's defaults fill what the command line left out (--family, else guessed from the folder)
  let family = given.family;
  if (family || !given.exact) {
    const unetConfig = single ? single.configs.unet : kind && Array.isArray(index.unet) ? await readJson(joinPath(given.model, 'unet', 'config.json'), io).catch(() => null) : null;
    // a family given that contradicts the folder stops here, before the engine starts
    const conflict = family ? familyConflict(family, index, unetConfig) : null;
    if (conflict) throw new Error(conflict);
    family ??= detectFamily(index, schedulerConfig, unetConfig);
  }
  const args = family ? withFamilyDefaults(given, family) : { ...given, steps: given.steps ?? 20 };
  if (family) process.stderr.write(`family: ${family}${given.family ? '' : ` (guessed from the ${single ? "file's keys" : 'folder'}; --family to change)`}: ${describeDefaults(args)}\n`);
  const badSteps = stepsProblem(schedulerConfig, args.sampler, args.steps);
  if (badSteps) throw new Error(badSteps);
  // image-to-image and the refiner handoff: checked before the engine starts
  const isSdxl = kind === 'StableDiffusionXLPipeline' || kind === 'StableDiffusionXLImg2ImgPipeline';
  if (kind === 'StableDiffusionXLImg2ImgPipeline' && !args.initImage) {
    throw new Error(`${args.model} is an SDXL refiner (StableDiffusionXLImg2ImgPipeline): it refines an image: give --init-image, or pass it as --refiner of an SDXL base --model`);
  }
  if (args.initImage && !(isSdxl || kind === 'StableDiffusionPipeline' || kind === 'LatentConsistencyModelPipeline')) throw new Error(`--init-image applies to Stable Diffusion / SDXL folders; ${args.model} is a ${kind || 'LDMPipeline'}`);
  if (args.refiner) {
    if (kind !== 'StableDiffusionXLPipeline') throw new Error(`--refiner takes over from an SDXL base (a StableDiffusionXLPipeline folder as --model); ${args.model} is a ${kind || 'LDMPipeline'}`);
    const rk = String((await readJson(joinPath(args.refiner, 'model_index.json'), io))._class_name ?? '');
    if (rk !== 'StableDiffusionXLImg2ImgPipeline' && rk !== 'StableDiffusionXLPipeline') throw new Error(`--refiner ${args.refiner}: model_index.json names ${rk || 'no pipeline'}; an SDXL refiner is a StableDiffusionXLImg2ImgPipeline folder`);
  }
  const init = args.initImage ? readInitImage(args.initImage, args.batch ?? 1) : undefined;
  if (args.seedWasRandom) process.stderr.write(`seed: ${args.seed} (random)\n`);
  const t0 = performance.now();
  const engine = await Engine.create({ f16: args.f16 });
  const info = engine.info();
  process.stderr.write(`adapter: ${info.name} (${info.backend}${info.f16 ? ', f16' : ''})\n`);

  const load = bar('loading {component} |{bar}| {loadedMiB}/{totalMiB} MiB');
  let loadStarted = false;
  const onComponentProgress = (component: string, loaded: number, total: number) => {
    if (!loadStarted) {
      load.start(total, 0, { component, loadedMiB: mib(loaded), totalMiB: mib(total) });
      loadStarted = true;
    }
    load.setTotal(Math.max(total, 1));
    load.update(loaded, { component: component.padEnd(6), loadedMiB: mib(loaded), totalMiB: mib(total) });
  };
  const steps = bar('denoising |{bar}| step {value}/{total} t={timestep} {duration_formatted} ETA {eta_formatted}');
  let stepsStarted = false;
  const onStep = (s: StepInfo) => {
    if (!stepsStarted || s.step === 1) {
      steps.start(s.total, 0, { timestep: s.timestep });
      stepsStarted = true;
    }
    steps.update(s.step, { timestep: s.timestep });
  };

  let images: RgbaImage[];
  // What went into the run, for the PNG chunks: the effective guidance and the folder's scheduler.
  let guidanceScale = 0;
  let ownScheduler = '';
  try {
    if (kind === 'StableDiffusionPipeline' || kind === 'LatentConsistencyModelPipeline' || isSdxl) {
      if (args.classLabels) throw new Error(`${args.model} is a ${kind}: give --prompt, not --class`);
      // the two take the same generate() options for what the CLI sets; an LCM folder (SD components,
      // an LCM-distilled UNet) runs in StableDiffusionPipeline, which embeds the guidance scale
      const cls = isSdxl ? StableDiffusionXLPipeline : StableDiffusionPipeline;
      const loadOpts = { onComponentProgress, signal: abort.signal, fetch, timeoutMs: args.timeoutMs };
      const lo = { ...loadOpts, loras: args.loras };
      const singleOpts = single && {
        ...lo,
        unetConfig: single.configs.unet,
        vaeConfig: single.configs.vae,
        textEncoderConfig: single.configs.text_encoder,
        textEncoder2Config: single.configs.text_encoder_2,
        schedulerConfig: single.configs.scheduler,
        tokenizer: args.tokenizer,
      };
      const pipe = singleOpts && isSdxl
        ? await StableDiffusionXLPipeline.fromSingleFile(engine, args.model, singleOpts)
        : singleOpts
        ? await StableDiffusionPipeline.fromSingleFile(engine, args.model, singleOpts)
        : await cls.fromPretrained(engine, args.model, lo);
      if (loadStarted) load.stop();
      if ('loraReport' in pipe && pipe.loraReport) {
        const r = pipe.loraReport;
        process.stderr.write(`LoRA: ${r.applied.length} layer(s) merged${r.ignored.length ? `, ${r.ignored.length} key(s) ignored` : ''}\n`);
      }
      // A batch is one prompt per image.
      const n = args.batch ?? 1;
      guidanceScale = args.guidance ?? 7.5;
      ownScheduler = pipe.scheduler?.className ?? '';
      const common = {
        prompt: Array(n).fill(args.prompt ?? ''),
        negativePrompt: args.negativePrompt === undefined ? undefined : Array(n).fill(args.negativePrompt),
        steps: args.steps,
        guidanceScale,
        seed: args.seed,
        sampler: args.sampler,
        signal: abort.signal,
        onStep,
      };
      let handoff: Tensor | null = null;
      try {
        const image = init ? engine.tensor(init.data, init.shape) : undefined;
        try {
          const out = await pipe.generate({
            ...common,
            width: args.width,
            height: args.height,
            ...(image ? { image, strength: args.strength } : {}),
            // the SDXL base of a handoff stops early and returns its latents
            ...(args.refiner ? { denoisingEnd: args.denoisingEnd ?? 0.8, outputType: 'latent' as const } : {}),
          });
          images = out.rgba;
          if (args.refiner) handoff = out.images;
          else out.images.dispose();
        } finally {
          image?.dispose();
        }
      } catch (e) {
        handoff?.dispose();
        throw e;
      } finally {
        pipe.dispose();
      }
      if (handoff) {
        const latents = handoff;
        try {
          if (stepsStarted) steps.stop();
          loadStarted = false;
          const refiner = await StableDiffusionXLPipeline.fromPretrained(engine, args.refiner!, loadOpts);
          if (loadStarted) load.stop();
          try {
            process.stderr.write(`refiner: ${args.refiner} from ${args.denoisingEnd ?? 0.8} of the schedule\n`);
            const out = await refiner.generate({ ...common, image: latents, denoisingStart: args.denoisingEnd ?? 0.8 });
            images = out.rgba;
            out.images.dispose();
          } finally {
            refiner.dispose();
          }
        } finally {
          latents.dispose();
        }
      }
    } else if (kind === 'LDMPipeline' || kind === '') {
      if (args.prompt !== undefined) throw new Error(`${args.model} is an ${kind || 'LDM'} folder (no text encoder): use --class, not --prompt`);
      if (args.loras) throw new Error(`${args.model} is an ${kind || 'LDM'} folder: --lora applies to Stable Diffusion folders`);
      const pipe = await LDMPipeline.fromPretrained(engine, args.model, { onComponentProgress, signal: abort.signal, fetch, timeoutMs: args.timeoutMs });
      if (loadStarted) load.stop();
      try {
        const latent = new ConfigReader('UNet2DModel', pipe.unet.config).sampleSize(64)[0];
        const first = (pipe.vqvae ?? pipe.vae)!;
        const factor = 2 ** ((first.config.block_out_channels as number[] | undefined)?.length ?? 4) / 2;
        const native = latent * factor;
        if ((args.width !== undefined && args.width !== native) || (args.height !== undefined && args.height !== native)) {
          throw new Error(`this LDMPipeline generates ${native}x${native} images only (the UNet's sample_size ${latent}); drop --width/--height`);
        }
        const classes = pipe.numClasses;
        if (args.classLabels && !classes) throw new Error(`${args.model}: the UNet is unconditional; drop --class`);
        if (args.classLabels && classes) {
          // The last class is the null class used for guidance; only the ones before it are real.
          for (const c of args.classLabels) if (c > classes - 2) throw new Error(`--class ${c}: this model has classes 0..${classes - 2}`);
        }
        guidanceScale = classes ? args.guidance ?? 3 : 1;
        ownScheduler = pipe.scheduler.className;
        const out = await pipe.generate({
          classLabels: args.classLabels,
          batchSize: args.classLabels ? undefined : args.batch,
          steps: args.steps,
          guidanceScale,
          seed: args.seed,
          sampler: args.sampler,
          signal: abort.signal,
          onStep,
        });
        images = out.rgba;
        out.images.dispose();
      } finally {
        pipe.dispose();
      }
    } else {
      throw new Error(`${args.model}: model_index.json names ${kind}, which this CLI does not run (LDMPipeline, StableDiffusionPipeline, LatentConsistencyModelPipeline, StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline)`);
    }
  } finally {
    if (loadStarted) load.stop();
    if (stepsStarted) steps.stop();
  }
  const params = (i: number): GenerationParameters => ({
    model: args.modelLabel,
    ...(args.prompt !== undefined ? { prompt: args.prompt, negativePrompt: args.negativePrompt } : { classLabels: args.classLabels }),
    steps: args.steps,
    sampler: args.sampler,
    guidanceScale,
    seed: args.seed,
    width: images[i].width,
    height: images[i].height,
    batchSize: images.length,
    batchIndex: i,
    f16: engine.f16,
    ...(args.loras ? { loras: args.loras } : {}),
    ...(args.initImage !== undefined ? { initImage: args.initImage, ...(args.strength !== undefined ? { strength: args.strength } : {}) } : {}),
    ...(args.refiner !== undefined ? { refiner: args.refiner, denoisingEnd: args.denoisingEnd ?? 0.8 } : {}),
  });
  // A rerun of one image of a batch (--from) writes that image only.
  const chosen = args.batchIndex !== undefined && args.batchIndex < images.length ? [args.batchIndex] : images.map((_, i) => i);
  const names = outputNames(args.out, chosen.length);
  chosen.forEach((i, k) => writeFileAtomic(names[k], withGenerationParameters(encodePng(images[i]), params(i), ownScheduler)));
  process.stderr.write(`wrote ${names.join(', ')} (${images[0].width}x${images[0].height}) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  return 0;
}

/** --init-image: a PNG (any bit depth / colour type pngjs reads) -> [batch, 3, H, W] in [0, 1], the
 * image repeated for each image of the batch; alpha is dropped. */
export function readInitImage(file: string, batch: number): { data: Float32Array; shape: number[] } {
  let png: PNG;
  try {
    png = PNG.sync.read(readFileSync(file));
  } catch (e) {
    throw new Error(`--init-image ${file}: ${(e as Error).message}`);
  }
  const { width: W, height: H, data: rgba } = png;
  const plane = H * W;
  const one = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) one[c * plane + p] = rgba[4 * p + c] / 255;
  const data = new Float32Array(batch * one.length);
  for (let b = 0; b < batch; b++) data.set(one, b * one.length);
  return { data, shape: [batch, 3, H, W] };
}
