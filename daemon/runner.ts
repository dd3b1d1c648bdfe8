/**
 * One job, run inside its own worker thread (started by the scheduler, daemon/scheduler.ts).
 *
 * Why a thread per job: a search step is synchronous compute, and some are long (with the
 * default tuning, building the token sets takes ~10 s and the scale-initialisation step
 * ~30 s on stories260K). In the daemon's own thread that would freeze the socket; here the
 * daemon stays responsive, and a job that crashes (or runs out of memory) takes only its
 * thread down.
 *
 * The thread owns everything about its job's files: it hashes the model, loads the newest
 * usable checkpoint, runs `step()` in a loop that yields to its event loop between steps
 * (so a stop message is seen), writes checkpoints by step and time cadence, and on
 * completion writes the export and report.json. It tells the daemon what happened by
 * messages; the daemon owns state.json.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, fsyncSync, openSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { InvarxError } from '../core/errors';
import { inputKind, openRegularFile } from '../core/files';
import { DEFAULT_TUNING, configHash, type SearchTuning } from '../search/config';
import type { FinalReport, Progress, RunConfig, SearchJob } from '../search/contract';
import { createSearchJob } from '../search/run';
import { closeLogFile, openLogFile } from './logfile';
import { osError } from './oserror';
import { CheckpointStore, snapshotDigest, type Checkpoint, type Loaded } from './checkpoint';
import { toJson, writeFileAtomic, type JobError } from './store';
import { canonicalRunConfig } from './submit';

export interface RunnerInit {
  id: string;
  jobDir: string;
  config: RunConfig;
  tuning?: Partial<SearchTuning>;
  /** Checkpoint after this many steps (0 = not by steps)… */
  checkpointSteps: number;
  /** …or after this many seconds (0 = not by time), whichever comes first. */
  checkpointSeconds: number;
  /** The model's SHA-256 recorded when the job was submitted (queue mode): a different file at the path fails the job. */
  modelHash?: string;
}

/**
 * Where a job's checkpoints live: by default its directory (CheckpointStore); in queue mode
 * Redis, through the worker process (daemon/queue/threadCheckpoints.ts). Either may be async.
 */
export interface CheckpointBackend {
  load(configHash: string, warn: (message: string) => void): Loaded | null | Promise<Loaded | null>;
  save(c: Omit<Checkpoint, 'formatVersion' | 'savedAt'>): string | Promise<string>;
  discard(file: string): void;
}

export interface RunnerSeams {
  checkpoints?: CheckpointBackend;
  /**
   * 'files' (default): the finished job writes export/ and report.json into its directory.
   * 'port': the report goes back in the `done` message instead (queue mode: the export is
   * written later, by whichever process asks for it, from the final checkpoint).
   */
  results?: 'files' | 'port';
}

export type StopReason = 'pause' | 'shutdown';

export type ToRunner = { type: 'stop'; reason: StopReason };

export type FromRunner =
  | { type: 'started'; resumedFromStep: number | null; modelHash: string }
  | { type: 'progress'; progress: Progress }
  | { type: 'phase'; phase: string }
  | { type: 'checkpoint'; step: number; savedAt: string }
  | { type: 'checkpoint-error'; error: JobError }
  | { type: 'warning'; message: string }
  | { type: 'done'; progress: Progress; report?: Omit<FinalReport, 'models'> }
  | { type: 'stopped'; reason: StopReason; progress: Progress }
  | { type: 'failed'; error: JobError };

export interface RunnerPort {
  post(m: FromRunner): void;
  /** Called with the stop reason when the daemon asks the job to stop. */
  onStop(cb: (reason: StopReason) => void): void;
}

/** Progress messages are at most this often (steps can take a millisecond). */
const PROGRESS_EVERY_MS = 100;

/** SHA-256 of the model's bytes: the file, or for a directory (safetensors + config.json) its files by name. */
export async function hashModel(path: string): Promise<string> {
  const fileHash = (p: string) =>
    new Promise<string>((res, rej) => {
      // Opened without blocking and checked first: a stream's own open of a FIFO never returns.
      const { fd } = openRegularFile(p, 'model file', 'bad-model');
      const h = createHash('sha256');
      createReadStream('', { fd }).on('error', rej).on('data', (d) => h.update(d)).on('end', () => res(h.digest('hex')));
    });
  if (inputKind(path, 'model file', 'bad-model', { directory: true }) === 'file') return fileHash(path);
  const h = createHash('sha256');
  for (const name of readdirSync(path).sort()) {
    const p = join(path, name);
    if (statSync(p).isFile()) h.update(`${name}\0${await fileHash(p)}\n`);
  }
  return h.digest('hex');
}

