/**
 * The job store: one directory per job under <home>/jobs/ (DESIGN §7).
 *
 *   jobs/<id>/config.json     what was submitted (written once)
 *   jobs/<id>/state.json      queued|running|paused|done|failed|cancelled, last progress, errors
 *   jobs/<id>/job.log         pino JSON lines of this job
 *   jobs/<id>/checkpoints/    the last two checkpoints (daemon/checkpoint.ts)
 *   jobs/<id>/export/         the finished job's export (what `invarx run --out` writes)
 *   jobs/<id>/report.json     the finished job's FinalReport (without models)
 *
 * JSON files are replaced atomically (temp + fsync + rename) so a crash leaves the old or
 * the new version, never a torn one. Paths are only ever built from ids that passed
 * isJobId, and ids are generated here, never taken from a client.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { FinalReport, Progress, RunConfig } from '../search/contract';
import type { SearchTuning } from '../search/config';
import { isJobId, jobDir, jobsDir } from './home';

export const JOB_STATES = ['queued', 'running', 'paused', 'done', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const TERMINAL: ReadonlySet<JobState> = new Set(['done', 'failed', 'cancelled']);

export interface JobError {
  code: string;
  message: string;
}

/** config.json */
export interface JobSpec {
  id: string;
  /** Submission order (queue order, and the order jobs resume in). */
  seq: number;
  createdAt: string;
  config: RunConfig;
  tuning?: Partial<SearchTuning>;
}

/** state.json */
export interface JobStatus {
  state: JobState;
  updatedAt: string;
  progress?: Progress;
  /** The phase the job's run is in (also before its first progress report). */
  phase?: string;
  error?: JobError;
  /** The last checkpoint write failed (the job goes on; older checkpoints are intact). */
  checkpointError?: JobError;
  lastCheckpoint?: { step: number; savedAt: string };
  /** Recent warnings (checkpoint fallbacks), newest last. */
  warnings?: string[];
  startedAt?: string;
  finishedAt?: string;
}

export interface LoadedJob {
  spec: JobSpec;
  status: JobStatus;
  /** The status is from pending-states.json: newer than the job's state.json, which it should replace. */
  fromPending: boolean;
}

/** Writes a file so that readers (and crashes) see the old or the new contents, never a mix. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    try {
      const b = typeof data === 'string' ? Buffer.from(data) : data;
      for (let off = 0; off < b.length; ) off += writeSync(fd, b, off, b.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    // A full disk must not also leave a partial temp file behind.
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** JSON without NaN/Infinity surprises: they are written as null. */
export function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isFinite(x) ? null : x), 2) + '\n';
}

export class JobStore {
  constructor(readonly home: string) {
    mkdirSync(jobsDir(home), { recursive: true, mode: 0o700 });
  }

  dir(id: string): string {
    return jobDir(this.home, id);
  }

  /** A fresh id that no job has (8 hex digits: short enough to type). */
  newId(): string {
    for (;;) {
      const id = randomBytes(4).toString('hex');
      if (!existsSync(this.dir(id))) return id;
    }
  }

  /**
   * Creates jobs/<id>/ with its config.json and state.json, built under a temp name and
   * renamed into place, so a crash mid-submit leaves no half-made job.
   */
  create(spec: JobSpec, status: JobStatus): void {
    const tmp = join(jobsDir(this.home), `.new-${spec.id}`);
    rmSync(tmp, { recursive: true, force: true });
    try {
      mkdirSync(tmp, { mode: 0o700 });
      writeFileAtomic(join(tmp, 'config.json'), toJson(spec));
      writeFileAtomic(join(tmp, 'state.json'), toJson(status));
      renameSync(tmp, this.dir(spec.id));
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  writeStatus(id: string, status: JobStatus): void {
    writeFileAtomic(join(this.dir(id), 'state.json'), toJson(status));
  }

  readReport(id: string): Omit<FinalReport, 'models'> | null {
    try {
      return JSON.parse(readFileSync(join(this.dir(id), 'report.json'), 'utf8'));
    } catch {
      return null;
    }
  }

  /** Statuses whose state.json could not be written (daemon/states.ts). */
  pendingStatesPath(): string {
    return join(this.home, 'pending-states.json');
  }

  exportDir(id: string): string {
    return join(this.dir(id), 'export');
  }

  /**
   * Every job on disk, in submission order. Unreadable entries are reported, not fatal:
   * one damaged job directory must not keep the daemon (and every other job) down.
   */
  loadAll(warn: (msg: string) => void): LoadedJob[] {
    const out: LoadedJob[] = [];
    const pending = this.readPendingStates(warn);
    for (const name of readdirSync(jobsDir(this.home))) {
      if (name.startsWith('.new-')) {
        rmSync(join(jobsDir(this.home), name), { recursive: true, force: true });
        continue;
      }
      if (!isJobId(name)) continue;
      const dir = this.dir(name);
      try {
        const spec = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as JobSpec;
        let status: JobStatus;
        let stateRead = false;
        try {
          status = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as JobStatus;
          if (!(JOB_STATES as readonly string[]).includes(status.state)) throw new Error(`unknown state ${status.state}`);
          stateRead = true;
        } catch (e) {
          // The config is intact: resume the job rather than lose it.
          warn(`job ${name}: state.json unreadable (${(e as Error).message}); treating the job as queued`);
          status = { state: 'queued', updatedAt: new Date().toISOString() };
        }
        if (spec.id !== name) throw new Error(`config.json names job ${spec.id}`);
        // A newer state that could not be written to state.json (full disk, read-only directory).
        const p = pending.get(name);
        const fromPending = !!p && (!stateRead || !(p.updatedAt < status.updatedAt));
        out.push({ spec, status: fromPending ? p : status, fromPending });
      } catch (e) {
        warn(`job ${name}: skipped, config.json unreadable (${(e as Error).message})`);
      }
    }
    return out.sort((a, b) => a.spec.seq - b.spec.seq);
  }

  private readPendingStates(warn: (msg: string) => void): Map<string, JobStatus> {
    const out = new Map<string, JobStatus>();
    let v: unknown;
    try {
      v = JSON.parse(readFileSync(this.pendingStatesPath(), 'utf8'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') warn(`pending-states.json unreadable (${(e as NodeJS.ErrnoException).code ?? 'not JSON'}); ignored`);
      return out;
    }
    if (typeof v !== 'object' || v === null) return out;
    for (const [id, st] of Object.entries(v as Record<string, JobStatus>)) {
      if (isJobId(id) && typeof st === 'object' && st !== null && (JOB_STATES as readonly string[]).includes(st.state) && typeof st.updatedAt === 'string') out.set(id, st);
    }
    return out;
  }
}
