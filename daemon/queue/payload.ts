/**
 * A queue job's data: what the daemon's `submit` put on the BullMQ job. Workers read it
 * back from Redis, where anyone with access to the database can write anything, so it is
 * checked exactly like a socket submit (daemon/submit.ts: known keys, types, absolute paths)
 * plus the limits the socket enforces on frames (size, nesting), before anything uses it.
 */
import type { SearchTuning } from '../../search/config';
import type { RunConfig } from '../../search/contract';
import { isJobId } from '../home';
import { MAX_DEPTH, MAX_FRAME, ProtocolError, describeValue, nestedDeeperThan } from '../protocol';
import { parseSubmitArgs } from '../submit';

export const PAYLOAD_VERSION = 1;

export interface QueuePayload {
  v: number;
  config: RunConfig;
  tuning?: Partial<SearchTuning>;
  /** SHA-256 of the model file(s) at submit: workers refuse a different file at the path. */
  modelHash: string;
  createdAt: string;
}

const KEYS = new Set(['v', 'config', 'tuning', 'modelHash', 'createdAt']);

function bad(message: string): never {
  throw new ProtocolError('bad-payload', message);
}

/** The job id BullMQ gave (ours are 8 hex digits; a job added by hand may have any). */
export function checkJobId(id: unknown): string {
  if (!isJobId(id)) bad(`job id ${describeValue(id)} is not an invarx job id (8 lowercase hex digits)`);
  return id;
}

/** Job data from Redis → a payload, or ProtocolError('bad-payload') naming what is wrong. */
export function parsePayload(data: unknown): QueuePayload {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) bad(`job data must be a map, got ${describeValue(data)}`);
  let size: number;
  try {
    size = Buffer.byteLength(JSON.stringify(data));
  } catch {
    bad('job data cannot be serialised');
  }
  if (size > MAX_FRAME) bad(`job data is ${size} bytes, over the ${MAX_FRAME}-byte limit of a request`);
  if (nestedDeeperThan(data, MAX_DEPTH)) bad(`job data is nested more than ${MAX_DEPTH} levels deep`);
  const d = data as Record<string, unknown>;
  for (const k of Object.keys(d)) if (!KEYS.has(k)) bad(`unknown job data key ${describeValue(k)}`);
  if (d.v !== PAYLOAD_VERSION) bad(`job data version ${describeValue(d.v)}, expected ${PAYLOAD_VERSION}`);
  if (typeof d.modelHash !== 'string' || !/^[0-9a-f]{64}$/.test(d.modelHash)) bad('job data modelHash must be a SHA-256 in hex');
  if (typeof d.createdAt !== 'string' || d.createdAt.length > 64 || Number.isNaN(Date.parse(d.createdAt))) bad('job data createdAt must be a date');
  let parsed;
  try {
    parsed = parseSubmitArgs({ config: d.config, ...(d.tuning !== undefined ? { tuning: d.tuning } : {}) });
  } catch (e) {
    if (e instanceof ProtocolError) bad(e.message);
    throw e;
  }
  return { v: PAYLOAD_VERSION, config: parsed.config, ...(parsed.tuning ? { tuning: parsed.tuning } : {}), modelHash: d.modelHash, createdAt: d.createdAt };
}
