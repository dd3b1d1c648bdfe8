/**
 * Activation buffers reused across passes over the same rows. A fresh Float32Array of
 * megabytes costs more than the product that fills it (the allocator hands out new zeroed
 * pages, faulted in on first write, then the collector frees them), so a loop that redoes a
 * block thousands of times on the same rows (the norm tuning) takes its buffers from here.
 * A buffer handed out is overwritten by the next pass that takes the same name: callers
 * use a pass's outputs before they run the next one.
 */
import type { F32 } from './model/types';

export class ScratchBuffers {
  private readonly bufs = new Map<string, F32>();

  /** A buffer of `length` floats for `name`, its contents undefined. */
  take(name: string, length: number): F32 {
    let b = this.bufs.get(name);
    if (!b || b.length < length) {
      b = new Float32Array(length);
      this.bufs.set(name, b);
    }
    return b.length === length ? b : b.subarray(0, length);
  }
}

/** `scratch`'s buffer `name`, or a new zeroed array when there is no scratch. */
export function buffer(scratch: ScratchBuffers | undefined, name: string, length: number): F32 {
  return scratch ? scratch.take(name, length) : new Float32Array(length);
}

/** A copy of `src`: in `scratch`'s buffer `name` when there is a scratch, else a new array. */
export function copied(scratch: ScratchBuffers | undefined, name: string, src: F32): F32 {
  if (!scratch) return src.slice();
  const out = scratch.take(name, src.length);
  out.set(src);
  return out;
}