/** Lets the thread's event loop run once (delivering a stop message) between steps. */
const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));

function errorOf(e: unknown): JobError {
  if (e instanceof InvarxError) return { code: e.code, message: e.message };
  const os = osError(e);
  if (os) return { code: os.code, message: os.message };
  const err = e as NodeJS.ErrnoException;
  return { code: typeof err?.code === 'string' ? err.code : 'internal', message: String(err?.message ?? e).split('\n')[0] };
}

/** What open() hands to drive(): the job and the identity its checkpoints are written under. */
interface Opened {
  job: SearchJob;
  store: CheckpointBackend;
  configHash: string;
  modelHash: string;
}

export async function runJob(init: RunnerInit, port: RunnerPort, seams: RunnerSeams = {}): Promise<void> {
  init = { ...init, config: canonicalRunConfig(init.config) };
  const log = openLogFile(join(init.jobDir, 'job.log'), { base: { job: init.id }, who: `invarx daemon: job ${init.id}`, mkdir: true });
  let stop: StopReason | undefined;
  port.onStop((r) => (stop ??= r));
  let job: SearchJob | undefined;
  try {
    const opened = await open(init, log, port, seams.checkpoints, (seams.results ?? 'files') === 'files');
    job = opened.job;
    await drive(init, opened, log, port, () => stop, seams.results ?? 'files');
  } catch (e) {
    const error = errorOf(e);
    if (e instanceof InvarxError) log.error({ code: error.code }, error.message);
    else log.error({ err: e }, 'job crashed');
    port.post({ type: 'failed', error });
  } finally {
    await job?.close().catch(() => undefined);
    closeLogFile(log); // a queue worker's thread runs the next job next
  }
}

/** The search job, resumed from the newest usable checkpoint (falling back past corrupt ones). */
/** `exports`: whether the job writes export/ when it ends (its time budget keeps time for that). */
async function open(init: RunnerInit, log: Logger, port: RunnerPort, backend: CheckpointBackend | undefined, exports: boolean): Promise<Opened> {
  const { config } = init;
  const cfgHash = configHash(config, { ...DEFAULT_TUNING, ...init.tuning });
  const store = backend ?? new CheckpointStore(join(init.jobDir, 'checkpoints'));
  const warn = (message: string) => {
    log.warn(message);
    port.post({ type: 'warning', message });
  };
  // A missing or unreadable model is reported below by the search's own loader (one clear line).
  const modelHash = await hashModel(config.model).catch(() => null);
  if (modelHash && init.modelHash && modelHash !== init.modelHash) {
    throw new InvarxError(
      'model-changed',
      `model file ${config.model} is not the one the job was submitted with (sha256 ${modelHash.slice(0, 12)}… here, ${init.modelHash.slice(0, 12)}… at submit); give every worker the same file`,
    );
  }
  for (;;) {
    const loaded: Loaded | null = await store.load(cfgHash, warn);
    if (loaded && modelHash && loaded.checkpoint.modelHash !== modelHash) {
      throw new InvarxError(
        'model-changed',
        `model file ${config.model} changed since the job's last checkpoint (sha256 ${modelHash.slice(0, 12)}…, was ${loaded.checkpoint.modelHash.slice(0, 12)}…); submit it as a new job`,
      );
    }
    let job: SearchJob;
    try {
      job = await createSearchJob(config, { log, tuning: init.tuning, resumeFrom: loaded?.checkpoint.snapshot, scratchDir: join(init.jobDir, 'scratch'), exports,
        onPhase: (phase) => port.post({ type: 'phase', phase }),
      });
    } catch (e) {
      // The search refused the snapshot itself (e.g. its own version changed): try an older one.
      if (loaded && e instanceof InvarxError && e.code === 'bad-checkpoint') {
        warn(`checkpoint ${loaded.file} was refused by the search (${e.message}); trying an older one`);
        store.discard(loaded.file);
        continue;
      }
      throw e;
    }
    if (!modelHash) {
      await job.close();
      throw new InvarxError('bad-model', `cannot read model file ${config.model}`);
    }
    if (loaded) log.info({ step: loaded.checkpoint.step, file: loaded.file }, 'resumed from checkpoint');
    else log.info('started');
    port.post({ type: 'started', resumedFromStep: loaded ? loaded.checkpoint.step : null, modelHash });
    return { job, store, configHash: cfgHash, modelHash };
  }
}

