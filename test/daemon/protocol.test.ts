/**
 * The protocol pieces in isolation: framing survives any chunking, oversized lengths are
 * refused, and no decoded value can make request or submit parsing throw anything but a
 * typed ProtocolError.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameDecoder, LineDecoder, MAX_FRAME, ProtocolError, decodePayload, encodeFrame, packr, parseRequest } from '../../daemon/protocol';
import { canonicalRunConfig, parseSubmitArgs } from '../../daemon/submit';
import { isJobId, jobDir } from '../../daemon/home';
import { runConfigFromOptions } from '../../daemon/commands/runOptions';

/** Splits bytes at the given cut points. */
function chunks(b: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, b.length]) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  return out;
}

describe('protocol', () => {
  it('frames survive any chunking', () => {
    fc.assert(
      fc.property(fc.array(fc.jsonValue(), { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 20 }), (msgs, cuts) => {
        const bytes = Buffer.concat(msgs.map((m) => encodeFrame({ id: 1, verb: 'list', args: { m } })));
        const d = new FrameDecoder();
        const got = chunks(bytes, cuts).flatMap((c) => d.push(c)).map((f) => decodePayload(f) as { args: { m: unknown } });
        expect(got.map((g) => g.args.m)).toEqual(msgs.map((m) => packr.unpack(packr.pack(m))));
      }),
      { numRuns: 100 },
    );
  });

  it('refuses a length over the limit as soon as the length is in', () => {
    const d = new FrameDecoder();
    const head = Buffer.alloc(4);
    head.writeUInt32BE(MAX_FRAME + 1);
    expect(() => d.push(head.subarray(0, 3))).not.toThrow();
    try {
      d.push(head.subarray(3));
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ProtocolError);
      expect((e as ProtocolError).code).toBe('frame-too-large');
      expect((e as ProtocolError).fatal).toBe(true);
    }
    const lines = new LineDecoder(16);
    expect(lines.push(Buffer.from('{"a":1}\n{"b"'))).toEqual(['{"a":1}']);
    expect(() => lines.push(Buffer.from('x'.repeat(20)))).toThrow(/limit/);
  });

  it('any bytes or value parse to a request or a typed error, never anything else', () => {
    const typed = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(ProtocolError);
      }
    };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => typed(() => parseRequest(decodePayload(b)))),
      { numRuns: 300 },
    );
    const verbish = fc.oneof(fc.constantFrom('submit', 'status', 'list', 'watch', 'export'), fc.anything());
    // Config keys: known ones (with hostile values) and arbitrary strings.
    const key = fc.oneof(fc.constantFrom('bits', 'group', 'steps', 'seed', 'invariances', 'calibTokens', 'tuning'), fc.string());
    fc.assert(
      fc.property(fc.anything(), verbish, fc.anything(), fc.anything(), key, (id, verb, args, config, k) => {
        typed(() => parseRequest({ id, verb, args }));
        typed(() => parseRequest(packr.unpack(packr.pack({ id, verb, args }))));
        typed(() => parseSubmitArgs({ config }));
        typed(() => parseSubmitArgs({ config: { model: '/m', bits: 3, group: 32, [k]: args } }));
      }),
      { numRuns: 300 },
    );
  });

  it('submit arguments: absolute paths, known keys, numbers', () => {
    expect(() => parseSubmitArgs({ config: { model: 'models/x.bin', bits: 3, group: 32 } })).toThrow(/absolute/);
    expect(() => parseSubmitArgs({ config: { model: '/m\0/x', bits: 3, group: 32 } })).toThrow(/NUL/);
    expect(() => parseSubmitArgs({ config: { model: '/m', bits: '3', group: 32 } })).toThrow(/bits must be a finite number/);
    expect(() => parseSubmitArgs({ config: { model: '/m', bits: 3, group: 32, evil: 1 } })).toThrow(/unknown config key/);
    expect(() => parseSubmitArgs({ config: { model: '/m', bits: 3, group: 32 }, tuning: { calibSeqs: 'many' } })).toThrow(/finite number/);
    expect(() => parseSubmitArgs({ config: { model: '/m', bits: 3, group: 32 }, tuning: { __proto__x: 1 } })).toThrow(/unknown tuning key/);
    // Range checks are the search's (the job fails with its message), not the parser's.
    expect(parseSubmitArgs({ config: { model: '/m', bits: 9, group: 32 } }).config.bits).toBe(9);
  });

  it('the canonical config has the shape `invarx run` builds (same export bytes)', () => {
    const o = { model: '/m', bits: '3', group: '32', base: 'rtn', steps: '40', timeBudget: '0', seed: '1', invariances: 'all', candidates: '4', workers: '1', patience: '0' };
    const run = runConfigFromOptions(o);
    const viaJson = JSON.parse(JSON.stringify(parseSubmitArgs({ config: JSON.parse(JSON.stringify(run)) }).config));
    const canon = canonicalRunConfig(viaJson);
    expect(Object.keys(canon)).toEqual(Object.keys(run));
    expect(packr.pack(canon).equals(packr.pack(run))).toBe(true);
  });

  it('job ids: only the generated form names a directory', () => {
    for (const bad of ['../x', '..', 'a/b', '/etc', '0123456', '0123456789', 'ABCDEF01', 'abcdef0\0', ' abcdef01', 'abcdef01/..', 5, null]) {
      expect(isJobId(bad)).toBe(false);
    }
    expect(isJobId('0a1b2c3d')).toBe(true);
    expect(() => jobDir('/h', '../x')).toThrow();
  });
});
