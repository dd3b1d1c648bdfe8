/**
 * The export of a finished queue job, written by the daemon that is asked for it. The
 * export is a pure function of (model, config, seed); the finished job's final checkpoint
 * in Redis holds its accepted moves (the transforms) and PRNG state, so the daemon runs the
 * runner once more from that checkpoint, in a thread (daemon/queue/jobThread.ts): it replays
 * the accepted moves and then writes export/ and report.json
 * exactly as a local job does. The bytes are those of `invarx run --out` with the same
 * options, wherever the search ran. The result is kept under <home>/queue-jobs/<id>/.
 *
 * As a check, the rebuilt report must agree with the one the worker recorded.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { InvarxError } from '../../core/errors';
import { startJobThread } from './jobThread';
import type { QueuePayload } from './payload';
import type { QueueResult } from './progress';

export function queueJobDir(home: string, id: string): string {
  return join(home, 'queue-jobs', id);
}

/** Writes <home>/queue-jobs/<id>/export unless it is there; returns its path. */
export async function buildExport(script: string, home: string, id: string, payload: QueuePayload, checkpoints: Uint8Array[], recorded: QueueResult | null): Promise<string> {
  const dir = queueJobDir(home, id);
  const exportDir = join(dir, 'export');
  if (existsSync(exportDir)) return exportDir;
  const thread = startJobThread(
    script,
    {
      init: { id, jobDir: dir, config: payload.config, tuning: payload.tuning, checkpointSteps: 0, checkpointSeconds: 0, modelHash: payload.modelHash },
      checkpoints,
      results: 'files',
    },
    // The final checkpoint stays the one in Redis: nothing of this replay is stored.
    { onMessage: () => undefined, saveCheckpoint: async () => undefined, discardCheckpoint: () => undefined },
  );
  const out = await thread.outcome;
  if (out.kind !== 'done') {
    const why = out.kind === 'failed' ? out.error.message : `stopped (${out.reason})`;
    throw new InvarxError(out.kind === 'failed' ? out.error.code : 'export-failed', `cannot write the export of job ${id}: ${why}`);
  }
  if (recorded) {
    const rebuilt = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8')) as QueueResult['report'];
    const a = recorded.report;
    if (rebuilt.steps !== a.steps || rebuilt.accepted !== a.accepted || rebuilt.searched?.ppl !== a.searched?.ppl) {
      rmSync(exportDir, { recursive: true, force: true });
      throw new InvarxError('export-mismatch', `job ${id}: the rebuilt search (${rebuilt.steps} steps, ${rebuilt.accepted} accepted) differs from what its worker reported (${a.steps}, ${a.accepted}); the export is not written`);
    }
  }
  return exportDir;
}
