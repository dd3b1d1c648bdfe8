/**
 * Client mistakes and the environment's failures are answered with typed errors, never
 * `internal` (which means a bug, and is logged with a stack trace): deeply nested
 * arguments, 64-bit integers where a job id or request id belongs, a job store that
 * refuses writes.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_DEPTH } from '../../daemon/protocol';
import { SmallDisk } from './disk';
import { Conn, DaemonProc, call, ensureBuilt, jobConfig, waitFor } from './harness';

let disk: SmallDisk;
let daemon: DaemonProc;

beforeAll(async () => {
  ensureBuilt();
  disk = SmallDisk.create({ injected: true });
  daemon = await DaemonProc.start(disk.home, [], disk);
});

afterAll(async () => {
  if (daemon?.alive()) await daemon.kill('SIGKILL');
  disk?.dispose();
});

function frame(payload: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(payload.length);
  return Buffer.concat([head, payload]);
}

const str = (s: string) => Buffer.concat([Buffer.from([0xa0 + s.length]), Buffer.from(s)]);
/** MessagePack {id: <id>, verb: <verb>, args: {<key>: <value>}} with raw encoded id and value. */
const request = (id: Buffer, verb: string, key: string, value: Buffer) =>
  frame(Buffer.concat([Buffer.from([0x83]), str('id'), id, str('verb'), str(verb), str('args'), Buffer.from([0x81]), str(key), value]));
/** `depth` nested one-element arrays around nil. */
const nested = (depth: number) => Buffer.concat([Buffer.alloc(depth, 0x91), Buffer.from([0xc0])]);
const uint64 = Buffer.from([0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);

async function replyTo(bytes: Buffer | string): Promise<{ id: unknown; ok: boolean; error?: { code: string; message: string } }> {
  const c = await Conn.open(daemon.socket);
  try {
    c.write(bytes);
    if (typeof bytes === 'string') {
      await waitFor('a JSON reply', () => c.raw.includes('\n') || c.closed);
      return JSON.parse(c.raw.split('\n')[0]);
    }
    return (await c.waitReplies(1))[0] as never;
  } finally {
    c.close();
  }
}

describe('client mistakes get typed errors', () => {
  it('a deeply nested argument (MessagePack and JSON) is a bad request, not a stack overflow', async () => {
    for (const depth of [MAX_DEPTH + 1, 5000, 500_000]) {
      const r = await replyTo(request(Buffer.from([0x07]), 'status', 'job', nested(depth)));
      expect(r.ok).toBe(false);
      expect(['bad-request', 'bad-frame']).toContain(r.error!.code);
      expect(r.error!.message).toMatch(/nested more than \d+ levels/);
    }
    const deep = `{"id":8,"verb":"status","args":{"job":${'['.repeat(100_000)}${']'.repeat(100_000)}}}\n`;
    const r = await replyTo(deep);
    expect(r).toMatchObject({ id: 8, ok: false, error: { code: 'bad-request' } });
    expect(r.error!.message).toMatch(/nested more than \d+ levels/);
  });

  it('a 64-bit integer job id or request id is named as such', async () => {
    const r = await replyTo(request(Buffer.from([0x09]), 'status', 'job', uint64));
    expect(r).toMatchObject({ id: 9, ok: false, error: { code: 'bad-job-id' } });
    expect(r.error!.message).toContain('outside the safe range');
    const r2 = await replyTo(request(uint64, 'status', 'job', str('00000000')));
    expect(r2).toMatchObject({ id: null, ok: false, error: { code: 'bad-request' } });
  });

  it('a job store that refuses writes fails submit with permission-denied', async () => {
    disk.readOnly(join(disk.home, 'jobs'));
    try {
      await call(disk.home, 'submit', { config: jobConfig() });
      expect.unreachable('submit succeeded in a read-only job store');
    } catch (e) {
      const err = (e as { reply?: { error: { code: string; message: string } } }).reply?.error;
      expect(err?.code).toBe('permission-denied');
      expect(err?.message).toContain(disk.home);
    } finally {
      disk.writable();
    }
  });

  it('none of it was logged as an internal error', async () => {
    await call(disk.home, 'list');
    expect(daemon.alive()).toBe(true);
    const log = readFileSync(join(disk.home, 'daemon.log'), 'utf8');
    expect(log).not.toContain('internal error');
    expect(log).not.toMatch(/"stack"/);
  });
});
