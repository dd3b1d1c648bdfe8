/**
 * Where a run keeps what does not fit its memory budget (block activations): a directory
 * the caller names (the daemon: the job's own), or a fresh one under the system's temporary
 * directory. Everything in it can be recomputed, so it is removed when the run closes.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunConfig } from './contract';

export class Scratch {
  readonly dir: string;

  constructor(dir?: string) {
    this.dir = dir ?? join(tmpdir(), `invarx-scratch-${process.pid}-${randomBytes(4).toString('hex')}`);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The memory budget when none is given: a fifth of the machine's memory. */
export function defaultMemoryBudget(): number {
  return Math.floor(totalmem() / 5);
}

/*
 * A run's memory besides these two shares is what its size fixes: the embedding and
 * classifier, the palette-packed quantized model, the block being searched with its
 * calibration rows through each linear, the passes' chunks and the backend's arena; at 1B
 * parameters that is most of a 5 GB budget. Both shares spill cheaply: a scratch file
 * read back comes from the OS's page cache, and a transformed block is rebuilt from its
 * FP weights and moves.
 */

/** The run's memory budget in bytes. */
export function memoryBudget(config: RunConfig): number {
  return config.memoryBudget || defaultMemoryBudget();
}

/** Bytes of calibration activations a run keeps in memory: an eighth of its budget. */
export function activationBytes(config: RunConfig): number {
  return Math.floor(memoryBudget(config) / 8);
}

/**
 * Bytes of block weights a run keeps as float arrays: an eighth of its budget, half for
 * transformed and half for quantized blocks (past it, search/blocks.ts rebuilds and packs).
 */
export function weightBytes(config: RunConfig): number {
  return Math.floor(memoryBudget(config) / 8);
}

/** "6G", "512M", "300k" or plain bytes → bytes; NaN when it is none of these. */
export function parseBytes(s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?B)?\s*$/.exec(s);
  if (!m) return NaN;
  const unit = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * unit);
}
