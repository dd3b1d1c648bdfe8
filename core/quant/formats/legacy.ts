/**
 * ggml's blocks of 32 with one fp16 scale (and for the `_1` kinds an fp16 min):
 *
 *   q4_0  d, 16 bytes of nibbles                 v = (q − 8)·d
 *   q4_1  d, m, 16 bytes of nibbles              v = q·d + m
 *   q5_0  d, 4 bytes of 5th bits, 16 of nibbles  v = (q − 16)·d
 *   q5_1  d, m, 4 bytes of 5th bits, 16 nibbles  v = q·d + m
 *   q8_0  d, 32 signed bytes                     v = q·d
 *
 * Nibble j of a block holds weight j in its low half and weight j + 16 in its high half;
 * bit j of the 5th-bit word (little-endian uint32) belongs to weight j. The quantizers
 * reproduce ggml's reference ones operation by operation (./ggmlFloat.ts).
 */
import { clamp, f, fromF16, roundAway, toF16 } from './ggmlFloat';
import type { QuantFormat, UnpackedRow } from './types';
import { dequantizeUnpacked, newUnpacked } from './unpacked';

const QK = 32;
const HALF = QK / 2;

interface LegacySpec {
  name: string;
  ggmlType: number;
  bits: 4 | 5 | 8;
  /** Has an fp16 min (the `_1` kinds). */
  withMin: boolean;
}

function blockBytes(s: LegacySpec): number {
  if (s.bits === 8) return 2 + QK;
  return 2 + (s.withMin ? 2 : 0) + (s.bits === 5 ? 4 : 0) + HALF;
}

