/**
 * Where the daemon lives: one home directory per user holding the socket, daemon.log and
 * jobs/<id>/. The daemon and its clients resolve it the same way so `invarx submit` finds
 * the `invarx daemon` of the same user without configuration.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { fail } from '../core/errors';

/** `--home`, else $INVARX_HOME, else $XDG_RUNTIME_DIR/invarx, else ~/.invarx. */
export function resolveHome(option?: string): string {
  if (option) return resolve(option);
  const env = process.env;
  if (env.INVARX_HOME) return resolve(env.INVARX_HOME);
  if (env.XDG_RUNTIME_DIR) return join(resolve(env.XDG_RUNTIME_DIR), 'invarx');
  return join(homedir(), '.invarx');
}

/** sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS) including the NUL. */
const MAX_SOCKET_PATH = process.platform === 'linux' ? 107 : 103;

export function socketPath(home: string): string {
  const p = join(home, 'daemon.sock');
  if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
    fail('bad-home', `socket path ${p} is ${Buffer.byteLength(p)} bytes, over the ${MAX_SOCKET_PATH}-byte limit of Unix sockets; use a shorter --home`);
  }
  return p;
}

/**
 * Job ids are exactly what the daemon generates: 8 lowercase hex digits. A client's id is
 * checked against this before it is joined to any path, so `../x`, `a/b`, absolute paths
 * and NULs can never name anything outside jobs/.
 */
export const JOB_ID = /^[0-9a-f]{8}$/;

export function isJobId(v: unknown): v is string {
  return typeof v === 'string' && JOB_ID.test(v);
}

export function jobsDir(home: string): string {
  return join(home, 'jobs');
}

/** The directory of a job; `id` must already have passed isJobId. */
export function jobDir(home: string, id: string): string {
  if (!isJobId(id)) throw new Error(`jobDir called with an unchecked id ${JSON.stringify(id)}`);
  return join(home, 'jobs', id);
}
