/**
 * state.json writes that are not lost when they fail. A job's state.json can be unwritable
 * for a while (full disk) or for good (read-only job directory); a terminal state that
 * stayed only in memory would make a restart run the job again. So a failed write is
 * recorded in <home>/pending-states.json (where the job directory is the problem, the
 * home may still be writable) and retried every RETRY_MS until it lands; JobStore.loadAll
 * prefers a pending record over an older state.json.
 */
import { rmSync } from 'node:fs';
import type { Logger } from 'pino';
import { osError } from './oserror';
import { writeFileAtomic, toJson, type JobStatus, type JobStore } from './store';

const RETRY_MS = 1000;

export class StateWriter {
  /** Statuses not yet in their state.json, by job id. */
  private readonly pending = new Map<string, JobStatus>();
  /** pending-states.json matches `pending`. */
  private recorded = true;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly store: JobStore,
    private readonly log: Logger,
  ) {}

  /**
   * Writes the job's state.json; on failure keeps the status for retries and returns the
   * error (typed: no-space, permission-denied, …) so the caller can act on it.
   */
  write(id: string, status: JobStatus): Error | undefined {
    const copy = structuredClone(status);
    try {
      this.store.writeStatus(id, copy);
    } catch (e) {
      const err = osError(e, `cannot write ${this.store.dir(id)}/state.json`) ?? (e as Error);
      // Logged once per outage of this job, not on every retry.
      if (!this.pending.has(id)) this.log.error({ job: id, code: (err as { code?: string }).code }, `${err.message}; kept in memory, retrying`);
      this.pending.set(id, copy);
      this.recorded = false;
      this.record();
      this.schedule();
      return err;
    }
    if (this.pending.delete(id)) {
      this.log.info({ job: id }, 'state.json written after earlier failures');
      this.recorded = false;
      this.record();
    }
    return undefined;
  }

  /** Retries every pending write once (also at shutdown). */
  flush(): void {
    for (const [id, status] of [...this.pending]) {
      try {
        this.store.writeStatus(id, status);
        this.pending.delete(id);
        this.recorded = false;
        this.log.info({ job: id }, 'state.json written after earlier failures');
      } catch {
        /* still failing: kept */
      }
    }
    this.record();
    if (this.pending.size > 0) this.schedule();
  }

  /** After loading (each pending record read back has been written or re-queued): rewrites the record. */
  sync(): void {
    this.recorded = false;
    this.record();
  }

  pendingCount(): number {
    return this.pending.size;
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Brings pending-states.json in line with `pending` (best effort: retried with the writes). */
  private record(): void {
    if (this.recorded) return;
    const path = this.store.pendingStatesPath();
    try {
      if (this.pending.size === 0) rmSync(path, { force: true });
      else writeFileAtomic(path, toJson(Object.fromEntries(this.pending)));
      this.recorded = true;
    } catch {
      /* the home is unwritable too: the next retry tries again */
    }
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, RETRY_MS);
    this.timer.unref();
  }
}
