/**
 * What a queue job carries in Redis besides its data: the progress a worker publishes
 * (BullMQ job progress) and the result of a finished job (BullMQ return value). The daemon
 * reads both back as untrusted values: anything not of the expected shape is ignored.
 */
import type { FinalReport, Progress } from '../../search/contract';
import type { JobError } from '../store';

export interface QueueProgress {
  progress?: Progress;
  phase?: string;
  lastCheckpoint: { step: number; savedAt: string } | null;
  checkpointError: JobError | null;
  warnings: string[];
  /** host:pid of the worker that published it. */
  worker?: string;
}

export interface QueueResult {
  report: Omit<FinalReport, 'models'>;
}

export function emptyProgress(): QueueProgress {
  return { lastCheckpoint: null, checkpointError: null, warnings: [] };
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A job's progress as read from Redis, keeping only well-formed fields. */
export function readProgress(v: unknown): QueueProgress {
  const out = emptyProgress();
  if (!isRecord(v)) return out;
  const p = v.progress;
  if (isRecord(p) && typeof p.step === 'number' && typeof p.totalSteps === 'number') out.progress = p as unknown as Progress;
  if (typeof v.phase === 'string') out.phase = v.phase.slice(0, 64);
  const c = v.lastCheckpoint;
  if (isRecord(c) && typeof c.step === 'number' && typeof c.savedAt === 'string') out.lastCheckpoint = { step: c.step, savedAt: c.savedAt };
  const e = v.checkpointError;
  if (isRecord(e) && typeof e.code === 'string' && typeof e.message === 'string') out.checkpointError = { code: e.code, message: e.message };
  if (Array.isArray(v.warnings)) out.warnings = v.warnings.filter((w): w is string => typeof w === 'string').slice(-5);
  return out;
}

/** `code: message` (how workers fail jobs, daemon/queue/queueWorker.ts) → a JobError. */
export function readFailure(reason: unknown): JobError {
  const s = typeof reason === 'string' ? reason : 'unknown failure';
  const m = /^([a-z][a-z0-9-]{0,40}): ([\s\S]*)$/.exec(s);
  return m ? { code: m[1], message: m[2] } : { code: 'failed', message: s };
}
