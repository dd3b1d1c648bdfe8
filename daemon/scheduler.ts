/**
 * Jobs and their lifecycle: a queue in submission order, at most `concurrency` running at
 * once, each running job in a worker thread of its own (daemon/runner.ts).
 *
 *   queued ──start──▶ running ──▶ done | failed
 *     │  ▲               │
 *     │  └──resume── paused ◀──pause──┘      any non-terminal state ──cancel──▶ cancelled
 *
 * state.json is written on every state change, so the daemon restarts into the same
 * picture: jobs that were running or queued go back to the queue (and resume from their
 * checkpoints), paused ones stay paused. A pause checkpoints and ends the thread (the
 * slot is free for the next job; resuming later continues from that checkpoint). A
 * shutdown does the same for every running job but leaves them `running` on disk.
 */
import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { SearchTuning } from '../search/config';
import type { FinalReport, Progress, RunConfig } from '../search/contract';
import { exportTo, type ExportOptions } from './exporter';
import { osError } from './oserror';
import { ProtocolError } from './protocol';
import { StateWriter } from './states';
import { jobView, type JobView } from './view';

export type { JobView } from './view';
import type { FromRunner, RunnerInit, StopReason } from './runner';
import { TERMINAL, type JobError, type JobSpec, type JobState, type JobStatus, type JobStore } from './store';

export interface SchedulerOptions {
  concurrency: number;
  checkpointSteps: number;
  checkpointSeconds: number;
  /** How long a stopping job may take to checkpoint before its thread is terminated. */
  stopTimeoutMs: number;
  /** The bundled CLI, which runs a job when started as a worker with argv `__job-runner`. */
  workerScript: string;
  log: Logger;
}

interface Job {
  spec: JobSpec;
  status: JobStatus;
  worker?: Worker;
  /** Why the live thread is being stopped (its state may already say paused/cancelled). */
  stopping?: StopReason | 'cancel';
  /** The thread sent its last word (done/stopped/failed); an exit after that is expected. */
  settled?: boolean;
  killTimer?: NodeJS.Timeout;
  log: Logger;
  /** Settles once the job has no thread any more (exited or abandoned). */
  gone?: Promise<void>;
  release?: () => void;
  /** False from a (re)start until the thread reports a measured speed: the stored one is stale. */
  rateKnown?: boolean;
}

const MAX_WARNINGS = 5;

export class Scheduler extends EventEmitter {
  private jobs = new Map<string, Job>();
  private shuttingDown = false;
  private readonly states: StateWriter;

  constructor(
    private readonly store: JobStore,
    private readonly opts: SchedulerOptions,
  ) {
    super();
    this.setMaxListeners(0);
    this.states = new StateWriter(store, opts.log);
  }

  /**
   * Reads the store; jobs that were running or queued are queued again, in submission order.
   * A job whose state cannot be written (read-only directory, full disk) fails with that
   * reason rather than run with a state that a restart would not see.
   */
  load(): void {
    for (const { spec, status, fromPending } of this.store.loadAll((m) => this.opts.log.warn(m))) {
      const job: Job = { spec, status, log: this.opts.log.child({ job: spec.id }) };
      this.jobs.set(spec.id, job);
      if (TERMINAL.has(status.state)) {
        if (fromPending) this.states.write(spec.id, status);
        continue;
      }
      if (status.state === 'running') job.log.info({ step: status.progress?.step ?? 0 }, 'was running when the daemon stopped: queued to resume');
      if (status.state !== 'paused') this.rewind(job);
      const err = status.state === 'paused' ? this.persist(job) : this.setState(job, 'queued');
      if (err) this.fail(job, { code: (err as { code?: string }).code ?? 'io-error', message: `${err.message}; the job cannot run without recording its state` });
    }
    this.states.sync();
  }

  start(): void {
    this.pump();
  }

  submit(config: RunConfig, tuning?: Partial<SearchTuning>): JobView {
    if (this.shuttingDown) throw new ProtocolError('shutting-down', 'the daemon is shutting down');
    const id = this.store.newId();
    const seq = Math.max(0, ...[...this.jobs.values()].map((j) => j.spec.seq)) + 1;
    const now = new Date().toISOString();
    const spec: JobSpec = { id, seq, createdAt: now, config, ...(tuning && Object.keys(tuning).length ? { tuning } : {}) };
    const status: JobStatus = { state: 'queued', updatedAt: now };
    try {
      this.store.create(spec, status);
    } catch (e) {
      throw osError(e, `cannot create the job's files in ${this.store.home}`) ?? e;
    }
    const job: Job = { spec, status, log: this.opts.log.child({ job: id }) };
    this.jobs.set(id, job);
    job.log.info({ model: config.model, bits: config.bits, group: config.group, steps: config.steps }, 'submitted');
    this.emitUpdate(job);
    this.pump();
    return this.view(id);
  }

