/**
 * Exact resume at a model's real size (`node dist/bench.js resume`): the same step-bounded
 * job run by `invarx run --out` without interruption, and by a daemon that is SIGKILLed
 * twice (once past a third of the steps, once past two thirds) and restarted; prints both
 * wall times, the steps killed at and resumed from, the peak RSS of the run and of each
 * daemon, and whether every file of the two exports is byte-identical.
 *
 * Steps, not a time budget: a budgeted job stops by the clock, so two runs of it need not
 * end at the same step. The model is INVARX_BENCH_MODEL (default the shipped stories260K);
 * INVARX_BENCH_ARGS adds run options (e.g. `--memory-budget 1G --tuning {...}`, split on
 * spaces), INVARX_BENCH_STEPS sets the steps (default 30).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { emit, note, type BenchModule } from './emit';
import { vmHwmMB } from './proc';

const CLI = join(process.cwd(), 'dist', 'invarx.js');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cli(args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`invarx ${args[0]} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

async function startDaemon(home: string): Promise<ChildProcess> {
  const p = spawn(process.execPath, [CLI, 'daemon', '--home', home, '--checkpoint-steps', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (d) => (err += d));
  const end = Date.now() + 120_000;
  while (!err.includes('listening on')) {
    if (p.exitCode !== null || Date.now() > end) throw new Error(`daemon did not start: ${err}`);
    await sleep(50);
  }
  return p;
}

interface JobStatus {
  state: string;
  step: number;
  error?: { message: string } | null;
}

function jobStatus(home: string, id: string): JobStatus {
  return JSON.parse(cli(['status', id, '--home', home, '--json'])) as JobStatus;
}

/** Polls until the job is past `step` (or ended); returns its status. */
async function waitPast(home: string, id: string, step: number): Promise<JobStatus> {
  for (;;) {
    const s = jobStatus(home, id);
    if (s.state === 'failed') throw new Error(`job ${id} failed: ${s.error?.message}`);
    if (s.state === 'done' || s.step > step) return s;
    await sleep(500);
  }
}

/** Paths of the files below `dir`, relative to it, sorted. */
function filesBelow(dir: string): string[] {
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[])
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath ?? e.path, e.name)))
    .sort();
}

/** Whether two files hold the same bytes, read 64 MiB at a time (a 1B export's files pass 2 GiB, more than one read can take). */
function sameBytes(a: string, b: string): boolean {
  if (statSync(a).size !== statSync(b).size) return false;
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  try {
    const ba = Buffer.alloc(64 << 20);
    const bb = Buffer.alloc(64 << 20);
    for (;;) {
      const na = readSync(fa, ba, 0, ba.length, null);
      const nb = readSync(fb, bb, 0, bb.length, null);
      if (na !== nb || !ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
      if (na === 0) return true;
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

function sameFiles(a: string, b: string): { identical: boolean; files: string[]; differing: string[] } {
  const files = filesBelow(a);
  const other = filesBelow(b);
  const differing = files.filter((f) => !other.includes(f) || !sameBytes(join(a, f), join(b, f)));
  differing.push(...other.filter((f) => !files.includes(f)));
  return { identical: differing.length === 0, files, differing };
}

export const resumeBench: BenchModule = {
  name: 'resume',
  byNameOnly: true,
  async run() {
    const model = process.env.INVARX_BENCH_MODEL ?? join(process.cwd(), 'models', 'stories260K.bin');
    const steps = Number(process.env.INVARX_BENCH_STEPS ?? 30);
    const extra = (process.env.INVARX_BENCH_ARGS ?? '').split(' ').filter(Boolean);
    const opts = ['--model', model, '--bits', '4', '--group', '128', '--steps', String(steps), '--patience', '0', '--workers', '1', ...extra];
    const dir = mkdtempSync(join(tmpdir(), 'ixresume-'));
    const procs: ChildProcess[] = [];
    try {
      note(`resume: ${model}, ${steps} steps, uninterrupted \`invarx run --out\`…`);
      let t0 = performance.now();
      const ran = JSON.parse(cli(['run', ...opts, '--out', join(dir, 'reference'), '--json', '--sample', '0'])) as { peakRssMB: number };
      const referenceS = (performance.now() - t0) / 1000;

      note('resume: the same job on a daemon, SIGKILLed twice…');
      const home = join(dir, 'home');
      t0 = performance.now();
      let d = await startDaemon(home);
      procs.push(d);
      const id = (JSON.parse(cli(['submit', ...opts, '--home', home, '--json'])) as { id: string }).id;
      const killedAt: number[] = [];
      // each daemon's peak RSS, read just before it is killed (the job runs inside it)
      const daemonPeakMB: number[] = [];
      for (const past of [Math.floor(steps / 3), Math.floor((2 * steps) / 3)]) {
        const s = await waitPast(home, id, past);
        if (s.state === 'done') break;
        daemonPeakMB.push(Math.round(vmHwmMB(d.pid!)));
        d.kill('SIGKILL');
        killedAt.push(s.step);
        await new Promise((r) => d.once('exit', r));
        d = await startDaemon(home);
        procs.push(d);
      }
      const end = await waitPast(home, id, Infinity);
      const interruptedS = (performance.now() - t0) / 1000;
      cli(['export', id, '--home', home, '--out', join(dir, 'interrupted')]);
      daemonPeakMB.push(Math.round(vmHwmMB(d.pid!)));
      const cmp = sameFiles(join(dir, 'reference'), join(dir, 'interrupted'));
      // the step each restart resumed from (what a kill cost: the steps between it and the kill)
      const resumedFrom = readFileSync(join(home, 'jobs', id, 'job.log'), 'utf8').trim().split('\n')
        .map((l) => JSON.parse(l) as { msg?: string; step?: number })
        .filter((l) => l.msg === 'resumed from checkpoint').map((l) => l.step);
      emit({
        bench: 'resume', model, steps, reference_s: +referenceS.toFixed(1), interrupted_s: +interruptedS.toFixed(1),
        killed_at_steps: killedAt, resumed_from_steps: resumedFrom, run_peak_rss_mb: ran.peakRssMB, daemon_peak_rss_mb: daemonPeakMB, state: end.state, identical: cmp.identical, files: cmp.files, differing: cmp.differing,
      });
    } finally {
      for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
