/**
 * The client end of the protocol (daemon/protocol.ts), used by `invarx submit|status|…`.
 * Daemon errors come back as InvarxError, so the CLI prints them as one line.
 */
import { connect, type Socket } from 'node:net';
import { InvarxError } from '../core/errors';
import { FrameDecoder, MAX_REPLY_FRAME, decodePayload, encodeFrame, type Reply, type Verb } from './protocol';

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  onEvent?(e: unknown): void;
}

export class Client {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly decoder = new FrameDecoder(MAX_REPLY_FRAME);
  private closed = false;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = this.decoder.push(chunk);
      } catch (e) {
        this.failAll(new InvarxError('bad-reply', `unreadable reply from the daemon: ${(e as Error).message}`));
        sock.destroy();
        return;
      }
      for (const f of frames) this.onReply(decodePayload(f) as Reply);
    });
    sock.on('error', () => undefined); // reported through 'close'
    sock.on('close', () => {
      this.closed = true;
      this.failAll(new InvarxError('daemon-gone', 'the daemon closed the connection (it may have shut down)'));
    });
  }

  /** Connects to the daemon on `path`; says in one line if none is running there. */
  static connect(path: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      sock.once('connect', () => {
        sock.removeAllListeners('error');
        resolve(new Client(sock));
      });
      sock.once('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
          reject(new InvarxError('no-daemon', `no invarx daemon is running (nothing listening on ${path}); start one with \`invarx daemon\``));
        } else {
          reject(new InvarxError('no-daemon', `cannot reach the invarx daemon on ${path}: ${e.code ?? e.message}`));
        }
      });
    });
  }

  /** One request; `onEvent` receives streamed events (watch) before the final result. */
  call(verb: Verb, args: Record<string, unknown> = {}, onEvent?: (e: unknown) => void): Promise<unknown> {
    if (this.closed) return Promise.reject(new InvarxError('daemon-gone', 'the connection to the daemon is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onEvent });
      this.sock.write(encodeFrame({ id, verb, args }));
    });
  }

  close(): void {
    this.sock.end();
  }

  private onReply(r: Reply): void {
    if (r && r.id === null && r.ok === false) {
      // Not about one request: the daemon refuses the connection (busy) or the stream.
      this.failAll(new InvarxError(r.error?.code ?? 'error', r.error?.message ?? 'the daemon refused the connection'));
      return;
    }
    const p = typeof r?.id === 'number' ? this.pending.get(r.id) : undefined;
    if (!p) return;
    if ('event' in r && r.ok) {
      p.onEvent?.(r.event);
      return;
    }
    this.pending.delete(r.id as number);
    if (r.ok) p.resolve((r as { result: unknown }).result);
    else p.reject(new InvarxError(r.error?.code ?? 'error', r.error?.message ?? 'the daemon returned an error'));
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}

/** Connects, makes one call, disconnects. */
export async function callDaemon(path: string, verb: Verb, args: Record<string, unknown> = {}, onEvent?: (e: unknown) => void): Promise<unknown> {
  const c = await Client.connect(path);
  try {
    return await c.call(verb, args, onEvent);
  } finally {
    c.close();
  }
}
