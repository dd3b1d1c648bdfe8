/**
 * Soak: everything at once while a real job runs — a fuzzing client (10,000 fast-check
 * frames), a client that sends 16 MB of requests and never reads, 150 idle connections,
 * and the daemon's home full for the while. The job finishes with an export byte-identical
 * to `invarx run --out`, `list` answers throughout, no reply says `internal`, and the
 * daemon's RSS comes back to within 50 MB of its level before.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame, packr } from '../../daemon/protocol';
import { SmallDisk } from './disk';
import { Conn, DAEMON_CLI, DaemonProc, MODEL_PATH, ROOT, TUNING, call, ensureBuilt, jobConfig, readDir, sameFiles, sleep, status, submit, waitFor, waitState } from './harness';

const STEPS = 300;
const conns: Conn[] = [];
let disk: SmallDisk;
let daemon: DaemonProc;

beforeAll(async () => {
  ensureBuilt();
  disk = SmallDisk.create({ size: '64m' });
  daemon = await DaemonProc.start(disk.home, ['--checkpoint-steps', '10'], disk);
});

afterAll(async () => {
  for (const c of conns) c.close();
  if (daemon?.alive()) await daemon.kill('SIGKILL');
  disk?.dispose();
});

async function open(): Promise<Conn> {
  const c = await Conn.open(daemon.socket);
  conns.push(c);
  return c;
}

function rssMb(): number {
  const f = `/proc/${daemon.proc.pid}/status`;
  if (!existsSync(f)) return 0;
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(f, 'utf8'))![1]) / 1024;
}

function frame(payload: Uint8Array): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(payload.length);
  return Buffer.concat([head, payload]);
}

/** Well-framed payloads: random bytes, random values, request-shaped values. */
function fuzzPayloads(seed: number, n: number): Uint8Array[] {
  const reqish = fc.record(
    { id: fc.oneof(fc.integer(), fc.string(), fc.anything()), verb: fc.oneof(fc.constantFrom('list', 'status', 'submit', 'watch', 'export', 'pause', 'cancel', 'report'), fc.string()), args: fc.anything() },
    { requiredKeys: [] },
  );
  const payload = fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.anything().map((v) => packr.pack(v)), reqish.map((v) => packr.pack(v)));
  return fc.sample(payload, { seed, numRuns: n });
}

/** Sends the payloads 100 to a connection; each gets one reply, none `internal`. */
async function fuzz(payloads: Uint8Array[], seed: number): Promise<void> {
  let internal = 0;
  for (let i = 0; i < payloads.length; i += 100) {
    const c = await open();
    const batch = payloads.slice(i, i + 100);
    for (const p of batch) c.write(frame(p));
    const replies = await c.waitReplies(batch.length, 30_000);
    expect(replies.length, `seed ${seed}, batch at ${i}`).toBe(batch.length);
    internal += replies.filter((r) => !r.ok && (r.error as { code: string }).code === 'internal').length;
    c.close();
  }
  expect(internal, `seed ${seed}`).toBe(0);
}

describe('soak', () => {
  it('fuzzing, a non-reading client, 150 idle connections and a full home while a job runs', async () => {
    const home = disk.home;
    // Warm up before the baseline: a first job leaves ~100 MB resident for good (the thread
    // allocators keep what it freed), later ones reuse it; then the request paths.
    const first = await submit(home, jobConfig({ steps: 4 }));
    expect((await waitState(home, first, ['done', 'failed'], 120_000)).state).toBe('done');
    const warm = await open();
    for (let i = 0; i < 5000; i++) warm.write(encodeFrame({ id: i, verb: 'list', args: {} }));
    await warm.waitReplies(5000, 60_000);
    warm.close();
    const seed = Number(process.env.INVARX_TEST_SEED ?? Date.now() % 1e6);
    await fuzz(fuzzPayloads(seed + 1, 1000), seed + 1);
    const baseline = rssMb();

    const id = await submit(home, jobConfig({ steps: STEPS }));
    await waitFor('the job to take steps', async () => (await status(home, id)).step >= 2, 60_000);
    disk.fill();

    // `list` on a fresh connection, all along.
    let polling = true;
    let lists = 0;
    const poller = (async () => {
      while (polling) {
        expect(await call(home, 'list')).toHaveLength(2);
        lists++;
        await sleep(100);
      }
    })();

    const idle: Conn[] = [];
    for (let i = 0; i < 150; i++) idle.push(await open());

    const flood = await open();
    flood.sock.pause(); // never reads
    const one = encodeFrame({ id: 1, verb: 'list', args: {} });
    const chunk = Buffer.concat(Array.from({ length: Math.ceil((64 << 10) / one.length) }, () => one));
    for (let i = 0; i < 256; i++) flood.write(chunk);

    await fuzz(fuzzPayloads(seed, 10_000), seed);
    const during = rssMb();

    // Space again; the job must finish with its export.
    disk.free();
    for (const c of [...idle, flood]) c.close();
    const v = await waitState(home, id, ['done', 'failed'], 300_000);
    polling = false;
    await poller;
    expect(v.error).toBeNull();
    expect(v.state).toBe('done');
    expect(lists).toBeGreaterThan(10);
    expect(daemon.alive()).toBe(true);

    const ref = join(mkdtempSync(join(tmpdir(), 'ixk-')), 'run');
    const run = spawnSync(process.execPath, [DAEMON_CLI, 'run', '--model', MODEL_PATH, '--bits', '3', '--group', '32', '--steps', String(STEPS), '--patience', '0', '--tuning', JSON.stringify(TUNING), '--out', ref], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
    expect(run.status, run.stderr).toBe(0);
    expect(sameFiles(readDir(join(home, 'jobs', id, 'export')), readDir(ref))).toBe(true);

    if (baseline > 0) {
      const after = await waitFor('the RSS to come back', () => (rssMb() <= baseline + 50 ? rssMb() : undefined), 60_000, 500).catch(() => rssMb());
      console.log(`soak: daemon RSS ${baseline.toFixed(0)} MB before, ${during.toFixed(0)} MB during, ${after.toFixed(0)} MB after; ${lists} lists answered; disk: ${disk.mode}`);
      expect(after).toBeLessThanOrEqual(baseline + 50);
    }
  });
});
