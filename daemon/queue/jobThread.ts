/**
 * A queue job's search in a worker thread of its own, running the daemon's runner
 * (daemon/runner.ts runJob) with its checkpoints kept by the thread's owner: the worker
 * process (Redis) or the daemon rebuilding an export. The thread side is runQueueThread
 * (started through the bundle's hidden `__queue-runner` command); the owner side is
 * startJobThread.
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
type ToThread = ToRunner | { type: 'checkpoint-saved'; seq: number; error?: string };

/** The thread side: runs the job, forwarding checkpoint writes to the owner and awaiting each. */
export async function runQueueThread(data: QueueThreadData, port: MessagePort): Promise<void> {
  let seq = 0;
  const acks = new Map<number, { resolve(): void; reject(e: Error): void }>();
  let onStop: ((r: StopReason) => void) | undefined;
  port.on('message', (m: ToThread) => {
    if (m?.type === 'stop') onStop?.(m.reason);
    if (m?.type === 'checkpoint-saved') {
      const a = acks.get(m.seq);
      acks.delete(m.seq);
      if (m.error) a?.reject(new Error(m.error));
      else a?.resolve();
    }
  });
  const post = (m: FromThread) => port.postMessage(m);
  const checkpoints = new ThreadCheckpoints(data.checkpoints, {
    save: (bytes) =>
      new Promise<void>((resolve, reject) => {
        const n = ++seq;
        acks.set(n, { resolve, reject });
        post({ type: 'checkpoint-save', seq: n, bytes });
      }),
    discard: (bytes) => post({ type: 'checkpoint-discard', bytes }),
  });
  await runJob(data.init, { post, onStop: (cb) => (onStop = cb) }, { checkpoints, results: data.results });
  port.removeAllListeners('message');
  port.unref();
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

/** The owner side: starts the thread on `script` (the bundled CLI) and serves its checkpoint writes. */
export function startJobThread(script: string, data: QueueThreadData, owner: ThreadOwner): JobThread {
  const w = new Worker(script, { argv: ['__queue-runner'], workerData: data });
  let settled = false;
  const outcome = new Promise<ThreadOutcome>((resolve) => {
    const settle = (o: ThreadOutcome) => {
      if (settled) return;
      settled = true;
      resolve(o);
    };
    w.on('message', (m: FromThread) => {
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
          settle({ kind: 'done', progress: m.progress, report: m.report });
          return;
        case 'stopped':
          settle({ kind: 'stopped', reason: m.reason, progress: m.progress });
          return;
        case 'failed':
          settle({ kind: 'failed', error: m.error });
          return;
        default:
          owner.onMessage(m);
      }
    });
    w.on('error', (e) => settle({ kind: 'failed', error: { code: 'crashed', message: `job thread crashed: ${e.message.split('\n')[0]}` } }));
    w.on('exit', (code) => settle({ kind: 'failed', error: { code: 'crashed', message: `job thread exited unexpectedly (code ${code})` } }));
  });
  return {
    outcome,
    stop: (reason) => w.postMessage({ type: 'stop', reason } satisfies ToThread),
    terminate: async () => {
      await w.terminate();
    },
  };
}
