/**
 * Operating-system errors (ENOSPC, EACCES, …) are the environment's doing, not bugs: they
 * become typed InvarxErrors with a one-line message that says what could not be done and
 * why, never a stack trace or an `internal` reply.
 */
import { InvarxError } from '../core/errors';

const KINDS: Record<string, [code: string, text: string]> = {
  ENOSPC: ['no-space', 'no space left on device'],
  EDQUOT: ['no-space', 'disk quota exceeded'],
  EFBIG: ['no-space', 'file too large for the file system'],
  EACCES: ['permission-denied', 'permission denied'],
  EPERM: ['permission-denied', 'operation not permitted'],
  EROFS: ['read-only', 'read-only file system'],
  EIO: ['io-error', 'input/output error'],
  EMFILE: ['too-many-files', 'too many open files'],
  ENFILE: ['too-many-files', 'too many open files in the system'],
  ENOENT: ['not-found', 'no such file or directory'],
  ENOTDIR: ['not-a-directory', 'a path component is not a directory'],
  EISDIR: ['is-a-directory', 'is a directory'],
  EEXIST: ['exists', 'already exists'],
  ENOTEMPTY: ['not-empty', 'directory not empty'],
  ELOOP: ['bad-path', 'too many levels of symbolic links'],
  ENAMETOOLONG: ['bad-path', 'file name too long'],
};

/** The errno code of an OS error (`ENOSPC`), or undefined for anything else. */
export function errnoCode(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) && typeof (e as NodeJS.ErrnoException).syscall === 'string' ? code : undefined;
}

/**
 * An OS error as an InvarxError: `${doing}: ${what went wrong} (CODE)`, with the path the
 * call was about when `doing` does not already say. Undefined if `e` is not an OS error.
 */
export function osError(e: unknown, doing?: string): InvarxError | undefined {
  const errno = errnoCode(e);
  if (!errno) return undefined;
  const err = e as NodeJS.ErrnoException;
  const [code, text] = KINDS[errno] ?? ['io-error', err.message.split(',')[0].replace(/^E[A-Z0-9]+: /, '')];
  const what = doing ?? `cannot ${err.syscall}${err.path ? ` ${err.path}` : ''}`;
  return new InvarxError(code, `${what}: ${text} (${errno})`);
}
