/**
 * Redis connections of the queue mode. BullMQ makes its own from the same options; ours
 * (checkpoints, control flags) wait through a Redis restart instead of failing
 * (maxRetriesPerRequest: null), as BullMQ's workers do.
 */
import { Redis } from 'ioredis';
import { InvarxError } from '../../core/errors';
import { redact, type QueueUrl, type RedisTarget } from './redisUrl';

/** Options for BullMQ's `connection` and for ioredis. */
export function connectionOptions(target: RedisTarget) {
  return { ...target, maxRetriesPerRequest: null };
}

export function openRedis(url: QueueUrl): Redis {
  const r = new Redis(connectionOptions(url.target));
  // Reconnection is ioredis's; an error event without a listener would crash the process.
  r.on('error', () => undefined);
  return r;
}

/** Connects once and pings, so a wrong address or password is one clear line at start (without the password). */
export async function probeRedis(url: QueueUrl, timeoutMs = 5000): Promise<void> {
  const r = new Redis({ ...url.target, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: timeoutMs, enableOfflineQueue: false });
  // The reason (WRONGPASS, ECONNREFUSED) comes as an error event; connect() itself may only say the connection closed.
  let first: Error | undefined;
  r.on('error', (e: Error) => (first ??= e));
  try {
    await r.connect();
    await r.ping();
  } catch (e) {
    const why = String((first ?? (e as Error))?.message ?? e);
    throw new InvarxError('redis-unreachable', `cannot use Redis at ${url.display}: ${redact(why, url.target)}`);
  } finally {
    r.disconnect();
  }
}
