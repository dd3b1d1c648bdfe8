/**
 * GGUF reader: metadata and tensor infos parsed from the header, tensor data read and
 * dequantized to float32 one tensor at a time. A file that is not GGUF, truncated,
 * malformed or holding a tensor type we cannot read fails with one InvarxError('bad-model')
 * naming the file and the problem; every count and length is checked against the bytes the
 * file has before anything is allocated for it.
 */
import { closeSync, readSync } from 'node:fs';
import { openRegularFile } from '../files';
import { fail } from '../errors';
import { decodeF16 } from '../model/halfFloat';
import {
  GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufValueType, alignUp, tensorBytes, tensorType, type GgufTensorInfo, type GgufValue,
} from './types';

/** Bytes of the scalar GGUF types (strings and arrays vary). */
const SCALAR_BYTES: Partial<Record<GgufValueType, number>> = {
  [GgufValueType.UINT8]: 1, [GgufValueType.INT8]: 1, [GgufValueType.BOOL]: 1, [GgufValueType.UINT16]: 2, [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4, [GgufValueType.INT32]: 4, [GgufValueType.FLOAT32]: 4,
  [GgufValueType.UINT64]: 8, [GgufValueType.INT64]: 8, [GgufValueType.FLOAT64]: 8,
};
const MAX_DIMS = 4;
const CHUNK = 1 << 20;

/** Reads the header sequentially from a file descriptor, never past the file's end. */
class Cursor {
  private buf = new Uint8Array(0);
  private bufStart = 0;
  pos = 0;

  constructor(private fd: number, readonly size: number, private name: string) {}

  bad(what: string): never {
    return fail('bad-model', `${this.name}: ${what}`);
  }

  /** Make bytes [pos, pos+n) readable; a file that ends first is truncated. */
  private need(n: number, what: string): DataView {
    if (this.pos + n > this.size) this.bad(`truncated GGUF: ${what} at byte ${this.pos} needs ${n} bytes, the file has ${this.size - this.pos} left`);
    if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.buf.length) {
      const len = Math.min(Math.max(n, CHUNK), this.size - this.pos);
      this.buf = new Uint8Array(len);
      let got = 0;
      while (got < len) {
        const r = readSync(this.fd, this.buf, got, len - got, this.pos + got);
        if (r === 0) this.bad(`truncated GGUF: the file ended while reading ${what}`);
        got += r;
      }
      this.bufStart = this.pos;
    }
    const dv = new DataView(this.buf.buffer, this.pos - this.bufStart, n);
    this.pos += n;
    return dv;
  }

  u32(what: string): number { return this.need(4, what).getUint32(0, true); }
  /** A u64 that must be a safe integer (a count, a length, an offset). */
  u64(what: string): number {
    const v = this.need(8, what).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.bad(`malformed GGUF: ${what} is ${v}`);
    return Number(v);
  }
  str(what: string): string {
    const len = this.u64(`${what} length`);
    if (len > this.size - this.pos) this.bad(`truncated GGUF: ${what} of ${len} bytes at byte ${this.pos}, the file has ${this.size - this.pos} left`);
    const dv = this.need(len, what);
    return Buffer.from(dv.buffer, dv.byteOffset, len).toString('utf8');
  }
  scalar(type: GgufValueType, what: string): number | bigint | boolean | string {
    switch (type) {
      case GgufValueType.UINT8: return this.need(1, what).getUint8(0);
      case GgufValueType.INT8: return this.need(1, what).getInt8(0);
      case GgufValueType.BOOL: return this.need(1, what).getUint8(0) !== 0;
      case GgufValueType.UINT16: return this.need(2, what).getUint16(0, true);
      case GgufValueType.INT16: return this.need(2, what).getInt16(0, true);
      case GgufValueType.UINT32: return this.need(4, what).getUint32(0, true);
      case GgufValueType.INT32: return this.need(4, what).getInt32(0, true);
      case GgufValueType.FLOAT32: return this.need(4, what).getFloat32(0, true);
      case GgufValueType.UINT64: return this.need(8, what).getBigUint64(0, true);
      case GgufValueType.INT64: return this.need(8, what).getBigInt64(0, true);
      case GgufValueType.FLOAT64: return this.need(8, what).getFloat64(0, true);
      case GgufValueType.STRING: return this.str(what);
      default: return this.bad(`malformed GGUF: ${what} has value type ${type}`);
    }
  }
}

export interface GgufFile {
  path: string;
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  /** File offset of the data section. */
  dataOffset: number;
  fileSize: number;
}

/** Parse the header of a GGUF file (metadata and tensor infos; no tensor data). */
export function readGgufHeader(path: string): GgufFile {
  const { fd, size } = openRegularFile(path, 'model file', 'bad-model');
  try {
    return parseHeader(fd, size, path);
  } finally {
    closeSync(fd);
  }
}

