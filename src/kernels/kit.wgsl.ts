// The WGSL pieces every kernel shares: the flat-index entry point with its bounds guard, and the
// activation functions (one definition of erf / GELU / SiLU / QuickGELU for every kernel that
// applies one, so a fix or a faster approximation lands everywhere at once).
//
// Kernels stay plain WGSL templates: these helpers return WGSL text to splice in, nothing more.

/** Threads per workgroup of the flat kernels; launchers pair it with `grid1d`. */
export const FLAT_WG = 256;

/**
 * `main` for kernels with one thread per flat index. The launcher spreads the workgroups over x
 * and y (grid1d), so the linear workgroup index is wid.y * nwg.x + wid.x; threads past `limit`
 * (a WGSL u32 expression, usually `p.n`) return at once. `body` sees the index as `i` and the
 * thread's slot in its workgroup as `lid`.
 */
export function flatMain(limit: string, body: string): string {
  return /* wgsl */ `
@compute @workgroup_size(${FLAT_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${FLAT_WG}u + lid;
  if (i >= ${limit}) { return; }
${body}
}
`;
}

/** The fused activations a kernel epilogue can apply (diffusers / transformers names). */
export const ACTIVATIONS = ['none', 'silu', 'gelu', 'quickGelu'] as const;
export type Activation = (typeof ACTIVATIONS)[number];

/** Rough FLOPs per element of each activation, for the cost functions. */
export const ACTIVATION_FLOPS: Record<Activation, number> = { none: 0, silu: 4, gelu: 20, quickGelu: 4 };

export function isActivation(a: unknown): a is Activation {
  return typeof a === 'string' && (ACTIVATIONS as readonly string[]).includes(a);
}

/**
 * `fn erf_approx(v: F) -> F` for F = f32 or vec4<f32>: Abramowitz & Stegun 7.1.26, |error| <
 * 1.5e-7, below the rounding noise of an f32 GELU (WGSL has no erf built-in).
 */
export function erfWgsl(F: 'f32' | 'vec4<f32>' = 'f32'): string {
  return /* wgsl */ `
fn erf_approx(v: ${F}) -> ${F} {
  let s = sign(v);
  let a = abs(v);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return s * (1.0 - poly * exp(-a * a));
}
`;
}

/** The activation of `v` as a WGSL expression (GELU calls erf_approx: splice `erfWgsl` in too). */
export function activationExpr(act: Activation, v: string): string {
  switch (act) {
    case 'none':
      return v;
    case 'silu':
      return `${v} / (1.0 + exp(-${v}))`;
    case 'gelu':
      return `0.5 * ${v} * (1.0 + erf_approx(${v} * 0.70710678118654752))`;
    case 'quickGelu':
      // CLIP's x * sigmoid(1.702 x)
      return `${v} / (1.0 + exp(-1.702 * ${v}))`;
  }
}

/** `fn <name>(v: F) -> F` applying `act` (with erf_approx when GELU needs it); '' for 'none'. */
export function activationWgsl(act: Activation, F: 'f32' | 'vec4<f32>' = 'f32', name = 'act'): string {
  if (act === 'none') return '';
  return `${act === 'gelu' ? erfWgsl(F) : ''}
fn ${name}(v: ${F}) -> ${F} { return ${activationExpr(act, 'v')}; }
`;
}
