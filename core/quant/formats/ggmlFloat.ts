/**
 * The scalar arithmetic of ggml's reference quantizers, reproduced exactly: every float
 * operation rounded to float32 (Math.fround of a float64 operation on float32 inputs is the
 * correctly rounded float32 result for + − × ÷ and sqrt), fp16 conversions rounding to
 * nearest even, and ggml's `nearest_int` magic-number rounding.
 */
import { f16BitsToF32, f32ToF16Bits } from '../../model/halfFloat';

export const f = Math.fround;

const magicF = new Float32Array(1);
const magicI = new Int32Array(magicF.buffer);

/**
 * ggml's nearest_int: add 1.5·2^23 in float32 and read the low mantissa bits, so ties go to
 * even; for |x| ≤ 4194303 that is round-half-even of x. Reproduced bit for bit, also
 * outside that range.
 */
export function nearestInt(x: number): number {
  magicF[0] = x + 12582912;
  return (magicI[0] & 0x007fffff) - 0x00400000;
}

/** C's roundf: half away from zero. */
export function roundAway(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/** fp16 bits of a float32 value (round to nearest even), as ggml's FP32→FP16 conversion. */
export function toF16(x: number): number {
  return f32ToF16Bits(f(x));
}

/** float32 value of fp16 bits. */
export const fromF16 = f16BitsToF32;

/** ggml's GROUP_MAX_EPS as a float32. */
export const GROUP_MAX_EPS = f(1e-15);

export function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}
