/**
 * The daemon's jobs in queue mode (`invarx daemon --queue URL`): the same verbs as the
 * local scheduler (daemon/scheduler.ts), over BullMQ jobs that workers on any machine run
 * (daemon/queue/queueWorker.ts). Nothing runs here except export rebuilds.
 *
 * The daemon keeps a picture of every job, refreshed from Redis every REFRESH_MS and on
 * each QueueEvents event (progress events carry the worker's progress itself), so `status`
 * and `watch` answer from memory and stream every change, as with the local scheduler.
 * Several daemons may serve one queue: Redis is the only state.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Queue, QueueEvents, type Job as JobBase } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { InvarxError } from '../../core/errors';
import type { SearchTuning } from '../../search/config';
import type { FinalReport, RunConfig } from '../../search/contract';
import { exportTo, type ExportOptions } from '../exporter';
import { isJobId } from '../home';
import { ProtocolError } from '../protocol';
import { hashModel } from '../runner';
import { TERMINAL } from '../store';
import { jobView, type JobView } from '../view';
import { connectionOptions, openRedis, probeRedis } from './connect';
import { buildExport } from './exportBuild';
import { jobRecord, type JobRecord } from './jobRecord';
import { PAYLOAD_VERSION, parsePayload, type QueuePayload } from './payload';
import { readProgress, type QueueResult } from './progress';
import { loadCheckpoints } from './redisCheckpoints';
import type { QueueUrl } from './redisUrl';
import { QUEUE_NAME, controlKey, type Control } from './settings';

export interface QueueJobsOptions {
  url: QueueUrl;
  home: string;
  log: Logger;
  /** The bundled CLI (export rebuilds run its `__queue-runner` in a thread). */
  script: string;
}

const REFRESH_MS = 1000;
const STATES = ['active', 'waiting', 'prioritized', 'delayed', 'waiting-children', 'completed', 'failed'] as const;

export class QueueJobs extends EventEmitter {
  private readonly records = new Map<string, JobRecord>();
  private readonly exports = new Map<string, Promise<string>>();
  private timer?: NodeJS.Timeout;
  private refreshing?: Promise<void>;

  private constructor(
    private readonly o: QueueJobsOptions,
    private readonly queue: Queue,
    private readonly events: QueueEvents,
    private readonly redis: Redis,
  ) {
    super();
    this.setMaxListeners(0);
  }

  static async open(o: QueueJobsOptions): Promise<QueueJobs> {
    await probeRedis(o.url);
    const connection = connectionOptions(o.url.target);
    const queue = new Queue(QUEUE_NAME, { connection });
    queue.on('error', (e) => o.log.warn({ err: e.message }, 'queue error (BullMQ retries)'));
    const events = new QueueEvents(QUEUE_NAME, { connection });
    events.on('error', (e) => o.log.warn({ err: e.message }, 'queue events error (BullMQ retries)'));
    const jobs = new QueueJobs(o, queue, events, openRedis(o.url));
    events.on('progress', ({ jobId, data }) => jobs.onProgress(jobId, data));
    for (const ev of ['active', 'waiting', 'delayed', 'completed', 'failed', 'stalled', 'removed'] as const) {
      events.on(ev, (args: { jobId: string }) => void jobs.refreshOne(args.jobId));
    }
    await jobs.refresh();
    return jobs;
  }

  /** Jobs live in Redis: nothing to load. */
  load(): void {}

  start(): void {
    const tick = () => {
      this.timer = setTimeout(() => void this.refresh().finally(tick), REFRESH_MS);
      this.timer.unref();
    };
    tick();
  }

  async submit(config: RunConfig, tuning?: Partial<SearchTuning>): Promise<JobView> {
    let modelHash: string;
    try {
      modelHash = await hashModel(config.model);
    } catch (e) {
      throw new InvarxError('bad-model', `cannot read model file ${config.model} to record its hash: ${(e as Error).message}`);
    }
    const payload: QueuePayload = { v: PAYLOAD_VERSION, config, ...(tuning && Object.keys(tuning).length ? { tuning } : {}), modelHash, createdAt: new Date().toISOString() };
    // Checked as a worker will check it, so what the daemon accepts a worker accepts.
    parsePayload(JSON.parse(JSON.stringify(payload)));
    // BullMQ refuses a custom id that reads as an integer, which 8 hex digits sometimes do
    let id: string;
    do id = randomBytes(4).toString('hex');
    while (/^\d+$/.test(id) || (await this.queue.getJob(id)));
    const job = await this.queue.add('search', payload, { jobId: id });
    this.o.log.info({ job: id, model: config.model, bits: config.bits, base: config.base, seed: config.seed }, 'submitted to the queue');
    this.put(jobRecord(job, 'waiting', null));
    return this.view(id);
  }

