// Compiles WGSL once per (source, override constants) and derives each kernel's bindings from the
// WGSL itself with wgsl_reflect, so a launcher binds buffers by name and cannot bind the wrong one.
import { WgslReflect } from 'wgsl_reflect/wgsl_reflect.module.js';
import type { DType } from './dtype.js';

export interface BindingInfo {
  name: string;
  binding: number;
  kind: 'storage' | 'read-only-storage' | 'uniform';
}

export interface UniformField {
  name: string;
  offset: number;
  /** scalar type of the member (vectors are written from number arrays) */
  scalar: 'u32' | 'i32' | 'f32';
  count: number;
}

export interface CompiledKernel {
  name: string;
  id: number;
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  bindings: BindingInfo[];
  /** the single uniform block, bound with a dynamic offset */
  uniform?: { binding: number; size: number; fields: Map<string, UniformField> };
}

/** A kernel source: WGSL text in which `T` is the storage scalar type (f32 or f16). */
export interface KernelSource {
  name: string;
  wgsl: string;
  entryPoint?: string;
}

/** The one template rule of this engine: a prelude that defines `T` (and enables f16 when used). */
export function withDtype(wgsl: string, dtype: DType): string {
  // A kernel's own directives (`enable subgroups;`) must precede the aliases.
  const directives: string[] = [];
  const body = wgsl.replace(/^\s*enable [a-z0-9_, ]+;\n/gm, (d) => (directives.push(d.trim()), ''));
  const head = directives.length ? directives.join('\n') + '\n' : '';
  if (dtype === 'f16') return `enable f16;\n${head}alias T = f16;\nalias T4 = vec4<f16>;\n${body}`;
  return `${head}alias T = f32;\nalias T4 = vec4<f32>;\n${body}`;
}

let nextId = 1;

export class PipelineCache {
  private cache = new Map<string, CompiledKernel>();
  compiles = 0;

  constructor(private device: GPUDevice) {}

  get(src: KernelSource, dtype: DType, constants: Record<string, number> = {}): CompiledKernel {
    const key = `${src.name}|${dtype}|${JSON.stringify(constants)}|${src.wgsl}`;
    let k = this.cache.get(key);
    if (!k) {
      k = this.compile(src, dtype, constants);
      this.cache.set(key, k);
    }
    return k;
  }

  private compile(src: KernelSource, dtype: DType, constants: Record<string, number>): CompiledKernel {
    const code = withDtype(src.wgsl, dtype === 'i32' ? 'f32' : dtype);
    const reflect = new WgslReflect(code);
    const bindings: BindingInfo[] = [];
    for (const s of reflect.storage) {
      if (s.group !== 0) throw new Error(`kernel ${src.name}: only @group(0) is supported`);
      bindings.push({ name: s.name, binding: s.binding, kind: s.access === 'read' ? 'read-only-storage' : 'storage' });
    }
    let uniform: CompiledKernel['uniform'];
    if (reflect.uniforms.length > 1) throw new Error(`kernel ${src.name}: at most one uniform block`);
    for (const u of reflect.uniforms) {
      const fields = new Map<string, UniformField>();
      const st = u.type as unknown as { members?: { name: string; offset: number; size: number; type: { name: string; format?: { name: string } } }[] };
      for (const m of st.members ?? []) {
        const scalarName = (m.type.format?.name ?? m.type.name) as string;
        const scalar = (scalarName === 'u32' || scalarName === 'i32' || scalarName === 'f32' ? scalarName : 'f32') as UniformField['scalar'];
        fields.set(m.name, { name: m.name, offset: m.offset, scalar, count: m.size / 4 });
      }
      uniform = { binding: u.binding, size: u.size, fields };
      bindings.push({ name: u.name, binding: u.binding, kind: 'uniform' });
    }
    bindings.sort((a, b) => a.binding - b.binding);
    const layout = this.device.createBindGroupLayout({
      label: src.name,
      entries: bindings.map((b) => ({
        binding: b.binding,
        visibility: 4 /* GPUShaderStage.COMPUTE */,
        buffer: b.kind === 'uniform' ? { type: 'uniform', hasDynamicOffset: true } : { type: b.kind },
      })),
    });
    const module = this.device.createShaderModule({ label: src.name, code });
    const pipeline = this.device.createComputePipeline({
      label: src.name,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: src.entryPoint ?? 'main', constants },
    });
    this.compiles++;
    return { name: src.name, id: nextId++, pipeline, layout, bindings, uniform };
  }
}
