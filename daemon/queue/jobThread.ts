/**
 * A queue job's search in a worker thread, running the daemon's runner (daemon/runner.ts
 * runJob) with its checkpoints kept by the thread's owner: the worker process (Redis) or
 * the daemon rebuilding an export. The thread side is serveQueueThread (started through
 * the bundle's hidden `__queue-runner` command); the owner side is JobThreads (threads kept
 * for the next job) or startJobThread (one job).
 *
 * A thread, not the owner's event loop: search steps are long synchronous compute, and the
 * owner must keep renewing the job's BullMQ lock and reading pause/cancel flags meanwhile.
 */
import { Worker, type MessagePort } from 'node:worker_threads';
import type { FinalReport, Progress } from '../../search/contract';
import { runJob, type FromRunner, type RunnerInit, type StopReason, type ToRunner } from '../runner';
import type { JobError } from '../store';
import { ThreadCheckpoints } from './threadCheckpoints';

export interface QueueThreadData {
  init: RunnerInit;
  /** The job's checkpoints, newest first. */
  checkpoints: Uint8Array[];
  results: 'files' | 'port';
}

type FromThread = FromRunner | { type: 'checkpoint-save'; seq: number; bytes: Uint8Array } | { type: 'checkpoint-discard'; bytes: Uint8Array };
type ToThread = ToRunner | { type: 'job'; data: QueueThreadData } | { type: 'checkpoint-saved'; seq: number; error?: string };

/**
 * The thread side: runs the jobs its owner sends, one at a time, forwarding each job's
 * checkpoint writes to the owner and awaiting each; it lives until the owner ends it.
 */
export function serveQueueThread(port: MessagePort): void {
  let seq = 0;
  const acks = new Map<number, { resolve(): void; reject(e: Error): void }>();
  let onStop: ((r: StopReason) => void) | undefined;
  const post = (m: FromThread) => port.postMessage(m);
  port.on('message', (m: ToThread) => {
    if (m?.type === 'job') void runOne(m.data);
    if (m?.type === 'stop') onStop?.(m.reason);
    if (m?.type === 'checkpoint-saved') {
      const a = acks.get(m.seq);
      acks.delete(m.seq);
      if (m.error) a?.reject(new Error(m.error));
      else a?.resolve();
    }
  });
  async function runOne(data: QueueThreadData): Promise<void> {
    onStop = undefined;
    const checkpoints = new ThreadCheckpoints(data.checkpoints, {
      save: (bytes) =>
        new Promise<void>((resolve, reject) => {
          const n = ++seq;
          acks.set(n, { resolve, reject });
          post({ type: 'checkpoint-save', seq: n, bytes });
        }),
      discard: (bytes) => post({ type: 'checkpoint-discard', bytes }),
    });
    // runJob always ends by posting done, stopped or failed: the owner's cue that this thread is free again
    await runJob(data.init, { post, onStop: (cb) => (onStop = cb) }, { checkpoints, results: data.results });
  }
}

export type ThreadOutcome =
  | { kind: 'done'; progress: Progress; report?: Omit<FinalReport, 'models'> }
  | { kind: 'stopped'; reason: StopReason; progress: Progress }
  | { kind: 'failed'; error: JobError };

export interface ThreadOwner {
  /** Progress, phase, checkpoint and warning messages, as the runner sends them. */
  onMessage(m: FromRunner): void;
  /** Stores a checkpoint; a rejection is reported to the runner as a failed write. */
  saveCheckpoint(bytes: Uint8Array): Promise<void>;
  discardCheckpoint(bytes: Uint8Array): void;
}

export interface JobThread {
  /** Settles when the thread has said how it ended (or crashed). */
  readonly outcome: Promise<ThreadOutcome>;
  /** Asks the job to checkpoint and stop at its next step boundary. */
  stop(reason: StopReason): void;
  /** Ends the thread now, without a last checkpoint. */
  terminate(): Promise<void>;
}

