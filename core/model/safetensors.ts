/**
 * The safetensors format (https://github.com/huggingface/safetensors), read and written.
 *
 *   [8 bytes]  N, the header length, unsigned 64-bit little-endian
 *   [N bytes]  UTF-8 JSON: { "__metadata__": {string: string}?,
 *                            NAME: { "dtype": "F16", "shape": [..], "data_offsets": [begin, end] }, … }
 *   [rest]     the data region; a tensor's bytes are data[begin, end), little-endian, row-major
 *
 * Reading never loads a whole file: the header is parsed and validated up front, then each
 * tensor is read on request with fs.readSync at its offset (one file descriptor per shard),
 * so loading a model peaks at about its float32 size, not twice its file size. Writing is
 * the mirror image: the streaming writers ask for each tensor's values only when its turn
 * comes, so a checkpoint larger than memory is written one tensor at a time.
 *
 * A checkpoint is one file, or shards listed by `model.safetensors.index.json`
 * ({ "weight_map": { NAME: "model-00001-of-00002.safetensors", … } }). Everything wrong with a
 * file (bad header, offsets outside the data, overlaps, size ≠ shape × dtype, unknown dtype,
 * missing shard or tensor, duplicate names) is one InvarxError('bad-model', …). Gaps between
 * tensors and unreferenced trailing bytes are accepted (harmless; the safetensors library
 * itself is stricter).
 *
 * Also here: fp16 and bf16 <-> float32 converters (Node 20 has no Math.f16round), used by
 * the reader, the writer and the GPTQ export.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fail } from '../errors';
import { openRegularFile, readJsonFile } from '../files';

// ---------------------------------------------------------------------------------------
// fp16 / bf16

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

// ---------------------------------------------------------------------------------------
// Header

/** Element sizes of every dtype the safetensors library defines. */
const DTYPE_SIZE = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
} as const;

export type Dtype = keyof typeof DTYPE_SIZE;

export function dtypeSize(d: Dtype): number {
  return DTYPE_SIZE[d];
}

function isDtype(d: unknown): d is Dtype {
  return typeof d === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, d);
}

/** The safetensors library refuses headers above 100 MB; so do we (a hostile length must not make us allocate). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Byte range inside the data region. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** Bytes before the data region: 8 + N. */
  dataStart: number;
  metadata: Record<string, string>;
  tensors: TensorEntry[];
}

/** Number of elements of a shape, or -1 if it is not a list of non-negative safe integers or overflows. */
function elementCount(shape: unknown): number {
  if (!Array.isArray(shape)) return -1;
  let n = 1;
  for (const d of shape) {
    if (!(Number.isSafeInteger(d) && d >= 0)) return -1;
    n *= d;
    if (!Number.isSafeInteger(n)) return -1;
  }
  return n;
}

/**
 * Keys of the top-level object of a JSON text, in order, duplicates kept (JSON.parse
 * silently keeps the last of duplicates, which would hide a tensor). Assumes `json` already
 * parsed as an object.
 */
function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(json.slice(i, j + 1)) as string);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1 && c === '{';
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

/**
 * Parse and validate the header of a safetensors file of `fileSize` bytes whose first bytes
 * are `head` (at least the 8-byte length and the N header bytes). `name` prefixes errors.
 */
