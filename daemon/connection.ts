/**
 * One client connection of the daemon (daemon/server.ts accepts them): splits its bytes
 * into requests (daemon/protocol.ts), dispatches them in order, and writes the replies.
 *
 * Memory is bounded whatever the client does. Requests are dispatched only while less than
 * PAUSE_BYTES of replies wait to be sent; past that the socket is paused (the client's own
 * writes back up) until the replies drain, so a client that sends and never reads holds at
 * most one read's worth of requests and PAUSE_BYTES plus one reply of output. Past
 * HARD_BYTES of unsent output (streamed events, replies that completed later) it is dropped.
 * A connection that is idle (nothing in flight, nothing to send) or stuck (output not
 * drained) for the idle timeout is closed.
 */
import { setMaxListeners } from 'node:events';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { InvarxError } from '../core/errors';
import { osError } from './oserror';
import {
  FrameDecoder,
  LineDecoder,
  MAX_REPLY_FRAME,
  ProtocolError,
  decodePayload,
  encodeFrame,
  parseRequest,
  requestIdOf,
  toJsonLine,
  type ErrorBody,
  type Reply,
  type Request,
  type RequestId,
} from './protocol';

export interface CallContext {
  /** Sends a streamed event for this request (before its final reply). */
  event(e: unknown): void;
  /** True while the client is not reading fast enough: skip optional events. */
  backlogged(): boolean;
  /** Aborted when the connection closes. */
  signal: AbortSignal;
}

export type Dispatch = (req: Request, ctx: CallContext) => unknown;

/** Requests one connection may have in flight (each `watch` holds one). */
export const MAX_IN_FLIGHT = 64;
/** Unsent bytes on a connection above which optional events are skipped. */
const BACKLOG_BYTES = 256 << 10;
/** Unsent bytes above which no further request is dispatched (and the socket is not read). */
const PAUSE_BYTES = 1 << 20;
/** Unsent bytes above which the client is taken to have stopped reading: it is dropped. */
const HARD_BYTES = MAX_REPLY_FRAME;

export function errorBody(e: unknown, log?: Logger): ErrorBody {
  if (e instanceof ProtocolError || e instanceof InvarxError) return { code: e.code, message: e.message };
  const os = osError(e);
  if (os) {
    // The environment's doing (full disk, permissions), not a bug: no stack trace.
    log?.warn({ code: os.code }, os.message);
    return { code: os.code, message: os.message };
  }
  // Anything else is a bug: logged with its stack, answered without it.
  log?.error({ err: e }, 'internal error while serving a request');
  return { code: 'internal', message: `internal error: ${String((e as Error)?.message ?? e).split('\n')[0]}` };
}

const isThenable = (v: unknown): v is PromiseLike<unknown> => typeof (v as PromiseLike<unknown> | null)?.then === 'function';

export class Connection {
  /** When the client last sent something or the daemon last got output out. */
  lastActive = Date.now();
  private mode: 'frame' | 'json' | undefined;
  private frames?: FrameDecoder;
  private lines?: LineDecoder;
  /** Decoded (or undecodable) items not yet dispatched, in arrival order. */
  private queue: (Buffer | string)[] = [];
  private inFlight = 0;
  private refused = false;
  private readonly ac = new AbortController();

  constructor(
    readonly sock: Socket,
    private readonly dispatch: Dispatch,
    private readonly log: Logger,
    idleMs: number,
  ) {
    // Each request in flight (a `watch`) may listen for the close: more than the default 10.
    setMaxListeners(MAX_IN_FLIGHT + 1, this.ac.signal);
    sock.on('error', () => sock.destroy()); // EPIPE/ECONNRESET from a client that left
    sock.on('close', () => this.ac.abort());
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('drain', () => {
      this.lastActive = Date.now();
      this.pump();
    });
    if (idleMs > 0) {
      sock.setTimeout(idleMs, () => {
        // Waiting on us (a watch on a queued job) is not idle; a client that does not read is.
        if (this.inFlight > 0 && sock.writableLength === 0) return;
        this.log.info({ inFlight: this.inFlight, unsent: sock.writableLength }, 'closing an idle connection');
        sock.destroy();
      });
    }
  }

  /** Nothing in flight, nothing queued, nothing to send: closing it loses nothing. */
  idle(): boolean {
    return this.inFlight === 0 && this.queue.length === 0 && this.sock.writableLength === 0;
  }

