/**
 * The per-sub-block fits of ggml's k-quant reference quantizers, reproduced operation by
 * operation in float32 (./ggmlFloat.ts) so the chosen codes and scales are ggml's:
 *
 *   fitMinScale   (q2_k, q4_k, q5_k) asymmetric codes 0..nmax, weighted search over a few
 *                 scales for the least-error (scale, min)
 *   fitSymmetric3 (q3_k)            codes −nmax..nmax−1, iterated weighted least squares
 *   fitSymmetric  (q6_k)            codes −nmax..nmax−1, best of 19 trial scales
 */
import { clamp, f, GROUP_MAX_EPS, nearestInt } from './ggmlFloat';

/**
 * Asymmetric fit of x[0, n) with weights w: codes into L, returns the scale and
 * writes the (positive) min into minOut[0]; the value is scale·L − min.
 */
export function fitMinScale(
  n: number, nmax: number, x: Float32Array, w: Float32Array, L: Uint8Array, laux: Uint8Array,
  rmin: number, rdelta: number, nstep: number, useMad: boolean, minOut: Float32Array,
): number {
  let min = x[0];
  let max = x[0];
  let sumW = w[0];
  let sumX = f(sumW * x[0]);
  for (let i = 1; i < n; i++) {
    const v = x[i];
    if (v < min) min = v;
    if (v > max) max = v;
    sumW = f(sumW + w[i]);
    sumX = f(sumX + f(w[i] * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    for (let i = 0; i < n; i++) L[i] = 0;
    minOut[0] = -min;
    return 0;
  }
  // min moves to each better fit's min, and later trial scales start from it, as in ggml.
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = clamp(nearestInt(f(iscale * f(x[i] - min))), 0, nmax);
    L[i] = l;
    let diff = f(f(f(scale * l) + min) - x[i]);
    diff = useMad ? Math.abs(diff) : f(diff * diff);
    bestError = f(bestError + f(w[i] * diff));
  }
  if (nstep < 1) {
    minOut[0] = -min;
    return scale;
  }
  for (let is = 0; is <= nstep; is++) {
    iscale = f(f(f(f(rmin) + f(f(rdelta) * is)) + nmax) / f(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = clamp(nearestInt(f(iscale * f(x[i] - min))), 0, nmax);
      laux[i] = l;
      const wl = f(w[i] * l);
      sumL = f(sumL + wl);
      sumL2 = f(sumL2 + f(wl * l));
      sumXL = f(sumXL + f(wl * x[i]));
    }
    const D = f(f(sumW * sumL2) - f(sumL * sumL));
    if (D > 0) {
      let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / D);
      let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = f(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        let diff = f(f(f(thisScale * laux[i]) + thisMin) - x[i]);
        diff = useMad ? Math.abs(diff) : f(diff * diff);
        curError = f(curError + f(w[i] * diff));
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[i] = laux[i];
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  minOut[0] = -min;
  return scale;
}

/** The signed value of largest magnitude in x[0, n) (the first such), and its magnitude. */
function signedMax(n: number, x: Float32Array): { max: number; amax: number } {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  return { max, amax };
}

/**
 * q3_k's symmetric fit with weights x², refined by up to 5 passes that move single codes
 * while the weighted least-squares fit improves. Codes (plus nmax) into L; returns the scale.
 */
export function fitSymmetric3(n: number, nmax: number, x: Float32Array, L: Int8Array): number {
  const { max, amax } = signedMax(n, x);
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[i] = 0;
    return 0;
  }
  const iscale = f(-nmax / max);
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[i];
    const l = clamp(nearestInt(f(iscale * v)), -nmax, nmax - 1);
    L[i] = l;
    const w = f(v * v);
    sumlx = f(sumlx + f(f(w * v) * l));
    suml2 = f(suml2 + f(f(w * l) * l));
  }
  for (let itry = 0; itry < 5; itry++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const v = x[i];
      const w = f(v * v);
      const li = L[i];
      let slx = f(sumlx - f(f(w * v) * li));
      if (slx > 0) {
        let sl2 = f(suml2 - f(f(w * li) * li));
        const nl = clamp(nearestInt(f(f(v * sl2) / slx)), -nmax, nmax - 1);
        if (nl !== li) {
          slx = f(slx + f(f(w * v) * nl));
          sl2 = f(sl2 + f(f(w * nl) * nl));
          if (sl2 > 0 && f(f(slx * slx) * suml2) > f(f(sumlx * sumlx) * sl2)) {
            L[i] = nl;
            sumlx = slx;
            suml2 = sl2;
            changed++;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (let i = 0; i < n; i++) L[i] += nmax;
  return suml2 > 0 ? f(sumlx / suml2) : 0;
}

/**
 * q6_k's symmetric fit with weights x²: the scale −nmax/max and 18 nudged ones, the best
 * weighted least-squares fit kept. Codes (plus nmax) into L; returns the scale.
 */
export function fitSymmetric(n: number, nmax: number, x: Float32Array, L: Int8Array): number {
  const { max, amax } = signedMax(n, x);
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[i] = 0;
    return 0;
  }
  const sums = (iscale: number, store: boolean): [number, number] => {
    let sumlx = 0;
    let suml2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[i];
      const l = clamp(nearestInt(f(iscale * v)), -nmax, nmax - 1);
      if (store) L[i] = l + nmax;
      const w = f(v * v);
      sumlx = f(sumlx + f(f(w * v) * l));
      suml2 = f(suml2 + f(f(w * l) * l));
    }
    return [sumlx, suml2];
  };
  const [lx0, l20] = sums(f(-nmax / max), true);
  let scale = l20 ? f(lx0 / l20) : 0;
  let best = f(scale * lx0);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    const iscale = f(-f(nmax + f(f(0.1) * is)) / max);
    const [sumlx, suml2] = sums(iscale, false);
    if (suml2 > 0 && f(sumlx * sumlx) > f(best * suml2)) {
      sums(iscale, true);
      scale = f(sumlx / suml2);
      best = f(scale * sumlx);
    }
  }
  return scale;
}
