/**
 * Crash-safe checkpoints of a search job (DESIGN §7).
 *
 * File layout: one msgpackr value `{ magic, sha256, payload }` where `payload` is the packed
 * `{ formatVersion, configHash, modelHash, step, snapshot, savedAt }` and `sha256` is the
 * SHA-256 of exactly those payload bytes. A torn or bit-flipped file fails the checksum
 * instead of being half-read.
 *
 * Writing: temp file → write → fsync → rename over the final name → fsync the directory,
 * so after a crash at any instant the directory holds either the old set or the old set
 * plus one complete new file (plus, at worst, a stray temp file that load() removes).
 * Only after the new file is durable are older ones pruned (the newest KEEP stay), so an
 * error anywhere (ENOSPC, EIO) leaves the previous checkpoints untouched.
 *
 * Loading: newest first; a file that is unreadable, fails its checksum, or has another
 * format version or config hash is skipped with a warning and the next older one is used.
 */
import { createHash } from 'node:crypto';
import * as nodeFs from 'node:fs';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import type { SearchSnapshot } from '../search/contract';

export const CHECKPOINT_FORMAT = 1;
const MAGIC = 'invarx-checkpoint';
const KEEP = 2;
const NAME = /^ckpt-(\d{10})\.msgpack$/;

/** moreTypes: typed arrays in snapshots round-trip with their exact type and bytes. */
const packr = new Packr({ moreTypes: true });

export interface Checkpoint {
  formatVersion: number;
  configHash: string;
  /** SHA-256 of the model file bytes the job was started on. */
  modelHash: string;
  /** The job's step when this was written. */
  step: number;
  snapshot: SearchSnapshot;
  savedAt: string;
}

/** The few fs calls checkpoints make, injectable so tests can simulate a full disk. */
export type CheckpointFs = Pick<
  typeof nodeFs,
  'openSync' | 'writeSync' | 'fsyncSync' | 'closeSync' | 'renameSync' | 'unlinkSync' | 'readdirSync' | 'readFileSync' | 'mkdirSync'
>;

export interface Loaded {
  checkpoint: Checkpoint;
  file: string;
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Identifies a snapshot's content, so an unchanged one is not written again. */
export function snapshotDigest(s: SearchSnapshot): string {
  return sha256(packr.pack(s));
}

export function encodeCheckpoint(c: Checkpoint): Buffer {
  const payload = packr.pack(c);
  return packr.pack({ magic: MAGIC, sha256: sha256(payload), payload });
}

/** Bytes → checkpoint, or an Error saying why not (never a partial result). */
export function decodeCheckpoint(bytes: Uint8Array): Checkpoint {
  let outer: unknown;
  try {
    outer = packr.unpack(bytes);
  } catch (e) {
    throw new Error(`not a checkpoint (${(e as Error).message})`);
  }
  const o = outer as { magic?: unknown; sha256?: unknown; payload?: unknown };
  if (typeof o !== 'object' || o === null || o.magic !== MAGIC || !(o.payload instanceof Uint8Array) || typeof o.sha256 !== 'string') {
    throw new Error('not a checkpoint (bad envelope)');
  }
  if (sha256(o.payload) !== o.sha256) throw new Error('checksum mismatch');
  const c = packr.unpack(o.payload) as Checkpoint;
  if (c.formatVersion !== CHECKPOINT_FORMAT) throw new Error(`format version ${c.formatVersion}, expected ${CHECKPOINT_FORMAT}`);
  return c;
}

export class CheckpointStore {
  private seq: number;

  constructor(
    readonly dir: string,
    private readonly fs: CheckpointFs = nodeFs,
  ) {
    try {
      this.fs.mkdirSync(dir, { recursive: true });
    } catch {
      // Reported by the first save(); loading finds no checkpoints, which is the truth.
    }
    const files = this.files();
    this.seq = files.length ? files[0].seq : 0;
  }