async function drive(init: RunnerInit, o: Opened, log: Logger, port: RunnerPort, stopReason: () => StopReason | undefined, results: 'files' | 'port'): Promise<void> {
  const { job, store } = o;
  let lastDigest = '';
  let stepsSince = 0;
  let lastSave = Date.now();
  let lastPost = 0;

  /** Writes a checkpoint unless the snapshot is unchanged since the last one. */
  const checkpoint = async () => {
    stepsSince = 0;
    lastSave = Date.now();
    const snapshot = job.snapshot();
    const digest = snapshotDigest(snapshot);
    if (digest === lastDigest) return;
    const step = job.progress().step;
    try {
      const file = await store.save({ configHash: o.configHash, modelHash: o.modelHash, step, snapshot });
      lastDigest = digest;
      log.debug({ step, file }, 'checkpoint');
      port.post({ type: 'checkpoint', step, savedAt: new Date().toISOString() });
    } catch (e) {
      // The previous checkpoints are intact; keep searching and try again at the next cadence.
      const error = errorOf(e);
      log.error({ code: error.code }, `checkpoint write failed: ${error.message}`);
      port.post({ type: 'checkpoint-error', error });
    }
  };

  port.post({ type: 'progress', progress: job.progress() });
  // Opening took a while (token sets, caches): see a stop that arrived meanwhile before stepping.
  await yieldToLoop();
  while (!job.done) {
    const reason = stopReason();
    if (reason) {
      await checkpoint();
      log.info({ reason, step: job.progress().step }, 'stopped');
      port.post({ type: 'stopped', reason, progress: job.progress() });
      return;
    }
    await job.step();
    stepsSince++;
    const now = Date.now();
    if (now - lastPost >= PROGRESS_EVERY_MS) {
      lastPost = now;
      port.post({ type: 'progress', progress: job.progress() });
    }
    const bySteps = init.checkpointSteps > 0 && stepsSince >= init.checkpointSteps;
    const byTime = init.checkpointSeconds > 0 && now - lastSave >= init.checkpointSeconds * 1000;
    if (bySteps || byTime) await checkpoint();
    await yieldToLoop();
  }
  // The finished state too, so a crash while reporting below replays no steps.
  await checkpoint();
  const { models: _models, ...report } = await job.report();
  if (results === 'files') {
    await writeExport(init.jobDir, job);
    writeFileAtomic(join(init.jobDir, 'report.json'), toJson(report));
  }
  log.info({ step: report.steps, accepted: report.accepted, closes: report.closes }, 'done');
  port.post({ type: 'done', progress: job.progress(), ...(results === 'port' ? { report } : {}) });
}

/**
 * jobs/<id>/export/: built under a temp name, synced, then renamed into place, so it is
 * either absent or complete. (A crash before state.json says `done` reruns this.)
 */
async function writeExport(jobDir: string, job: SearchJob): Promise<void> {
  for (const n of readdirSync(jobDir)) if (n.startsWith('export.tmp-')) rmSync(join(jobDir, n), { recursive: true, force: true });
  const tmp = join(jobDir, `export.tmp-${randomBytes(4).toString('hex')}`);
  try {
    await job.exportTo(tmp);
    fsyncTree(tmp);
    const final = join(jobDir, 'export');
    rmSync(final, { recursive: true, force: true });
    renameSync(tmp, final);
  } catch (e) {
    // A failed export (full disk) leaves nothing half-written behind.
    rmSync(tmp, { recursive: true, force: true });
    throw osError(e, `cannot write the job's export in ${jobDir}`) ?? e;
  }
  fsyncPath(jobDir);
}

/** fsync every file and directory under dir (the directory last). */
function fsyncTree(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) fsyncTree(join(dir, e.name));
    else fsyncPath(join(dir, e.name));
  }
  fsyncPath(dir);
}

function fsyncPath(p: string): void {
  const fd = openSync(p, 'r');
  try {
    fsyncSync(fd);
  } catch {
    // Directories cannot be fsynced on every filesystem.
  } finally {
    closeSync(fd);
  }
}
