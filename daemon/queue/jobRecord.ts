/**
 * A BullMQ job (as read from Redis) → the daemon's picture of it: JobSpec and JobStatus,
 * the same types the local daemon keeps (daemon/store.ts), so status, list and watch
 * render them alike (daemon/view.ts).
 *
 *   BullMQ state               control flag   daemon state
 *   completed                  -              done
 *   failed                     -              failed (cancelled when the reason says so)
 *   any other                  cancel         cancelled (a worker fails it when it sees the flag)
 *   any other                  pause          paused (a worker parks it as delayed)
 *   active                     -              running
 *   waiting, delayed, …        -              queued
 */
import type { Job as JobBase } from 'bullmq';
import type { RunConfig } from '../../search/contract';
import type { JobSpec, JobState, JobStatus } from '../store';
import { parsePayload } from './payload';
import { readFailure, readProgress } from './progress';
import type { Control } from './settings';

export interface JobRecord {
  spec: JobSpec;
  status: JobStatus;
  bullState: string;
  control: Control | null;
  /** The data failed the payload checks (the job fails when a worker takes it). */
  malformed: boolean;
}

/** Shown for a job whose data is not a valid payload (put into Redis by something else). */
const MALFORMED: RunConfig = { model: '(malformed job data)', bits: 0, group: 0, base: '-', steps: 0, seed: 0 } as unknown as RunConfig;

const iso = (ms: number | undefined | null) => (typeof ms === 'number' && ms > 0 ? new Date(ms).toISOString() : undefined);

export function jobRecord(job: JobBase, bullState: string, control: Control | null): JobRecord {
  let config = MALFORMED;
  let tuning;
  let createdAt = iso(job.timestamp) ?? new Date(0).toISOString();
  let malformed = false;
  try {
    const p = parsePayload(job.data);
    config = p.config;
    tuning = p.tuning;
    createdAt = p.createdAt;
  } catch {
    malformed = true;
  }
  const spec: JobSpec = { id: job.id!, seq: job.timestamp, createdAt, config, ...(tuning ? { tuning } : {}) };
  const qp = readProgress(job.progress);
  const failure = bullState === 'failed' ? readFailure(job.failedReason) : undefined;
  let state: JobState;
  if (bullState === 'completed') state = 'done';
  else if (failure) state = failure.code === 'cancelled' ? 'cancelled' : 'failed';
  else if (control === 'cancel') state = 'cancelled';
  else if (control === 'pause') state = 'paused';
  else if (bullState === 'active') state = 'running';
  else state = 'queued';
  const finishedAt = iso(job.finishedOn);
  const status: JobStatus = {
    state,
    updatedAt: finishedAt ?? iso(job.processedOn) ?? createdAt,
    ...(qp.progress ? { progress: qp.progress } : {}),
    ...(qp.phase ? { phase: qp.phase } : {}),
    ...(failure && state === 'failed' ? { error: failure } : {}),
    ...(qp.checkpointError ? { checkpointError: qp.checkpointError } : {}),
    ...(qp.lastCheckpoint ? { lastCheckpoint: qp.lastCheckpoint } : {}),
    warnings: qp.warnings,
    ...(iso(job.processedOn) ? { startedAt: iso(job.processedOn) } : {}),
    ...(finishedAt ? { finishedAt } : {}),
  };
  return { spec, status, bullState, control, malformed };
}