  /** Checkpoint files, newest first. */
  files(): { name: string; seq: number }[] {
    let names: string[];
    try {
      names = this.fs.readdirSync(this.dir) as string[];
    } catch {
      return [];
    }
    return names
      .map((name) => ({ name, m: NAME.exec(name) }))
      .filter((x) => x.m)
      .map((x) => ({ name: x.name, seq: Number(x.m![1]) }))
      .sort((a, b) => b.seq - a.seq);
  }

  /** Durably writes a new newest checkpoint; returns its path. Throws on any I/O error, with older files intact. */
  save(c: Omit<Checkpoint, 'formatVersion' | 'savedAt'>): string {
    const bytes = encodeCheckpoint({ formatVersion: CHECKPOINT_FORMAT, ...c, savedAt: new Date().toISOString() });
    const seq = this.seq + 1;
    const name = `ckpt-${String(seq).padStart(10, '0')}.msgpack`;
    const final = join(this.dir, name);
    const tmp = `${final}.tmp`;
    // Recreated each time: cheap, and a job keeps checkpointing if its directory was removed.
    this.fs.mkdirSync(this.dir, { recursive: true });
    let fd = -1;
    try {
      fd = this.fs.openSync(tmp, 'w', 0o600);
      for (let off = 0; off < bytes.length; ) off += this.fs.writeSync(fd, bytes, off, bytes.length - off);
      this.fs.fsyncSync(fd);
      this.fs.closeSync(fd);
      fd = -1;
      this.fs.renameSync(tmp, final);
    } catch (e) {
      if (fd !== -1) try { this.fs.closeSync(fd); } catch { /* already failing */ }
      try { this.fs.unlinkSync(tmp); } catch { /* may not exist */ }
      throw e;
    }
    this.seq = seq;
    this.fsyncDir();
    for (const old of this.files().slice(KEEP)) {
      try { this.fs.unlinkSync(join(this.dir, old.name)); } catch { /* pruning is best effort */ }
    }
    return final;
  }

  /**
   * The newest usable checkpoint for this job, falling back past corrupt ones (each one
   * skipped is reported through `warn`); null if none.
   * `configHash` must match (a different config is a different job); the model hash is the
   * caller's to compare, since a changed model file is an error, not a reason to fall back.
   */
  load(configHash: string, warn: (message: string) => void): Loaded | null {
    this.removeTemps();
    const files = this.files();
    for (const [i, f] of files.entries()) {
      const file = join(this.dir, f.name);
      try {
        const c = decodeCheckpoint(this.fs.readFileSync(file));
        if (c.configHash !== configHash) throw new Error('written for a different configuration');
        return { checkpoint: c, file };
      } catch (e) {
        const next = i + 1 < files.length ? 'falling back to an older one' : 'no older one: the job starts from the beginning';
        warn(`checkpoint ${f.name} is unusable (${(e as Error).message}); ${next}`);
        // Set aside (kept for inspection) so it no longer counts among the last two.
        try { this.fs.renameSync(file, `${file}.corrupt`); } catch { /* read-only: it is skipped again next time */ }
      }
    }
    return null;
  }

  /** Moves a checkpoint the search refused aside, so the next load falls back past it. */
  discard(file: string): void {
    try { this.fs.renameSync(file, `${file}.corrupt`); } catch { /* skipped again next time */ }
  }

  /** Temp files are from a write that a crash interrupted; their final name was never taken. */
  private removeTemps(): void {
    let names: string[] = [];
    try {
      names = this.fs.readdirSync(this.dir) as string[];
    } catch {
      return;
    }
    for (const n of names) {
      if (n.endsWith('.tmp')) try { this.fs.unlinkSync(join(this.dir, n)); } catch { /* best effort */ }
    }
  }

  /** Makes the rename durable (the directory entry is data too). */
  private fsyncDir(): void {
    let fd = -1;
    try {
      fd = this.fs.openSync(this.dir, 'r');
      this.fs.fsyncSync(fd);
    } catch {
      // Some filesystems refuse fsync on directories; the file itself is already synced.
    } finally {
      if (fd !== -1) this.fs.closeSync(fd);
    }
  }
}
