/**
 * A real daemon process on a temporary home: permissions, one daemon per home, fuzzed,
 * malformed and oversized input (error replies, daemon keeps serving), jobs that fail
 * (missing model, truncated model, impossible config, bad tokens) while another runs, and
 * every client command of the CLI.
 */
import { chmodSync, closeSync, existsSync, lstatSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_FRAME, encodeFrame, packr } from '../../daemon/protocol';
import type { JobView } from '../../daemon/scheduler';
import { expectUserError } from '../cli/cli';
import { Conn, DaemonProc, MODEL_PATH, TUNING, call, cli, ensureBuilt, jobConfig, readDir, sameFiles, status, submit, tmpHome, waitFor, waitState } from './harness';
import { SEARCH_EXPORT_FILES } from '../helpers';
import { COOL_CALIB_TEMPERATURE, GPTQ_REFINE_SWEEPS, GPTQ_ASYM_SHARE } from '../../search/config';
import type { RunConfig } from '../../search/contract';

const ERROR_CODES = new Set(['bad-frame', 'bad-request', 'unknown-verb', 'bad-args', 'bad-job-id', 'no-such-job', 'frame-too-large', 'bad-state', 'not-done', 'busy']);

let home: string;
let daemon: DaemonProc;
/** A job that runs while the daemon is fuzzed and other jobs fail. */
let longJob: string;

beforeAll(async () => {
  ensureBuilt();
  home = tmpHome();
  chmodSync(home, 0o755); // too open: the daemon must tighten it
  daemon = await DaemonProc.start(home, ['--concurrency', '2', '--checkpoint-steps', '5']);
  longJob = await submit(home, jobConfig({ steps: 100_000 })); // cancelled once the failing jobs are checked
});

afterAll(async () => {
  if (daemon?.alive()) await daemon.kill('SIGKILL');
});

/** The daemon answers a plain request on a fresh connection. */
async function stillServing(): Promise<void> {
  const jobs = (await call(home, 'list')) as JobView[];
  expect(jobs.some((j) => j.id === longJob)).toBe(true);
  expect(daemon.alive()).toBe(true);
}

function frame(payload: Uint8Array): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(payload.length);
  return Buffer.concat([head, payload]);
}

