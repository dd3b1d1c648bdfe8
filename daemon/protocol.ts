/**
 * The wire protocol between `invarx` clients and the daemon, over a Unix socket.
 *
 *   frame    = uint32 big-endian payload length, then the payload (msgpack)
 *   request  = { id, verb, args }                    id: string (≤ 200 chars) or integer
 *   reply    = { id, ok: true, result }              the one final answer to a request
 *            | { id, ok: false, error: { code, message } }
 *   event    = { id, ok: true, event }               zero or more before the final reply
 *                                                    (only `watch` streams events)
 *
 * Payloads are plain MessagePack maps (msgpackr with records off), so any MessagePack
 * library can talk to the daemon. A connection whose first byte is `{` speaks newline-
 * delimited JSON instead (for humans with `socat`/`nc -U`): one request per line, one
 * reply or event per line. Frames and lines are limited to MAX_FRAME bytes: a longer one
 * is answered with `frame-too-large` and the connection is closed, because the stream
 * cannot be resynchronised. A frame that is not MessagePack, or not a request, gets an
 * error reply and the connection stays usable (the length prefix still delimits it).
 */
import { Packr } from 'msgpackr';

/** Largest request frame (and JSON line) the daemon accepts. */
export const MAX_FRAME = 1 << 20;
/** Largest reply a client accepts (lists and reports can exceed a request's limit). */
export const MAX_REPLY_FRAME = 64 << 20;

export const packr = new Packr({ moreTypes: true, useRecords: false });

export const VERBS = ['submit', 'list', 'status', 'watch', 'pause', 'resume', 'cancel', 'export', 'report', 'shutdown'] as const;
export type Verb = (typeof VERBS)[number];

export type RequestId = string | number | null;

export interface Request {
  id: RequestId;
  verb: Verb;
  args: Record<string, unknown>;
}

export interface ErrorBody {
  code: string;
  message: string;
}

export type Reply =
  | { id: RequestId; ok: true; result: unknown }
  | { id: RequestId; ok: true; event: unknown }
  | { id: RequestId; ok: false; error: ErrorBody };

/** An error that becomes `{ ok: false, error: { code, message } }`; `fatal` also closes the connection. */
export class ProtocolError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly fatal = false,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export function encodeFrame(msg: unknown): Buffer {
  const body = packr.pack(msg);
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

export function decodePayload(payload: Uint8Array): unknown {
  if (payload.length === 0) throw new ProtocolError('bad-frame', 'empty frame');
  try {
    return packr.unpack(payload);
  } catch (e) {
    // msgpackr decodes recursively: a frame of nested arrays overflows its stack.
    if (e instanceof RangeError) throw new ProtocolError('bad-frame', `frame is nested more than ${MAX_DEPTH} levels deep`);
    throw new ProtocolError('bad-frame', `frame is not valid MessagePack (${(e as Error).message})`);
  }
}

/**
 * Splits a byte stream into frame payloads. Chunks are kept in a list and joined only once
 * a whole frame is in, so a 1 MiB frame arriving in 64 KiB reads costs one copy.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly max = MAX_FRAME) {}

  /** The complete payloads now available; throws a fatal ProtocolError on an oversized length. */
  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < 4) return out;
      const head = this.peek(4);
      const len = head.readUInt32BE(0);
      if (len > this.max) {
        throw new ProtocolError('frame-too-large', `frame of ${len} bytes is over the ${this.max}-byte limit`, true);
      }
      if (this.buffered < 4 + len) return out;
      const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered);
      out.push(all.subarray(4, 4 + len));
      const rest = all.subarray(4 + len);
      this.chunks = rest.length ? [rest] : [];
      this.buffered = rest.length;
    }
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0];
    const joined = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [joined];
    return joined;
  }
}

/** Splits a byte stream into newline-terminated lines (JSON mode), with the same size limit. */
export class LineDecoder {
  private pending: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly max = MAX_FRAME) {}

  push(chunk: Buffer): string[] {
    const out: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      this.pending.push(chunk.subarray(start, nl));
      this.buffered += nl - start;
      if (this.buffered > this.max) this.tooLong();
      out.push(Buffer.concat(this.pending, this.buffered).toString('utf8'));
      this.pending = [];
      this.buffered = 0;
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.pending.push(chunk.subarray(start));
      this.buffered += chunk.length - start;
      if (this.buffered > this.max) this.tooLong();
    }
    return out;
  }

  private tooLong(): never {
    throw new ProtocolError('frame-too-large', `line is over the ${this.max}-byte limit`, true);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v) && !(v instanceof Map);
}

/** The request id, if the value carries a usable one (so even a bad request's error can be matched). */
export function requestIdOf(v: unknown): RequestId {
  if (!isRecord(v)) return null;
  const id = v.id;
  if (typeof id === 'string' && id.length <= 200) return id;
  if (typeof id === 'number' && Number.isSafeInteger(id)) return id;
  return null;
}

/** Deepest nesting of maps and arrays a request may have (a submit is 3 levels deep). */
export const MAX_DEPTH = 16;

/** True if `v` nests maps/arrays deeper than `max` (iterative: the value may be deep enough to overflow a recursion). */
export function nestedDeeperThan(v: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length > 0) {
    const [x, d] = stack.pop()!;
    if (typeof x !== 'object' || x === null || ArrayBuffer.isView(x)) continue;
    if (d >= max) return true;
    const children = Array.isArray(x) ? x : x instanceof Map ? [...x.values()] : Object.values(x);
    for (const c of children) stack.push([c, d + 1]);
  }
  return false;
}

/** A client's value in an error message: short, and never throwing (BigInt, cycles, depth). */
export function describeValue(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
    case 'number':
    case 'boolean':
      return String(v);
    case 'bigint':
      return 'an integer outside the safe range';
    case 'undefined':
      return 'nothing';
    default:
      return v === null ? 'null' : Array.isArray(v) ? 'an array' : ArrayBuffer.isView(v) ? 'binary data' : 'a map';
  }
}

/** A decoded value → a well-formed request, or a ProtocolError naming what is wrong. */
export function parseRequest(v: unknown): Request {
  if (!isRecord(v)) throw new ProtocolError('bad-request', 'a request must be a map {id, verb, args}');
  if (nestedDeeperThan(v, MAX_DEPTH)) throw new ProtocolError('bad-request', `request is nested more than ${MAX_DEPTH} levels deep`);
  const id = requestIdOf(v);
  if (id === null) throw new ProtocolError('bad-request', 'request id must be a string of at most 200 characters or a safe integer');
  if (typeof v.verb !== 'string') throw new ProtocolError('bad-request', 'request verb must be a string');
  if (!(VERBS as readonly string[]).includes(v.verb)) {
    throw new ProtocolError('unknown-verb', `unknown verb ${describeValue(v.verb.slice(0, 40))} (known: ${VERBS.join(', ')})`);
  }
  if (v.args !== undefined && v.args !== null && !isRecord(v.args)) throw new ProtocolError('bad-request', 'request args must be a map');
  return { id, verb: v.verb as Verb, args: (v.args ?? {}) as Record<string, unknown> };
}

/** JSON cannot carry NaN/Infinity: they become null in JSON mode (msgpack keeps them). */
export function toJsonLine(msg: unknown): string {
  return JSON.stringify(msg, (_k, x) => (typeof x === 'number' && !Number.isFinite(x) ? null : ArrayBuffer.isView(x) ? Array.from(x as unknown as ArrayLike<number>) : x)) + '\n';
}