  /** Sends one error reply (not tied to a request) and closes. */
  refuse(code: string, message: string): void {
    this.refused = true;
    this.send({ id: null, ok: false, error: { code, message } });
    this.sock.end();
    setTimeout(() => this.sock.destroy(), 200).unref();
  }

  private send(msg: Reply): void {
    const sock = this.sock;
    if (sock.destroyed || !sock.writable) return;
    let bytes: Buffer | string;
    try {
      bytes = this.mode === 'json' ? toJsonLine(msg) : encodeFrame(msg);
    } catch (e) {
      const err: Reply = { id: msg.id, ok: false, error: errorBody(e, this.log) };
      bytes = this.mode === 'json' ? toJsonLine(err) : encodeFrame(err);
    }
    sock.write(bytes);
    if (sock.writableLength > HARD_BYTES) {
      this.log.warn({ unsent: sock.writableLength }, 'dropping a client that does not read its replies');
      sock.destroy();
    }
  }

  private sendError(id: RequestId, e: unknown): void {
    this.send({ id, ok: false, error: errorBody(e, this.log) });
  }

  private onData(chunk: Buffer): void {
    if (chunk.length === 0 || this.refused) return;
    this.lastActive = Date.now();
    // `{` cannot start a frame: it would announce a length of at least 0x7b000000 bytes.
    if (!this.mode) {
      this.mode = chunk[0] === 0x7b ? 'json' : 'frame';
      if (this.mode === 'json') this.lines = new LineDecoder();
      else this.frames = new FrameDecoder();
    }
    try {
      const items = this.mode === 'json' ? this.lines!.push(chunk) : this.frames!.push(chunk);
      for (const item of items) this.queue.push(item);
    } catch (e) {
      // A length over the limit: the rest of the stream cannot be trusted to be framed.
      this.sendError(null, e);
      this.queue = [];
      this.sock.end();
      this.sock.pause();
      setTimeout(() => this.sock.destroy(), 200).unref();
      return;
    }
    this.pump();
  }

  /** Dispatches queued requests while the output is below PAUSE_BYTES; reads more only once all are dispatched. */
  private pump(): void {
    const sock = this.sock;
    while (this.queue.length > 0 && sock.writableLength < PAUSE_BYTES && !sock.destroyed) this.handleItem(this.queue.shift()!);
    if (sock.destroyed) return;
    if (this.queue.length > 0 || sock.writableLength >= PAUSE_BYTES) sock.pause();
    else if (sock.isPaused() && sock.writable) sock.resume();
  }

  private handleItem(item: Buffer | string): void {
    let value: unknown;
    try {
      if (typeof item === 'string') {
        if (item.trim() === '') return;
        try {
          value = JSON.parse(item);
        } catch (e) {
          throw new ProtocolError('bad-frame', `line is not valid JSON (${(e as Error).message.split(',')[0]})`);
        }
      } else {
        value = decodePayload(item);
      }
    } catch (e) {
      this.sendError(null, e);
      return;
    }
    let req: Request;
    try {
      req = parseRequest(value);
    } catch (e) {
      this.sendError(requestIdOf(value), e);
      return;
    }
    this.handle(req);
  }

  private handle(req: Request): void {
    if (this.inFlight >= MAX_IN_FLIGHT) {
      this.sendError(req.id, new ProtocolError('busy', `more than ${MAX_IN_FLIGHT} requests in flight on one connection`));
      return;
    }
    const ctx: CallContext = {
      event: (e) => {
        if (!this.ac.signal.aborted) this.send({ id: req.id, ok: true, event: e });
      },
      backlogged: () => this.sock.writableLength > BACKLOG_BYTES,
      signal: this.ac.signal,
    };
    let result: unknown;
    try {
      result = this.dispatch(req, ctx);
    } catch (e) {
      this.sendError(req.id, e);
      return;
    }
    // Replies that are ready are sent now, so the output bound above sees them.
    if (!isThenable(result)) {
      this.send({ id: req.id, ok: true, result: result ?? null });
      return;
    }
    this.inFlight++;
    Promise.resolve(result)
      .then(
        (r) => this.send({ id: req.id, ok: true, result: r ?? null }),
        (e) => this.sendError(req.id, e),
      )
      .finally(() => {
        this.inFlight--;
        this.pump();
      });
  }
}
