/**
 * `invarx daemon`: one long-lived process per user (DESIGN §7). It owns its home
 * (mode 0700), listens on <home>/daemon.sock (mode 0600, never TCP), keeps the job store,
 * runs jobs through the scheduler, and on SIGTERM/SIGINT (or the `shutdown` verb)
 * checkpoints running jobs and exits. On start it resumes every job that was running.
 */
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { fail } from '../core/errors';
import { cliScript } from './cliScript';
import { isJobId, socketPath } from './home';
import { openLogFile } from './logfile';
import { ProtocolError, describeValue, type Request } from './protocol';
import { QueueJobs, type QueueUrl } from './queue';
import { Scheduler, type JobView } from './scheduler';
import { Server, type CallContext } from './server';
import { absolutePath, exportOptions, parseSubmitArgs } from './submit';
import { recommendedTuning } from '../search/config';
import { JobStore, TERMINAL } from './store';

export interface DaemonOptions {
  home: string;
  concurrency: number;
  checkpointSteps: number;
  checkpointSeconds: number;
  stopTimeoutMs: number;
  /** Client connections idle this long are closed (0: never). */
  idleTimeoutMs?: number;
  /** Queue mode: jobs go to this Redis (BullMQ) and `invarx worker` processes run them. */
  queue?: QueueUrl;
}

/** What the verbs need of the jobs: the local scheduler, or the queue (daemon/queue/queueJobs.ts). */
type Jobs = Pick<Scheduler, 'load' | 'start' | 'shutdown' | 'runningCount' | 'view'> & {
  on(topic: string, f: (v: JobView) => void): unknown;
  off(topic: string, f: (v: JobView) => void): unknown;
} & {
  [K in 'submit' | 'list' | 'pause' | 'resume' | 'cancel' | 'exportTo' | 'report']: (...a: Parameters<Scheduler[K]>) => ReturnType<Scheduler[K]> | Promise<Awaited<ReturnType<Scheduler[K]>>>;
};

/** Creates the home if needed and makes sure only this user can enter it. */
export function prepareHome(home: string): void {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const st = lstatSync(home);
  if (!st.isDirectory()) fail('bad-home', `${home} is not a directory`);
  if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
    fail('bad-home', `${home} belongs to another user (uid ${st.uid}); choose a home of your own with --home`);
  }
  if ((st.mode & 0o777) !== 0o700) chmodSync(home, 0o700);
}

/** Resolves when it is known whether a daemon answers on `path`. */
function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function jobArg(args: Record<string, unknown>): string {
  const id = args.job;
  if (!isJobId(id)) {
    throw new ProtocolError('bad-job-id', `job id must be 8 lowercase hex digits, got ${describeValue(id)}`);
  }
  return id;
}