export function parseSafetensorsHeader(head: Uint8Array, fileSize: number, name: string): SafetensorsHeader {
  const bad = (why: string): never => fail('bad-model', `${name}: not a valid safetensors file: ${why}`);
  if (fileSize < 8 || head.byteLength < 8) bad(`${fileSize} bytes is too short for the 8-byte header length`);
  const n64 = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(fileSize - 8)) bad(`header length ${n64} points beyond the end of the file (${fileSize} bytes)`);
  const n = Number(n64);
  if (n > MAX_HEADER_BYTES) bad(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (n < 2) bad(`header length ${n} is too short for a JSON object`);
  if (head.byteLength < 8 + n) bad(`header is truncated`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(head.subarray(8, 8 + n));
  } catch {
    return bad('header is not UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return bad('header is not JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) bad('header is not a JSON object');
  const obj = json as Record<string, unknown>;
  const keys = topLevelKeys(text);
  const seen = new Set<string>();
  for (const k of keys) {
    if (seen.has(k)) bad(`tensor "${k}" appears twice in the header`);
    seen.add(k);
  }
  const dataLen = fileSize - 8 - n;
  const metadata: Record<string, string> = Object.create(null) as Record<string, string>; // keys come from the file
  const tensors: TensorEntry[] = [];
  for (const key of Object.keys(obj)) {
    const v = obj[key];
    if (key === '__metadata__') {
      if (v === null) continue;
      if (typeof v !== 'object' || Array.isArray(v)) bad('__metadata__ is not an object');
      for (const [mk, mv] of Object.entries(v as Record<string, unknown>)) {
        if (typeof mv !== 'string') bad(`__metadata__ value "${mk}" is not a string`);
        metadata[mk] = mv as string;
      }
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`entry "${key}" is not an object`);
    const t = v as Record<string, unknown>;
    if (!isDtype(t.dtype)) bad(`tensor "${key}" has unknown dtype ${JSON.stringify(t.dtype)}`);
    const dtype = t.dtype as Dtype;
    const count = elementCount(t.shape);
    if (count < 0) bad(`tensor "${key}" has an invalid shape ${JSON.stringify(t.shape)}`);
    const off = t.data_offsets;
    if (!(Array.isArray(off) && off.length === 2 && off.every((x) => Number.isSafeInteger(x) && x >= 0) && off[0] <= off[1])) {
      bad(`tensor "${key}" has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as number[];
    if (end > dataLen) bad(`tensor "${key}" data [${begin}, ${end}) lies outside the ${dataLen}-byte data region`);
    if (end - begin !== count * DTYPE_SIZE[dtype]) {
      bad(`tensor "${key}" holds ${end - begin} bytes but shape ${JSON.stringify(t.shape)} of ${dtype} needs ${count * DTYPE_SIZE[dtype]}`);
    }
    tensors.push({ name: key, dtype, shape: (t.shape as number[]).slice(), begin, end });
  }
  // Byte ranges must not overlap (empty tensors occupy nothing).
  const byStart = tensors.filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byStart.length; i++) {
    if (byStart[i].begin < byStart[i - 1].end) bad(`tensors "${byStart[i - 1].name}" and "${byStart[i].name}" overlap`);
  }
  return { dataStart: 8 + n, metadata, tensors };
}

// ---------------------------------------------------------------------------------------
// Reading

export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** The file it lives in. */
  file: string;
}

interface Located extends TensorEntry {
  fd: number;
  file: string;
  /** Absolute file offset of the first byte. */
  offset: number;
}

/** readSync until `len` bytes are in, in chunks below the 2 GiB per-call limit. */
function readFully(fd: number, dst: Uint8Array, position: number, file: string): void {
  const CHUNK = 1 << 30;
  let done = 0;
  while (done < dst.byteLength) {
    const want = Math.min(CHUNK, dst.byteLength - done);
    const got = readSync(fd, dst, done, want, position + done);
    if (got <= 0) fail('bad-model', `${file}: unexpected end of file`);
    done += got;
  }
}

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

/**
 * An open safetensors checkpoint (one file or shards). Tensors are read one at a time;
 * call `close()` when done (the readers below do, in finally).
 */
export class SafetensorsReader {
  private constructor(
    private readonly byName: Map<string, Located>,
    private readonly fds: number[],
    /** `__metadata__` of the (first) file. */
    readonly metadata: Record<string, string>,
  ) {}

  /** A `.safetensors` file, a `model.safetensors.index.json`, or a directory holding either. */
  static open(path: string): SafetensorsReader {
    let st;
    try {
      st = statSync(path);
    } catch (e) {
      return fail('bad-model', `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (st.isDirectory()) {
      // transformers' order: the single file first, then the shard index.
      if (existsSync(join(path, SINGLE_FILE))) return SafetensorsReader.openFiles([join(path, SINGLE_FILE)]);
      if (existsSync(join(path, INDEX_FILE))) return SafetensorsReader.openIndex(join(path, INDEX_FILE));
      return fail('bad-model', `${path}: no ${SINGLE_FILE} or ${INDEX_FILE}`);
    }
    if (path.endsWith('.json')) return SafetensorsReader.openIndex(path);
    return SafetensorsReader.openFiles([path]);
  }

  private static openIndex(indexPath: string): SafetensorsReader {
    const index = readJsonFile(indexPath, 'shard index', 'bad-model');
    const map = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) {
      return fail('bad-model', `${indexPath}: shard index has no weight_map object`);
    }
    const entries = Object.entries(map as Record<string, unknown>);
    const shards: string[] = [];
    for (const [tensor, file] of entries) {
      // A shard is a plain file name beside the index, never a path that escapes the directory.
      if (typeof file !== 'string' || file === '' || file !== basename(file) || file === '..' || file === '.') {
        return fail('bad-model', `${indexPath}: tensor "${tensor}" maps to an invalid shard name ${JSON.stringify(file)}`);
      }
      if (!shards.includes(file)) shards.push(file);
    }
    if (shards.length === 0) fail('bad-model', `${indexPath}: shard index lists no tensors`);
    const dir = dirname(indexPath);
    for (const s of shards) {
      if (!existsSync(join(dir, s))) fail('bad-model', `${indexPath}: shard file ${s} is missing`);
    }
    const reader = SafetensorsReader.openFiles(shards.map((s) => join(dir, s)));
    for (const [tensor, file] of entries) {
      const at = reader.byName.get(tensor);
      if (!at || basename(at.file) !== file) {
        reader.close();
        return fail('bad-model', `${indexPath}: tensor "${tensor}" is listed in shard ${file as string} but is not in it`);
      }
    }
    return reader;
  }

  private static openFiles(files: string[]): SafetensorsReader {
    const byName = new Map<string, Located>();
    const fds: number[] = [];
    let metadata: Record<string, string> | undefined;
    try {
      for (const file of files) {
        const { fd } = openRegularFile(file, 'model file', 'bad-model');
        fds.push(fd);
        const size = fstatSync(fd).size;
        const lenBuf = new Uint8Array(8);
        if (size >= 8) readFully(fd, lenBuf, 0, file);
        // Validate the length against the file size before allocating the header buffer.
        const n = size >= 8 ? new DataView(lenBuf.buffer).getBigUint64(0, true) : 0n;
        const headLen = size >= 8 && n <= BigInt(Math.min(size - 8, MAX_HEADER_BYTES)) ? 8 + Number(n) : Math.min(size, 8);
        const head = new Uint8Array(headLen);
        if (headLen > 0) readFully(fd, head, 0, file);
        const h = parseSafetensorsHeader(head, size, file);
        metadata ??= h.metadata;
        for (const t of h.tensors) {
          const prev = byName.get(t.name);
          if (prev) fail('bad-model', `tensor "${t.name}" appears in both ${prev.file} and ${file}`);
          byName.set(t.name, { ...t, fd, file, offset: h.dataStart + t.begin });
        }
      }
    } catch (e) {
      for (const fd of fds) closeSync(fd);
      throw e;
    }
    return new SafetensorsReader(byName, fds, metadata ?? {});
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.locate(name);
    return { name, dtype: t.dtype, shape: t.shape.slice(), file: t.file };
  }

  private locate(name: string): Located {
    const t = this.byName.get(name);
    if (!t) return fail('bad-model', `tensor "${name}" is missing from the checkpoint`);
    return t;
  }

  /** The tensor's raw little-endian bytes (a fresh, 8-byte-aligned buffer). */
  readBytes(name: string): Uint8Array {
    const t = this.locate(name);
    const bytes = new Uint8Array(new ArrayBuffer(Math.ceil((t.end - t.begin) / 8) * 8), 0, t.end - t.begin);
    readFully(t.fd, bytes, t.offset, t.file);
    return bytes;
  }

  /**
   * A floating-point tensor as float32 (F32, F16, BF16 or F64), checked against `shape`
   * when given. 16-bit tensors are converted in chunks so the only full-size buffer is the
   * float32 result.
   */
  readF32(name: string, shape?: readonly number[]): Float32Array {
    const t = this.locate(name);
    if (shape) this.checkLocatedShape(t, shape);
    const count = (t.end - t.begin) / DTYPE_SIZE[t.dtype];
    const out = new Float32Array(count);
    if (t.dtype === 'F32') {
      // Straight into the result: safetensors is little-endian, as are the hosts Node runs on here.
      readFully(t.fd, new Uint8Array(out.buffer), t.offset, t.file);
    } else if (t.dtype === 'F16' || t.dtype === 'BF16') {
      const CHUNK = 1 << 20; // elements
      const raw = new Uint16Array(Math.min(CHUNK, count));
      for (let i = 0; i < count; i += CHUNK) {
        const n = Math.min(CHUNK, count - i);
        const part = raw.subarray(0, n);
        readFully(t.fd, new Uint8Array(part.buffer, 0, n * 2), t.offset + i * 2, t.file);
        (t.dtype === 'F16' ? decodeF16 : decodeBf16)(part, out.subarray(i, i + n));
      }
    } else if (t.dtype === 'F64') {
      out.set(new Float64Array(this.readBytes(name).buffer, 0, count));
    } else {
      fail('bad-model', `tensor "${name}" is ${t.dtype}, expected a floating-point tensor (F32, F16, BF16)`);
    }
    return out;
  }

  /** An integer tensor (I32, or I64/U8/I8/I16/U16 widened; I64 values must fit in int32). */
  readI32(name: string, shape?: readonly number[]): Int32Array {
    const t = this.locate(name);
    if (shape) this.checkLocatedShape(t, shape);
    const bytes = this.readBytes(name);
    const count = (t.end - t.begin) / DTYPE_SIZE[t.dtype];
    switch (t.dtype) {
      case 'I32':
      case 'U32':
        return new Int32Array(bytes.buffer, 0, count);
      case 'I64': {
        const v = new BigInt64Array(bytes.buffer, 0, count);
        const out = new Int32Array(count);
        for (let i = 0; i < count; i++) {
          if (v[i] < -2147483648n || v[i] > 2147483647n) fail('bad-model', `tensor "${name}": value ${v[i]} does not fit in int32`);
          out[i] = Number(v[i]);
        }
        return out;
      }
      case 'U8':
        return Int32Array.from(new Uint8Array(bytes.buffer, 0, count));
      case 'I8':
        return Int32Array.from(new Int8Array(bytes.buffer, 0, count));
      case 'I16':
        return Int32Array.from(new Int16Array(bytes.buffer, 0, count));
      case 'U16':
        return Int32Array.from(new Uint16Array(bytes.buffer, 0, count));
      default:
        return fail('bad-model', `tensor "${name}" is ${t.dtype}, expected an integer tensor`);
    }
  }

  /** InvarxError('bad-model') unless tensor `name` exists with this shape. */
  checkShape(name: string, shape: readonly number[]): void {
    this.checkLocatedShape(this.locate(name), shape);
  }

  private checkLocatedShape(t: Located, shape: readonly number[]): void {
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      fail('bad-model', `tensor "${t.name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
  }

  close(): void {
    for (const fd of this.fds.splice(0)) closeSync(fd);
  }
}

/** Open a checkpoint, run f, close it (also when f throws). */
export function withSafetensors<T>(path: string, f: (r: SafetensorsReader) => T): T {
  const r = SafetensorsReader.open(path);
  try {
    return f(r);
  } finally {
    r.close();
  }
}

// ---------------------------------------------------------------------------------------
// Writing

/** A tensor to write, before its values exist (the streaming writers ask for them in write order). */
export interface TensorSpec {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
}

export interface TensorToWrite extends TensorSpec {
  /**
   * Float32Array/Float64Array values are converted to a floating dtype (F32, F16, BF16,
   * F64). Anything else is taken as the raw little-endian elements of `dtype` (e.g. an
   * Int32Array for I32, a Uint16Array of fp16 bits for F16).
   */
  data: ArrayBufferView;
}

/**
 * The values of one tensor (as `TensorToWrite.data`), called once per tensor in write order,
 * each call after the previous tensor's bytes are written: a checkpoint larger than memory
 * is written holding one tensor and its encoded bytes at a time.
 */
export type TensorProducer<T extends TensorSpec> = (t: T) => ArrayBufferView;

/** The bytes of one tensor in its dtype. */
function encodeTensor(t: TensorSpec, data: ArrayBufferView): Uint8Array {
  const { dtype } = t;
  let out: ArrayBufferView = data;
  if (data instanceof Float32Array || data instanceof Float64Array) {
    if (dtype === 'F32') out = data instanceof Float32Array ? data : Float32Array.from(data);
    else if (dtype === 'F64') out = data instanceof Float64Array ? data : Float64Array.from(data);
    else if (dtype === 'F16') out = encodeF16(data);
    else if (dtype === 'BF16') out = encodeBf16(data);
    else fail('bad-config', `tensor "${t.name}": cannot convert floating-point values to ${dtype}`);
  }
  const bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  const count = elementCount(t.shape);
  if (count < 0 || bytes.byteLength !== count * DTYPE_SIZE[dtype]) {
    fail('bad-config', `tensor "${t.name}": ${bytes.byteLength} bytes do not match shape [${t.shape.join(', ')}] of ${dtype}`);
  }
  return bytes;
}

/**
 * Order tensors as the safetensors library does: larger elements first (so every tensor
 * starts aligned to its element size, given the 8-byte-aligned header), then by name.
 */
function writeOrder<T extends TensorSpec>(tensors: readonly T[]): T[] {
  const names = new Set<string>();
  for (const t of tensors) {
    if (t.name === '' || t.name === '__metadata__') fail('bad-config', `invalid tensor name ${JSON.stringify(t.name)}`);
    if (names.has(t.name)) fail('bad-config', `tensor "${t.name}" given twice`);
    names.add(t.name);
    if (!isDtype(t.dtype)) fail('bad-config', `tensor "${t.name}": unknown dtype ${String(t.dtype)}`);
    if (elementCount(t.shape) < 0) fail('bad-config', `tensor "${t.name}": invalid shape ${JSON.stringify(t.shape)}`);
  }
  return [...tensors].sort((a, b) => DTYPE_SIZE[b.dtype] - DTYPE_SIZE[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function byteLengthOf(t: TensorSpec): number {
  return elementCount(t.shape) * DTYPE_SIZE[t.dtype];
}

/**
 * Write one safetensors file. The output is a pure function of the arguments: tensor order
 * as `writeOrder`, compact JSON with `__metadata__` first, padded with spaces to a multiple
 * of 8 bytes (as the safetensors library pads). Tensors are encoded and written one at a
 * time. Returns the file size.
 */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): number {
  return writeSafetensorsStream(path, tensors, (t) => t.data, metadata);
}

/** `writeSafetensors` with each tensor's values asked of `produce` when its turn comes (see TensorProducer). */
export function writeSafetensorsStream<T extends TensorSpec>(
  path: string, tensors: readonly T[], produce: TensorProducer<T>, metadata?: Record<string, string>,
): number {
  const ordered = writeOrder(tensors);
  // Built as text, not as an object: a tensor named "__proto__" must stay an ordinary key.
  const entries: string[] = [];
  if (metadata) {
    const meta = Object.entries(metadata).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [k, v] of meta) if (typeof v !== 'string') fail('bad-config', `metadata "${k}" must be a string`);
    entries.push(`"__metadata__":{${meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  }
  let offset = 0;
  for (const t of ordered) {
    const len = byteLengthOf(t);
    entries.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + len] })}`);
    offset += len;
  }
  let json = Buffer.from(`{${entries.join(',')}}`, 'utf8');
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const lenBytes = Buffer.alloc(8);
  lenBytes.writeBigUInt64LE(BigInt(json.byteLength));
  const fd = openSync(path, 'w');
  try {
    writeAll(fd, lenBytes);
    writeAll(fd, json);
    for (const t of ordered) writeAll(fd, encodeTensor(t, produce(t)));
  } finally {
    closeSync(fd);
  }
  return 8 + json.byteLength + offset;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) done += writeSync(fd, bytes, done, Math.min(1 << 30, bytes.byteLength - done));
}

/** Tensors (in write order) cut into shards: a new shard when the next tensor would take one past `max` bytes. */
function cutShards<T extends TensorSpec>(ordered: readonly T[], max: number): T[][] {
  const shards: T[][] = [[]];
  let size = 0;
  for (const t of ordered) {
    const len = byteLengthOf(t);
    if (size > 0 && size + len > max) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += len;
  }
  return shards;
}

/**
 * The smallest shard limit that cuts `ordered` into at most `n` shards (the cut count only
 * falls as the limit grows, so bisect between the largest tensor and the total).
 */
function shardLimitFor(ordered: readonly TensorSpec[], n: number): number {
  let lo = Math.max(1, ...ordered.map(byteLengthOf));
  let hi = Math.max(lo, ordered.reduce((s, t) => s + byteLengthOf(t), 0));
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (cutShards(ordered, mid).length <= n) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export interface CheckpointWriteOptions {
  metadata?: Record<string, string>;
  /** Largest shard (default 4 GiB). */
  maxShardBytes?: number;
  /** Instead of maxShardBytes: at most this many shards of about equal size (fewer only where whole tensors cannot be cut finer). */
  shards?: number;
}

/**
 * Write a checkpoint into `dir`: `model.safetensors` when it fits in `maxShardBytes`
 * (default 4 GiB), else `model-0000k-of-0000n.safetensors` shards (tensors in write order,
 * a new shard when the next tensor would overflow) plus `model.safetensors.index.json`,
 * as transformers' save_pretrained lays them out. Returns the file names written.
 */
export function writeSafetensorsCheckpoint(dir: string, tensors: readonly TensorToWrite[], opts: CheckpointWriteOptions = {}): string[] {
  return writeSafetensorsCheckpointStream(dir, tensors, (t) => t.data, opts);
}

/** `writeSafetensorsCheckpoint` with each tensor's values asked of `produce` when its turn comes (see TensorProducer). */
export function writeSafetensorsCheckpointStream<T extends TensorSpec>(
  dir: string, tensors: readonly T[], produce: TensorProducer<T>, opts: CheckpointWriteOptions = {},
): string[] {
  const ordered = writeOrder(tensors);
  if (opts.shards !== undefined && opts.maxShardBytes !== undefined) fail('bad-config', 'give a shard count or a shard size, not both');
  if (opts.shards !== undefined && !(Number.isSafeInteger(opts.shards) && opts.shards >= 1)) {
    fail('bad-config', `the shard count must be a positive integer, got ${opts.shards}`);
  }
  const max = opts.shards !== undefined ? shardLimitFor(ordered, opts.shards) : (opts.maxShardBytes ?? 4 * 2 ** 30);
  const total = ordered.reduce((s, t) => s + byteLengthOf(t), 0);
  if (total <= max) {
    writeSafetensorsStream(join(dir, SINGLE_FILE), ordered, produce, opts.metadata);
    return [SINGLE_FILE];
  }
  const shards = cutShards(ordered, max);
  const pad = (k: number) => String(k).padStart(5, '0');
  const names = shards.map((_, k) => `model-${pad(k + 1)}-of-${pad(shards.length)}.safetensors`);
  const weightMap: Record<string, string> = {};
  shards.forEach((s, k) => {
    writeSafetensorsStream(join(dir, names[k]), s, produce, opts.metadata);
    for (const t of s) weightMap[t.name] = names[k];
  });
  const sortedMap = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]));
  const index = { metadata: { total_size: total }, weight_map: sortedMap };
  writeFileSync(join(dir, INDEX_FILE), JSON.stringify(index, null, 2) + '\n');
  return [...names, INDEX_FILE];
}
