/**
 * Helpers for tests that run a real `invarx daemon` process on a temporary home and talk
 * to it over its socket (raw frames) or through the CLI.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FrameDecoder, MAX_REPLY_FRAME, encodeFrame, packr } from '../../daemon/protocol';
import type { JobView } from '../../daemon/scheduler';
import type { RunConfig } from '../../search/contract';
import { CLI, ensureBuilt, type CliResult } from '../cli/cli';
import { MODEL_PATH, ROOT, readDir, sameFiles } from '../helpers';

export { CLI, ensureBuilt, MODEL_PATH, ROOT, readDir, sameFiles };

/** A small, quick search (as in test/search): few short sequences, 4-step stints. */
export const TUNING = { calibSeqs: 4, validSeqs: 2, evalSeqs: 4, seqTokens: 64, blockSteps: 4 };

export function jobConfig(over: Partial<RunConfig> = {}): Partial<RunConfig> {
  return { model: MODEL_PATH, bits: 3, group: 32, steps: 40, patience: 0, ...over };
}

/** Short path: Unix socket paths are limited to ~107 bytes. */
export function tmpHome(): string {
  return mkdtempSync(join(tmpdir(), 'ixd-'));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000, everyMs = 20): Promise<T> {
  const end = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${lastErr ? ` (last error: ${String(lastErr)})` : ''}`);
    await sleep(everyMs);
  }
}

/** The daemon's bundle: INVARX_TEST_DAEMON_CLI runs these tests against another build (e.g. an older one). */
export const DAEMON_CLI = process.env.INVARX_TEST_DAEMON_CLI ?? CLI;

type Exit = { code: number | null; signal: NodeJS.Signals | null };

/** A CLI process a test starts (`invarx daemon`, `invarx worker`), with its stderr kept. */
export class CliProc {
  stderr = '';
  readonly exited: Promise<Exit>;

  protected constructor(
    readonly home: string,
    readonly proc: ChildProcess,
  ) {
    proc.stderr!.on('data', (d) => (this.stderr += d));
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Resolves once `ready` shows on stderr; throws with the stderr if the process exits or 20 s pass first. */
  protected async ready(ready: string, what: string): Promise<void> {
    let exit: { code: number | null } | undefined;
    void this.exited.then((e) => (exit = e));
    const end = Date.now() + 20_000;
    while (!this.stderr.includes(ready)) {
      if (exit) throw new Error(`${what} exited with ${exit.code}: ${this.stderr}`);
      if (Date.now() > end) throw new Error(`${what} did not start: ${this.stderr}`);
      await sleep(10);
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<Exit> {
    this.proc.kill(signal);
    return this.exited;
  }

  alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }
}

export class DaemonProc extends CliProc {
  get socket(): string {
    return join(this.home, 'daemon.sock');
  }

  /** Starts `invarx daemon --home <home>` and resolves once it listens. */
  static async start(home: string, args: string[] = [], opts: { nodeArgs?: string[]; env?: Record<string, string> } = {}): Promise<DaemonProc> {
    const proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), DAEMON_CLI, 'daemon', '--home', home, ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...opts.env },
    });
    const d = new DaemonProc(home, proc);
    await d.ready('listening on', 'daemon');
    return d;
  }
}

/** A raw protocol connection: send arbitrary bytes, read replies as they come. */
export class Conn {
  private readonly decoder = new FrameDecoder(MAX_REPLY_FRAME);
  readonly replies: Record<string, unknown>[] = [];
  /** Everything received, as latin1 text. */
  raw = '';
  closed = false;
  private waiters: (() => void)[] = [];
  private nextId = 1;

  private constructor(readonly sock: Socket) {
    sock.on('data', (c: Buffer) => {
      this.raw += c.toString('latin1');
      try {
        for (const f of this.decoder.push(c)) this.replies.push(packr.unpack(f));
      } catch {
        // Not frames (a JSON-mode connection): read `raw` instead.
      }
      this.wake();
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static open(path: string): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(new Conn(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  /** Waits until `n` replies have arrived or the connection closed. */
  async waitReplies(n: number, timeoutMs = 10_000): Promise<Record<string, unknown>[]> {
    const end = Date.now() + timeoutMs;
    while (this.replies.length < n && !this.closed) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${n} replies (have ${this.replies.length})`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return this.replies.slice(0, n);
  }

  write(bytes: Uint8Array | string): void {
    this.sock.write(bytes);
  }

  /** One request and its final reply. */
  async request(verb: string, args: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    this.write(encodeFrame({ id, verb, args }));
    const end = Date.now() + 15_000;
    for (;;) {
      const r = this.replies.find((x) => x.id === id && !('event' in x));
      if (r) return r;
      if (this.closed) throw new Error('connection closed');
      if (Date.now() > end) throw new Error(`no reply to ${verb}`);
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 50);
      });
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

/** One request on a fresh connection; returns the result, throws on an error reply. */
export async function call(home: string, verb: string, args: Record<string, unknown> = {}): Promise<unknown> {
  const c = await Conn.open(join(home, 'daemon.sock'));
  try {
    const r = await c.request(verb, args);
    if (!r.ok) throw Object.assign(new Error(`${verb}: ${JSON.stringify(r.error)}`), { reply: r });
    return r.result;
  } finally {
    c.close();
  }
}

export const status = (home: string, job: string) => call(home, 'status', { job }) as Promise<JobView>;

export async function submit(home: string, config: Partial<RunConfig>, tuning: Record<string, unknown> | undefined = TUNING): Promise<string> {
  const v = (await call(home, 'submit', { config, ...(tuning ? { tuning } : {}) })) as JobView;
  return v.id;
}

export function waitState(home: string, job: string, states: string[], timeoutMs = 60_000): Promise<JobView> {
  return waitFor(`job ${job} to be ${states.join('/')}`, async () => {
    const v = await status(home, job);
    return states.includes(v.state) ? v : undefined;
  }, timeoutMs);
}

/** `invarx ARGS --home HOME` (synchronous: the daemon is another process). */
export function cli(home: string, ...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args, '--home', home], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function jobLog(home: string, job: string): Record<string, unknown>[] {
  return readFileSync(join(home, 'jobs', job, 'job.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}
