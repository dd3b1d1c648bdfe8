/**
 * fp16 and bf16 <-> float32 converters (Node 20 has no Math.f16round): the safetensors
 * reader and writer, the GGUF reader and writer, the GPTQ export and the fp16 scales of
 * every quantizer use them.
 */

const F16_TABLE_SIZE = 1 << 16;
let f16Table: Float32Array | undefined;

/** The float32 value of IEEE binary16 bits h (NaN payloads are not kept). */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24; // zero and subnormals: m · 2^-24
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1024 + m) * 2 ** (e - 25); // (1 + m/1024) · 2^(e-15)
}

/** Round half to even (the IEEE default rounding) of a non-negative value. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * IEEE binary16 bits of x, rounded to nearest, ties to even; overflow gives ±Inf, NaN a
 * quiet NaN, tiny values subnormals or ±0. x is taken exactly (a float32 or a float64).
 */
export function f32ToF16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  // 65520 = 65504 + half an ulp: the tie rounds to the even neighbour, which is 2^16 = Inf.
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24); // subnormal units; 1024 = smallest normal
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--; // log2 can be off by one near powers of two
  else if (2 ** (e + 1) <= a) e++;
  const m = roundHalfEven((a / 2 ** e) * 1024); // in [1024, 2048]; 2048 carries into the exponent
  return sign | (((e + 15) << 10) + (m - 1024));
}

/** x rounded to the nearest fp16 value, as a number (the scales of a GPTQ export). */
export function f16Round(x: number): number {
  return f16BitsToF32(f32ToF16Bits(x));
}

const cvtF32 = new Float32Array(1);
const cvtU32 = new Uint32Array(cvtF32.buffer);

/** The float32 value of bfloat16 bits (the top half of a float32). */
export function bf16BitsToF32(h: number): number {
  cvtU32[0] = (h & 0xffff) << 16;
  return cvtF32[0];
}

/** bfloat16 bits of float32 x, rounded to nearest, ties to even (NaN stays a quiet NaN). */
export function f32ToBf16Bits(x: number): number {
  cvtF32[0] = x;
  const b = cvtU32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) & 0x8000) | 0x7fc0;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Decode fp16 bits into float32 (through a 256 KiB table built once). */
export function decodeF16(src: Uint16Array, dst: Float32Array): void {
  if (!f16Table) {
    f16Table = new Float32Array(F16_TABLE_SIZE);
    for (let h = 0; h < F16_TABLE_SIZE; h++) f16Table[h] = f16BitsToF32(h);
  }
  const t = f16Table;
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]];
}

export function decodeBf16(src: Uint16Array, dst: Float32Array): void {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
}

export function encodeF16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16Bits(src[i]);
  return out;
}

export function encodeBf16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToBf16Bits(src[i]);
  return out;
}
