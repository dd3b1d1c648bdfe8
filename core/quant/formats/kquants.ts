/**
 * ggml's k-quants: super-blocks of 256 weights whose sub-block scales (and mins) are
 * themselves quantized against one fp16 super-block scale (and min scale).
 *
 *   q2_k  16 × 16, 2-bit codes, 4-bit scales and mins      v = d·sc·q − dmin·m
 *   q3_k  16 × 16, 3-bit codes, 6-bit signed scales        v = d·(sc − 32)·(q − 4)
 *   q4_k   8 × 32, 4-bit codes, 6-bit scales and mins      v = d·sc·q − dmin·m
 *   q5_k   8 × 32, 5-bit codes, 6-bit scales and mins      v = d·sc·q − dmin·m
 *   q6_k  16 × 16, 6-bit codes, 8-bit signed scales        v = d·sc·(q − 32)
 *
 * Byte layouts and the reference quantizers are ggml's (see the pack/unpack functions).
 * `packRow` writes a row from codes and the super-block parameters (UnpackedRow.k), with
 * the same byte writers the reference quantizers use, so the two cannot drift apart.
 */
import { clamp, f, fromF16, GROUP_MAX_EPS, nearestInt, toF16 } from './ggmlFloat';
import { fitMinScale, fitSymmetric, fitSymmetric3 } from './kquantFit';
import { checkBytes, checkRow } from './legacy';
import {
  getF16, pack2, packQ3Codes, packQ4Codes, packQ5Codes, packQ6Codes, q3Scale, scaleMinK4, setF16, setK4Scale, setQ3Scale, unpack2,
} from './kquantBytes';
import type { KQuantParams, QuantFormat, UnpackedRow } from './types';
import { dequantizeUnpacked, newUnpacked } from './unpacked';

const QK_K = 256;

interface KSpec {
  name: string;
  ggmlType: number;
  blockBytes: number;
  group: number;
  withMin: boolean;
  bits: number;
  /** Code offset of every group. */
  zero: number;
  /** Range of the integer sub-block scale (and, with a min, mins run 0..scHi). */
  scLo: number;
  scHi: number;
  /** Quantize one super-block x[off, off+256) into y at o. */
  quantize(x: Float32Array, off: number, y: Uint8Array, o: number): void;
  /** Codes and parameters of the super-block at byte o into u (weights from `first`, groups from `first/group`). */
  unpack(y: Uint8Array, o: number, u: UnpackedRow, first: number): void;
  /** The super-block of u starting at weight `first` (checked) into y at o (zeroed). */
  pack(u: UnpackedRow, first: number, y: Uint8Array, o: number): void;
}

/** An unpacked k-quant row of n weights, with room for its super-block parameters. */
function newKUnpacked(s: KSpec, n: number): UnpackedRow {
  const u = newUnpacked(n, s.group, s.withMin);
  const nG = n / s.group;
  const nb = n / QK_K;
  const k: KQuantParams = { d: new Float32Array(nb), sc: new Int32Array(nG) };
  if (s.withMin) (k.dmin = new Float32Array(nb)), (k.m = new Int32Array(nG));
  u.k = k;
  return u;
}

/** Throws a RangeError naming the first thing in u that `s` cannot pack exactly. */
function checkPackable(s: KSpec, u: UnpackedRow): void {
  const k = u.k;
  if (!k) throw new RangeError(`${s.name}: packing needs the super-block parameters (UnpackedRow.k)`);
  if (u.group !== s.group) throw new RangeError(`${s.name} packs groups of ${s.group}, not ${u.group}`);
  if (s.withMin && (!u.min || !k.dmin || !k.m)) throw new RangeError(`${s.name}: packing needs mins (min, k.dmin, k.m)`);
  const fp16 = (v: number, what: string) => {
    if (!Object.is(fromF16(toF16(v)), v)) throw new RangeError(`${s.name}: ${what} ${v} is not an fp16 value`);
  };
  const per = QK_K / s.group;
  for (let b = 0; b < u.n / QK_K; b++) {
    fp16(k.d[b], 'd');
    if (s.withMin) fp16(k.dmin![b], 'dmin');
    for (let g = b * per; g < (b + 1) * per; g++) {
      const sc = k.sc[g];
      if (!(Number.isInteger(sc) && sc >= s.scLo && sc <= s.scHi)) throw new RangeError(`${s.name}: sub-block scale ${sc} is out of range [${s.scLo}, ${s.scHi}]`);
      if (!Object.is(u.scale[g], f(k.d[b] * sc))) throw new RangeError(`${s.name}: scale of group ${g} is not d · sc`);
      if (u.zero[g] !== s.zero) throw new RangeError(`${s.name}: code offset must be ${s.zero}, got ${u.zero[g]}`);
      if (s.withMin) {
        const m = k.m![g];
        if (!(Number.isInteger(m) && m >= 0 && m <= s.scHi)) throw new RangeError(`${s.name}: sub-block min ${m} is out of range [0, ${s.scHi}]`);
        if (!Object.is(u.min![g], -f(k.dmin![b] * m))) throw new RangeError(`${s.name}: min of group ${g} is not −dmin · m`);
      }
    }
  }
  const top = (1 << s.bits) - 1;
  for (let j = 0; j < u.n; j++) if (u.codes[j] > top) throw new RangeError(`${s.name}: code ${u.codes[j]} is out of range`);
}

