/**
 * The compute interface every backend implements (DESIGN §6). It extends core's `Ops`
 * (what the forward pass takes) with what the search needs on top: group
 * quantize-dequantize of a rectangle of a weight matrix and a float64 squared-error loss.
 *
 * Calls are synchronous: WebAssembly and gpu.js both run synchronously, and parallelism
 * lives a level up (candidates spread over a workerpool). Backends differ only in speed:
 * one conformance suite (test/kernels/conformance.test.ts) runs against each of them.
 */
import type { Ops } from '../core/ops';
import type { F32 } from '../core/model/types';
import type { QuantSpec } from '../core/quant/rtn';

export type { F32, QuantSpec };

export interface Backend extends Ops {
  readonly name: string;

  /**
   * y[n, out] = x[n, in] · w[out, in]ᵀ, in float32; with `accumulate`, y += instead of =.
   * Inputs may live in ordinary or SharedArrayBuffer memory; y must not alias x or w.
   */
  matmulT(y: F32, x: F32, w: F32, n: number, inDim: number, outDim: number, accumulate?: boolean): void;

  /**
   * core's `fakeQuantRtnRect` (core/quant/rtn.ts), same arguments, bit-identical output:
   * fake-quantizes rows [rowStart, rowEnd) × groups [groupStart, groupEnd) of w [·, cols]
   * into the same positions of `out`, leaving the rest of `out` alone. Asymmetric min–max
   * per group (range widened to contain 0) with an integer zero point, in float64:
   *   scale = f32((max − min) / (2^bits − 1)),  zero = clamp(round(−min / scale))
   *   out   = f32((clamp(round(w / scale) + zero) − zero) · scale),  round = Math.round.
   * With `spec.clip` the clip-ratio search, with `spec.f16Scales` fp16 scales, and with
   * `clips` ([rows of w, groups per row]) each group's clip code, all as core does them.
   */
  quantDequant(
    w: F32, cols: number, spec: QuantSpec, out: F32,
    rowStart: number, rowEnd: number, groupStart: number, groupEnd: number, clips?: Uint8Array,
  ): void;

  /**
   * Σ_{i<n} (a[i] − b[i])² with the differences, squares and sum in float64. Every
   * backend adds in the same fixed order (see `sqErrRef`), so results are bit-identical.
   */
  sqErr(a: F32, b: F32, n: number): number;

  /** Frees threads or GL resources the backend holds; it is unusable afterwards. */
  dispose?(): void;
}
