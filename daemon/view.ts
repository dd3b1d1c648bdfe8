/**
 * What `status`, `list` and `watch` report about a job: its spec and stored status, with
 * what only the scheduler knows (queue place, whether the speed is measured yet).
 */
import type { Progress } from '../search/contract';
import type { JobError, JobSpec, JobState, JobStatus } from './store';

/** What `status`, `list` and `watch` report about a job. */
export interface JobView {
  id: string;
  state: JobState;
  model: string;
  bits: number;
  group: number;
  base: string;
  seed: number;
  step: number;
  totalSteps: number;
  bestLoss: number | null;
  validationLoss: number | null;
  acceptRate: number | null;
  candidatesPerSec: number | null;
  etaSeconds: number | null;
  stopReason: string | null;
  /** The run's phase (tokens, calibration, base, scale-init, search, norm-tune, report, export), while running. */
  phase: string | null;
  /** 1-based place in the queue while queued. */
  queuePosition: number | null;
  error: JobError | null;
  checkpointError: JobError | null;
  lastCheckpoint: { step: number; savedAt: string } | null;
  warnings: string[];
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface ViewExtras {
  /** 1-based place in the queue, null unless queued. */
  queuePosition: number | null;
  /** False while a (re)started job has not reported a measured speed yet. */
  rateKnown: boolean;
}

export function jobView(spec: JobSpec, s: JobStatus, x: ViewExtras): JobView {
  const p: Progress | undefined = s.progress;
  const c = spec.config;
  const live = s.state === 'running' || s.state === 'queued';
  // Before a (re)started thread has measured anything, its speed and ETA are unknown, not 0.
  const measured = !live || x.rateKnown;
  return {
    id: spec.id,
    state: s.state,
    model: c.model,
    bits: c.bits,
    group: c.group,
    base: c.base,
    seed: c.seed,
    step: p?.step ?? 0,
    totalSteps: p?.totalSteps ?? c.steps,
    bestLoss: p?.bestLoss ?? null,
    validationLoss: p?.validationLoss ?? null,
    acceptRate: p ? p.acceptRate : null,
    candidatesPerSec: p && measured ? p.candidatesPerSec : null,
    etaSeconds: s.state === 'running' && measured ? (p?.etaSeconds ?? null) : s.state === 'done' ? 0 : null,
    stopReason: p?.stopReason ?? null,
    phase: s.state === 'running' ? (p?.phase ?? s.phase ?? null) : null,
    queuePosition: x.queuePosition,
    error: s.error ?? null,
    checkpointError: s.checkpointError ?? null,
    lastCheckpoint: s.lastCheckpoint ?? null,
    warnings: s.warnings ?? [],
    createdAt: spec.createdAt,
    updatedAt: s.updatedAt,
    startedAt: s.startedAt ?? null,
    finishedAt: s.finishedAt ?? null,
  };
}
