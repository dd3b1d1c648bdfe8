/**
 * The socket side of the daemon: accepts connections on the Unix socket, splits them into
 * requests (daemon/protocol.ts), hands each to `dispatch`, and writes the replies. Nothing
 * a client sends can throw out of here: every failure becomes an error reply (or, for an
 * oversized frame, an error reply and a closed connection), and other clients and jobs go
 * on.
 */
import { setMaxListeners } from 'node:events';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { InvarxError } from '../core/errors';
import { osError } from './oserror';
import {
  FrameDecoder,
  LineDecoder,
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
const MAX_IN_FLIGHT = 64;
/** Unsent bytes on a connection above which optional events are skipped. */
const BACKLOG_BYTES = 256 << 10;
const MAX_CONNECTIONS = 128;

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

export class Server {
  private server?: NetServer;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly dispatch: Dispatch,
    private readonly log: Logger,
  ) {}

  listen(path: string): Promise<void> {
    const server = createServer((s) => this.accept(s));
    server.maxConnections = MAX_CONNECTIONS;
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        server.on('error', (e) => this.log.error({ err: e }, 'server error'));
        resolve();
      });
    });
  }

  /** Stops accepting, lets queued replies flush, then drops every connection. */
  async close(graceMs = 500): Promise<void> {
    this.server?.close();
    for (const s of this.sockets) s.end();
    const deadline = Date.now() + graceMs;
    while (this.sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const s of this.sockets) s.destroy();
  }

  private accept(sock: Socket): void {
    this.sockets.add(sock);
    const ac = new AbortController();
    // Each request in flight (a `watch`) may listen for the close: more than the default 10.
    setMaxListeners(MAX_IN_FLIGHT + 1, ac.signal);
    let mode: 'frame' | 'json' | undefined;
    let frames: FrameDecoder | undefined;
    let lines: LineDecoder | undefined;
    let inFlight = 0;

    sock.on('error', () => sock.destroy()); // EPIPE/ECONNRESET from a client that left
    sock.on('close', () => {
      this.sockets.delete(sock);
      ac.abort();
    });

    const send = (msg: Reply): void => {
      if (sock.destroyed || !sock.writable) return;
      let bytes: Buffer | string;
      try {
        bytes = mode === 'json' ? toJsonLine(msg) : encodeFrame(msg);
      } catch (e) {
        bytes = mode === 'json' ? toJsonLine({ id: msg.id, ok: false, error: errorBody(e, this.log) }) : encodeFrame({ id: msg.id, ok: false, error: errorBody(e, this.log) });
      }
      sock.write(bytes);
    };
    const sendError = (id: RequestId, e: unknown) => send({ id, ok: false, error: errorBody(e, this.log) });

    const handle = (req: Request): void => {
      if (inFlight >= MAX_IN_FLIGHT) {
        sendError(req.id, new ProtocolError('busy', `more than ${MAX_IN_FLIGHT} requests in flight on one connection`));
        return;
      }
      inFlight++;
      const ctx: CallContext = {
        event: (e) => {
          if (!ac.signal.aborted) send({ id: req.id, ok: true, event: e });
        },
        backlogged: () => sock.writableLength > BACKLOG_BYTES,
        signal: ac.signal,
      };
      Promise.resolve()
        .then(() => this.dispatch(req, ctx))
        .then(
          (result) => send({ id: req.id, ok: true, result: result ?? null }),
          (e) => sendError(req.id, e),
        )
        .finally(() => inFlight--);
    };

    sock.on('data', (chunk: Buffer) => {
      if (chunk.length === 0) return;
      // `{` cannot start a frame: it would announce a length of at least 0x7b000000 bytes.
      if (!mode) {
        mode = chunk[0] === 0x7b ? 'json' : 'frame';
        if (mode === 'json') lines = new LineDecoder();
        else frames = new FrameDecoder();
      }
      let items: (Buffer | string)[];
      try {
        items = mode === 'json' ? lines!.push(chunk) : frames!.push(chunk);
      } catch (e) {
        // A length over the limit: the rest of the stream cannot be trusted to be framed.
        sendError(null, e);
        sock.end();
        sock.pause();
        setTimeout(() => sock.destroy(), 200).unref();
        return;
      }
      for (const item of items) {
        let value: unknown;
        try {
          if (typeof item === 'string') {
            if (item.trim() === '') continue;
            try {
              value = JSON.parse(item);
            } catch (e) {
              throw new ProtocolError('bad-frame', `line is not valid JSON (${(e as Error).message})`);
            }
          } else {
            value = decodePayload(item);
          }
        } catch (e) {
          sendError(null, e);
          continue;
        }
        let req: Request;
        try {
          req = parseRequest(value);
        } catch (e) {
          sendError(requestIdOf(value), e);
          continue;
        }
        handle(req);
      }
    });
  }
}
