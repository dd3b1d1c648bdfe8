/**
 * A quantization format as data: how a row of weights becomes codes and per-group
 * parameters, how those are packed into bytes, and how they come back as float32 exactly.
 *
 * Every format dequantizes a group the same way, which is what makes `UnpackedRow` enough
 * to reproduce the packed bytes' values bit for bit:
 *
 *     v = fround(scale[g] · (code − zero[g]))          then, for formats with a min,
 *     v = fround(v + min[g])
 *
 * (float32 products and sums, no fused multiply-add, as ggml's portable code computes them).
 */
export interface UnpackedRow {
  /** Weights in the row. */
  n: number;
  /** Weights sharing one (scale, zero, min); the last group of a row may be shorter (the int grid only). */
  group: number;
  /** Unsigned code of each weight, [n]. */
  codes: Uint8Array;
  /** Effective float32 multiplier of each group (for k-quants: super-block scale × sub-block scale). */
  scale: Float32Array;
  /** Integer code offset of each group. */
  zero: Int32Array;
  /** float32 added after scaling, per group; absent for formats without a min. */
  min?: Float32Array;
  /** k-quants: the factors of scale and min, which packing needs (the products alone do not give them back). */
  k?: KQuantParams;
}

/**
 * A k-quant row's super-block parameters: scale[g] = fround(d[b] · sc[g]) and
 * min[g] = −fround(dmin[b] · m[g]) for the groups g of super-block b.
 */
export interface KQuantParams {
  /** fp16 super-block scale, per super-block of 256. */
  d: Float32Array;
  /** fp16 super-block min scale, per super-block (formats with a min). */
  dmin?: Float32Array;
  /** Integer sub-block scale per group (q3_k: the signed 6-bit value, −32..31; q6_k: int8). */
  sc: Int32Array;
  /** Integer sub-block min per group (formats with a min). */
  m?: Int32Array;
}

export interface QuantFormat {
  /** 'int' (our asymmetric grid) or a ggml type name in lower case: 'q4_0', 'q4_k', … */
  readonly name: string;
  /** The GGUF tensor type id, or null for formats GGUF cannot hold. */
  readonly ggmlType: number | null;
  /** Weights per packed block: a row's length must be a multiple of it (the int grid: its group, last one may be short). */
  readonly blockSize: number;
  /** Bytes per packed block (the int grid: bytes of a full group). */
  readonly blockBytes: number;
  /** Weights per (scale, zero, min) group of the unpacked form. */
  readonly groupSize: number;
  /** Bits of a code: codes run from 0 to 2^codeBits − 1. */
  readonly codeBits: number;
  /** Packed bits per weight, parameters included. */
  readonly bitsPerWeight: number;
  /** Bytes of a packed row of n weights. */
  rowBytes(n: number): number;
  /** True when a row of n weights can be held in this format. */
  fitsRow(n: number): boolean;
  /** The reference quantizer (ggml's `quantize_row_*_ref` for ggml formats): a row → packed bytes. */
  quantizeRow(x: Float32Array, out?: Uint8Array): Uint8Array;
  /**
   * Codes and per-group parameters → packed bytes (the inverse of unpackRow); the
   * parameters must be values the format holds (fp16 scale and min; the k-quants: `k`, of
   * which scale and min must be the products). The int grid has none.
   */
  packRow?(u: UnpackedRow, out?: Uint8Array): Uint8Array;
  /** The packed bytes of a row of n weights → codes and per-group parameters. */
  unpackRow(bytes: Uint8Array, n: number): UnpackedRow;
  /** The exact float32 values of a packed row of n weights. */
  dequantizeRow(bytes: Uint8Array, n: number, out?: Float32Array): Float32Array;
}
