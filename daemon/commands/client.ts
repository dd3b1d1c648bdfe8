/**
 * The client verbs of the CLI: `invarx submit|list|status|watch|pause|resume|cancel|
 * export|report|shutdown`, each one request to the daemon of `--home` (resolved like the
 * daemon's own). Paths given on the command line are resolved here, against the client's
 * working directory, before they reach the daemon.
 */
import { writeFileSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { fail } from '../../core/errors';
import { validateRunConfig } from '../../search/config';
import { callDaemon } from '../client';
import { resolveHome, socketPath } from '../home';
import type { Verb } from '../protocol';
import { renderHtml, renderSvg, type ReportInput } from '../report';
import type { JobView } from '../scheduler';
import { addRunOptions, runConfigFromOptions, tuningFromOptions } from './runOptions';

const HOME_HELP = 'daemon home (default: $INVARX_HOME, else $XDG_RUNTIME_DIR/invarx, else ~/.invarx)';

const call = (o: { home?: string }, verb: Verb, args: Record<string, unknown> = {}, onEvent?: (e: unknown) => void) =>
  callDaemon(socketPath(resolveHome(o.home)), verb, args, onEvent);

const num = (x: number | null, d = 4) => (x === null || !Number.isFinite(x) ? '-' : x.toFixed(d));

function duration(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return '-';
  const t = Math.round(s);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

function statusText(v: JobView): string {
  const pct = v.totalSteps > 0 ? ` (${Math.floor((100 * v.step) / v.totalSteps)}%)` : '';
  const lines = [`job ${v.id}  ${v.state}${v.queuePosition ? ` (#${v.queuePosition} in queue)` : ''}  step ${v.step}/${v.totalSteps}${pct}`];
  lines.push(`  model       ${v.model}  W${v.bits} g${v.group} ${v.base}, seed ${v.seed}`);
  if (v.phase) lines.push(`  phase       ${v.phase}`);
  lines.push(`  loss        ${num(v.bestLoss)} (mean block loss / start)   validation KL ${num(v.validationLoss)}`);
  lines.push(`  accepted    ${v.acceptRate === null ? '-' : `${(100 * v.acceptRate).toFixed(1)}%`}   candidates/s ${num(v.candidatesPerSec, 1)}   ETA ${duration(v.etaSeconds)}`);
  if (v.stopReason) lines.push(`  stopped by  ${v.stopReason}`);
  if (v.lastCheckpoint) lines.push(`  checkpoint  step ${v.lastCheckpoint.step} at ${v.lastCheckpoint.savedAt}`);
  if (v.checkpointError) lines.push(`  checkpoint error: ${v.checkpointError.message}`);
  for (const w of v.warnings) lines.push(`  warning: ${w}`);
  if (v.error) lines.push(`  error: ${v.error.message}`);
  return lines.join('\n') + '\n';
}

function homeOption(cmd: Command): Command {
  return cmd.option('--home <dir>', HOME_HELP);
}

/** `pause`, `resume`, `cancel`: one job, print its new state. */
function simple(program: Command, verb: 'pause' | 'resume' | 'cancel', what: string): void {
  homeOption(program.command(`${verb} <job>`).description(what)).action(async (job: string, o: { home?: string }) => {
    const v = (await call(o, verb, { job })) as JobView;
    process.stdout.write(`job ${v.id} ${v.state}\n`);
  });
}

export function register(program: Command): void {
  homeOption(addRunOptions(program.command('submit').description('queue a search job on the daemon (the options of `invarx run`); prints its id')))
    .option('--json', 'print {"id": …}')
    .action(async (o: Record<string, string>) => {
      const config = runConfigFromOptions(o);
      for (const k of ['model', 'tokenizer', 'calibTokens', 'evalTokens', 'calibText', 'evalText'] as const) if (config[k]) config[k] = resolve(config[k]!);
      for (const k of Object.keys(config) as (keyof typeof config)[]) if (config[k] === undefined) delete config[k];
      validateRunConfig(config); // an impossible setting is reported now, not as a failed job
      const tuning = tuningFromOptions(o);
      const v = (await call(o, 'submit', { config, ...(tuning ? { tuning } : {}) })) as JobView;
      process.stdout.write(o.json ? JSON.stringify({ id: v.id }) + '\n' : `${v.id}\n`);
    });

  homeOption(program.command('list').description('list the daemon\'s jobs'))
    .option('--json', 'print a JSON array of job statuses')
    .action(async (o: { home?: string; json?: boolean }) => {
      const jobs = (await call(o, 'list')) as JobView[];
      if (o.json) return void process.stdout.write(JSON.stringify(jobs) + '\n');
      if (jobs.length === 0) return void process.stdout.write('no jobs\n');
      const rows = [['ID', 'STATE', 'STEP', 'LOSS', 'VALID', 'MODEL']];
      for (const v of jobs) rows.push([v.id, v.state, `${v.step}/${v.totalSteps}`, num(v.bestLoss), num(v.validationLoss), `${v.model} W${v.bits} g${v.group}`]);
      const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
      process.stdout.write(rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n');
    });

  homeOption(program.command('status <job>').description('state, step, losses, acceptance rate, speed and ETA of a job'))
    .option('--json', 'print the status as JSON')
    .action(async (job: string, o: { home?: string; json?: boolean }) => {
      const v = (await call(o, 'status', { job })) as JobView;
      process.stdout.write(o.json ? JSON.stringify(v) + '\n' : statusText(v));
    });

  homeOption(program.command('watch <job>').description('follow a job with a progress bar until it ends')).action(async (job: string, o: { home?: string }) => {
    const bar = new SingleBar({
      format: '{state} |{bar}| {value}/{total} steps | loss {loss} | valid KL {valid} | accept {accept} | {cps} cand/s | ETA {eta}',
      stream: process.stderr,
      hideCursor: true,
    });
    let started = false;
    const show = (v: JobView) => {
      const f = {
        state: v.phase ? `${v.state} (${v.phase})` : v.state,
        loss: num(v.bestLoss),
        valid: num(v.validationLoss),
        accept: v.acceptRate === null ? '-' : `${Math.round(100 * v.acceptRate)}%`,
        cps: num(v.candidatesPerSec, 1),
        eta: duration(v.etaSeconds),
      };
      if (!started) bar.start(v.totalSteps, v.step, f);
      else bar.update(v.step, f);
      started = true;
    };
    let last: JobView;
    try {
      last = (await call(o, 'watch', { job }, (e) => show(e as JobView))) as JobView;
      if (last) show(last);
    } finally {
      bar.stop();
    }
    if (!last) fail('daemon-gone', 'the daemon stopped before the job ended');
    if (last.state === 'failed') fail('job-failed', `job ${last.id} failed: ${last.error?.message ?? 'unknown error'}`);
    if (last.state === 'cancelled') fail('job-cancelled', `job ${last.id} was cancelled`);
    process.stdout.write(`job ${last.id} done: ${last.step} steps, loss ${num(last.bestLoss)}, validation KL ${num(last.validationLoss)}${last.stopReason ? ` (stopped by ${last.stopReason})` : ''}\n`);
  });

  simple(program, 'pause', 'pause a job (it checkpoints and frees its slot)');
  simple(program, 'resume', 'resume a paused job');
  simple(program, 'cancel', 'cancel a job');

  homeOption(program.command('export <job>').description('write a finished job\'s export (transforms + quantized model) to a directory'))
    .requiredOption('--out <dir>', 'directory to write: new or empty (created if needed)')
    .option('--force', "write into a non-empty directory, replacing the export's files there")
    .action(async (job: string, o: { home?: string; out: string; force?: boolean }) => {
      // The files get the modes `invarx run --out` would give them under this umask.
      const umask = process.umask();
      const r = (await call(o, 'export', { job, out: resolve(o.out), force: !!o.force, umask })) as { out: string; files: string[] };
      process.stdout.write(`wrote ${r.files.join(', ')} to ${r.out}\n`);
    });

  homeOption(program.command('report <job>').description('write an HTML (or, for a .svg name, SVG) report of a finished job'))
    .requiredOption('--out <file>', 'report file: .svg for an SVG image, anything else for HTML')
    .action(async (job: string, o: { home?: string; out: string }) => {
      const r = (await call(o, 'report', { job })) as ReportInput;
      const out = resolve(o.out);
      writeFileSync(out, extname(out).toLowerCase() === '.svg' ? renderSvg(r) : renderHtml(r));
      process.stdout.write(`wrote ${out}\n`);
    });

  homeOption(program.command('shutdown').description('checkpoint running jobs and stop the daemon')).action(async (o: { home?: string }) => {
    const r = (await call(o, 'shutdown')) as { running: number };
    process.stdout.write(`daemon shutting down (${r.running} running job${r.running === 1 ? '' : 's'} will checkpoint and resume on the next start)\n`);
  });
}