  list(): JobView[] {
    return [...this.jobs.keys()].map((id) => this.view(id));
  }

  view(id: string): JobView {
    const j = this.get(id);
    return jobView(j.spec, j.status, {
      queuePosition: j.status.state === 'queued' ? this.queued().indexOf(j) + 1 : null,
      rateKnown: j.rateKnown ?? true,
    });
  }

  pause(id: string): JobView {
    const j = this.get(id);
    const st = j.status.state;
    if (st === 'paused') return this.view(id);
    if (TERMINAL.has(st)) throw new ProtocolError('bad-state', `job ${id} is ${st}; only queued or running jobs can be paused`);
    this.setState(j, 'paused');
    if (j.worker) this.stopThread(j, 'pause');
    this.pump();
    return this.view(id);
  }

  resume(id: string): JobView {
    const j = this.get(id);
    const st = j.status.state;
    if (st === 'queued' || st === 'running') return this.view(id);
    if (st !== 'paused') throw new ProtocolError('bad-state', `job ${id} is ${st}; only paused jobs can be resumed`);
    this.rewind(j);
    this.setState(j, 'queued');
    this.pump();
    return this.view(id);
  }

  cancel(id: string): JobView {
    const j = this.get(id);
    const st = j.status.state;
    if (st === 'cancelled') return this.view(id);
    if (TERMINAL.has(st)) throw new ProtocolError('bad-state', `job ${id} is already ${st}`);
    this.setState(j, 'cancelled', { finishedAt: new Date().toISOString() });
    if (j.worker) {
      // Nothing of a cancelled job is kept, so its thread need not finish its step; and its
      // slot is free now, even if the thread is stuck in a system call terminate cannot interrupt.
      j.stopping = 'cancel';
      void j.worker.terminate();
      this.abandon(j);
      this.pump();
    }
    return this.view(id);
  }

  /** Copies the finished job's export into `out` (daemon/exporter.ts). */
  async exportTo(id: string, out: string, opts: ExportOptions): Promise<{ out: string; files: string[] }> {
    const j = this.get(id);
    if (j.status.state !== 'done') throw new ProtocolError('not-done', `job ${id} is ${j.status.state}; its export exists once it is done`);
    const r = await exportTo(this.store.exportDir(id), this.store.home, out, opts);
    j.log.info({ out: r.out, files: r.files, force: opts.force }, 'exported');
    return r;
  }

  report(id: string): { id: string; config: RunConfig; report: Omit<FinalReport, 'models'> } {
    const j = this.get(id);
    if (j.status.state !== 'done') throw new ProtocolError('not-done', `job ${id} is ${j.status.state}; its report exists once it is done`);
    const report = this.store.readReport(id);
    if (!report) throw new ProtocolError('no-report', `job ${id} has no readable report.json`);
    return { id, config: j.spec.config, report };
  }

  /** Stops every running job at its next step boundary with a checkpoint; they stay `running` on disk. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    const live = [...this.jobs.values()].filter((j) => j.worker);
    for (const j of live) if (!j.stopping) this.stopThread(j, 'shutdown');
    await Promise.all(live.map((j) => j.gone));
    this.states.close();
  }

  runningCount(): number {
    return [...this.jobs.values()].filter((j) => j.worker).length;
  }

  private get(id: string): Job {
    const j = this.jobs.get(id);
    if (!j) throw new ProtocolError('no-such-job', `no job ${id}`);
    return j;
  }

  private queued(): Job[] {
    return [...this.jobs.values()].filter((j) => j.status.state === 'queued').sort((a, b) => a.spec.seq - b.spec.seq);
  }

  /** Starts queued jobs while slots are free (a slot is a live thread, stopping ones included). */
  private pump(): void {
    if (this.shuttingDown) return;
    let live = this.runningCount();
    for (const j of this.queued()) {
      if (live >= this.opts.concurrency) break;
      if (j.worker) continue; // its previous thread is still stopping; its exit pumps again
      this.launch(j);
      live++;
    }
  }

  private launch(j: Job): void {
    const id = j.spec.id;
    const init: RunnerInit = {
      id,
      jobDir: this.store.dir(id),
      config: j.spec.config,
      tuning: j.spec.tuning,
      checkpointSteps: this.opts.checkpointSteps,
      checkpointSeconds: this.opts.checkpointSeconds,
    };
    this.setState(j, 'running', { startedAt: new Date().toISOString(), error: undefined });
    j.stopping = undefined;
    j.settled = false;
    j.rateKnown = false;
    j.gone = new Promise((r) => (j.release = r));
    const w = new Worker(this.opts.workerScript, { argv: ['__job-runner'], workerData: init });
    j.worker = w;
    j.log.info('started');
    w.on('message', (m: FromRunner) => this.onMessage(j, w, m));
    w.on('error', (e) => {
      // An exception the runner did not catch (or the thread ran out of memory).
      j.log.error({ err: e }, 'job thread crashed');
      if (j.worker === w && !j.settled) this.fail(j, { code: 'crashed', message: `job thread crashed: ${e.message.split('\n')[0]}` });
      j.settled = true;
    });
    w.on('exit', (code) => {
      if (j.worker !== w) return;
      if (!j.settled && !j.stopping && j.status.state === 'running') {
        this.fail(j, { code: 'crashed', message: `job thread exited unexpectedly (code ${code})` });
      }
      this.abandon(j);
      this.pump();
    });
  }

