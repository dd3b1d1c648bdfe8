/**
 * Activations kept for later (the FP residual stream at each block boundary on the
 * calibration set, say), in memory up to a byte budget and past it in scratch files of a
 * directory the caller owns (a job's directory): a big model's calibration activations are
 * (layers + 1) × tokens × dim floats, more than memory can hold at 1B parameters and up.
 *
 * Values come back bit for bit. A write that fails (a full disk) is one InvarxError naming
 * the file, and leaves no partial file behind; `close` removes every scratch file.
 */
import { closeSync, mkdirSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from './errors';
import type { F32 } from './model/types';

export interface ActivationStoreOptions {
  /** Bytes of activations kept in memory; the rest goes to `dir`. */
  memoryBytes: number;
  /** Scratch directory for what does not fit (created when first needed). */
  dir?: string;
}

export class ActivationStore {
  private inMemory = new Map<number, F32>();
  private onDisk = new Map<number, { path: string; length: number }>();
  private memoryUsed = 0;
  private diskUsed = 0;

  constructor(private opts: ActivationStoreOptions) {
    if (!(opts.memoryBytes >= 0)) throw new RangeError(`memory budget must be >= 0 bytes, got ${opts.memoryBytes}`);
  }

  get bytesInMemory(): number {
    return this.memoryUsed;
  }

  get bytesOnDisk(): number {
    return this.diskUsed;
  }

  has(key: number): boolean {
    return this.inMemory.has(key) || this.onDisk.has(key);
  }

  /**
   * Hold at most `bytes` in memory from now on, writing what is held past it to the scratch
   * directory now (e.g. before a phase that needs the memory and reads these rarely).
   */
  limit(bytes: number): void {
    if (!(bytes >= 0)) throw new RangeError(`memory budget must be >= 0 bytes, got ${bytes}`);
    this.opts = { ...this.opts, memoryBytes: bytes };
    for (const [key, x] of [...this.inMemory]) {
      if (this.memoryUsed <= bytes) break;
      // written first, so a write that fails leaves the entry where it was
      this.writeOut(key, x);
      this.inMemory.delete(key);
      this.memoryUsed -= x.byteLength;
    }
  }

  /** Keep `x` under `key` (replacing what was there); the store owns `x` from now on when it stays in memory. */
  set(key: number, x: F32): void {
    this.delete(key);
    if (this.memoryUsed + x.byteLength <= this.opts.memoryBytes) {
      this.inMemory.set(key, x);
      this.memoryUsed += x.byteLength;
      return;
    }
    this.writeOut(key, x);
  }

  private writeOut(key: number, x: F32): void {
    if (!this.opts.dir) fail('bad-config', `activations need ${x.byteLength} more bytes than the memory budget allows and there is no scratch directory`);
    mkdirSync(this.opts.dir, { recursive: true });
    const path = join(this.opts.dir, `activations-${key}.f32`);
    writeWhole(path, new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
    this.onDisk.set(key, { path, length: x.length });
    this.diskUsed += x.byteLength;
  }

  /** What `set` kept under `key` (a fresh array when it was spilled; treat it as read-only either way). */
  get(key: number): F32 {
    const m = this.inMemory.get(key);
    if (m) return m;
    const d = this.onDisk.get(key);
    if (!d) throw new RangeError(`no activations stored under ${key}`);
    const out = new Float32Array(d.length);
    readWhole(d.path, new Uint8Array(out.buffer));
    return out;
  }

  delete(key: number): void {
    const m = this.inMemory.get(key);
    if (m) {
      this.memoryUsed -= m.byteLength;
      this.inMemory.delete(key);
    }
    const d = this.onDisk.get(key);
    if (d) {
      rmSync(d.path, { force: true });
      this.diskUsed -= 4 * d.length;
      this.onDisk.delete(key);
    }
  }

  /** Drop everything and remove the scratch files. */
  close(): void {
    for (const key of [...this.inMemory.keys(), ...this.onDisk.keys()]) this.delete(key);
  }
}

function writeWhole(path: string, bytes: Uint8Array): void {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'w', 0o600);
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    fd = undefined;
    rmSync(path, { force: true });
    const code = (e as NodeJS.ErrnoException).code;
    fail(code === 'ENOSPC' ? 'disk-full' : 'io', `cannot write scratch activations ${path}: ${code ?? (e as Error).message}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function readWhole(path: string, into: Uint8Array): void {
  const fd = openSync(path, 'r');
  try {
    if (statSync(path).size !== into.length) fail('io', `scratch activations ${path} changed size under us`);
    for (let off = 0; off < into.length; ) {
      const n = readSync(fd, into, off, into.length - off, off);
      if (n === 0) fail('io', `scratch activations ${path} ended early`);
      off += n;
    }
  } finally {
    closeSync(fd);
  }
}