function parseHeader(fd: number, size: number, path: string): GgufFile {
  const c = new Cursor(fd, size, path);
  if (size < 4 || c.u32('magic') !== GGUF_MAGIC) c.bad('not a GGUF file (no "GGUF" magic)');
  const version = c.u32('version');
  if (version !== 2 && version !== 3) c.bad(`GGUF version ${version} is not supported (2 and 3 are)`);
  const nTensors = c.u64('tensor count');
  const nKv = c.u64('metadata count');
  // Each entry takes at least 8 bytes of the file: counts beyond that are malformed, not a reason to allocate.
  if (nTensors > size / 8 || nKv > size / 8) c.bad(`malformed GGUF: ${nTensors} tensors and ${nKv} metadata entries cannot fit in ${size} bytes`);
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = c.str(`metadata key ${i}`);
    const type = c.u32(`type of ${key}`) as GgufValueType;
    if (type === GgufValueType.ARRAY) {
      const itemType = c.u32(`item type of ${key}`) as GgufValueType;
      const count = c.u64(`length of ${key}`);
      const minBytes = itemType === GgufValueType.STRING ? 8 : SCALAR_BYTES[itemType];
      if (minBytes === undefined) return c.bad(`malformed GGUF: array ${key} has item type ${itemType}`);
      if (count * minBytes > size - c.pos) c.bad(`truncated GGUF: array ${key} of ${count} items does not fit in the ${size - c.pos} bytes left`);
      const value = new Array<number | bigint | string | boolean>(count);
      for (let j = 0; j < count; j++) value[j] = c.scalar(itemType, `${key}[${j}]`);
      metadata.set(key, { type, itemType, value });
    } else {
      metadata.set(key, { type, value: c.scalar(type, key) } as GgufValue);
    }
  }
  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = c.str(`name of tensor ${i}`);
    if (names.has(name)) c.bad(`malformed GGUF: tensor ${name} appears twice`);
    names.add(name);
    const nDims = c.u32(`dims of ${name}`);
    if (nDims < 1 || nDims > MAX_DIMS) c.bad(`malformed GGUF: tensor ${name} has ${nDims} dimensions`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) {
      const ne = c.u64(`ne[${d}] of ${name}`);
      if (ne < 1) c.bad(`malformed GGUF: tensor ${name} has ne[${d}] = ${ne}`);
      dims.push(ne);
    }
    const type = c.u32(`type of ${name}`);
    const offset = c.u64(`offset of ${name}`);
    tensors.push({ name, dims, type, offset });
  }
  const alignEntry = metadata.get('general.alignment');
  const alignment = alignEntry ? Number(alignEntry.value) : GGUF_DEFAULT_ALIGNMENT;
  if (!(Number.isInteger(alignment) && alignment > 0 && (alignment & (alignment - 1)) === 0)) c.bad(`malformed GGUF: general.alignment ${alignment} is not a power of two`);
  const dataOffset = alignUp(c.pos, alignment);
  for (const t of tensors) {
    const tt = tensorType(t.type);
    if (!tt) continue; // reported when the tensor is read
    if (t.dims[0] % tt.blockSize !== 0) c.bad(`malformed GGUF: tensor ${t.name} of type ${tt.name} has rows of ${t.dims[0]}, not a multiple of ${tt.blockSize}`);
    const bytes = tensorBytes(tt, t.dims);
    if (!Number.isSafeInteger(bytes) || dataOffset + t.offset + bytes > size) {
      c.bad(`truncated GGUF: tensor ${t.name} (${bytes} bytes at data offset ${t.offset}) ends past the file's ${size} bytes`);
    }
  }
  return { path, version, metadata, tensors, dataOffset, fileSize: size };
}

/** The tensor `name` of `file` as float32 (row-major, ne[0] fastest), dequantized exactly. */
export function readGgufTensor(file: GgufFile, name: string): Float32Array {
  const t = file.tensors.find((x) => x.name === name);
  if (!t) fail('bad-model', `${file.path}: no tensor ${name}`);
  const tt = tensorType(t.type);
  if (!tt) fail('bad-model', `${file.path}: tensor ${name} has ggml type ${t.type}, which invarx cannot read (it reads f32, f16 and ${Object.keys(typeNames()).join(', ')})`);
  const bytes = tensorBytes(tt, t.dims);
  const raw = new Uint8Array(bytes);
  const { fd } = openRegularFile(file.path, 'model file', 'bad-model');
  try {
    let got = 0;
    while (got < bytes) {
      const r = readSync(fd, raw, got, bytes - got, file.dataOffset + t.offset + got);
      if (r === 0) fail('bad-model', `${file.path}: truncated GGUF: tensor ${name} ends past the end of the file`);
      got += r;
    }
  } finally {
    closeSync(fd);
  }
  const n = t.dims.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  if (tt.id === 0) {
    out.set(new Float32Array(raw.buffer, 0, n));
  } else if (tt.id === 1) {
    decodeF16(new Uint16Array(raw.buffer, 0, n), out);
  } else {
    const rowLen = t.dims[0];
    const rowBytes = (rowLen / tt.blockSize) * tt.blockBytes;
    for (let r = 0; r < n / rowLen; r++) {
      tt.format!.dequantizeRow(raw.subarray(r * rowBytes, (r + 1) * rowBytes), rowLen, out.subarray(r * rowLen, (r + 1) * rowLen));
    }
  }
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(out[i])) fail('bad-model', `${file.path}: tensor ${name} holds a non-finite value at index ${i}`);
  }
  return out;
}

function typeNames(): Record<string, true> {
  const out: Record<string, true> = {};
  for (let id = 2; id < 64; id++) {
    const t = tensorType(id);
    if (t) out[t.name] = true;
  }
  return out;
}