describe('daemon process', () => {
  it('keeps its home 0700, its socket 0600 and its files owner-only; no TCP', () => {
    expect(statSync(home).mode & 0o777).toBe(0o700);
    const s = lstatSync(join(home, 'daemon.sock'));
    expect(s.isSocket()).toBe(true);
    expect(s.mode & 0o777).toBe(0o600);
    expect(statSync(join(home, 'daemon.log')).mode & 0o077).toBe(0);
    expect(statSync(join(home, 'jobs')).mode & 0o077).toBe(0);
    expect(statSync(join(home, 'jobs', longJob, 'config.json')).mode & 0o077).toBe(0);
    // Only the Unix socket: no listening TCP socket belongs to the daemon's process (Linux /proc).
    if (!existsSync(`/proc/${daemon.proc.pid}/fd`)) return;
    const fds = readdirSync(`/proc/${daemon.proc.pid}/fd`).map((f) => {
      try {
        return readlinkSync(`/proc/${daemon.proc.pid}/fd/${f}`);
      } catch {
        return '';
      }
    });
    const inodes = new Set(fds.filter((l) => l.startsWith('socket:[')).map((l) => l.slice(8, -1)));
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      if (!existsSync(table)) continue;
      const listening = readFileSync(table, 'utf8').trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/)).filter((c) => c[3] === '0A');
      for (const c of listening) expect(inodes.has(c[9]), `TCP listener inode ${c[9]}`).toBe(false);
    }
  });

  it('answers at once while a job computes (jobs run in threads of their own)', async () => {
    // The long job is opening and running its scale initialisation (~1.5 s of synchronous
    // compute in one step): round trips must stay short all the while.
    let worst = 0;
    let s: JobView;
    do {
      const t0 = performance.now();
      s = await status(home, longJob);
      worst = Math.max(worst, performance.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    } while (s.step < 1);
    expect(worst).toBeLessThan(400);
  });

  it('refuses to start a second daemon on a live socket; a client without a daemon says so in one line', async () => {
    const second = await DaemonProc.start(home).then(
      () => {
        throw new Error('second daemon started');
      },
      (e: Error) => e.message,
    );
    expect(second).toMatch(/exited with 1: invarx: another invarx daemon is already running on .*daemon\.sock\n$/);
    expect(daemon.alive()).toBe(true);
    expectUserError(cli(tmpHome(), 'list'), /^invarx: no invarx daemon is running \(nothing listening on .*daemon\.sock\)/);
    expectUserError(cli(tmpHome(), 'status', '0123abcd'), /no invarx daemon is running/);
  });

  it('answers malformed frames, wrong types and garbage with typed errors, and keeps serving', async () => {
    const c = await Conn.open(daemon.socket);
    const cases: [Buffer, RegExp][] = [
      [frame(Buffer.alloc(0)), /bad-frame/],
      [frame(Buffer.from([0xc1])), /bad-frame|bad-request/], // 0xc1 is reserved in MessagePack
      [frame(Buffer.from('hello, daemon')), /bad-frame|bad-request/],
      [frame(Buffer.concat([packr.pack({ id: 1, verb: 'list' }), Buffer.from([1])])), /bad-frame/], // trailing bytes
      [encodeFrame([1, 2, 3]), /bad-request/],
      [encodeFrame('list'), /bad-request/],
      [encodeFrame({ verb: 'list' }), /bad-request/],
      [encodeFrame({ id: { x: 1 }, verb: 'list' }), /bad-request/],
      [encodeFrame({ id: 7, verb: 42 }), /bad-request/],
      [encodeFrame({ id: 7, verb: 'rm -rf' }), /unknown-verb/],
      [encodeFrame({ id: 7, verb: 'status', args: 5 }), /bad-request/],
      [encodeFrame({ id: 7, verb: 'status', args: {} }), /bad-job-id/],
      [encodeFrame({ id: 7, verb: 'status', args: { job: '../x' } }), /bad-job-id/],
      [encodeFrame({ id: 7, verb: 'export', args: { job: '../../etc', out: '/tmp/x' } }), /bad-job-id/],
      [encodeFrame({ id: 7, verb: 'status', args: { job: 'ffffffff' } }), /no-such-job/],
      [encodeFrame({ id: 7, verb: 'export', args: { job: longJob, out: 'relative/dir' } }), /bad-args/],
      [encodeFrame({ id: 7, verb: 'submit', args: { config: { model: '../models/x.bin', bits: 3, group: 32 } } }), /bad-args/],
      [encodeFrame({ id: 7, verb: 'submit', args: { config: 'all of it' } }), /bad-args/],
      [encodeFrame({ id: 7, verb: 'resume', args: { job: longJob } }), /ok/], // idempotent on a running job
    ];
    for (const [bytes] of cases) c.write(bytes);
    const replies = await c.waitReplies(cases.length);
    replies.forEach((r, i) => {
      const text = r.ok ? 'ok' : `${(r.error as { code: string }).code}: ${(r.error as { message: string }).message}`;
      expect(text, `case ${i}`).toMatch(cases[i][1]);
      if (!r.ok) expect(ERROR_CODES.has((r.error as { code: string }).code), text).toBe(true);
    });
    // The same connection still works.
    expect((await c.request('list')).ok).toBe(true);
    c.close();
    await stillServing();
  });

  it('survives fuzzed frames and byte streams (fast-check)', async () => {
    const reqish = fc.record({ id: fc.oneof(fc.integer(), fc.string(), fc.anything()), verb: fc.oneof(fc.constantFrom('list', 'status', 'submit', 'watch', 'export', 'pause', 'cancel'), fc.string()), args: fc.anything() }, { requiredKeys: [] });
    // 1. Well-framed payloads: random bytes, random values, request-shaped values.
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.anything().map((v) => packr.pack(v)), reqish.map((v) => packr.pack(v))), { minLength: 1, maxLength: 6 }), async (payloads) => {
        const c = await Conn.open(daemon.socket);
        try {
          for (const p of payloads) c.write(frame(p));
          const replies = await c.waitReplies(payloads.length);
          expect(c.closed).toBe(false);
          for (const r of replies) {
            expect(typeof r.ok).toBe('boolean');
            if (!r.ok) expect(ERROR_CODES.has((r.error as { code: string }).code), JSON.stringify(r.error)).toBe(true);
          }
        } finally {
          c.close();
        }
      }),
      { numRuns: 60 },
    );
    // 2. Raw byte streams (any length prefix): replies are errors or nothing; never a crash.
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 400 }), async (bytes) => {
        const c = await Conn.open(daemon.socket);
        c.write(bytes);
        await new Promise((r) => setTimeout(r, 5));
        for (const r of c.replies) if (!r.ok) expect(ERROR_CODES.has((r.error as { code: string }).code)).toBe(true);
        c.close();
      }),
      { numRuns: 60 },
    );
    await stillServing();
  });

  it('answers an oversized frame or line with frame-too-large and closes only that connection', async () => {
    const other = await Conn.open(daemon.socket);
    expect((await other.request('list')).ok).toBe(true);
    for (const len of [MAX_FRAME + 1, 0xffffffff]) {
      const c = await Conn.open(daemon.socket);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(len >>> 0);
      c.write(head);
      const [r] = await c.waitReplies(1);
      expect(r.ok).toBe(false);
      expect((r.error as { code: string }).code).toBe('frame-too-large');
      await waitFor('the connection to close', () => c.closed, 5000);
    }
    // A frame at the limit is read (and is an error only because it is not a request).
    const big = await Conn.open(daemon.socket);
    big.write(frame(Buffer.alloc(MAX_FRAME, 0xc1)));
    const [r] = await big.waitReplies(1);
    expect((r.error as { code: string }).code).toBe('bad-frame');
    expect(big.closed).toBe(false);
    big.close();
    // JSON mode: same limit.
    const j = await Conn.open(daemon.socket);
    j.write('{' + 'x'.repeat(MAX_FRAME + 10));
    await waitFor('the JSON connection to close', () => j.closed, 5000);
    // The first connection was never disturbed.
    expect((await other.request('list')).ok).toBe(true);
    other.close();
    await stillServing();
  });

  it('speaks newline-delimited JSON to a connection that starts with {', async () => {
    const raw = await new Promise<Socket>((resolve) => {
      const s = connect(daemon.socket, () => resolve(s));
    });
    let text = '';
    raw.on('data', (d: Buffer) => (text += d.toString()));
    raw.write(`{"id":1,"verb":"status","args":{"job":"${longJob}"}}\n{not json}\n{"id":"x","verb":"nope"}\n`);
    await waitFor('three JSON replies', () => text.split('\n').length > 3, 5000);
    // Replies are matched by id (a quick error may overtake an earlier request's answer).
    const replies = text.trim().split('\n').map((l) => JSON.parse(l));
    const a = replies.find((r) => r.id === 1);
    const b = replies.find((r) => r.id === null);
    const c = replies.find((r) => r.id === 'x');
    expect(a).toMatchObject({ id: 1, ok: true, result: { id: longJob } });
    expect(b).toMatchObject({ id: null, ok: false, error: { code: 'bad-frame' } });
    expect(c).toMatchObject({ id: 'x', ok: false, error: { code: 'unknown-verb' } });
    raw.destroy();
  });

  it('fails jobs with a missing model, a truncated model, an impossible config or bad tokens, with one clear message each, while another job runs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ixm-'));
    const truncated = join(dir, 'truncated.bin');
    const fd = openSync(MODEL_PATH, 'r');
    const head = Buffer.alloc(5000);
    readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    writeFileSync(truncated, head);
    const tokens = join(dir, 'tokens.json');
    writeFileSync(tokens, JSON.stringify([[1, 2, 99999]]));
    const bad: [Record<string, unknown>, string, RegExp][] = [
      [jobConfig({ model: join(dir, 'missing.bin') }), 'bad-model', /cannot read model file .*missing\.bin: ENOENT/],
      [jobConfig({ model: truncated }), 'bad-model', /truncated\.bin: .*bytes, header implies/],
      [jobConfig({ bits: 9 }), 'bad-config', /bits must be an integer in \[2, 8\], got 9/],
      [jobConfig({ invariances: ['ffn-teleport' as never] }), 'bad-config', /unknown invariance ffn-teleport/],
      [jobConfig({ calibTokens: tokens }), 'bad-tokens', /token id 99999 is outside the vocabulary/],
    ];
    const running = await status(home, longJob);
    expect(['running', 'queued']).toContain(running.state);
    const ids = [];
    for (const [config] of bad) ids.push(await submit(home, config));
    for (let i = 0; i < bad.length; i++) {
      const v = await waitState(home, ids[i], ['failed', 'done'], 30_000);
      expect(v.state).toBe('failed');
      expect(v.error!.code).toBe(bad[i][1]);
      expect(v.error!.message).toMatch(bad[i][2]);
      expect(v.error!.message).not.toContain('\n');
      // The CLI shows it too.
      const s = cli(home, 'status', ids[i]);
      expect(s.code).toBe(0);
      expect(s.stdout).toMatch(/failed/);
      expect(s.stdout).toContain(v.error!.message);
    }
    // Meanwhile the long job kept going.
    const later = await waitFor('the long job to progress', async () => {
      const s = await status(home, longJob);
      return s.step > running.step ? s : undefined;
    }, 30_000);
    expect(later.state).toBe('running');
    expect(later.error).toBeNull();
    expect((await call(home, 'cancel', { job: longJob }) as JobView).state).toBe('cancelled');
  });

  it('records in a new job the tuning recommended for its config unless the submit sets it (RTN at 3 or 4 bits, GPTQ at 2: calibration temperature 0.7; GPTQ: refined codes, at 2 and 3 bits refitted scales; RTN: row gains; all: norm-gain tuning)', async () => {
    const recorded = async (config: Partial<RunConfig>, tuning: Record<string, unknown> | null = TUNING) => {
      const { id } = (await call(home, 'submit', { config, ...(tuning ? { tuning } : {}) })) as JobView;
      await call(home, 'cancel', { job: id });
      return (JSON.parse(readFileSync(join(home, 'jobs', id, 'config.json'), 'utf8')) as { tuning?: Record<string, unknown> }).tuning;
    };
    const norms = { normTune: true };
    const rows = { rowGains: true };
    expect(await recorded(jobConfig({ bits: 4 }))).toEqual({ ...TUNING, calibTemperature: COOL_CALIB_TEMPERATURE, ...rows, ...norms });
    expect(await recorded(jobConfig({ bits: 3 }), null)).toEqual({ calibTemperature: COOL_CALIB_TEMPERATURE, ...rows, ...norms });
    expect(await recorded(jobConfig({ bits: 3 }), { ...TUNING, calibTemperature: 1 })).toEqual({ ...TUNING, calibTemperature: 1, ...rows, ...norms });
    expect(await recorded(jobConfig({ bits: 2 }))).toEqual({ ...TUNING, ...rows, ...norms });
    expect(await recorded(jobConfig({ bits: 2 }), { ...TUNING, normTune: false, rowGains: false })).toEqual({ ...TUNING, normTune: false, rowGains: false });
    const asym = { gptqAsym: GPTQ_ASYM_SHARE };
    expect(await recorded(jobConfig({ bits: 3, base: 'gptq' }))).toEqual({ ...TUNING, gptqRefine: GPTQ_REFINE_SWEEPS, gptqRefitScales: true, ...asym, ...norms });
    expect(await recorded(jobConfig({ bits: 4, base: 'gptq' }))).toEqual({ ...TUNING, gptqRefine: GPTQ_REFINE_SWEEPS, ...asym, ...norms });
    expect(await recorded(jobConfig({ bits: 3, base: 'gptq' }), { ...TUNING, gptqRefine: 0 })).toEqual({ ...TUNING, gptqRefine: 0, ...asym, ...norms });
    expect(await recorded(jobConfig({ bits: 2, base: 'gptq' }))).toEqual({ ...TUNING, calibTemperature: COOL_CALIB_TEMPERATURE, gptqRefine: GPTQ_REFINE_SWEEPS, gptqRefitScales: true, ...asym, ...norms });
  });

  it('runs the client commands: submit, list, status, watch, pause, resume, cancel, export, report', async () => {
    // submit (CLI, relative model path resolved by the client) → id; --json → {"id": …}
    const rel = 'models/stories260K.bin';
    const sub = cli(home, 'submit', '--model', rel, '--bits', '3', '--group', '32', '--steps', '16', '--patience', '0', '--json', '--tuning', JSON.stringify(TUNING));
    expect(sub.stderr).toBe('');
    expect(sub.code).toBe(0);
    const { id } = JSON.parse(sub.stdout);
    expect(id).toMatch(/^[0-9a-f]{8}$/);
    // The protocol's watch: progress events, then the final status as the result. It is
    // sent first: on a loaded machine the job can end while other clients start.
    const watcher = await Conn.open(daemon.socket);
    watcher.write(encodeFrame({ id: 'w', verb: 'watch', args: { job: id } }));
    // An impossible setting is refused by the client at once, in one line.
    expectUserError(cli(home, 'submit', '--model', rel, '--bits', '9', '--group', '32'), /bits must be an integer in \[2, 8\]/);
    expectUserError(cli(home, 'status', '../x'), /^invarx: job id must be 8 lowercase hex digits, got "\.\.\/x"$/);
    expectUserError(cli(home, 'status', 'deadbeef'), /^invarx: no job deadbeef$/);
    const w = cli(home, 'watch', id);
    const streamed = await waitFor('the watch result', () => (watcher.replies.some((r) => 'result' in r) ? watcher.replies : undefined), 10_000);
    watcher.close();
    expect(streamed.every((r) => r.id === 'w' && r.ok)).toBe(true);
    expect(streamed.length).toBeGreaterThanOrEqual(2);
    expect(streamed.slice(0, -1).every((r) => 'event' in r)).toBe(true);
    expect(streamed.at(-1)!.result).toMatchObject({ id, state: 'done', step: 16 });
    expect(w.code).toBe(0);
    expect(w.stdout).toMatch(new RegExp(`^job ${id} done: 16 steps, loss [0-9.]+, validation KL [0-9.]+ \\(stopped by steps\\)\\n$`));
    const st = JSON.parse(cli(home, 'status', id, '--json').stdout) as JobView;
    expect(st).toMatchObject({ id, state: 'done', step: 16, totalSteps: 16, model: join(process.cwd(), rel), etaSeconds: 0 });
    for (const k of ['bestLoss', 'validationLoss', 'acceptRate', 'candidatesPerSec'] as const) expect(typeof st[k]).toBe('number');
    const human = cli(home, 'status', id).stdout;
    expect(human).toMatch(/done .*step 16\/16/);
    expect(human).toMatch(/validation KL/);
    expect(human).toMatch(/candidates\/s/);
    expect(human).toMatch(/ETA/);
    const list = cli(home, 'list');
    expect(list.stdout.split('\n')[0]).toMatch(/^ID\s+STATE\s+STEP/);
    expect(list.stdout).toContain(id);

    // export: the job's export, byte for byte, into a new directory outside the home.
    const out = join(mkdtempSync(join(tmpdir(), 'ixe-')), 'nested', 'out');
    const ex = cli(home, 'export', id, '--out', out);
    expect(ex.code).toBe(0);
    expect([...readDir(out).keys()]).toEqual(SEARCH_EXPORT_FILES);
    expect(sameFiles(readDir(out), readDir(join(home, 'jobs', id, 'export')))).toBe(true);
    expectUserError(cli(home, 'export', id, '--out', join(home, 'jobs', 'x')), /inside the daemon's home/);
    expect(existsSync(join(home, 'jobs', 'x'))).toBe(false);
    expectUserError(cli(home, 'export', longJob, '--out', out), /is cancelled; its export exists once it is done/);

    // report: self-contained HTML and SVG with the curves and per-block gains.
    const html = join(out, 'r.html');
    expect(cli(home, 'report', id, '--out', html).code).toBe(0);
    const page = readFileSync(html, 'utf8');
    expect(page).toMatch(/^<!doctype html>/);
    expect(page).toContain('<svg');
    expect(page).toMatch(/validation KL/);
    expect(page).toMatch(/Per-block gain/);
    expect(page).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/);
    const svg = join(out, 'r.svg');
    expect(cli(home, 'report', id, '--out', svg).code).toBe(0);
    const img = readFileSync(svg, 'utf8');
    expect(img).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    expect((img.match(/<path d="M/g) ?? []).length).toBe(2);
    expect((img.match(/<title>block \d/g) ?? []).length).toBe(5);

    // pause / resume / cancel on a fresh job.
    const j2 = JSON.parse(cli(home, 'submit', '--model', rel, '--bits', '3', '--group', '32', '--steps', '400', '--json', '--tuning', JSON.stringify(TUNING)).stdout).id as string;
    expect(cli(home, 'pause', j2).stdout).toBe(`job ${j2} paused\n`);
    expect((await status(home, j2)).state).toBe('paused');
    expect(cli(home, 'resume', j2).stdout).toMatch(new RegExp(`^job ${j2} (queued|running)\\n$`));
    await waitState(home, j2, ['running']);
    expect(cli(home, 'cancel', j2).stdout).toBe(`job ${j2} cancelled\n`);
    expectUserError(cli(home, 'resume', j2), /is cancelled; only paused jobs can be resumed/);
    expectUserError(cli(home, 'report', j2, '--out', join(out, 'x.html')), /is cancelled; its report exists once it is done/);
    // A watch of a finished-badly job ends at once, non-zero.
    expectUserError(cli(home, 'watch', j2), new RegExp(`job ${j2} was cancelled`));
  });

  it('stops on `invarx shutdown`, removing its socket; a stale socket after SIGKILL does not block a restart', async () => {
    const h = tmpHome();
    const d = await DaemonProc.start(h);
    await d.kill('SIGKILL');
    expect(lstatSync(join(h, 'daemon.sock')).isSocket()).toBe(true);
    const d2 = await DaemonProc.start(h);
    const r = cli(h, 'shutdown');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^daemon shutting down/);
    expect((await d2.exited).code).toBe(0);
    expect(existsSync(join(h, 'daemon.sock'))).toBe(false);
  });
});