  async list(): Promise<JobView[]> {
    await this.refresh();
    return [...this.records.keys()].map((id) => this.view(id));
  }

  view(id: string): JobView {
    const r = this.get(id);
    const queued = r.status.state === 'queued' ? this.queuedIds().indexOf(id) + 1 : 0;
    return jobView(r.spec, r.status, { queuePosition: queued || null, rateKnown: true });
  }

  async pause(id: string): Promise<JobView> {
    const r = await this.fresh(id);
    if (r.status.state === 'paused') return this.view(id);
    if (TERMINAL.has(r.status.state)) throw new ProtocolError('bad-state', `job ${id} is ${r.status.state}; only queued or running jobs can be paused`);
    await this.redis.set(controlKey(id), 'pause' satisfies Control);
    return this.view((await this.refreshOne(id), id));
  }

  async resume(id: string): Promise<JobView> {
    const r = await this.fresh(id);
    if (r.status.state === 'queued' || r.status.state === 'running') return this.view(id);
    if (r.status.state !== 'paused') throw new ProtocolError('bad-state', `job ${id} is ${r.status.state}; only paused jobs can be resumed`);
    await this.redis.del(controlKey(id));
    await this.promoteParked(id);
    return this.view((await this.refreshOne(id), id));
  }

  async cancel(id: string): Promise<JobView> {
    const r = await this.fresh(id);
    if (r.status.state === 'cancelled') return this.view(id);
    if (TERMINAL.has(r.status.state)) throw new ProtocolError('bad-state', `job ${id} is already ${r.status.state}`);
    await this.redis.set(controlKey(id), 'cancel' satisfies Control);
    // A parked (paused) job goes back to the wait list, where the next worker fails it as cancelled.
    await this.promoteParked(id);
    return this.view((await this.refreshOne(id), id));
  }

  /** Writes the finished job's export (rebuilt here once, daemon/queue/exportBuild.ts) into `out`. */
  async exportTo(id: string, out: string, opts: ExportOptions): Promise<{ out: string; files: string[] }> {
    const r = await this.fresh(id);
    if (r.status.state !== 'done') throw new ProtocolError('not-done', `job ${id} is ${r.status.state}; its export exists once it is done`);
    let building = this.exports.get(id);
    if (!building) {
      building = (async () => {
        const job = await this.queue.getJob(id);
        if (!job) throw new ProtocolError('no-such-job', `no job ${id}`);
        const payload = parsePayload(job.data);
        return buildExport(this.o.script, this.o.home, id, payload, await loadCheckpoints(this.redis, id), resultOf(job));
      })();
      this.exports.set(id, building);
      building.catch(() => this.exports.delete(id));
    }
    const src = await building;
    const res = await exportTo(src, this.o.home, out, opts);
    this.o.log.info({ job: id, out: res.out, files: res.files, force: opts.force }, 'exported');
    return res;
  }

  async report(id: string): Promise<{ id: string; config: RunConfig; report: Omit<FinalReport, 'models'> }> {
    const r = await this.fresh(id);
    if (r.status.state !== 'done') throw new ProtocolError('not-done', `job ${id} is ${r.status.state}; its report exists once it is done`);
    const job = await this.queue.getJob(id);
    const result = job ? resultOf(job) : null;
    if (!result) throw new ProtocolError('no-report', `job ${id} has no readable report in Redis`);
    return { id, config: r.spec.config, report: result.report };
  }

  async shutdown(): Promise<void> {
    clearTimeout(this.timer);
    await Promise.allSettled([...this.exports.values()]);
    await Promise.allSettled([this.events.close(), this.queue.close()]);
    this.redis.disconnect();
  }

  runningCount(): number {
    return [...this.records.values()].filter((r) => r.status.state === 'running').length;
  }

