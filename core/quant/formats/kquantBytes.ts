/**
 * The k-quants' byte layouts (ggml's block_q2_K … block_q6_K): where codes, sub-block
 * scales and fp16 super-block parameters sit. Shared by the reference quantizers and
 * packRow (./kquants.ts), so both write the same bytes.
 */
import { fromF16 } from './ggmlFloat';

const QK_K = 256;

export function getF16(y: Uint8Array, o: number): number {
  return fromF16(y[o] | (y[o + 1] << 8));
}

export function setF16(y: Uint8Array, o: number, bits: number): void {
  y[o] = bits & 0xff;
  y[o + 1] = bits >> 8;
}

/** 2-bit codes of 128 weights into 32 bytes: byte l holds weights l, l+32, l+64, l+96 (low bits first). */
export function pack2(L: ArrayLike<number>, y: Uint8Array, o: number): void {
  for (let j = 0; j < QK_K; j += 128) {
    for (let l = 0; l < 32; l++) {
      y[o + j / 4 + l] = (L[j + l] & 3) | ((L[j + l + 32] & 3) << 2) | ((L[j + l + 64] & 3) << 4) | ((L[j + l + 96] & 3) << 6);
    }
  }
}

export function unpack2(y: Uint8Array, o: number, e: number): number {
  const n = e & ~127;
  const r = e & 127;
  return (y[o + n / 4 + (r & 31)] >> (2 * (r >> 5))) & 3;
}

/** The 6-bit scale j of q3_k's 12 scale bytes at o: low 4 bits in bytes 0..7, high 2 bits in bytes 8..11. */
export function q3Scale(y: Uint8Array, o: number, j: number): number {
  const low = j < 8 ? y[o + j] & 0xf : y[o + j - 8] >> 4;
  const high = (y[o + 8 + (j % 4)] >> (2 * (j >> 2))) & 3;
  return (low | (high << 4)) - 32;
}

/** Signed 6-bit scale j (−32..31) into q3_k's 12 zeroed scale bytes at S. */
export function setQ3Scale(y: Uint8Array, S: number, j: number, sc: number): void {
  const l = sc + 32;
  if (j < 8) y[S + j] |= l & 0xf;
  else y[S + j - 8] |= (l & 0xf) << 4;
  y[S + 8 + (j % 4)] |= (l >> 4) << (2 * (j >> 2));
}

/** q3_k's 3-bit codes: the high bit of weight j to bit j/32 of hmask byte j%32, the low two bits as pack2. */
export function packQ3Codes(L: ArrayLike<number>, y: Uint8Array, o: number): void {
  for (let j = 0; j < QK_K; j++) if (L[j] > 3) y[o + (j & 31)] |= 1 << (j >> 5);
  pack2(L, y, o + 32);
}

/** 6-bit (scale, min) j of the 12 bytes at o, as ggml packs them. */
export function scaleMinK4(y: Uint8Array, o: number, j: number, out: Int32Array): void {
  if (j < 4) {
    out[0] = y[o + j] & 63;
    out[1] = y[o + j + 4] & 63;
  } else {
    out[0] = (y[o + j + 4] & 0xf) | ((y[o + j - 4] >> 6) << 4);
    out[1] = (y[o + j + 4] >> 4) | ((y[o + j] >> 6) << 4);
  }
}

/** 6-bit (scale, min) j into the 12 scale bytes at S (bytes j < 4 first, so the high bits OR onto them). */
export function setK4Scale(y: Uint8Array, S: number, j: number, ls: number, lm: number): void {
  if (j < 4) {
    y[S + j] |= ls;
    y[S + j + 4] |= lm;
  } else {
    y[S + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
    y[S + j - 4] |= (ls >> 4) << 6;
    y[S + j] |= (lm >> 4) << 6;
  }
}

export function packQ4Codes(L: ArrayLike<number>, y: Uint8Array, o: number): void {
  for (let j = 0; j < QK_K; j += 64) {
    for (let l = 0; l < 32; l++) y[o + 16 + j / 2 + l] = L[j + l] | (L[j + l + 32] << 4);
  }
}

export function packQ5Codes(L: ArrayLike<number>, y: Uint8Array, o: number): void {
  for (let k = 0; k < 4; k++) {
    for (let j = 0; j < 32; j++) {
      let l1 = L[64 * k + j];
      let l2 = L[64 * k + j + 32];
      if (l1 > 15) {
        l1 -= 16;
        y[o + 16 + j] |= 1 << (2 * k);
      }
      if (l2 > 15) {
        l2 -= 16;
        y[o + 16 + j] |= 2 << (2 * k);
      }
      y[o + 48 + 32 * k + j] = l1 | (l2 << 4);
    }
  }
}

export function packQ6Codes(L8: ArrayLike<number>, y: Uint8Array, o: number): void {
  for (let c = 0; c < 2; c++) {
    const L = 128 * c;
    for (let l = 0; l < 32; l++) {
      const q1 = L8[L + l], q2 = L8[L + l + 32], q3 = L8[L + l + 64], q4 = L8[L + l + 96];
      y[o + 64 * c + l] = (q1 & 0xf) | ((q3 & 0xf) << 4);
      y[o + 64 * c + l + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
      y[o + 128 + 32 * c + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
    }
  }
}
