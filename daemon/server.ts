/**
 * The socket side of the daemon: accepts connections on the Unix socket and hands each to
 * a Connection (daemon/connection.ts), which splits it into requests, dispatches them and
 * writes the replies. Nothing a client sends can throw out of here: every failure becomes
 * an error reply (or, for an oversized frame, an error reply and a closed connection), and
 * other clients and jobs go on.
 *
 * At most MAX_CONNECTIONS are open. A new one past that evicts the connection idle the
 * longest (nothing in flight, nothing to send), so idle clients cannot lock others out;
 * when none is idle it is refused with a `busy` error reply that says so.
 */
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { Connection, type Dispatch } from './connection';

export { errorBody, type CallContext, type Dispatch } from './connection';

export const MAX_CONNECTIONS = 128;

export class Server {
  private server?: NetServer;
  private readonly conns = new Set<Connection>();

  constructor(
    private readonly dispatch: Dispatch,
    private readonly log: Logger,
    /** Idle connections are closed after this long (0: never). */
    private readonly idleMs = 60_000,
  ) {}

  listen(path: string): Promise<void> {
    const server = createServer((s) => this.accept(s));
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
    for (const c of this.conns) c.sock.end();
    const deadline = Date.now() + graceMs;
    while (this.conns.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const c of this.conns) c.sock.destroy();
  }

  private accept(sock: Socket): void {
    const conn = new Connection(sock, this.dispatch, this.log, this.idleMs);
    sock.on('close', () => this.conns.delete(conn));
    if (this.conns.size >= MAX_CONNECTIONS) {
      let oldest: Connection | undefined;
      for (const c of this.conns) if (c.idle() && (!oldest || c.lastActive < oldest.lastActive)) oldest = c;
      if (!oldest) {
        this.log.warn({ open: this.conns.size }, 'refused a connection: every connection is busy');
        conn.refuse('busy', `daemon busy: all ${MAX_CONNECTIONS} connections are in use; try again later`);
        return;
      }
      this.conns.delete(oldest);
      oldest.sock.destroy();
    }
    this.conns.add(conn);
  }
}
