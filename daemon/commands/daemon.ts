/**
 * `invarx daemon`, and the hidden `__job-runner` that the daemon's job threads run (each
 * job's worker thread executes this same bundle with argv `__job-runner`; see
 * daemon/runner.ts for why jobs get threads).
 */
import type { Command } from 'commander';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fail } from '../../core/errors';
import { parseQueueUrl } from '../queue/redisUrl';
import { resolveHome } from '../home';
import type { RunnerInit, ToRunner } from '../runner';
import { parseInteger, parseNumber } from './modelArgs';

export function register(program: Command): void {
  program
    .command('daemon')
    .description('run the invarx daemon: a job queue with crash-safe checkpoints behind a local Unix socket')
    .option('--home <dir>', 'daemon home: socket, logs, jobs (default: $INVARX_HOME, else $XDG_RUNTIME_DIR/invarx, else ~/.invarx)')
    .option('--concurrency <n>', 'jobs running at once', '1')
    .option('--checkpoint-steps <n>', 'checkpoint a running job every this many steps (0 = not by steps)', '50')
    .option('--checkpoint-seconds <s>', 'and at least every this many seconds (0 = not by time)', '60')
    .option('--stop-timeout <s>', 'on pause or shutdown, seconds a job may take to finish its step and checkpoint', '30')
    .option('--idle-timeout <s>', 'close a client connection idle (or not reading its replies) this long (0 = never)', '60')
    .option('--queue <url>', 'queue mode: put jobs on BullMQ at redis://[:password@]host[:port][/db] (or rediss://) for `invarx worker` processes to run')
    .action(async (o: Record<string, string>) => {
      const stopTimeout = parseNumber('--stop-timeout', o.stopTimeout);
      const checkpointSeconds = parseNumber('--checkpoint-seconds', o.checkpointSeconds);
      if (stopTimeout < 0) fail('bad-config', `--stop-timeout must be ≥ 0, got ${o.stopTimeout}`);
      if (checkpointSeconds < 0) fail('bad-config', `--checkpoint-seconds must be ≥ 0, got ${o.checkpointSeconds}`);
      const idleTimeout = parseNumber('--idle-timeout', o.idleTimeout);
      if (idleTimeout < 0) fail('bad-config', `--idle-timeout must be ≥ 0, got ${o.idleTimeout}`);
      // (loaded here, not at startup: the search's kernels and the queue's client are for the commands that use them)
      const { runDaemon } = await import('../daemon');
      await runDaemon({
        home: resolveHome(o.home),
        concurrency: parseInteger('--concurrency', o.concurrency, 1, 256),
        checkpointSteps: parseInteger('--checkpoint-steps', o.checkpointSteps, 0),
        checkpointSeconds,
        stopTimeoutMs: stopTimeout * 1000,
        idleTimeoutMs: idleTimeout * 1000,
        ...(o.queue ? { queue: parseQueueUrl(o.queue) } : {}),
      });
    });

  program
    .command('__job-runner', { hidden: true })
    .description('internal: runs one job inside a daemon worker thread')
    .action(async () => {
      if (isMainThread || !parentPort) fail('bad-usage', '__job-runner is internal to `invarx daemon`');
      const port = parentPort;
      const { runJob } = await import('../runner');
      await runJob(workerData as RunnerInit, {
        post: (m) => port.postMessage(m),
        onStop: (cb) => port.on('message', (m: ToRunner) => m?.type === 'stop' && cb(m.reason)),
      });
      // Let the thread end once its last message is out (an unref'd port keeps nothing alive).
      port.removeAllListeners('message');
      port.unref();
    });
}
