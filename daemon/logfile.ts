/**
 * The daemon's and each job's log file (pino JSON lines through sonic-boom), made so that a
 * log that cannot be written (full disk, read-only directory) never takes the daemon or a
 * job down: sonic-boom keeps unwritten lines in memory up to BUFFER_BYTES and drops newer
 * ones past that, one warning goes to stderr per outage, and the buffered lines are written
 * (with a note of how many were dropped) once writing works again.
 */
import pino, { type Logger } from 'pino';

/** Log lines held while the file cannot be written; newer lines are dropped past this. */
const BUFFER_BYTES = 1 << 20;

export interface LogFileOptions {
  /** Fields on every line (pid, job). */
  base: Record<string, unknown>;
  /** Prefix of the stderr warning, e.g. "invarx daemon". */
  who: string;
  /** Create the file's directory if needed. */
  mkdir?: boolean;
}

function codeOf(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return typeof err?.code === 'string' ? err.code : String(err?.message ?? e);
}

/**
 * A logger appending to `path`. If the file cannot even be opened, lines go to stderr
 * instead (after one warning), so the caller still starts.
 */
export function openLogFile(path: string, opts: LogFileOptions): Logger {
  let dest: ReturnType<typeof pino.destination>;
  try {
    dest = pino.destination({ dest: path, append: true, sync: true, mkdir: opts.mkdir ?? false, maxLength: BUFFER_BYTES });
  } catch (e) {
    process.stderr.write(`${opts.who}: cannot open ${path} (${codeOf(e)}); logging to stderr instead\n`);
    return pino({ base: opts.base }, pino.destination({ dest: 2, sync: true }));
  }
  let failing = false;
  let dropped = 0;
  let log: Logger | undefined;
  dest.on('error', (e: unknown) => {
    // sonic-boom keeps the unwritten bytes and retries them with the next line.
    if (failing) return;
    failing = true;
    process.stderr.write(`${opts.who}: cannot write ${path} (${codeOf(e)}); log lines are held in memory (up to ${BUFFER_BYTES >> 10} KiB, newer ones dropped) until it can be written\n`);
  });
  dest.on('drop', () => dropped++);
  dest.on('write', () => {
    if (!failing) return;
    failing = false;
    if (dropped > 0) {
      const n = dropped;
      dropped = 0;
      // After this write returns: logging from inside the stream's own callback would re-enter it.
      setImmediate(() => log?.warn({ dropped: n }, 'log lines were dropped while the log file could not be written'));
    }
  });
  log = pino({ base: opts.base }, dest);
  opened.set(log, dest);
  return log;
}

const opened = new WeakMap<Logger, ReturnType<typeof pino.destination>>();

/** Closes the file a logger from openLogFile writes (nothing for the stderr fallback), for a thread that outlives its job. */
export function closeLogFile(log: Logger): void {
  const dest = opened.get(log);
  opened.delete(log);
  dest?.end();
}
