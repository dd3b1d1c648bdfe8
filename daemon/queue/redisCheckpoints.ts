/**
 * A queue job's checkpoints in Redis: a list under checkpointKey(id), newest first, of the
 * same bytes a checkpoint file holds (daemon/checkpoint.ts: msgpackr envelope with the
 * payload's SHA-256). The last two are kept, so a newest one that fails its checksum falls
 * back to the previous one, as on disk.
 *
 * A write is fenced by the job's BullMQ lock: it lands only while the lock still holds the
 * writer's token, in one Lua script, so a worker that lost the job (partitioned, or too
 * slow to renew) can never overwrite the checkpoint of the worker that now runs it.
 */
import type { Redis } from 'ioredis';
import { checkpointKey } from './settings';

const KEEP = 2;

const FENCED_PUSH = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, ${KEEP - 1})
return 1`;

/** The job's checkpoints, newest first (raw bytes; checked by whoever decodes them). */
export function loadCheckpoints(redis: Redis, id: string): Promise<Buffer[]> {
  return redis.lrangeBuffer(checkpointKey(id), 0, -1);
}

/** Pushes a new newest checkpoint if `lockKey` still holds `token`; false when the lock is someone else's (or gone). */
export async function pushCheckpoint(redis: Redis, id: string, lockKey: string, token: string, bytes: Uint8Array): Promise<boolean> {
  const r = await redis.eval(FENCED_PUSH, 2, lockKey, checkpointKey(id), token, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  return r === 1;
}

/** Removes a checkpoint that failed to load, so it no longer counts among the last two. */
export async function dropCheckpoint(redis: Redis, id: string, bytes: Uint8Array): Promise<void> {
  await redis.lrem(checkpointKey(id), 1, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}
