/**
 * Streamed GGUF writer: the header, metadata and tensor infos first (every tensor's size
 * is known from its type and dims), then each tensor's bytes, asked for only when its turn
 * comes, so a model is never held whole. Written to PATH.tmp and renamed at the end, so a
 * failed write leaves no half file under the name.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GgufValueType, alignUp, tensorBytes, type GgufValue, type TensorType } from './types';

export interface GgufTensorToWrite {
  name: string;
  dims: number[];
  type: TensorType;
  /** The packed bytes, produced when the writer reaches this tensor; may be called in pieces of whole rows (see chunks). */
  data: () => Uint8Array | Iterable<Uint8Array>;
}

class ByteSink {
  private parts: Uint8Array[] = [];
  private buf = new Uint8Array(1 << 16);
  private dv = new DataView(this.buf.buffer);
  private pos = 0;
  length = 0;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.flushBuf();
    if (n > this.buf.length) {
      this.buf = new Uint8Array(n);
      this.dv = new DataView(this.buf.buffer);
    }
  }
  private flushBuf(): void {
    if (this.pos > 0) this.parts.push(this.buf.slice(0, this.pos));
    this.pos = 0;
  }
  u8(v: number): void { this.room(1); this.dv.setUint8(this.pos, v); this.pos += 1; this.length += 1; }
  i8(v: number): void { this.room(1); this.dv.setInt8(this.pos, v); this.pos += 1; this.length += 1; }
  u16(v: number): void { this.room(2); this.dv.setUint16(this.pos, v, true); this.pos += 2; this.length += 2; }
  i16(v: number): void { this.room(2); this.dv.setInt16(this.pos, v, true); this.pos += 2; this.length += 2; }
  u32(v: number): void { this.room(4); this.dv.setUint32(this.pos, v, true); this.pos += 4; this.length += 4; }
  i32(v: number): void { this.room(4); this.dv.setInt32(this.pos, v, true); this.pos += 4; this.length += 4; }
  f32(v: number): void { this.room(4); this.dv.setFloat32(this.pos, v, true); this.pos += 4; this.length += 4; }
  f64(v: number): void { this.room(8); this.dv.setFloat64(this.pos, v, true); this.pos += 8; this.length += 8; }
  u64(v: number | bigint): void { this.room(8); this.dv.setBigUint64(this.pos, BigInt(v), true); this.pos += 8; this.length += 8; }
  i64(v: number | bigint): void { this.room(8); this.dv.setBigInt64(this.pos, BigInt(v), true); this.pos += 8; this.length += 8; }
  bytes(b: Uint8Array): void { this.room(b.length); this.buf.set(b, this.pos); this.pos += b.length; this.length += b.length; }
  str(s: string): void { const b = Buffer.from(s, 'utf8'); this.u64(b.length); this.bytes(b); }
  zeros(n: number): void { this.bytes(new Uint8Array(n)); }
  take(): Uint8Array[] { this.flushBuf(); const p = this.parts; this.parts = []; return p; }
}

function writeScalar(s: ByteSink, type: GgufValueType, v: number | bigint | string | boolean): void {
  switch (type) {
    case GgufValueType.UINT8: return s.u8(Number(v));
    case GgufValueType.INT8: return s.i8(Number(v));
    case GgufValueType.UINT16: return s.u16(Number(v));
    case GgufValueType.INT16: return s.i16(Number(v));
    case GgufValueType.UINT32: return s.u32(Number(v));
    case GgufValueType.INT32: return s.i32(Number(v));
    case GgufValueType.FLOAT32: return s.f32(Number(v));
    case GgufValueType.BOOL: return s.u8(v ? 1 : 0);
    case GgufValueType.STRING: return s.str(String(v));
    case GgufValueType.UINT64: return s.u64(typeof v === 'bigint' ? v : Number(v));
    case GgufValueType.INT64: return s.i64(typeof v === 'bigint' ? v : Number(v));
    case GgufValueType.FLOAT64: return s.f64(Number(v));
    default: throw new RangeError(`GGUF value type ${type} cannot be a scalar`);
  }
}

/** Write a GGUF file; returns its size in bytes. */
export function writeGguf(path: string, metadata: ReadonlyArray<[string, GgufValue]>, tensors: readonly GgufTensorToWrite[]): number {
  const alignEntry = metadata.find(([k]) => k === 'general.alignment');
  const alignment = alignEntry ? Number(alignEntry[1].value) : GGUF_DEFAULT_ALIGNMENT;
  const head = new ByteSink();
  head.u32(GGUF_MAGIC);
  head.u32(GGUF_VERSION);
  head.u64(tensors.length);
  head.u64(metadata.length);
  for (const [key, v] of metadata) {
    head.str(key);
    head.u32(v.type);
    if (v.type === GgufValueType.ARRAY) {
      head.u32(v.itemType);
      head.u64(v.value.length);
      for (const item of v.value) writeScalar(head, v.itemType, item);
    } else {
      writeScalar(head, v.type, v.value);
    }
  }
  const sizes = tensors.map((t) => tensorBytes(t.type, t.dims));
  let offset = 0;
  tensors.forEach((t, i) => {
    head.str(t.name);
    head.u32(t.dims.length);
    for (const d of t.dims) head.u64(d);
    head.u32(t.type.id);
    head.u64(offset);
    offset = alignUp(offset + sizes[i], alignment);
  });
  head.zeros(alignUp(head.length, alignment) - head.length);

  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w');
  let written = 0;
  const put = (b: Uint8Array) => {
    let o = 0;
    while (o < b.length) o += writeSync(fd, b, o, b.length - o);
    written += b.length;
  };
  try {
    for (const p of head.take()) put(p);
    tensors.forEach((t, i) => {
      const data = t.data();
      let got = 0;
      for (const chunk of data instanceof Uint8Array ? [data] : data) {
        put(chunk);
        got += chunk.length;
      }
      if (got !== sizes[i]) throw new RangeError(`GGUF tensor ${t.name}: produced ${got} bytes, its type and dims need ${sizes[i]}`);
      const pad = alignUp(sizes[i], alignment) - sizes[i];
      if (pad > 0) put(new Uint8Array(pad));
    });
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  return written;
}
