/**
 * The safetensors format (https://github.com/huggingface/safetensors), read (written by
 * safetensorsWrite.ts).
 *
 *   [8 bytes]  N, the header length, unsigned 64-bit little-endian
 *   [N bytes]  UTF-8 JSON: { "__metadata__": {string: string}?,
 *                            NAME: { "dtype": "F16", "shape": [..], "data_offsets": [begin, end] }, … }
 *   [rest]     the data region; a tensor's bytes are data[begin, end), little-endian, row-major
 *
 * Reading never loads a whole file: the header is parsed and validated up front, then each
 * tensor is read on request with fs.readSync at its offset (one file descriptor per shard),
 * so loading a model peaks at about its float32 size, not twice its file size.
 *
 * A checkpoint is one file, or shards listed by `model.safetensors.index.json`
 * ({ "weight_map": { NAME: "model-00001-of-00002.safetensors", … } }). Everything wrong with a
 * file (bad header, offsets outside the data, overlaps, size ≠ shape × dtype, unknown dtype,
 * missing shard or tensor, duplicate names) is one InvarxError('bad-model', …). Gaps between
 * tensors and unreferenced trailing bytes are accepted (harmless; the safetensors library
 * itself is stricter).
 */
import { closeSync, existsSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fail } from '../errors';
import { openRegularFile, readJsonFile } from '../files';
import { decodeBf16, decodeF16 } from './halfFloat';

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

export function isDtype(d: unknown): d is Dtype {
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
export function elementCount(shape: unknown): number {
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
