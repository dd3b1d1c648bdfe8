/**
 * The memory of one wasm backend: a shared WebAssembly.Memory holding, from the bottom,
 * the helper threads' control words, a resident region and a scratch region.
 *
 * - Resident blocks outlive a call (pinned weights, packed once; KV caches the kernels read
 *   in place): first-fit from a free list, or appended at the region's end. They are only
 *   allocated or freed between kernel calls.
 * - Scratch is a bump allocator above the resident region: each backend call resets it,
 *   lays its operands out (64-byte aligned), copies inputs in and results out.
 *
 * The memory grows as needed; it is shared (SharedArrayBuffer-backed) so helper threads can
 * work on it, and shared memories never move, so growing leaves old views valid — only `f32`
 * is refreshed to see the new length. It never shrinks (WebAssembly cannot): freed resident
 * blocks are reused, by later resident blocks and by scratch.
 */
import { CTL_BYTES } from './threads';
import { WA, type WasmMemory } from './api';

const PAGE = 65536;
/** 2 GiB: keeps every byte offset below 2^31, so the kernels' i32 arithmetic cannot wrap. */
const MAX_PAGES = 32768;
const MAX_BYTES = MAX_PAGES * PAGE;
const ALIGN = 64;

const up = (v: number) => Math.ceil(v / ALIGN) * ALIGN;

export class Arena {
  readonly memory: WasmMemory;
  /** A view of the whole memory. */
  f32: Float32Array;
  /** End of the resident region: scratch starts here. */
  private base = CTL_BYTES;
  private top = CTL_BYTES;
  /** Free resident blocks [start, end) below `base`, sorted, never adjacent (merged). */
  private free: Array<[number, number]> = [];
  /** Every buffer object this memory has had (one per growth): a view on any of them is in this memory. */
  private readonly buffers = new WeakSet<ArrayBufferLike>();

  constructor(initialBytes = 1 << 20) {
    this.memory = new WA.Memory({ initial: Math.ceil(initialBytes / PAGE), maximum: MAX_PAGES, shared: true });
    this.f32 = new Float32Array(this.memory.buffer);
    this.buffers.add(this.memory.buffer);
  }

  reset(): void {
    this.top = this.base;
  }

  /** Byte offset of scratch room for `floats` float32 values (valid until the next reset or resident allocation). */
  alloc(floats: number): number {
    const p = up(this.top);
    const end = p + floats * 4;
    this.ensure(end);
    this.top = end;
    return p;
  }

  /** Byte offset of a resident block of `floats` float32 values, or -1 when the memory has no room. */
  allocResident(floats: number): number {
    const size = up(Math.max(1, floats) * 4);
    for (let i = 0; i < this.free.length; i++) {
      const [s, e] = this.free[i];
      if (e - s < size) continue;
      if (e - s === size) this.free.splice(i, 1);
      else this.free[i] = [s + size, e];
      return s;
    }
    const p = up(this.base);
    if (p + size > MAX_BYTES) return -1;
    this.ensure(p + size);
    this.base = p + size;
    this.top = Math.max(this.top, this.base);
    return p;
  }

  /** Returns a block from allocResident (its size as allocated) to the free list. */
  freeResident(p: number, floats: number): void {
    let s = p;
    let e = p + up(Math.max(1, floats) * 4);
    let i = 0;
    while (i < this.free.length && this.free[i][1] < s) i++;
    // merge with the neighbours it touches
    if (i < this.free.length && this.free[i][1] === s) {
      s = this.free[i][0];
      this.free.splice(i, 1);
    }
    if (i < this.free.length && this.free[i][0] === e) {
      e = this.free[i][1];
      this.free.splice(i, 1);
    }
    if (e >= this.base) {
      // the last block: the region shrinks instead
      this.base = s;
      return;
    }
    this.free.splice(i, 0, [s, e]);
  }

  /** Bytes of the resident region (blocks in use and free gaps between them). */
  get residentBytes(): number {
    return this.base - CTL_BYTES;
  }

  /** A float32 view of `floats` values at byte offset p. */
  view(p: number, floats: number): Float32Array {
    const buffer = this.memory.buffer;
    this.buffers.add(buffer);
    return new Float32Array(buffer, p, floats);
  }

  /** Byte offset of `a` in this memory, or -1 when it lives elsewhere. */
  offsetOf(a: Float32Array): number {
    return this.buffers.has(a.buffer) ? a.byteOffset : -1;
  }

  private ensure(end: number): void {
    if (end > MAX_BYTES) throw new RangeError(`wasm arena: ${end} bytes exceed the 2 GiB limit`);
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      this.memory.grow(Math.ceil((end - have) / PAGE));
      this.f32 = new Float32Array(this.memory.buffer);
      this.buffers.add(this.memory.buffer);
    }
  }
}
