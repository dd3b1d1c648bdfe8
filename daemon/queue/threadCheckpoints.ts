/**
 * The runner's checkpoint backend (daemon/runner.ts CheckpointBackend) for a job whose
 * checkpoints live in Redis. It runs in the job's thread, which has no Redis connection:
 * the candidates (newest first) come in with the thread's start data, and each save is
 * handed to the thread's owner (the worker process, which writes it to Redis fenced by the
 * job's lock) and awaited. Decoding and the fallback past unusable ones are the same as for
 * files (daemon/checkpoint.ts).
 */
import { CHECKPOINT_FORMAT, decodeCheckpoint, encodeCheckpoint, type Checkpoint, type Loaded } from '../checkpoint';
import type { CheckpointBackend } from '../runner';

export interface CheckpointSink {
  /** Stores a new newest checkpoint; rejects if it could not (the older ones stay). */
  save(bytes: Uint8Array): Promise<void>;
  /** Sets an unusable checkpoint aside. */
  discard(bytes: Uint8Array): void;
}

export class ThreadCheckpoints implements CheckpointBackend {
  private readonly candidates: Uint8Array[];

  constructor(
    candidates: Uint8Array[],
    private readonly sink: CheckpointSink,
  ) {
    this.candidates = [...candidates];
  }

  load(configHash: string, warn: (message: string) => void): Loaded | null {
    while (this.candidates.length > 0) {
      const bytes = this.candidates[0];
      const name = this.name(0);
      try {
        const c = decodeCheckpoint(bytes);
        if (c.configHash !== configHash) throw new Error('written for a different configuration');
        return { checkpoint: c, file: name };
      } catch (e) {
        const next = this.candidates.length > 1 ? 'falling back to an older one' : 'no older one: the job starts from the beginning';
        warn(`checkpoint ${name} is unusable (${(e as Error).message}); ${next}`);
        this.discard(name);
      }
    }
    return null;
  }

  async save(c: Omit<Checkpoint, 'formatVersion' | 'savedAt'>): Promise<string> {
    const bytes = encodeCheckpoint({ formatVersion: CHECKPOINT_FORMAT, ...c, savedAt: new Date().toISOString() });
    await this.sink.save(bytes);
    return `redis checkpoint at step ${c.step}`;
  }

  /** Only the newest candidate is ever handed out, so `file` is always the first one. */
  discard(_file: string): void {
    const bytes = this.candidates.shift();
    if (bytes) this.sink.discard(bytes);
  }

  private name(i: number): string {
    return `redis#${i}`;
  }
}