function makeK(s: KSpec): QuantFormat {
  const fmt: QuantFormat = {
    name: s.name,
    ggmlType: s.ggmlType,
    blockSize: QK_K,
    blockBytes: s.blockBytes,
    groupSize: s.group,
    codeBits: s.bits,
    bitsPerWeight: (s.blockBytes * 8) / QK_K,
    rowBytes: (n) => (n / QK_K) * s.blockBytes,
    fitsRow: (n) => Number.isInteger(n) && n > 0 && n % QK_K === 0,
    quantizeRow(x, out) {
      checkRow(s.name, x.length, QK_K);
      const nb = x.length / QK_K;
      const y = out ?? new Uint8Array(nb * s.blockBytes);
      y.fill(0, 0, nb * s.blockBytes);
      for (let b = 0; b < nb; b++) s.quantize(x, b * QK_K, y, b * s.blockBytes);
      return y;
    },
    packRow(u, out) {
      checkRow(s.name, u.n, QK_K);
      checkPackable(s, u);
      const nb = u.n / QK_K;
      const y = out ?? new Uint8Array(nb * s.blockBytes);
      y.fill(0, 0, nb * s.blockBytes);
      for (let b = 0; b < nb; b++) s.pack(u, b * QK_K, y, b * s.blockBytes);
      return y;
    },
    unpackRow(bytes, n) {
      checkRow(s.name, n, QK_K);
      checkBytes(s.name, bytes, (n / QK_K) * s.blockBytes);
      const u = newKUnpacked(s, n);
      for (let b = 0; b < n / QK_K; b++) s.unpack(bytes, b * s.blockBytes, u, b * QK_K);
      return u;
    },
    dequantizeRow(bytes, n, out) {
      return dequantizeUnpacked(fmt.unpackRow(bytes, n), out);
    },
  };
  return fmt;
}

const L8 = new Int8Array(QK_K);
const LU = new Uint8Array(QK_K);
const laux = new Uint8Array(32);
const weights = new Float32Array(32);
const minOut = new Float32Array(1);
const scales = new Float32Array(16);
const mins = new Float32Array(16);

// ---- q2_k: scales[16] (4-bit scale | 4-bit min << 4) @0, qs[64] @16, d @80, dmin @82 ----

function quantizeQ2K(x: Float32Array, off: number, y: Uint8Array, o: number): void {
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 16; j++) {
    const xs = x.subarray(off + 16 * j, off + 16 * j + 16);
    for (let l = 0; l < 16; l++) weights[l] = Math.abs(xs[l]);
    scales[j] = fitMinScale(16, 3, xs, weights, LU.subarray(16 * j, 16 * j + 16), laux, -0.5, 0.1, 15, true, minOut);
    mins[j] = minOut[0];
    if (scales[j] > maxScale) maxScale = scales[j];
    if (mins[j] > maxMin) maxMin = mins[j];
  }
  if (maxScale > 0) {
    const iscale = f(15 / maxScale);
    for (let j = 0; j < 16; j++) y[o + j] = nearestInt(f(iscale * scales[j])) & 0xff;
    setF16(y, o + 80, toF16(f(maxScale / 15)));
  } else {
    setF16(y, o + 80, toF16(0));
  }
  if (maxMin > 0) {
    const iscale = f(15 / maxMin);
    for (let j = 0; j < 16; j++) y[o + j] = (y[o + j] | (nearestInt(f(iscale * mins[j])) << 4)) & 0xff;
    setF16(y, o + 82, toF16(f(maxMin / 15)));
  } else {
    setF16(y, o + 82, toF16(0));
  }
  // Codes again on the quantized scales and mins (a sub-block whose scale rounded to 0 keeps its fit's codes).
  const d = getF16(y, o + 80);
  const dmin = getF16(y, o + 82);
  for (let j = 0; j < 16; j++) {
    const dd = f(d * (y[o + j] & 0xf));
    if (!dd) continue;
    const dm = f(dmin * (y[o + j] >> 4));
    for (let i = 0; i < 16; i++) LU[16 * j + i] = clamp(nearestInt(f(f(x[off + 16 * j + i] + dm) / dd)), 0, 3);
  }
  pack2(LU, y, o + 16);
}

