/**
 * Helpers for the queue-mode tests: a real `redis-server` on a free loopback port in a
 * temporary directory, `invarx worker` processes, the reference export of `invarx run
 * --out`, and the workers' logs (who ran which steps of which job, when).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, CliProc, MODEL_PATH, ROOT, TUNING, readDir, sleep } from '../daemon/harness';
import type { RunConfig } from '../../search/contract';

export { CLI, MODEL_PATH, ROOT, TUNING, readDir, sleep };
export { DaemonProc, call, cli, ensureBuilt, status, submit, tmpHome, waitFor, waitState } from '../daemon/harness';

/** A free TCP port on 127.0.0.1 (taken and released: good enough for a test's own server). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export interface RedisOptions {
  /** Append-only file on (fsync on every write), so a restart keeps everything. */
  aof?: boolean;
  password?: string;
}

export class RedisProc {
  private proc?: ChildProcess;
  private exited?: Promise<void>;

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly opts: RedisOptions,
  ) {}

  static async start(opts: RedisOptions = {}): Promise<RedisProc> {
    const r = new RedisProc(await freePort(), mkdtempSync(join(tmpdir(), 'ixr-redis-')), opts);
    await r.launch();
    return r;
  }

  url(db = 0, password = this.opts.password): string {
    return `redis://${password ? `:${encodeURIComponent(password)}@` : ''}127.0.0.1:${this.port}/${db}`;
  }

  private async launch(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--dir', this.dir];
    args.push(...(this.opts.aof ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']));
    if (this.opts.password) args.push('--requirepass', this.opts.password);
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    let out = '';
    proc.stdout!.on('data', (d) => (out += d));
    this.exited = new Promise((r) => proc.on('exit', () => r()));
    const end = Date.now() + 10_000;
    while (!/Ready to accept connections/.test(out)) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited: ${out}`);
      if (Date.now() > end) throw new Error(`redis-server did not start: ${out}`);
      await sleep(20);
    }
  }

  /** SIGTERM (Redis writes its AOF and exits), then the same server again: same port, same directory. */
  async restart(downMs = 300): Promise<void> {
    await this.stop(false);
    await sleep(downMs);
    await this.launch();
  }

  async stop(removeDir = true): Promise<void> {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill('SIGTERM');
      await this.exited;
    }
    if (removeDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

export class WorkerProc extends CliProc {
  /** `invarx worker --queue URL --home HOME ARGS…`, resolved once it takes jobs. */
  static async start(home: string, url: string, args: string[] = []): Promise<WorkerProc> {
    const proc = spawn(process.execPath, [CLI, 'worker', '--queue', url, '--home', home, ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    const w = new WorkerProc(home, proc);
    await w.ready('taking jobs from', 'worker');
    return w;
  }
}

/** Fast hand-over for tests: a killed worker's job moves on within a few seconds (daemon/queue/settings.ts). */
export const FAST = ['--lock-seconds', '4', '--stalled-seconds', '1'];

export interface JobOptions {
  /** Search tuning (default: the daemon tests' small one). */
  tuning?: Record<string, unknown>;
  bits: number;
  base: 'rtn' | 'gptq';
  seed: number;
  steps: number;
  model?: string;
}

/** The submit config of a job (the daemon tests' shape: absolute model path, small search). */
export function queueConfig(j: JobOptions): Partial<RunConfig> {
  return { model: j.model ?? MODEL_PATH, bits: j.bits, group: 32, base: j.base, steps: j.steps, seed: j.seed, patience: 0, candidates: 4, workers: 1 };
}

function runArgs(j: JobOptions, out: string): string[] {
  return [CLI, 'run', '--model', j.model ?? MODEL_PATH, '--bits', String(j.bits), '--group', '32', '--base', j.base, '--steps', String(j.steps), '--seed', String(j.seed),
    '--patience', '0', '--candidates', '4', '--workers', '1', '--tuning', JSON.stringify(j.tuning ?? TUNING), '--sample', '0', '--json', '--out', out];
}

function takeDir(out: string): Map<string, Buffer> {
  const files = readDir(out);
  rmSync(out, { recursive: true, force: true });
  return files;
}

/** What `invarx run --out` writes for the same options (a process of its own). */
export function runExport(j: JobOptions): Map<string, Buffer> {
  const out = mkdtempSync(join(tmpdir(), 'ixr-run-'));
  const r = spawnSync(process.execPath, runArgs(j, out), { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`invarx run failed: ${r.stderr}`);
  return takeDir(out);
}

/** runExport without blocking the test's event loop (to run beside the processes under test). */
export function runExportAsync(j: JobOptions): Promise<Map<string, Buffer>> {
  const out = mkdtempSync(join(tmpdir(), 'ixr-run-'));
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, runArgs(j, out), { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (d) => (err += d));
    p.on('exit', (code) => (code === 0 ? resolve(takeDir(out)) : reject(new Error(`invarx run failed: ${err}`))));
  });
}

export interface WorkerLine {
  time: number;
  pid: number;
  job?: string;
  token?: string;
  step?: number;
  fromStep?: number | null;
  msg: string;
  level: number;
}

/** Every line of every worker log under these homes. */
export function workerLines(homes: string[]): WorkerLine[] {
  const out: WorkerLine[] = [];
  for (const home of homes) {
    const root = join(home, 'workers');
    if (!existsSync(root)) continue;
    for (const d of readdirSync(root)) {
      const f = join(root, d, 'worker.log');
      if (!existsSync(f)) continue;
      for (const l of readFileSync(f, 'utf8').split('\n')) if (l.trim()) out.push(JSON.parse(l));
    }
  }
  return out.sort((a, b) => a.time - b.time);
}

/**
 * The stints of each job: one per lock token (one worker's hold on the job), from its
 * 'run started/resumed' line to its last 'stepping' line. Returns the pairs of stints of
 * the same job whose times overlap (none, if no job ever ran in two workers at once).
 */
export function overlappingStints(lines: WorkerLine[]): string[] {
  const stints = new Map<string, { job: string; token: string; pid: number; from: number; to: number }>();
  for (const l of lines) {
    if (!l.job || !l.token || !(l.msg === 'stepping' || l.msg === 'run started' || l.msg === 'run resumed')) continue;
    const key = `${l.job} ${l.pid} ${l.token}`;
    const s = stints.get(key);
    if (s) s.to = Math.max(s.to, l.time);
    else stints.set(key, { job: l.job, token: l.token, pid: l.pid, from: l.time, to: l.time });
  }
  const bad: string[] = [];
  const byJob = new Map<string, { token: string; pid: number; from: number; to: number }[]>();
  for (const s of stints.values()) byJob.set(s.job, [...(byJob.get(s.job) ?? []), s]);
  for (const [job, list] of byJob) {
    list.sort((a, b) => a.from - b.from);
    for (let i = 1; i < list.length; i++) {
      const [a, b] = [list[i - 1], list[i]];
      if (b.from < a.to) bad.push(`job ${job}: pid ${a.pid} (${a.from}..${a.to}) and pid ${b.pid} (${b.from}..${b.to})`);
    }
  }
  return bad;
}

/** Whether the worker with this pid runs a job that has saved a checkpoint in this stint (by its log). */
export function runsCheckpointedJob(lines: WorkerLine[], pid: number): boolean {
  let state: 'idle' | 'running' | 'checkpointed' = 'idle';
  for (const l of lines) {
    if (l.pid !== pid || !l.job) continue;
    if (l.msg === 'run started' || l.msg === 'run resumed') state = 'running';
    else if (l.msg === 'checkpoint saved' && state === 'running') state = 'checkpointed';
    else if (l.msg.startsWith('run ended')) state = 'idle';
  }
  return state === 'checkpointed';
}
