/**
 * fp16 / bf16 converters against references built a different way: fp16 decoding by
 * re-biasing the bit fields into a float32 bit pattern, encoding by searching the sorted
 * table of all finite fp16 values for the nearest (ties to the even bit pattern), bf16
 * encoding by comparing the two bf16 neighbours of a float32 in float64.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bf16BitsToF32,
  decodeBf16,
  decodeF16,
  encodeBf16,
  encodeF16,
  f16BitsToF32,
  f16Round,
  f32ToBf16Bits,
  f32ToF16Bits,
} from '../../core/model/halfFloat';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const fromBits = (b: number) => {
  u32[0] = b >>> 0;
  return f32[0];
};
const bitsOf = (x: number) => {
  f32[0] = x;
  return u32[0];
};

/** fp16 -> f32 by moving the bit fields (normals, infinities, NaN) or by m·2^-24 (subnormals). */
function refDecode(h: number): number {
  const s = (h >>> 15) & 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return (s ? -1 : 1) * m * 5.960464477539063e-8;
  if (e === 31) return fromBits((s << 31) | (0xff << 23) | (m << 13));
  return fromBits((s << 31) | ((e - 15 + 127) << 23) | (m << 13));
}

/** All finite non-negative fp16 values in increasing order; index = bit pattern. */
const POS: number[] = Array.from({ length: 0x7c00 }, (_, h) => refDecode(h));

/** Nearest fp16 of x by binary search, ties to even; overflow past the rounding threshold -> Inf. */
function refEncode(x: number): number {
  if (Number.isNaN(x)) return -1; // any NaN
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  const maxHalfUlp = 65504 + 16;
  if (a >= maxHalfUlp) return sign | 0x7c00;
  let lo = 0;
  let hi = POS.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (POS[mid] <= a) lo = mid;
    else hi = mid;
  }
  if (POS[hi] <= a) lo = hi;
  if (POS[lo] === a || lo === POS.length - 1) return sign | lo;
  const up = lo + 1;
  const dl = a - POS[lo];
  const du = POS[up] - a;
  if (dl < du) return sign | lo;
  if (du < dl) return sign | up;
  return sign | (lo % 2 === 0 ? lo : up);
}

describe('fp16', () => {
  it('decodes every bit pattern like the bit-field reference', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const bulk = new Float32Array(65536);
    decodeF16(all, bulk);
    for (let h = 0; h < 65536; h++) {
      const r = refDecode(h);
      const got = f16BitsToF32(h);
      if (Number.isNaN(r)) {
        expect(Number.isNaN(got) && Number.isNaN(bulk[h])).toBe(true);
      } else if (!Object.is(got, r) || !Object.is(bulk[h], r)) {
        expect([h, got, bulk[h]]).toEqual([h, r, r]);
      }
    }
  });

  it('every finite fp16 value encodes back to itself', () => {
    for (let h = 0; h < 65536; h++) {
      if (((h >>> 10) & 0x1f) === 31 && (h & 0x3ff) !== 0) continue; // NaN
      if (f32ToF16Bits(f16BitsToF32(h)) !== h) expect([h, f32ToF16Bits(f16BitsToF32(h))]).toEqual([h, h]);
    }
  });

  it('midpoints round to even, just off them to the nearer neighbour', () => {
    for (let h = 0; h < 0x7bff; h++) {
      const a = POS[h];
      const b = POS[h + 1];
      const mid = (a + b) / 2; // exact in float64
      const even = h % 2 === 0 ? h : h + 1;
      const eps = (b - a) * 1e-3;
      if (f32ToF16Bits(mid) !== even || f32ToF16Bits(mid - eps) !== h || f32ToF16Bits(mid + eps) !== h + 1 || f32ToF16Bits(-mid) !== (0x8000 | even)) {
        expect([h, f32ToF16Bits(mid), f32ToF16Bits(mid - eps), f32ToF16Bits(mid + eps)]).toEqual([h, even, h, h + 1]);
      }
    }
  });

  it('edge values', () => {
    const cases: [number, number][] = [
      [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [65519.99, 0x7bff], [65520, 0x7c00],
      [1e6, 0x7c00], [-Infinity, 0xfc00], [Infinity, 0x7c00], [2 ** -24, 0x0001], [2 ** -25, 0x0000],
      [2 ** -25 * 1.0001, 0x0001], [3 * 2 ** -25, 0x0002], [2 ** -14, 0x0400], [1023.5 * 2 ** -24, 0x0400],
      [2 ** -14 - 2 ** -24, 0x03ff], [1e-9, 0x0000], [-1e-9, 0x8000], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02],
      [0.1, 0x2e66], [Math.fround(0.1), 0x2e66], [65536, 0x7c00],
    ];
    for (const [x, bits] of cases) expect([x, f32ToF16Bits(x)]).toEqual([x, bits]);
    const nan = f32ToF16Bits(NaN);
    expect(((nan >>> 10) & 0x1f) === 31 && (nan & 0x3ff) !== 0).toBe(true);
    expect(Number.isNaN(f16Round(NaN))).toBe(true);
    expect(f16Round(1 / 3)).toBe(0.333251953125);
  });

  it('random float32 values round like the table search', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
        const x = fromBits(bits);
        const r = refEncode(x);
        const got = f32ToF16Bits(x);
        return r === -1 ? ((got >>> 10) & 0x1f) === 31 && (got & 0x3ff) !== 0 : got === r;
      }),
      { numRuns: 20000 },
    );
    // Dense near the interesting range (|x| < 2^17) too.
    fc.assert(fc.property(fc.double({ min: -131072, max: 131072, noNaN: true }), (x) => f32ToF16Bits(Math.fround(x)) === refEncode(Math.fround(x))), { numRuns: 20000 });
    expect(Array.from(encodeF16([1, -2, 65520]))).toEqual([0x3c00, 0xc000, 0x7c00]);
  });
});

