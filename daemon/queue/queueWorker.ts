/**
 * `invarx worker --queue URL`: takes jobs off the BullMQ queue and runs each with the
 * daemon's runner in a thread (daemon/queue/jobThread.ts; kept for the next job),
 * `concurrency` at once.
 *
 * - Before anything else, a job's id and data are checked like a socket submit
 *   (daemon/queue/payload.ts); a malformed job fails at once with the reason, and the worker
 *   goes on with the next.
 * - The job resumes from its newest usable Redis checkpoint; new ones are written at the
 *   runner's cadence, fenced by the job's lock (daemon/queue/redisCheckpoints.ts).
 * - Progress goes to the BullMQ job's progress (the daemon's status and watch read it).
 * - Pause and cancel are flags (controlKey) read every CONTROL_POLL_MS: a pause checkpoints
 *   and parks the job as delayed (resume promotes it); a cancel ends the thread and fails
 *   the job as cancelled.
 * - A job whose lock is lost (renewal failed, or a fenced write refused) is dropped at once,
 *   without a last write: the worker that now holds it resumes from the last checkpoint.
 * - SIGTERM checkpoints every running job and puts it back on the queue.
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { DelayedError, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { FromRunner } from '../runner';
import type { JobError } from '../store';
import { connectionOptions, openRedis } from './connect';
import { JobThreads, type JobThread } from './jobThread';
import { checkJobId, parsePayload } from './payload';
import { dropCheckpoint, loadCheckpoints, pushCheckpoint } from './redisCheckpoints';
import type { QueueUrl } from './redisUrl';
import { PAUSED_DELAY_MS, QUEUE_NAME, controlKey, type QueueSettings } from './settings';
import { emptyProgress, type QueueProgress, type QueueResult } from './progress';

export interface QueueWorkerOptions {
  url: QueueUrl;
  /** This worker's own directory: its log and the jobs' logs and scratch files. */
  dir: string;
  concurrency: number;
  settings: QueueSettings;
  checkpointSteps: number;
  checkpointSeconds: number;
  /** The bundled CLI (threads run its `__queue-runner`). */
  script: string;
  log: Logger;
}

const CONTROL_POLL_MS = 300;
/** Progress is written to Redis at most this often (and at once on phase, checkpoint and warning). */
const PROGRESS_EVERY_MS = 500;
/** A 'stepping' line per job at most this often: the record of who ran which steps when. */
const STEP_LOG_EVERY_MS = 1000;
const MAX_WARNINGS = 5;

/** A job failure as BullMQ stores it (failedReason): `code: message`, read back by the daemon. */
export function failure(e: JobError): string {
  return `${e.code}: ${e.message}`;
}

/** A job this worker is running. */
interface Running {
  thread: JobThread;
  /** The lock is someone else's now: the thread was ended without a last write. */
  lost: boolean;
  stopping?: 'pause' | 'shutdown';
  cancelled?: boolean;
}

export class QueueWorker {
  private readonly worker: Worker;
  private readonly redis;
  private readonly threads = new Map<string, Running>();
  private readonly jobThreads: JobThreads;
  private closing?: Promise<void>;

  constructor(private readonly o: QueueWorkerOptions) {
    this.jobThreads = new JobThreads(o.script);
    this.jobThreads.prewarm(o.concurrency);
    this.redis = openRedis(o.url);
    this.worker = new Worker(QUEUE_NAME, (job, token) => this.process(job, token!), {
      connection: connectionOptions(o.url.target),
      concurrency: o.concurrency,
      lockDuration: o.settings.lockMs,
      stalledInterval: o.settings.stalledMs,
      maxStalledCount: o.settings.maxStalled,
    });
    this.worker.on('error', (e) => o.log.warn({ err: e.message }, 'queue error (BullMQ retries)'));
    this.worker.on('lockRenewalFailed', (ids: string[]) => {
      for (const id of ids) this.lose(id, 'lock renewal failed');
    });
  }

  /** Checkpoints every running job, puts it back on the queue, and closes the connections. */
  close(): Promise<void> {
    return (this.closing ??= (async () => {
      for (const t of this.threads.values()) {
        t.stopping ??= 'shutdown';
        t.thread.stop('shutdown');
      }
      await this.worker.close();
      await this.jobThreads.close();
      this.redis.disconnect();
    })());
  }

  private lose(id: string, why: string): void {
    const t = this.threads.get(id);
    if (!t || t.lost) return;
    t.lost = true;
    this.o.log.warn({ job: id, why }, 'lost the job\'s lock: stopping it without a last write');
    void t.thread.terminate();
  }