  private onMessage(j: Job, w: Worker, m: FromRunner): void {
    if (j.worker !== w || !m || typeof m !== 'object') return;
    const live = j.status.state === 'running' || j.status.state === 'paused';
    switch (m.type) {
      case 'started':
        j.log.info({ resumedFromStep: m.resumedFromStep }, m.resumedFromStep === null ? 'search started' : 'search resumed from checkpoint');
        break;
      case 'phase':
        if (live) {
          j.status.phase = m.phase;
          this.emitUpdate(j);
        }
        break;
      case 'progress':
        if (live) {
          j.status.progress = m.progress;
          if (m.progress.candidatesPerSec > 0) j.rateKnown = true;
          this.emitUpdate(j);
        }
        break;
      case 'checkpoint':
        j.status.lastCheckpoint = { step: m.step, savedAt: m.savedAt };
        j.status.checkpointError = undefined;
        this.persist(j);
        break;
      case 'checkpoint-error':
        j.status.checkpointError = m.error;
        j.log.error(m.error, 'checkpoint write failed; the job goes on and retries');
        this.persist(j);
        this.emitUpdate(j);
        break;
      case 'warning':
        j.status.warnings = [...(j.status.warnings ?? []), m.message].slice(-MAX_WARNINGS);
        j.log.warn(m.message);
        this.persist(j);
        break;
      case 'done':
        j.settled = true;
        if (j.status.state === 'cancelled') break;
        j.status.progress = m.progress;
        j.log.info({ step: m.progress.step, reason: m.progress.stopReason }, 'done');
        this.setState(j, 'done', { finishedAt: new Date().toISOString() });
        break;
      case 'stopped':
        j.settled = true;
        j.status.progress = m.progress;
        j.log.info({ reason: m.reason, step: m.progress.step }, 'stopped at a step boundary');
        this.persist(j);
        break;
      case 'failed':
        j.settled = true;
        if (j.status.state !== 'cancelled') this.fail(j, m.error);
        break;
    }
  }

  /**
   * The job will continue from its last checkpoint: show that step (not the one it was
   * stopped at), and no speed until the new thread measures one.
   */
  private rewind(j: Job): void {
    j.rateKnown = false;
    if (j.status.progress) j.status.progress = { ...j.status.progress, step: j.status.lastCheckpoint?.step ?? 0 };
  }

  private fail(j: Job, error: JobError): void {
    j.log.error(error, 'failed');
    this.setState(j, 'failed', { error, finishedAt: new Date().toISOString() });
  }

  /** Asks the thread to checkpoint and end at its next step boundary; terminates it if it takes too long. */
  private stopThread(j: Job, reason: StopReason): void {
    const w = j.worker!;
    j.stopping = reason;
    w.postMessage({ type: 'stop', reason });
    j.killTimer = setTimeout(() => {
      // Still inside one long step: the last checkpoint is what a restart resumes from anyway.
      // The slot is freed now: a thread blocked in a system call may not end on terminate.
      j.log.warn({ reason }, 'job did not stop in time; terminating its thread');
      void w.terminate();
      if (j.worker !== w) return;
      this.abandon(j);
      this.pump();
    }, this.opts.stopTimeoutMs);
  }

  /** The job no longer has a thread (it exited, or was terminated and is no longer waited for). */
  private abandon(j: Job): void {
    clearTimeout(j.killTimer);
    j.worker = undefined;
    j.stopping = undefined;
    j.release?.();
  }

  /** Returns the error of a state write that failed (it is retried; see daemon/states.ts). */
  private setState(j: Job, state: JobState, extra: Partial<JobStatus> = {}): Error | undefined {
    Object.assign(j.status, extra, { state });
    for (const k of Object.keys(extra) as (keyof JobStatus)[]) if (extra[k] === undefined) delete j.status[k];
    const err = this.persist(j);
    this.emitUpdate(j);
    return err;
  }

  /** The in-memory state stays authoritative; a failed write is retried until it lands. */
  private persist(j: Job): Error | undefined {
    j.status.updatedAt = new Date().toISOString();
    return this.states.write(j.spec.id, j.status);
  }

  private emitUpdate(j: Job): void {
    if (this.listenerCount(`job:${j.spec.id}`) > 0) this.emit(`job:${j.spec.id}`, this.view(j.spec.id));
  }
}