export async function runDaemon(opts: DaemonOptions): Promise<void> {
  const { home } = opts;
  // Everything the daemon creates (logs, job files, checkpoints) is for this user only.
  process.umask(0o077);
  prepareHome(home);
  const sock = socketPath(home);
  if (lstatSync(sock, { throwIfNoEntry: false })) {
    if (await isLive(sock)) fail('daemon-running', `another invarx daemon is already running on ${sock}`);
    if (!lstatSync(sock).isSocket()) fail('bad-home', `${sock} exists and is not a socket`);
    unlinkSync(sock); // stale: its daemon died without cleaning up
  }

  const log: Logger = openLogFile(join(home, 'daemon.log'), { base: { pid: process.pid }, who: 'invarx daemon' });
  try {
    chmodSync(join(home, 'daemon.log'), 0o600); // one an older daemon created with another umask
  } catch {
    /* logging to stderr: there is no file */
  }
  const store = new JobStore(home);
  const scheduler: Jobs = opts.queue
    ? await QueueJobs.open({ url: opts.queue, home, log, script: cliScript() })
    : new Scheduler(store, {
        concurrency: opts.concurrency,
        checkpointSteps: opts.checkpointSteps,
        checkpointSeconds: opts.checkpointSeconds,
        stopTimeoutMs: opts.stopTimeoutMs,
        workerScript: cliScript(),
        log,
      });
  scheduler.load();

  let stopping: Promise<void> | undefined;
  const shutdown = (why: string): Promise<void> =>
    (stopping ??= (async () => {
      log.info({ why, running: scheduler.runningCount() }, 'shutting down');
      const closing = server.close();
      await scheduler.shutdown();
      await closing;
      try {
        unlinkSync(sock);
      } catch {
        /* already gone */
      }
      log.info('stopped');
      process.exit(0);
    })());

  const dispatch = (req: Request, ctx: CallContext): unknown => {
    const a = req.args;
    switch (req.verb) {
      case 'submit': {
        const { config, tuning } = parseSubmitArgs(a);
        return scheduler.submit(config, recommendedTuning(config, tuning));
      }
      case 'list':
        return scheduler.list();
      case 'status':
        return scheduler.view(jobArg(a));
      case 'watch':
        return watch(scheduler, jobArg(a), ctx);
      case 'pause':
        return scheduler.pause(jobArg(a));
      case 'resume':
        return scheduler.resume(jobArg(a));
      case 'cancel':
        return scheduler.cancel(jobArg(a));
      case 'export':
        return scheduler.exportTo(jobArg(a), absolutePath('out', a.out), exportOptions(a));
      case 'report':
        return scheduler.report(jobArg(a));
      case 'shutdown': {
        const running = scheduler.runningCount();
        // After this reply is on its way.
        setImmediate(() => void shutdown('shutdown request'));
        return { stopping: true, running };
      }
    }
  };

  const server = new Server(dispatch, log, opts.idleTimeoutMs ?? 60_000);
  // The socket is created with the umask in force: make it owner-only from its first instant.
  const umask = process.umask(0o177);
  try {
    await server.listen(sock);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') fail('daemon-running', `another invarx daemon started on ${sock} at the same moment`);
    throw e;
  } finally {
    process.umask(umask);
  }
  chmodSync(sock, 0o600);

  const onSignal = (sig: string) => {
    if (stopping) {
      // A second Ctrl-C: do not wait for jobs to reach a step boundary (the last checkpoints stand).
      log.warn({ sig }, 'second signal: exiting without waiting for jobs');
      process.exit(1);
    }
    process.stderr.write(`invarx daemon: ${sig}: checkpointing ${scheduler.runningCount()} running job(s) and exiting (again to exit at once)\n`);
    void shutdown(sig);
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('uncaughtException', (e) => {
    // A bug: log it where the user will look, then die (jobs resume from checkpoints on restart).
    log.fatal({ err: e }, 'uncaught exception');
    process.stderr.write(`invarx daemon: internal error: ${e.stack ?? e}\n`);
    process.exit(70);
  });

  log.info({ home, socket: sock, ...(opts.queue ? { queue: opts.queue.display } : { concurrency: opts.concurrency }) }, 'listening');
  process.stderr.write(`invarx daemon: listening on ${sock}\n`);
  scheduler.start();
}

/** Streams the job's status on every change; the final reply is its terminal status. */
function watch(scheduler: Jobs, id: string, ctx: CallContext): Promise<unknown> {
  const first = scheduler.view(id);
  if (TERMINAL.has(first.state)) return Promise.resolve(first);
  return new Promise((resolve) => {
    const topic = `job:${id}`;
    const onUpdate = (v: JobView) => {
      if (TERMINAL.has(v.state)) {
        done();
        resolve(v);
      } else if (!ctx.backlogged()) {
        ctx.event(v);
      }
    };
    const done = () => {
      scheduler.off(topic, onUpdate);
      ctx.signal.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      done();
      resolve(null);
    };
    scheduler.on(topic, onUpdate);
    ctx.signal.addEventListener('abort', onAbort);
    ctx.event(first);
  });
}