/** Codes (unsigned) and fp16 d, m of one block of x at `off`, exactly as ggml's reference quantizer. */
function quantizeBlock(s: LegacySpec, x: Float32Array, off: number, codes: Uint8Array): { d: number; m: number } {
  if (s.bits === 8) {
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[off + j]));
    const d = f(amax / 127);
    const id = d ? f(1 / d) : 0;
    for (let j = 0; j < QK; j++) codes[j] = roundAway(f(x[off + j] * id)) + 128;
    return { d: toF16(d), m: 0 };
  }
  const levels = s.bits === 4 ? 16 : 32;
  if (s.withMin) {
    let min = Infinity;
    let max = -Infinity;
    for (let j = 0; j < QK; j++) {
      const v = x[off + j];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    // ggml starts from ±FLT_MAX; a finite row reaches the same extremes.
    const d = f(f(max - min) / (levels - 1));
    const id = d ? f(1 / d) : 0;
    for (let j = 0; j < QK; j++) {
      const q = Math.trunc(f(f(f(x[off + j] - min) * id) + 0.5));
      // q4_1 clamps to 15; q5_1 keeps the low five bits of what the cast gives.
      codes[j] = s.bits === 4 ? Math.min(levels - 1, q) : q & 31;
    }
    return { d: toF16(d), m: toF16(min) };
  }
  let amax = 0;
  let max = 0;
  for (let j = 0; j < QK; j++) {
    const v = x[off + j];
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const d = f(max / -(levels / 2));
  const id = d ? f(1 / d) : 0;
  const bias = f(levels / 2 + 0.5);
  for (let j = 0; j < QK; j++) codes[j] = Math.min(levels - 1, clamp(Math.trunc(f(f(x[off + j] * id) + bias)), 0, 255));
  return { d: toF16(d), m: 0 };
}

function makeLegacy(s: LegacySpec): QuantFormat {
  const bytesPer = blockBytes(s);
  const zero = s.bits === 8 ? 128 : s.withMin ? 0 : s.bits === 4 ? 8 : 16;
  const qsOff = 2 + (s.withMin ? 2 : 0) + (s.bits === 5 ? 4 : 0);
  const codes = new Uint8Array(QK);
  /** One block's fp16 bits d (and m) and unsigned codes into y at o, in ggml's layout. */
  const packBlock = (y: Uint8Array, o: number, d: number, m: number, c: Uint8Array) => {
    y[o] = d & 0xff;
    y[o + 1] = d >>> 8;
    if (s.withMin) (y[o + 2] = m & 0xff), (y[o + 3] = m >>> 8);
    if (s.bits === 8) {
      // Stored as signed bytes: code − 128.
      for (let j = 0; j < QK; j++) y[o + 2 + j] = c[j] ^ 0x80;
      return;
    }
    let qh = 0;
    for (let j = 0; j < HALF; j++) {
      y[o + qsOff + j] = (c[j] & 0x0f) | ((c[j + HALF] & 0x0f) << 4);
      if (s.bits === 5) qh |= ((c[j] >> 4) << j) | ((c[j + HALF] >> 4) << (j + HALF));
    }
    if (s.bits === 5) for (let k = 0; k < 4; k++) y[o + qsOff - 4 + k] = (qh >>> (8 * k)) & 0xff;
  };
  const fmt: QuantFormat = {
    name: s.name,
    ggmlType: s.ggmlType,
    blockSize: QK,
    blockBytes: bytesPer,
    groupSize: QK,
    codeBits: s.bits,
    bitsPerWeight: (bytesPer * 8) / QK,
    rowBytes: (n) => (n / QK) * bytesPer,
    fitsRow: (n) => Number.isInteger(n) && n > 0 && n % QK === 0,
    quantizeRow(x, out) {
      checkRow(s.name, x.length);
      const nb = x.length / QK;
      const y = out ?? new Uint8Array(nb * bytesPer);
      for (let b = 0; b < nb; b++) {
        const { d, m } = quantizeBlock(s, x, b * QK, codes);
        packBlock(y, b * bytesPer, d, m, codes);
      }
      return y;
    },
    packRow(u, out) {
      const n = u.n;
      checkRow(s.name, n);
      if (u.group !== QK) throw new RangeError(`${s.name} packs groups of ${QK}, not ${u.group}`);
      const y = out ?? new Uint8Array((n / QK) * bytesPer);
      const exactF16 = (v: number, what: string) => {
        const h = toF16(v);
        if (!Object.is(fromF16(h), Math.fround(v))) throw new RangeError(`${s.name}: ${what} ${v} is not an fp16 value`);
        return h;
      };
      for (let b = 0; b < n / QK; b++) {
        if (u.zero[b] !== zero) throw new RangeError(`${s.name}: code offset must be ${zero}, got ${u.zero[b]}`);
        const c = u.codes.subarray(b * QK, (b + 1) * QK);
        for (let j = 0; j < QK; j++) if (c[j] >= 2 ** s.bits) throw new RangeError(`${s.name}: code ${c[j]} is out of range`);
        packBlock(y, b * bytesPer, exactF16(u.scale[b], 'scale'), s.withMin ? exactF16(u.min![b], 'min') : 0, c);
      }
      return y;
    },
    unpackRow(bytes, n) {
      checkRow(s.name, n);
      checkBytes(s.name, bytes, (n / QK) * bytesPer);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const u = newUnpacked(n, QK, s.withMin);
      for (let b = 0; b < n / QK; b++) {
        const o = b * bytesPer;
        u.scale[b] = fromF16(dv.getUint16(o, true));
        u.zero[b] = zero;
        if (u.min) u.min[b] = fromF16(dv.getUint16(o + 2, true));
        const c = u.codes.subarray(b * QK, (b + 1) * QK);
        if (s.bits === 8) {
          for (let j = 0; j < QK; j++) c[j] = bytes[o + 2 + j] ^ 0x80;
          continue;
        }
        const qh = s.bits === 5 ? dv.getUint32(o + qsOff - 4, true) : 0;
        for (let j = 0; j < HALF; j++) {
          const q = bytes[o + qsOff + j];
          c[j] = (q & 0x0f) | (((qh >>> j) & 1) << 4);
          c[j + HALF] = (q >> 4) | (((qh >>> (j + HALF)) & 1) << 4);
        }
      }
      return u;
    },
    dequantizeRow(bytes, n, out) {
      return dequantizeUnpacked(fmt.unpackRow(bytes, n), out);
    },
  };
  return fmt;
}

export function checkRow(name: string, n: number, block = QK): void {
  if (!(Number.isInteger(n) && n > 0 && n % block === 0)) {
    throw new RangeError(`${name} holds rows whose length is a multiple of ${block}, not ${n}`);
  }
}

export function checkBytes(name: string, bytes: Uint8Array, need: number): void {
  if (bytes.length < need) throw new RangeError(`${name}: a row needs ${need} bytes, got ${bytes.length}`);
}

export const Q4_0 = makeLegacy({ name: 'q4_0', ggmlType: 2, bits: 4, withMin: false });
export const Q4_1 = makeLegacy({ name: 'q4_1', ggmlType: 3, bits: 4, withMin: true });
export const Q5_0 = makeLegacy({ name: 'q5_0', ggmlType: 6, bits: 5, withMin: false });
export const Q5_1 = makeLegacy({ name: 'q5_1', ggmlType: 7, bits: 5, withMin: true });
export const Q8_0 = makeLegacy({ name: 'q8_0', ggmlType: 8, bits: 8, withMin: false });