function unpackQ2K(y: Uint8Array, o: number, u: UnpackedRow, first: number): void {
  const d = getF16(y, o + 80);
  const dmin = getF16(y, o + 82);
  const g0 = first / 16;
  const k = u.k!;
  k.d[first / QK_K] = d;
  k.dmin![first / QK_K] = dmin;
  for (let g = 0; g < 16; g++) {
    const sc = y[o + g];
    k.sc[g0 + g] = sc & 0xf;
    k.m![g0 + g] = sc >> 4;
    u.scale[g0 + g] = f(d * (sc & 0xf));
    u.min![g0 + g] = -f(dmin * (sc >> 4));
  }
  for (let e = 0; e < QK_K; e++) u.codes[first + e] = unpack2(y, o + 16, e);
}

function packQ2K(u: UnpackedRow, first: number, y: Uint8Array, o: number): void {
  const k = u.k!;
  const g0 = first / 16;
  for (let g = 0; g < 16; g++) y[o + g] = k.sc[g0 + g] | (k.m![g0 + g] << 4);
  setF16(y, o + 80, toF16(k.d[first / QK_K]));
  setF16(y, o + 82, toF16(k.dmin![first / QK_K]));
  pack2(u.codes.subarray(first, first + QK_K), y, o + 16);
}

// ---- q3_k: hmask[32] @0, qs[64] @32, scales[12] @96, d @108 ----

function quantizeQ3K(x: Float32Array, off: number, y: Uint8Array, o: number): void {
  let maxScale = 0;
  let amax = 0;
  for (let j = 0; j < 16; j++) {
    scales[j] = fitSymmetric3(16, 4, x.subarray(off + 16 * j, off + 16 * j + 16), L8.subarray(16 * j, 16 * j + 16));
    const a = Math.abs(scales[j]);
    if (a > amax) {
      amax = a;
      maxScale = scales[j];
    }
  }
  const S = o + 96;
  if (maxScale) {
    const iscale = f(-32 / maxScale);
    for (let j = 0; j < 16; j++) setQ3Scale(y, S, j, clamp((nearestInt(f(iscale * scales[j])) << 24) >> 24, -32, 31));
    setF16(y, o + 108, toF16(f(1 / iscale)));
  } else {
    setF16(y, o + 108, toF16(0));
  }
  const d = getF16(y, o + 108);
  for (let j = 0; j < 16; j++) {
    const dd = f(d * q3Scale(y, S, j));
    if (!dd) continue;
    for (let i = 0; i < 16; i++) L8[16 * j + i] = clamp(nearestInt(f(x[off + 16 * j + i] / dd)), -4, 3) + 4;
  }
  packQ3Codes(L8, y, o);
}

function packQ3K(u: UnpackedRow, first: number, y: Uint8Array, o: number): void {
  const k = u.k!;
  for (let j = 0; j < 16; j++) setQ3Scale(y, o + 96, j, k.sc[first / 16 + j]);
  setF16(y, o + 108, toF16(k.d[first / QK_K]));
  packQ3Codes(u.codes.subarray(first, first + QK_K), y, o);
}

function unpackQ3K(y: Uint8Array, o: number, u: UnpackedRow, first: number): void {
  const d = getF16(y, o + 108);
  const g0 = first / 16;
  u.k!.d[first / QK_K] = d;
  for (let g = 0; g < 16; g++) {
    const sc = q3Scale(y, o + 96, g);
    u.k!.sc[g0 + g] = sc;
    u.scale[g0 + g] = f(d * sc);
    u.zero[g0 + g] = 4;
  }
  for (let e = 0; e < QK_K; e++) u.codes[first + e] = unpack2(y, o + 32, e) | (((y[o + (e & 31)] >> (e >> 5)) & 1) << 2);
}

// ---- q4_k / q5_k: d @0, dmin @2, scales[12] @4 (6-bit scales and mins), then the codes ----

const scMin = new Int32Array(2);