  private get(id: string): JobRecord {
    const r = this.records.get(id);
    if (!r) throw new ProtocolError('no-such-job', `no job ${id}`);
    return r;
  }

  /** The job as Redis has it now (a verb must not act on a picture up to a second old). */
  private async fresh(id: string): Promise<JobRecord> {
    await this.refreshOne(id);
    return this.get(id);
  }

  private queuedIds(): string[] {
    return [...this.records.values()].filter((r) => r.status.state === 'queued').sort((a, b) => a.spec.seq - b.spec.seq).map((r) => r.spec.id);
  }

  /** A paused job parked as delayed goes back to the wait list. */
  private async promoteParked(id: string): Promise<void> {
    const job = await this.queue.getJob(id);
    if (job && (await job.getState()) === 'delayed') await job.promote().catch(() => undefined);
  }

  private put(r: JobRecord): void {
    const before = this.records.get(r.spec.id);
    this.records.set(r.spec.id, r);
    if (!before || JSON.stringify(before.status) !== JSON.stringify(r.status)) this.emitUpdate(r.spec.id);
  }

  private emitUpdate(id: string): void {
    if (this.listenerCount(`job:${id}`) > 0) this.emit(`job:${id}`, this.view(id));
  }

  private onProgress(id: string, data: unknown): void {
    const r = this.records.get(id);
    if (!r || TERMINAL.has(r.status.state)) return;
    const qp = readProgress(data);
    if (qp.progress) r.status.progress = qp.progress;
    if (qp.phase) r.status.phase = qp.phase;
    if (qp.lastCheckpoint) r.status.lastCheckpoint = qp.lastCheckpoint;
    r.status.warnings = qp.warnings;
    if (qp.checkpointError) r.status.checkpointError = qp.checkpointError;
    else delete r.status.checkpointError;
    this.emitUpdate(id);
  }

  /** Re-reads one job (on an event, or before a verb acts on it). */
  async refreshOne(id: string): Promise<void> {
    if (!isJobId(id)) return;
    try {
      let job = await this.queue.getJob(id);
      if (!job) {
        this.records.delete(id);
        return;
      }
      const [state, control] = await Promise.all([job.getState(), this.redis.get(controlKey(id))]);
      // a job that finished between the two reads is read again, so its record has its result (the failure's reason)
      if ((state === 'failed' || state === 'completed') && job.finishedOn === undefined) job = (await this.queue.getJob(id)) ?? job;
      this.put(jobRecord(job, state, asControl(control)));
    } catch (e) {
      this.o.log.warn({ job: id, err: (e as Error).message }, 'cannot read the job from Redis (kept as it was)');
    }
  }

  /** Re-reads every job; also promotes parked jobs whose pause was lifted meanwhile (a resume racing the park). */
  refresh(): Promise<void> {
    return (this.refreshing ??= (async () => {
      try {
        const started = Date.now();
        const seen = new Set<string>();
        for (const state of STATES) {
          const jobs = (await this.queue.getJobs([state], 0, -1)) as JobBase[];
          const ids = jobs.map((j) => j.id!).filter(isJobId);
          const controls = ids.length ? await this.redis.mget(ids.map(controlKey)) : [];
          for (const [i, id] of ids.entries()) {
            const job = jobs.find((j) => j.id === id)!;
            const control = asControl(controls[i]);
            seen.add(id);
            this.put(jobRecord(job, state, control));
            if (state === 'delayed' && control !== 'pause') await this.promoteParked(id);
          }
        }
        for (const [id, r] of this.records) if (!seen.has(id) && Date.parse(r.spec.createdAt) < started - 5000) this.records.delete(id);
      } catch (e) {
        this.o.log.warn({ err: (e as Error).message }, 'cannot read the queue from Redis (status may be stale)');
      } finally {
        this.refreshing = undefined;
      }
    })());
  }
}

function asControl(v: string | null | undefined): Control | null {
  return v === 'pause' || v === 'cancel' ? v : null;
}

function resultOf(job: JobBase): QueueResult | null {
  const v = job.returnvalue as unknown;
  if (typeof v !== 'object' || v === null) return null;
  const report = (v as { report?: unknown }).report;
  return typeof report === 'object' && report !== null ? { report: report as QueueResult['report'] } : null;
}
