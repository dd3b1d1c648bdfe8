/**
 * Collecting garbage where a big model's block state has just become garbage. V8 frees the
 * memory of typed arrays only when it collects, and left to itself it lets about a block's
 * worth pile up first: measured at 1B parameters, RSS swung by ~1 GB from one block to the
 * next. A full collection at a block boundary costs milliseconds (the JS heap is small; the
 * arrays' memory is outside it), so it is taken only where blocks are big enough to matter.
 * And checking, before an allocation too big for the machine, that it can fit.
 */
import os from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { fail } from './errors';
import { blockWeightBytes, type ModelConfig } from './model/types';

/** Float32 bytes of one block's weights from which a block boundary is worth a collection. */
export const COLLECT_FROM_BLOCK_BYTES = 16 * 2 ** 20;

let gc: (() => void) | undefined;

/**
 * A full garbage collection now, with the typed arrays it found unreachable freed before it
 * returns (V8's own `gc`, exposed once through its flags). One collection hands the freeing of
 * array-buffer memory to a background thread, which on a loaded machine runs later (measured:
 * a third of the time the memory was still held after `gc()` returned); a second collection
 * starts by finishing that work on this thread.
 */
export function collectGarbage(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
  gc();
}

/** collectGarbage when a block of this model is big (at least COLLECT_FROM_BLOCK_BYTES); otherwise nothing. */
export function collectAtBlockBoundary(cfg: ModelConfig): void {
  if (blockWeightBytes(cfg) >= COLLECT_FROM_BLOCK_BYTES) collectGarbage();
}

/**
 * Bytes this process can still take: the system's available memory (Linux MemAvailable,
 * page cache counted as free), within a cgroup's limit where one is set below the machine's.
 */
export function availableMemoryBytes(): number {
  const available = os.freemem();
  const limit = process.constrainedMemory?.() ?? 0;
  if (limit > 0 && limit < os.totalmem()) return Math.min(available, Math.max(0, limit - process.memoryUsage().rss));
  return available;
}

const gb = (bytes: number) => (bytes / 1e9).toFixed(1);

/**
 * One clear error before an allocation of `bytes` that cannot fit (`what` holds them),
 * instead of the kernel's out-of-memory kill minutes later.
 */
export function ensureMemoryFor(bytes: number, what: string, available = availableMemoryBytes()): void {
  if (bytes > available) fail('out-of-memory', `${what}: ${gb(bytes)} GB, more than the ${gb(available)} GB this machine has available`);
}
