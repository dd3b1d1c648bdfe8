/**
 * Writing the safetensors format (the layout is described in safetensors.ts): one file, or a
 * checkpoint of shards with their index as transformers' save_pretrained lays them out. The
 * streaming writers ask for each tensor's values only when its turn comes, so a checkpoint
 * larger than memory is written one tensor at a time.
 */
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../errors';
import { encodeBf16, encodeF16 } from './halfFloat';
import { type Dtype, dtypeSize, elementCount, INDEX_FILE, isDtype, SINGLE_FILE } from './safetensors';

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
  if (count < 0 || bytes.byteLength !== count * dtypeSize(dtype)) {
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
  return [...tensors].sort((a, b) => dtypeSize(b.dtype) - dtypeSize(a.dtype) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function byteLengthOf(t: TensorSpec): number {
  return elementCount(t.shape) * dtypeSize(t.dtype);
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
