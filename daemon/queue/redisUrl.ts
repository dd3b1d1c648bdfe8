/**
 * `--queue redis://[user][:password@]host[:port][/db]` (or `rediss://` for TLS) → the
 * connection options BullMQ and ioredis take, and a form of the URL safe to print: the
 * password never reaches a log line, an error message or the process title.
 */
import { fail } from '../../core/errors';

export interface RedisTarget {
  host: string;
  port: number;
  db: number;
  username?: string;
  password?: string;
  /** rediss://: TLS with the system's CAs (ioredis's `tls` option). */
  tls?: Record<string, never>;
}

export interface QueueUrl {
  target: RedisTarget;
  /** The URL with any password replaced by `***`. */
  display: string;
}

export function parseQueueUrl(raw: string): QueueUrl {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    // The raw text may hold a password: not echoed.
    fail('bad-queue-url', '--queue must be a URL such as redis://127.0.0.1:6379/0 (or rediss:// for TLS)');
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') fail('bad-queue-url', `--queue must start with redis:// or rediss://, got ${u.protocol}//`);
  if (!u.hostname) fail('bad-queue-url', '--queue names no host');
  const port = u.port ? Number(u.port) : 6379;
  const dbText = u.pathname.replace(/^\//, '');
  const db = dbText === '' ? 0 : Number(dbText);
  if (!/^\d*$/.test(dbText) || !Number.isInteger(db) || db > 1_000_000) fail('bad-queue-url', `--queue database must be a number (redis://host:port/DB), got "${dbText}"`);
  const password = u.password ? decodeURIComponent(u.password) : undefined;
  const username = u.username ? decodeURIComponent(u.username) : undefined;
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const target: RedisTarget = { host, port, db, ...(username ? { username } : {}), ...(password ? { password } : {}), ...(u.protocol === 'rediss:' ? { tls: {} } : {}) };
  const auth = username || password ? `${username ?? ''}${password ? ':***' : ''}@` : '';
  return { target, display: `${u.protocol}//${auth}${u.host}/${db}` };
}

/** Removes the password from a message that might quote it (a driver error that echoes its options). */
export function redact(message: string, target: RedisTarget): string {
  return target.password ? message.split(target.password).join('***') : message;
}
