/**
 * Queue-mode throughput (`node dist/bench.js sweep`): six short searches on the shipped
 * model (bits 2/3/4 × two seeds, `--workers 1` each) run one after another in one process,
 * then the same six as a sweep on a queue daemon with two `invarx worker` processes on a
 * redis-server of its own, in two alternated rounds. Prints each round's wall times and
 * ratio (queue / sequential), then the ratio of the totals; with two cores the target is
 * ≤ 0.6. Needs redis-server on the PATH.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { callDaemon } from '../daemon/client';
import type { JobView } from '../daemon/view';
import { DEFAULT_CONFIG, recommendedTuning } from '../search/config';
import { createSearchJob } from '../search/run';
import { emit, note, type BenchModule } from './emit';

const MODEL = join(process.cwd(), 'models', 'stories260K.bin');
const CLI = join(process.cwd(), 'dist', 'invarx.js');
const BITS = [2, 3, 4];
const SEEDS = [0, 1];
const STEPS = 120;
/** Rounds of (sequential, queue), alternated: on a shared machine one pair's ratio moves with the neighbours' load. */
const ROUNDS = 2;
/** Short jobs: a smaller calibration set than the default, so six fit in a few minutes. */
const TUNING = { calibSeqs: 8, validSeqs: 2, evalSeqs: 8, seqTokens: 128 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Starts a process and resolves once `ready` appears on its stdout or stderr. */
async function start(cmd: string, args: string[], ready: RegExp): Promise<ChildProcess> {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  // Generous: on a loaded machine a worker takes many seconds to load.
  const end = Date.now() + 120_000;
  while (!ready.test(out)) {
    if (p.exitCode !== null || Date.now() > end) throw new Error(`${cmd} did not start: ${out}`);
    await sleep(20);
  }
  return p;
}

/** CPU seconds (user + system) a live process has used so far, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in USER_HZ (100 on Linux)
  } catch {
    return NaN;
  }
}

interface Timing {
  wallS: number;
  cpuS: number;
}

async function sequential(): Promise<Timing> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  for (const bits of BITS) {
    for (const seed of SEEDS) {
      const j0 = performance.now();
      const config = { ...DEFAULT_CONFIG, model: MODEL, bits, group: 32, steps: STEPS, seed, patience: 0, workers: 1 };
      // the tuning the daemon gives the queue's jobs
      const job = await createSearchJob(config, { tuning: recommendedTuning(config, TUNING) });
      while (!job.done) await job.step();
      await job.report();
      await job.close();
      note(`sweep: W${bits} seed ${seed} in this process: ${((performance.now() - j0) / 1000).toFixed(1)} s`);
    }
  }
  const c = process.cpuUsage(c0);
  return { wallS: (performance.now() - t0) / 1000, cpuS: (c.user + c.system) / 1e6 };
}

async function queued(): Promise<Timing> {
  const dir = mkdtempSync(join(tmpdir(), 'ixb-'));
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}/0`;
  const procs: ChildProcess[] = [];
  try {
    procs.push(await start('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], /Ready to accept/));
    procs.push(await start(process.execPath, [CLI, 'daemon', '--home', join(dir, 'd'), '--queue', url], /listening on/));
    const workers: ChildProcess[] = [];
    for (const w of ['w1', 'w2']) workers.push(await start(process.execPath, [CLI, 'worker', '--home', join(dir, w), '--queue', url], /taking jobs/));
    procs.push(...workers);
    const cpu = () => workers.reduce((n, w) => n + cpuSeconds(w.pid!), 0);
    const c0 = cpu();
    const wall0 = Date.now();
    const s = spawnSync(process.execPath, [CLI, 'sweep', '--home', join(dir, 'd'), '--model', MODEL, '--bits', BITS.join(','), '--group', '32', '--seed', SEEDS.join(','),
      '--steps', String(STEPS), '--patience', '0', '--workers', '1', '--tuning', JSON.stringify(TUNING)], { encoding: 'utf8' });
    if (s.status !== 0) throw new Error(`invarx sweep failed: ${s.stderr}`);
    for (;;) {
      const jobs = (await callDaemon(join(dir, 'd', 'daemon.sock'), 'list')) as JobView[];
      const failed = jobs.find((j) => j.state === 'failed');
      if (failed) throw new Error(`job ${failed.id} failed: ${failed.error?.message}`);
      if (jobs.length === BITS.length * SEEDS.length && jobs.every((j) => j.state === 'done')) {
        // When each job ran, relative to the submit: gaps show where the workers idled.
        const at = (s: string | null) => (s ? ((Date.parse(s) - wall0) / 1000).toFixed(1) : '?');
        for (const j of jobs) note(`sweep: job ${j.id} ${at(j.startedAt)}–${at(j.finishedAt)} s`);
        // The sweep's end is its last job's, as the workers recorded it: this polling's own cadence adds nothing.
        const lastS = Math.max(...jobs.map((j) => (Date.parse(j.finishedAt!) - wall0) / 1000));
        return { wallS: lastS, cpuS: cpu() - c0 };
      }
      // Seldom: each poll reads every job from Redis, work that competes with the workers for the two cores.
      await sleep(1000);
    }
  } finally {
    for (const p of procs.reverse()) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

export const sweepBench: BenchModule = {
  name: 'sweep',
  byNameOnly: true,
  async run() {
    if (spawnSync('redis-server', ['--version']).status !== 0) {
      note('sweep: redis-server not found (apt-get install redis-server): skipped');
      return;
    }
    const total = { seq: 0, queue: 0 };
    for (let r = 1; r <= ROUNDS; r++) {
      note(`sweep round ${r}: ${BITS.length * SEEDS.length} jobs of ${STEPS} steps, one after another in this process…`);
      const seq = await sequential();
      note(`sweep round ${r}: the same jobs over a queue daemon and two worker processes…`);
      const queue = await queued();
      total.seq += seq.wallS;
      total.queue += queue.wallS;
      // CPU seconds beside the wall times: the wall ratio moves with others' load, CPU seconds less so.
      emit({
        bench: 'sweep', round: r, jobs: BITS.length * SEEDS.length, steps: STEPS,
        sequential_s: +seq.wallS.toFixed(1), queue_2workers_s: +queue.wallS.toFixed(1), ratio: +(queue.wallS / seq.wallS).toFixed(2),
        sequential_cpu_s: +seq.cpuS.toFixed(1), queue_workers_cpu_s: +queue.cpuS.toFixed(1), load_avg_1m: +loadavg()[0].toFixed(2),
      });
    }
    emit({ bench: 'sweep', rounds: ROUNDS, sequential_s: +total.seq.toFixed(1), queue_2workers_s: +total.queue.toFixed(1), ratio: +(total.queue / total.seq).toFixed(2) });
  },
};