/** Fit 8 sub-blocks of 32 with ggml's weights √mean(x²) + |x|, then quantize their scales and mins to 6 bits. Codes into LU. */
function quantizeK4Scales(x: Float32Array, off: number, y: Uint8Array, o: number, nmax: number, rmin: number, nstep: number): void {
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const xs = x.subarray(off + 32 * j, off + 32 * j + 32);
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = f(sumX2 + f(xs[l] * xs[l]));
    const avX = f(Math.sqrt(f(sumX2 / 32)));
    for (let l = 0; l < 32; l++) weights[l] = f(avX + Math.abs(xs[l]));
    scales[j] = fitMinScale(32, nmax, xs, weights, LU.subarray(32 * j, 32 * j + 32), laux, rmin, 0.1, nstep, false, minOut);
    mins[j] = minOut[0];
    if (scales[j] > maxScale) maxScale = scales[j];
    if (mins[j] > maxMin) maxMin = mins[j];
  }
  const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
  const S = o + 4;
  for (let j = 0; j < 8; j++) {
    setK4Scale(y, S, j, Math.min(63, nearestInt(f(invScale * scales[j])) & 0xff), Math.min(63, nearestInt(f(invMin * mins[j])) & 0xff));
  }
  setF16(y, o, toF16(f(maxScale / 63)));
  setF16(y, o + 2, toF16(f(maxMin / 63)));
  const d = getF16(y, o);
  const dmin = getF16(y, o + 2);
  for (let j = 0; j < 8; j++) {
    scaleMinK4(y, S, j, scMin);
    const dd = f(d * scMin[0]);
    if (!dd) continue;
    const dm = f(dmin * scMin[1]);
    for (let i = 0; i < 32; i++) LU[32 * j + i] = clamp(nearestInt(f(f(x[off + 32 * j + i] + dm) / dd)), 0, nmax);
  }
}

function unpackK4Scales(y: Uint8Array, o: number, u: UnpackedRow, first: number): void {
  const d = getF16(y, o);
  const dmin = getF16(y, o + 2);
  const g0 = first / 32;
  const k = u.k!;
  k.d[first / QK_K] = d;
  k.dmin![first / QK_K] = dmin;
  for (let g = 0; g < 8; g++) {
    scaleMinK4(y, o + 4, g, scMin);
    k.sc[g0 + g] = scMin[0];
    k.m![g0 + g] = scMin[1];
    u.scale[g0 + g] = f(d * scMin[0]);
    u.min![g0 + g] = -f(dmin * scMin[1]);
  }
}

function packK4Scales(u: UnpackedRow, first: number, y: Uint8Array, o: number): void {
  const k = u.k!;
  setF16(y, o, toF16(k.d[first / QK_K]));
  setF16(y, o + 2, toF16(k.dmin![first / QK_K]));
  for (let j = 0; j < 8; j++) setK4Scale(y, o + 4, j, k.sc[first / 32 + j], k.m![first / 32 + j]);
}

// q4_k codes: qs[128] @16; each 64 weights share 32 bytes, the first 32 in the low nibbles.
function quantizeQ4K(x: Float32Array, off: number, y: Uint8Array, o: number): void {
  quantizeK4Scales(x, off, y, o, 15, -1, 20);
  packQ4Codes(LU, y, o);
}

function packQ4K(u: UnpackedRow, first: number, y: Uint8Array, o: number): void {
  packK4Scales(u, first, y, o);
  packQ4Codes(u.codes.subarray(first, first + QK_K), y, o);
}

function unpackQ4K(y: Uint8Array, o: number, u: UnpackedRow, first: number): void {
  unpackK4Scales(y, o, u, first);
  for (let e = 0; e < QK_K; e++) {
    const r = e & 63;
    const b = y[o + 16 + (e >> 6) * 32 + (r & 31)];
    u.codes[first + e] = r < 32 ? b & 0xf : b >> 4;
  }
}

// q5_k codes: qh[32] @16 (bit 2k / 2k+1 of byte j: 5th bit of weight 64k+j / 64k+j+32), qs[128] @48 as q4_k.
function quantizeQ5K(x: Float32Array, off: number, y: Uint8Array, o: number): void {
  quantizeK4Scales(x, off, y, o, 31, -0.5, 15);
  packQ5Codes(LU, y, o);
}

function packQ5K(u: UnpackedRow, first: number, y: Uint8Array, o: number): void {
  packK4Scales(u, first, y, o);
  packQ5Codes(u.codes.subarray(first, first + QK_K), y, o);
}

