// Direct (loop-nest) float64 convolution, PyTorch semantics: NCHW input, [Cout, Cin/groups, kH, kW]
// weights, zero padding [top, bottom, left, right], stride, dilation, groups.

export interface RefConvOpts {
  stride?: [number, number];
  padding?: [number, number, number, number];
  dilation?: [number, number];
  groups?: number;
}

export function conv2dRef(
  x: ArrayLike<number>,
  xShape: readonly number[],
  w: ArrayLike<number>,
  wShape: readonly number[],
  b: ArrayLike<number> | null,
  o: RefConvOpts = {},
  residual?: ArrayLike<number>,
): { data: Float64Array; shape: [number, number, number, number] } {
  const [n, cin, h, wd] = xShape;
  const [cout, cinG, kh, kw] = wShape;
  const [sh, sw] = o.stride ?? [1, 1];
  const [pt, pb, pl, pr] = o.padding ?? [0, 0, 0, 0];
  const [dh, dw] = o.dilation ?? [1, 1];
  const groups = o.groups ?? 1;
  if (cinG * groups !== cin || cout % groups) throw new Error('conv2dRef: bad shapes');
  const ho = Math.floor((h + pt + pb - dh * (kh - 1) - 1) / sh) + 1;
  const wo = Math.floor((wd + pl + pr - dw * (kw - 1) - 1) / sw) + 1;
  const coutG = cout / groups;
  const out = new Float64Array(n * cout * ho * wo);
  for (let b0 = 0; b0 < n; b0++) {
    for (let co = 0; co < cout; co++) {
      const g = Math.floor(co / coutG);
      for (let oy = 0; oy < ho; oy++) {
        for (let ox = 0; ox < wo; ox++) {
          let s = b ? b[co] : 0;
          for (let ci = 0; ci < cinG; ci++) {
            const c = g * cinG + ci;
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * sh - pt + ky * dh;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * sw - pl + kx * dw;
                if (ix < 0 || ix >= wd) continue;
                s += x[((b0 * cin + c) * h + iy) * wd + ix] * w[((co * cinG + ci) * kh + ky) * kw + kx];
              }
            }
          }
          const idx = ((b0 * cout + co) * ho + oy) * wo + ox;
          out[idx] = s + (residual ? residual[idx] : 0);
        }
      }
    }
  }
  return { data: out, shape: [n, cout, ho, wo] };
}
