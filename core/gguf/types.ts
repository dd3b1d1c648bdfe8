/**
 * GGUF (version 3) as llama.cpp reads it: a little-endian header
 *
 *   "GGUF"  u32 version  u64 tensor count  u64 metadata count
 *   metadata: string key, u32 value type, value        (strings: u64 length + UTF-8 bytes)
 *   tensor infos: string name, u32 dims, u64 ne[dims], u32 ggml type, u64 data offset
 *
 * then padding to `general.alignment` (default 32) and the tensor data, each tensor at its
 * offset from the data start, offsets aligned too. ne[0] is the row length (a linear's input
 * dimension); rows are packed one after another in the tensor's type.
 */
import { GGML_FORMATS, type QuantFormat } from '../quant/formats';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

export enum GgufValueType {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
}

/** A metadata value with its GGUF type (numbers of 64-bit types as bigint when read). */
export type GgufValue =
  | { type: GgufValueType.STRING; value: string }
  | { type: GgufValueType.ARRAY; itemType: GgufValueType; value: (number | bigint | string | boolean)[] }
  | { type: GgufValueType.BOOL; value: boolean }
  | { type: Exclude<GgufValueType, GgufValueType.STRING | GgufValueType.ARRAY | GgufValueType.BOOL>; value: number | bigint };

export interface GgufTensorInfo {
  name: string;
  /** ne[0] first: ne[0] = row length. */
  dims: number[];
  /** ggml type id. */
  type: number;
  /** Byte offset from the start of the data section. */
  offset: number;
}

/** Tensor types this code reads and writes: plain floats and our ggml formats. */
export interface TensorType {
  id: number;
  name: string;
  blockSize: number;
  blockBytes: number;
  format?: QuantFormat;
}

export const F32_TYPE: TensorType = { id: 0, name: 'f32', blockSize: 1, blockBytes: 4 };
export const F16_TYPE: TensorType = { id: 1, name: 'f16', blockSize: 1, blockBytes: 2 };

const TYPES = new Map<number, TensorType>([
  [0, F32_TYPE],
  [1, F16_TYPE],
  ...Object.values(GGML_FORMATS).map((f): [number, TensorType] => [
    f.ggmlType!, { id: f.ggmlType!, name: f.name, blockSize: f.blockSize, blockBytes: f.blockBytes, format: f },
  ]),
]);

/** The type with this ggml id, or undefined when this code cannot read it. */
export function tensorType(id: number): TensorType | undefined {
  return TYPES.get(id);
}

/** The tensor type of a float name ('f32', 'f16') or a ggml format name. */
export function tensorTypeByName(name: string): TensorType | undefined {
  for (const t of TYPES.values()) if (t.name === name) return t;
  return undefined;
}

/** Bytes of a tensor of this type with these dims (ne[0] must be a multiple of the block). */
export function tensorBytes(t: TensorType, dims: readonly number[]): number {
  const rows = dims.slice(1).reduce((a, b) => a * b, 1);
  return (dims[0] / t.blockSize) * t.blockBytes * rows;
}

export function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
