/**
 * Bit packing of GPTQ checkpoints, as AutoGPTQ's QuantLinear.pack writes it (and every GPTQ
 * loader unpacks it): b-bit codes form a little-endian bit stream in 32-bit words, code k of
 * a stream at bits [k·b, k·b + b). For b = 2, 4, 8 a word holds 32/b whole codes; for b = 3
 * this is exactly AutoGPTQ's 3-bit scheme (32 codes in 3 words: codes 0-9 in word 0, code 10
 * split over words 0/1 at bit 30, codes 11-20 in word 1 from bit 1, code 21 split at bit 63,
 * codes 22-31 in word 2 from bit 2).
 *
 *   qweight [in·b/32, out]   stream along the input dimension, one per output column
 *   qzeros  [nGroups, out·b/32]   stream along the output dimension, one per group row
 */

/**
 * Pack n b-bit codes src[s0 + k] into dst[d0 + w·dStride] (word w of the stream), OR-ing into
 * dst (which must start zeroed).
 */
export function packBits(src: ArrayLike<number>, s0: number, n: number, bits: number, dst: Int32Array, d0: number, dStride: number): void {
  for (let k = 0; k < n; k++) {
    const v = src[s0 + k];
    const bit = k * bits;
    const w = bit >>> 5;
    const sh = bit & 31;
    dst[d0 + w * dStride] |= v << sh;
    if (sh + bits > 32) dst[d0 + (w + 1) * dStride] |= v >>> (32 - sh);
  }
}

/** Inverse of packBits: n codes from the stream at src[s0 + w·sStride] into dst[d0 + k·dStride]. */
export function unpackBits(src: Int32Array, s0: number, sStride: number, n: number, bits: number, dst: Uint8Array, d0: number, dStride: number): void {
  const mask = (1 << bits) - 1;
  for (let k = 0; k < n; k++) {
    const bit = k * bits;
    const w = bit >>> 5;
    const sh = bit & 31;
    let v = src[s0 + w * sStride] >>> sh;
    if (sh + bits > 32) v |= src[s0 + (w + 1) * sStride] << (32 - sh);
    dst[d0 + k * dStride] = v & mask;
  }
}

/** qweight [in·b/32, out] of codes q [out, in] (row-major, as core/quant keeps them). */
export function packQweight(q: Uint8Array, out: number, inDim: number, bits: number): Int32Array {
  const qw = new Int32Array(((inDim * bits) / 32) * out);
  for (let o = 0; o < out; o++) packBits(q, o * inDim, inDim, bits, qw, o, out);
  return qw;
}

/** Codes [out, in] of qweight [in·b/32, out]. */
export function unpackQweight(qw: Int32Array, out: number, inDim: number, bits: number): Uint8Array {
  const q = new Uint8Array(out * inDim);
  for (let o = 0; o < out; o++) unpackBits(qw, o, out, inDim, bits, q, o * inDim, 1);
  return q;
}

/** qzeros [nGroups, out·b/32] of stored zeros z [nGroups, out]. */
export function packQzeros(z: Uint8Array, nGroups: number, out: number, bits: number): Int32Array {
  const width = (out * bits) / 32;
  const qz = new Int32Array(nGroups * width);
  for (let g = 0; g < nGroups; g++) packBits(z, g * out, out, bits, qz, g * width, 1);
  return qz;
}

/** Stored zeros [nGroups, out] of qzeros [nGroups, out·b/32]. */
export function unpackQzeros(qz: Int32Array, nGroups: number, out: number, bits: number): Uint8Array {
  const width = (out * bits) / 32;
  const z = new Uint8Array(nGroups * out);
  for (let g = 0; g < nGroups; g++) unpackBits(qz, g * width, 1, out, bits, z, g * out, 1);
  return z;
}