  private async process(job: Job, token: string): Promise<QueueResult> {
    const log = this.o.log.child({ job: job.id, token });
    let id: string;
    let payload;
    try {
      id = checkJobId(job.id);
      payload = parsePayload(job.data);
    } catch (e) {
      log.error({ code: 'bad-payload' }, (e as Error).message);
      throw new UnrecoverableError(failure({ code: 'bad-payload', message: (e as Error).message }));
    }
    const control = await this.redis.get(controlKey(id));
    if (control === 'cancel') throw new UnrecoverableError(failure({ code: 'cancelled', message: `job ${id} was cancelled` }));
    if (control === 'pause') {
      await job.moveToDelayed(Date.now() + PAUSED_DELAY_MS, token);
      throw new DelayedError();
    }
    const lockKey = `${this.worker.toKey(id)}:lock`;
    const checkpoints = await loadCheckpoints(this.redis, id);
    const state: QueueProgress = { ...emptyProgress(), worker: `${hostname()}:${process.pid}` };
    let lastProgress = 0;
    let lastStepLog = 0;
    const publish = (now = false) => {
      const t = Date.now();
      if (!now && t - lastProgress < PROGRESS_EVERY_MS) return;
      lastProgress = t;
      job.updateProgress({ ...state }).catch(() => undefined); // Redis away: the next one carries it
    };
    const onMessage = (m: FromRunner) => {
      switch (m.type) {
        case 'started':
          log.info({ fromStep: m.resumedFromStep }, m.resumedFromStep === null ? 'run started' : 'run resumed');
          return;
        case 'phase':
          state.phase = m.phase;
          return publish(true);
        case 'progress':
          state.progress = m.progress;
          if (Date.now() - lastStepLog >= STEP_LOG_EVERY_MS) {
            lastStepLog = Date.now();
            log.info({ step: m.progress.step }, 'stepping');
          }
          return publish();
        case 'checkpoint':
          log.info({ step: m.step }, 'checkpoint saved');
          state.lastCheckpoint = { step: m.step, savedAt: m.savedAt };
          state.checkpointError = null;
          return publish(true);
        case 'checkpoint-error':
          state.checkpointError = m.error;
          return publish(true);
        case 'warning':
          state.warnings = [...state.warnings, m.message].slice(-MAX_WARNINGS);
          log.warn(m.message);
          return publish(true);
      }
    };
    const thread = this.jobThreads.start(
      {
        init: {
          id,
          jobDir: join(this.o.dir, 'jobs', id),
          config: payload.config,
          tuning: payload.tuning,
          checkpointSteps: this.o.checkpointSteps,
          checkpointSeconds: this.o.checkpointSeconds,
          modelHash: payload.modelHash,
        },
        checkpoints,
        results: 'port',
      },
      {
        onMessage,
        saveCheckpoint: async (bytes) => {
          if (!(await pushCheckpoint(this.redis, id, lockKey, token, bytes))) {
            this.lose(id, 'checkpoint write refused: the lock is another worker\'s');
            throw new Error('the job\'s lock is held by another worker');
          }
        },
        discardCheckpoint: (bytes) => void dropCheckpoint(this.redis, id, bytes).catch(() => undefined),
      },
    );
    const entry: Running = { thread, lost: false };
    this.threads.set(id, entry);
    if (this.closing) {
      entry.stopping = 'shutdown';
      thread.stop('shutdown');
    }
    const poll = setInterval(() => {
      this.redis.get(controlKey(id)).then((c) => {
        if (c === 'pause' && !entry.stopping) {
          entry.stopping = 'pause';
          thread.stop('pause');
        } else if (c === 'cancel' && !entry.cancelled) {
          entry.cancelled = true;
          void thread.terminate();
        }
      }, () => undefined);
    }, CONTROL_POLL_MS);
    try {
      const out = await thread.outcome;
      if (entry.lost) {
        log.info({ step: state.progress?.step ?? 0 }, 'run ended: lock lost');
        throw new Error('lock-lost: another worker holds the job');
      }
      if (entry.cancelled) {
        log.info({ step: state.progress?.step ?? 0 }, 'run ended: cancelled');
        throw new UnrecoverableError(failure({ code: 'cancelled', message: `job ${id} was cancelled` }));
      }
      switch (out.kind) {
        case 'done':
          log.info({ step: out.progress.step }, 'run ended: done');
          state.progress = out.progress;
          await job.updateProgress({ ...state }).catch(() => undefined);
          return { report: out.report! };
        case 'stopped':
          log.info({ step: out.progress.step, reason: out.reason }, `run ended: ${out.reason}`);
          state.progress = out.progress;
          await job.updateProgress({ ...state }).catch(() => undefined);
          // Paused: parked until `resume` promotes it. Shutdown: due at once, for any worker.
          await job.moveToDelayed(Date.now() + (out.reason === 'pause' ? PAUSED_DELAY_MS : 0), token);
          throw new DelayedError();
        case 'failed':
          log.info({ step: state.progress?.step ?? 0, code: out.error.code }, 'run ended: failed');
          throw new UnrecoverableError(failure(out.error));
      }
    } finally {
      clearInterval(poll);
      this.threads.delete(id);
    }
  }
}