function unpackQ5K(y: Uint8Array, o: number, u: UnpackedRow, first: number): void {
  unpackK4Scales(y, o, u, first);
  for (let e = 0; e < QK_K; e++) {
    const k = e >> 6;
    const r = e & 63;
    const j = r & 31;
    const b = y[o + 48 + 32 * k + j];
    const high = (y[o + 16 + j] >> (2 * k + (r < 32 ? 0 : 1))) & 1;
    u.codes[first + e] = (r < 32 ? b & 0xf : b >> 4) | (high << 4);
  }
}

// ---- q6_k: ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208 ----

function quantizeQ6K(x: Float32Array, off: number, y: Uint8Array, o: number): void {
  let maxScale = 0;
  let maxAbs = 0;
  for (let j = 0; j < 16; j++) {
    scales[j] = fitSymmetric(16, 32, x.subarray(off + 16 * j, off + 16 * j + 16), L8.subarray(16 * j, 16 * j + 16));
    const a = Math.abs(scales[j]);
    if (a > maxAbs) {
      maxAbs = a;
      maxScale = scales[j];
    }
  }
  if (maxAbs < GROUP_MAX_EPS) return; // an all-zero super-block: every byte 0
  const iscale = f(-128 / maxScale);
  setF16(y, o + 208, toF16(f(1 / iscale)));
  for (let j = 0; j < 16; j++) y[o + 192 + j] = Math.min(127, nearestInt(f(iscale * scales[j]))) & 0xff;
  const d = getF16(y, o + 208);
  for (let j = 0; j < 16; j++) {
    const dd = f(d * ((y[o + 192 + j] << 24) >> 24));
    if (!dd) continue;
    for (let i = 0; i < 16; i++) L8[16 * j + i] = clamp(nearestInt(f(x[off + 16 * j + i] / dd)), -32, 31) + 32;
  }
  packQ6Codes(L8, y, o);
}

function packQ6K(u: UnpackedRow, first: number, y: Uint8Array, o: number): void {
  for (let j = 0; j < 16; j++) y[o + 192 + j] = u.k!.sc[first / 16 + j] & 0xff;
  setF16(y, o + 208, toF16(u.k!.d[first / QK_K]));
  packQ6Codes(u.codes.subarray(first, first + QK_K), y, o);
}

function unpackQ6K(y: Uint8Array, o: number, u: UnpackedRow, first: number): void {
  const d = getF16(y, o + 208);
  const g0 = first / 16;
  u.k!.d[first / QK_K] = d;
  for (let g = 0; g < 16; g++) {
    const sc = (y[o + 192 + g] << 24) >> 24;
    u.k!.sc[g0 + g] = sc;
    u.scale[g0 + g] = f(d * sc);
    u.zero[g0 + g] = 32;
  }
  for (let e = 0; e < QK_K; e++) {
    const c = e >> 7;
    const k = (e >> 5) & 3;
    const l = e & 31;
    const b = y[o + 64 * c + l + (k & 1) * 32];
    const low = k < 2 ? b & 0xf : b >> 4;
    u.codes[first + e] = low | (((y[o + 128 + 32 * c + l] >> (2 * k)) & 3) << 4);
  }
}

export const Q2_K = makeK({ name: 'q2_k', ggmlType: 10, blockBytes: 84, group: 16, withMin: true, bits: 2, zero: 0, scLo: 0, scHi: 15, quantize: quantizeQ2K, unpack: unpackQ2K, pack: packQ2K });
export const Q3_K = makeK({ name: 'q3_k', ggmlType: 11, blockBytes: 110, group: 16, withMin: false, bits: 3, zero: 4, scLo: -32, scHi: 31, quantize: quantizeQ3K, unpack: unpackQ3K, pack: packQ3K });
export const Q4_K = makeK({ name: 'q4_k', ggmlType: 12, blockBytes: 144, group: 32, withMin: true, bits: 4, zero: 0, scLo: 0, scHi: 63, quantize: quantizeQ4K, unpack: unpackQ4K, pack: packQ4K });
export const Q5_K = makeK({ name: 'q5_k', ggmlType: 13, blockBytes: 176, group: 32, withMin: true, bits: 5, zero: 0, scLo: 0, scHi: 63, quantize: quantizeQ5K, unpack: unpackQ5K, pack: packQ5K });
export const Q6_K = makeK({ name: 'q6_k', ggmlType: 14, blockBytes: 210, group: 16, withMin: false, bits: 6, zero: 32, scLo: -128, scHi: 127, quantize: quantizeQ6K, unpack: unpackQ6K, pack: packQ6K });
