/**
 * `invarx worker --queue URL`: runs queue jobs (daemon/queue/queueWorker.ts), and the hidden
 * `__queue-runner` that each queue job's thread executes (daemon/queue/jobThread.ts).
 */
import { mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isMainThread, parentPort } from 'node:worker_threads';
import type { Command } from 'commander';
import { fail } from '../../core/errors';
import { resolveHome } from '../home';
import { parseQueueUrl } from '../queue/redisUrl';
import { DEFAULT_QUEUE_SETTINGS } from '../queue/settings';
import { parseInteger, parseNumber } from './modelArgs';

function seconds(option: string, v: string): number {
  const s = parseNumber(option, v);
  if (!(s > 0)) fail('bad-config', `${option} must be > 0, got ${v}`);
  return Math.round(s * 1000);
}

export function register(program: Command): void {
  const d = DEFAULT_QUEUE_SETTINGS;
  program
    .command('worker')
    .description('run queue jobs from Redis (BullMQ), put there by `invarx daemon --queue`')
    .requiredOption('--queue <url>', 'redis://[:password@]host[:port][/db] (or rediss:// for TLS)')
    .option('--concurrency <n>', 'jobs run at once (one thread each)', '1')
    .option('--home <dir>', 'where this worker keeps its log and the jobs\' logs and scratch files (default: as the daemon\'s)')
    .option('--checkpoint-steps <n>', 'checkpoint a running job every this many steps (0 = not by steps)', '50')
    .option('--checkpoint-seconds <s>', 'and at least every this many seconds (0 = not by time)', '60')
    .option('--lock-seconds <s>', 'BullMQ lock duration: a dead worker\'s job is handed over after about this long', String(d.lockMs / 1000))
    .option('--stalled-seconds <s>', 'how often BullMQ checks for jobs whose worker died', String(d.stalledMs / 1000))
    .option('--max-stalled <n>', 'a job whose worker died more often than this fails', String(d.maxStalled))
    .option('--parallel-gc', 'let V8 collect each job\'s garbage on helper threads too (its default: a little faster alone, more CPU per job)')
    .action(async (o: Record<string, string> & { parallelGc?: boolean }) => {
      const url = parseQueueUrl(o.queue);
      const checkpointSeconds = parseNumber('--checkpoint-seconds', o.checkpointSeconds);
      if (checkpointSeconds < 0) fail('bad-config', `--checkpoint-seconds must be ≥ 0, got ${o.checkpointSeconds}`);
      const settings = {
        lockMs: seconds('--lock-seconds', o.lockSeconds),
        stalledMs: seconds('--stalled-seconds', o.stalledSeconds),
        maxStalled: parseInteger('--max-stalled', o.maxStalled, 0),
      };
      // (loaded here, not at startup: the queue's client and the search are for the commands that use them)
      const [{ QueueWorker, probeRedis }, { collectOnOwnThread }, { openLogFile }, { cliScript }] = await Promise.all([
        import('../queue'), import('../queue/leanGc'), import('../logfile'), import('../cliScript'),
      ]);
      await probeRedis(url);
      if (!o.parallelGc) collectOnOwnThread();
      process.umask(0o077);
      const dir = join(resolveHome(o.home), 'workers', `${hostname()}-${process.pid}`);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const log = openLogFile(join(dir, 'worker.log'), { base: { pid: process.pid }, who: 'invarx worker' });
      const worker = new QueueWorker({
        url,
        dir,
        concurrency: parseInteger('--concurrency', o.concurrency, 1, 256),
        settings,
        checkpointSteps: parseInteger('--checkpoint-steps', o.checkpointSteps, 0),
        checkpointSeconds,
        script: cliScript(),
        log,
      });
      let stopping = false;
      const onSignal = (sig: string) => {
        if (stopping) process.exit(1);
        stopping = true;
        process.stderr.write(`invarx worker: ${sig}: checkpointing running jobs and putting them back on the queue\n`);
        log.info({ sig }, 'stopping');
        void worker.close().then(() => process.exit(0));
      };
      process.on('SIGTERM', () => onSignal('SIGTERM'));
      process.on('SIGINT', () => onSignal('SIGINT'));
      log.info({ queue: url.display, settings }, 'worker started');
      process.stderr.write(`invarx worker: taking jobs from ${url.display} (log: ${join(dir, 'worker.log')})\n`);
    });

  program
    .command('__queue-runner', { hidden: true })
    .description('internal: runs queue jobs inside a worker thread')
    .action(async () => {
      if (isMainThread || !parentPort) fail('bad-usage', '__queue-runner is internal to `invarx worker`');
      const { serveQueueThread } = await import('../queue');
      serveQueueThread(parentPort);
    });
}
