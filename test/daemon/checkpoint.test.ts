/**
 * Checkpoint files in isolation: exact round trip, last two kept, corrupt/torn newest
 * falls back with a warning, and a failing write (full disk) leaves the previous ones intact.
 */
import * as fs from 'node:fs';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CHECKPOINT_FORMAT, CheckpointStore, decodeCheckpoint, encodeCheckpoint, type CheckpointFs } from '../../daemon/checkpoint';

const dir = () => join(mkdtempSync(join(tmpdir(), 'ixc-')), 'checkpoints');

/** A snapshot shaped like the search's: numbers, strings, typed arrays, nested arrays/objects. */
function snapshot(step: number) {
  return {
    version: 1,
    step,
    rng: { s: [1, 2, 3, step >>> 0] },
    moves: [{ block: 0, step, transforms: [{ kind: 'ffn-perm', perm: new Int32Array([2, 0, 1]), scale: new Float32Array([0.5, Math.PI, -0]) }] }],
    history: [{ step, loss: 0.9, validation: 0.31 }],
    best: { validation: Infinity, moves: 0, step: 0 },
    done: false,
  };
}

const save = (s: CheckpointStore, step: number) => s.save({ configHash: 'cfg', modelHash: 'model', step, snapshot: snapshot(step) });

describe('checkpoints', () => {
  it('round-trip snapshots exactly, typed arrays included', () => {
    fc.assert(
      fc.property(fc.float32Array({ maxLength: 64 }), fc.integer({ min: 0, max: 1e9 }), fc.string(), (f32, step, s) => {
        const snap = { f32, step, s, nested: [{ x: new Uint16Array([1, 2]) }] };
        const c = decodeCheckpoint(encodeCheckpoint({ formatVersion: CHECKPOINT_FORMAT, configHash: 'a', modelHash: 'b', step, snapshot: snap, savedAt: 'now' }));
        expect(c.snapshot.f32).toBeInstanceOf(Float32Array);
        expect(Buffer.from((c.snapshot.f32 as Float32Array).buffer, (c.snapshot.f32 as Float32Array).byteOffset, f32.byteLength).equals(Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength))).toBe(true);
        expect(c.snapshot.nested).toEqual(snap.nested);
        expect(c.step).toBe(step);
      }),
      { numRuns: 50 },
    );
  });

  it('keep the last two and load the newest', () => {
    const d = dir();
    const s = new CheckpointStore(d);
    for (let i = 1; i <= 5; i++) save(s, i * 10);
    expect(readdirSync(d).sort()).toEqual(['ckpt-0000000004.msgpack', 'ckpt-0000000005.msgpack']);
    const warnings: string[] = [];
    const l = new CheckpointStore(d).load('cfg', (w) => warnings.push(w))!;
    expect(l.checkpoint.step).toBe(50);
    expect(warnings).toEqual([]);
    expect(l.checkpoint.snapshot).toEqual(snapshot(50));
  });

  it('fall back from a corrupt, torn or foreign newest checkpoint to the previous one, with a warning', () => {
    const damage: [string, (b: Buffer) => Buffer][] = [
      ['bit flip', (b) => { const c = Buffer.from(b); c[c.length - 10] ^= 0x40; return c; }],
      ['torn', (b) => b.subarray(0, b.length >> 1)],
      ['empty', () => Buffer.alloc(0)],
      ['garbage', () => Buffer.from('not a checkpoint at all')],
    ];
    for (const [what, f] of damage) {
      const d = dir();
      const s = new CheckpointStore(d);
      save(s, 10);
      const newest = save(s, 20);
      writeFileSync(newest, f(readFileSync(newest)));
      const warnings: string[] = [];
      const l = new CheckpointStore(d).load('cfg', (w) => warnings.push(w));
      expect(l, what).not.toBeNull();
      expect(l!.checkpoint.step, what).toBe(10);
      expect(warnings, what).toHaveLength(1);
      expect(warnings[0], what).toMatch(/ckpt-0000000002\.msgpack is unusable .*falling back to an older one/);
      // The bad file is set aside: the next save plus the good one are the "last two".
      save(s, 30);
      expect(new CheckpointStore(d).files().map((x) => x.seq)).toEqual([3, 1]);
    }
    // Another configuration's checkpoint is not this job's.
    const d = dir();
    save(new CheckpointStore(d), 10);
    const warnings: string[] = [];
    expect(new CheckpointStore(d).load('other-config', (w) => warnings.push(w))).toBeNull();
    expect(warnings).toEqual(['checkpoint ckpt-0000000001.msgpack is unusable (written for a different configuration); no older one: the job starts from the beginning']);
  });

  it('a full disk leaves the previous checkpoints intact and loadable, and leaves no temp file', () => {
    const d = dir();
    const s0 = new CheckpointStore(d);
    save(s0, 10);
    save(s0, 20);
    const before = new Map(readdirSync(d).map((n) => [n, readFileSync(join(d, n))]));
    for (const failAt of ['writeSync', 'fsyncSync', 'renameSync'] as const) {
      let calls = 0;
      const full: CheckpointFs = {
        ...fs,
        [failAt]: (...a: unknown[]) => {
          if (failAt !== 'fsyncSync' || calls++ === 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
          return (fs.fsyncSync as (...x: unknown[]) => void)(...a);
        },
      } as CheckpointFs;
      const s = new CheckpointStore(d, full);
      expect(() => save(s, 30)).toThrow(/ENOSPC/);
      const after = new Map(readdirSync(d).map((n) => [n, readFileSync(join(d, n))]));
      expect(after, failAt).toEqual(before);
      expect(new CheckpointStore(d).load('cfg', () => undefined)!.checkpoint.step).toBe(20);
    }
  });

  it('remove temp files left by a crash mid-write', () => {
    const d = dir();
    const s = new CheckpointStore(d);
    save(s, 10);
    writeFileSync(join(d, 'ckpt-0000000002.msgpack.tmp'), 'half');
    expect(new CheckpointStore(d).load('cfg', () => undefined)!.checkpoint.step).toBe(10);
    expect(readdirSync(d)).toEqual(['ckpt-0000000001.msgpack']);
  });
});