/**
 * The owner side: job threads on `script` (the bundled CLI's `__queue-runner`), kept warm
 * between jobs. A thread whose job ended is reused by the next job, so a worker pays for
 * loading the bundle and compiling the kernels once per slot rather than once per job, and
 * each job starts on JIT-compiled code. A thread that was terminated, crashed or exited is
 * never reused.
 */
export class JobThreads {
  private readonly idle: Worker[] = [];
  private closed = false;
  /** Threads started so far. */
  spawned = 0;

  constructor(private readonly script: string) {}

  /** Runs one job on an idle thread (or a new one) and serves its checkpoint writes. */
  start(data: QueueThreadData, owner: ThreadOwner): JobThread {
    const w = this.idle.pop() ?? this.spawn();
    w.ref();
    let settled = false;
    let reusable = true;
    let resolveOutcome!: (o: ThreadOutcome) => void;
    const outcome = new Promise<ThreadOutcome>((r) => (resolveOutcome = r));
    const settle = (o: ThreadOutcome, free: boolean) => {
      if (settled) return;
      settled = true;
      w.off('message', onMessage);
      w.off('error', onError);
      w.off('exit', onExit);
      if (free && reusable && !this.closed) {
        w.unref(); // an idle thread must not keep the process alive
        this.idle.push(w);
      } else void w.terminate();
      resolveOutcome(o);
    };
    const onMessage = (m: FromThread) => {
      if (!m || typeof m !== 'object') return;
      switch (m.type) {
        case 'checkpoint-save':
          owner.saveCheckpoint(m.bytes).then(
            () => w.postMessage({ type: 'checkpoint-saved', seq: m.seq } satisfies ToThread),
            (e: Error) => w.postMessage({ type: 'checkpoint-saved', seq: m.seq, error: e.message } satisfies ToThread),
          );
          return;
        case 'checkpoint-discard':
          owner.discardCheckpoint(m.bytes);
          return;
        case 'done':
          return settle({ kind: 'done', progress: m.progress, report: m.report }, true);
        case 'stopped':
          return settle({ kind: 'stopped', reason: m.reason, progress: m.progress }, true);
        case 'failed':
          return settle({ kind: 'failed', error: m.error }, true);
        default:
          owner.onMessage(m);
      }
    };
    const onError = (e: Error) => settle({ kind: 'failed', error: { code: 'crashed', message: `job thread crashed: ${e.message.split('\n')[0]}` } }, false);
    const onExit = (code: number) => settle({ kind: 'failed', error: { code: 'crashed', message: `job thread exited unexpectedly (code ${code})` } }, false);
    w.on('message', onMessage);
    w.on('error', onError);
    w.on('exit', onExit);
    w.postMessage({ type: 'job', data } satisfies ToThread);
    return {
      outcome,
      // once settled the thread may be running another job: these no longer reach it
      stop: (reason) => {
        if (!settled) w.postMessage({ type: 'stop', reason } satisfies ToThread);
      },
      terminate: async () => {
        if (settled) return;
        reusable = false;
        await w.terminate();
      },
    };
  }

  /**
   * Starts threads until `n` are idle, ahead of the first jobs, so those too start on a
   * loaded thread. One that dies while idle is dropped, never handed a job.
   */
  prewarm(n: number): void {
    while (!this.closed && this.idle.length < n) {
      const w = this.spawn();
      w.unref();
      const drop = () => {
        const i = this.idle.indexOf(w);
        if (i >= 0) this.idle.splice(i, 1);
      };
      w.once('exit', drop);
      w.once('error', drop);
      this.idle.push(w);
    }
  }

  private spawn(): Worker {
    this.spawned++;
    return new Worker(this.script, { argv: ['__queue-runner'] });
  }

  /** Ends the idle threads; threads still running a job end when it does. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.idle.splice(0).map((w) => w.terminate()));
  }
}

/** One job on a thread of its own, ended with the job. */
export function startJobThread(script: string, data: QueueThreadData, owner: ThreadOwner): JobThread {
  const threads = new JobThreads(script);
  const t = threads.start(data, owner);
  void t.outcome.then(() => threads.close());
  return t;
}
