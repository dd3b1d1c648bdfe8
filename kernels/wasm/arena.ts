/**
 * A bump allocator over one shared WebAssembly.Memory: each backend call resets it, lays
 * its operands out (64-byte aligned), copies inputs in and results out. The memory grows
 * as needed; it is shared (SharedArrayBuffer-backed) so helper threads can work on it,
 * and shared memories never move, so growing leaves old views valid — only `f32` is
 * refreshed to see the new length.
 */
import { CTL_BYTES } from './threads';
import { WA, type WasmMemory } from './api';

const PAGE = 65536;
/** 2 GiB: keeps every byte offset below 2^31, so the kernels' i32 arithmetic cannot wrap. */
const MAX_PAGES = 32768;

export class Arena {
  readonly memory: WasmMemory;
  /** A view of the whole memory. */
  f32: Float32Array;
  private top = CTL_BYTES;

  constructor(initialBytes = 1 << 20) {
    this.memory = new WA.Memory({ initial: Math.ceil(initialBytes / PAGE), maximum: MAX_PAGES, shared: true });
    this.f32 = new Float32Array(this.memory.buffer);
  }

  reset(): void {
    this.top = CTL_BYTES;
  }

  /** Byte offset of room for `floats` float32 values. */
  alloc(floats: number): number {
    const p = Math.ceil(this.top / 64) * 64;
    const end = p + floats * 4;
    if (end > MAX_PAGES * PAGE) throw new RangeError(`wasm arena: ${end} bytes exceed the 2 GiB limit`);
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      this.memory.grow(Math.ceil((end - have) / PAGE));
      this.f32 = new Float32Array(this.memory.buffer);
    }
    this.top = end;
    return p;
  }
}
