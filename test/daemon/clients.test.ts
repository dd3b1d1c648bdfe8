/**
 * Slow and idle clients cannot grow the daemon or lock others out: a client that sends
 * requests and never reads its replies is pushed back (the daemon stops reading it) and
 * its memory stays bounded; 200 idle connections do not keep a new client out (the
 * oldest idle one is evicted); when every connection is busy the newcomer hears "daemon
 * busy"; idle and stuck connections are closed after --idle-timeout.
 */
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame } from '../../daemon/protocol';
import { MAX_CONNECTIONS } from '../../daemon/server';
import { Conn, DaemonProc, call, cli, ensureBuilt, jobConfig, sleep, submit, tmpHome, waitFor } from './harness';

const daemons: DaemonProc[] = [];
const conns: Conn[] = [];
let home: string;
let daemon: DaemonProc;

async function start(h: string, args: string[] = []): Promise<DaemonProc> {
  const d = await DaemonProc.start(h, args);
  daemons.push(d);
  return d;
}

async function open(h: string): Promise<Conn> {
  const c = await Conn.open(`${h}/daemon.sock`);
  conns.push(c);
  return c;
}

/** kB of the daemon's resident memory now, and its peak so far (Linux). */
function memory(d: DaemonProc): { rss: number; peak: number } | undefined {
  const f = `/proc/${d.proc.pid}/status`;
  if (!existsSync(f)) return undefined;
  const s = readFileSync(f, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)![1]);
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

beforeAll(async () => {
  ensureBuilt();
  home = tmpHome();
  daemon = await start(home);
});

afterAll(async () => {
  for (const c of conns) c.close();
  for (const d of daemons) if (d.alive()) await d.kill('SIGKILL');
});

describe('slow and idle clients', () => {
  it('a client that sends 16 MB of requests and never reads is pushed back; the daemon stays small and serves others', async () => {
    // Warm up first (JIT, heap spaces), so that what follows measures the flood only.
    const warm = await open(home);
    for (let i = 0; i < 20_000; i++) warm.write(encodeFrame({ id: i, verb: 'list', args: {} }));
    await warm.waitReplies(20_000, 60_000);
    warm.close();
    const before = memory(daemon);
    const flood = await open(home);
    flood.sock.pause(); // never read
    const one = encodeFrame({ id: 1, verb: 'list', args: {} });
    const chunk = Buffer.concat(Array.from({ length: Math.ceil((64 << 10) / one.length) }, () => one));
    const total = 256 * chunk.length; // 16 MB
    for (let i = 0; i < 256; i++) flood.write(chunk);
    // Until the daemon has taken everything, or stopped taking (2 s without progress).
    let last = -1;
    let still = 0;
    let peakRss = before?.rss ?? 0;
    while (flood.sock.writableLength > 0 && still < 10) {
      await sleep(200);
      still = flood.sock.writableLength === last ? still + 1 : 0;
      last = flood.sock.writableLength;
      peakRss = Math.max(peakRss, memory(daemon)?.rss ?? 0);
      expect(await call(home, 'list')).toEqual([]); // others are served throughout
    }
    const taken = total - flood.sock.writableLength;
    const grewMb = before ? (peakRss - before.rss) / 1024 : 0;
    if (before) console.log(`non-reading client: daemon took ${(taken / 2 ** 20).toFixed(2)} of 16 MB; RSS ${(before.rss / 1024).toFixed(0)} MB before, at most ${(peakRss / 1024).toFixed(0)} MB during (+${grewMb.toFixed(1)} MB)`);
    // Most of the 16 MB is still on the client's side: the daemon stopped reading it.
    expect(taken).toBeLessThan(4 << 20);
    expect(grewMb).toBeLessThan(50);
    flood.close();
    expect(await call(home, 'list')).toEqual([]);
  });

  it('200 idle connections do not lock a new client out: the oldest idle ones are evicted', async () => {
    const idle: Conn[] = [];
    for (let i = 0; i < 200; i++) idle.push(await open(home));
    const r = cli(home, 'list');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await waitFor('evictions', () => idle.filter((c) => c.closed).length >= 200 - MAX_CONNECTIONS + 1);
    // The newest ones were kept.
    expect(idle.slice(-50).every((c) => !c.closed)).toBe(true);
    for (const c of idle) c.close();
  });

  it('when every connection is busy, a new client is told "daemon busy"', async () => {
    const h = tmpHome();
    await start(h);
    const job = await submit(h, jobConfig({ steps: 100_000 }));
    await call(h, 'pause', { job });
    const busy: Conn[] = [];
    for (let i = 0; i < MAX_CONNECTIONS; i++) {
      const c = await open(h);
      c.write(encodeFrame({ id: 1, verb: 'watch', args: { job } }));
      await c.waitReplies(1); // its watch is in flight
      busy.push(c);
    }
    const r = cli(h, 'list');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/daemon busy/);
    expect(busy.every((c) => !c.closed)).toBe(true);
    busy[0].close();
    await waitFor('a connection slot to free up', () => cli(h, 'list').code === 0);
    for (const c of busy) c.close();
  });

  it('--idle-timeout closes idle and stuck connections, not ones waiting on a job', async () => {
    const h = tmpHome();
    await start(h, ['--idle-timeout', '1']);
    const job = await submit(h, jobConfig({ steps: 100_000 }));
    await call(h, 'pause', { job });
    const watching = await open(h);
    watching.write(encodeFrame({ id: 1, verb: 'watch', args: { job } }));
    await watching.waitReplies(1);
    const idle = await open(h);
    const stuck = await open(h);
    stuck.sock.pause();
    const one = encodeFrame({ id: 1, verb: 'list', args: {} });
    stuck.write(Buffer.concat(Array.from({ length: Math.ceil((4 << 20) / one.length) }, () => one)));
    await waitFor('the idle connection to be closed', () => idle.closed);
    await waitFor('the stuck connection to be closed', () => stuck.closed);
    expect(watching.closed).toBe(false);
  });
});