/** bf16 of float32 x by comparing its two neighbours in float64, ties to even. */
function refBf16(x: number): number {
  const b = bitsOf(x);
  if (Number.isNaN(x)) return -1;
  const lo = b >>> 16;
  const vLo = fromBits(lo << 16);
  const vHi = fromBits(((lo + 1) & 0xffff) << 16); // may be ±Inf
  if (vLo === x) return lo;
  const dl = Math.abs(x - vLo);
  const dh = Math.abs(vHi - x);
  // Past the largest finite bf16 the upper neighbour is Inf: IEEE rounds by the virtual next value.
  const dhEff = Number.isFinite(vHi) ? dh : Math.abs(2 ** 128 * Math.sign(x) - x);
  if (dl < dhEff) return lo;
  if (dhEff < dl) return (lo + 1) & 0xffff;
  return lo % 2 === 0 ? lo : (lo + 1) & 0xffff;
}

describe('bf16', () => {
  it('decodes to the top half of a float32', () => {
    for (let h = 0; h < 65536; h += 7) {
      const v = bf16BitsToF32(h);
      const r = fromBits(h << 16);
      expect(Number.isNaN(r) ? Number.isNaN(v) : Object.is(v, r)).toBe(true);
    }
    const out = new Float32Array(3);
    decodeBf16(Uint16Array.from([0x3f80, 0xc000, 0x0001]), out);
    expect(Array.from(out)).toEqual([1, -2, fromBits(0x10000)]);
  });

  it('encodes random float32 values to the nearest, ties to even', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
        const x = fromBits(bits);
        const r = refBf16(x);
        const got = f32ToBf16Bits(x);
        return r === -1 ? (got & 0x7f80) === 0x7f80 && (got & 0x7f) !== 0 : got === r;
      }),
      { numRuns: 20000 },
    );
  });

  it('edge values', () => {
    const cases: [number, number][] = [
      [1, 0x3f80], [-0, 0x8000], [fromBits(0x3f808000), 0x3f80], [fromBits(0x3f818000), 0x3f82], [fromBits(0x3f808001), 0x3f81],
      [fromBits(0x7f7fffff), 0x7f80], [Infinity, 0x7f80], [-Infinity, 0xff80], [fromBits(0x00000001), 0x0000], [fromBits(0x00008000), 0x0000],
      [fromBits(0x00018000), 0x0002],
    ];
    for (const [x, bits] of cases) expect([x, f32ToBf16Bits(x)]).toEqual([x, bits]);
    expect(f32ToBf16Bits(NaN) & 0x7fc0).toBe(0x7fc0);
    expect(Array.from(encodeBf16([1, -2]))).toEqual([0x3f80, 0xc000]);
  });
});
