/**
 * How fast a dead worker's job moves on (BullMQ's own lock and stalled-job machinery).
 *
 * A worker holds a lock on each job it runs and renews it every lockDuration/2; the search
 * itself runs in a worker thread, so the worker's event loop is free to renew on time
 * however long a search step takes. A SIGKILLed or partitioned worker stops renewing; its
 * lock expires after lockDuration, and the next stalled check (every stalledInterval, run by
 * every live worker) moves the job back to the wait list, where another worker takes it and
 * resumes from the Redis checkpoint. A job is handed over within about
 * lockDuration + 2·stalledInterval (the check marks a job once and moves it the next time).
 *
 * The defaults are BullMQ's (30 s each): a brief network hiccup does not hand a healthy
 * job over. Tests pass a few seconds so a killed worker's job is picked up in seconds.
 *
 * maxStalledCount: a job stalled more often than this fails. Each stall costs only the
 * steps since the last checkpoint, so the limit is high; it exists so a job that kills every
 * worker it lands on (out of memory) ends failed instead of going round for ever.
 */
export interface QueueSettings {
  lockMs: number;
  stalledMs: number;
  maxStalled: number;
}

export const DEFAULT_QUEUE_SETTINGS: QueueSettings = { lockMs: 30_000, stalledMs: 30_000, maxStalled: 50 };

/** The BullMQ queue every invarx daemon and worker on the same Redis database share. */
export const QUEUE_NAME = 'invarx';

/** Redis keys of a job's own (outside BullMQ's): its checkpoints, newest first, and its control flag. */
export const checkpointKey = (id: string) => `invarx:job:${id}:checkpoints`;
export const controlKey = (id: string) => `invarx:job:${id}:control`;

/** What a pause or cancel asks of the job (the worker running it checks between steps). */
export type Control = 'pause' | 'cancel';

/** A paused job waits as a delayed job this far in the future; `resume` promotes it. */
export const PAUSED_DELAY_MS = 100 * 365 * 24 * 3600 * 1000;
