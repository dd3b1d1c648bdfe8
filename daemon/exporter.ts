/**
 * `export JOB --out DIR`: copies a finished job's export (jobs/<id>/export/) to a directory
 * of the user's.
 *
 * - DIR must be new, an empty directory, or (with `force`) a directory whose same-named
 *   entries are replaced; anything else (a file, /dev/null) is refused with one message.
 * - The copy is built in a fresh directory beside the entries (DIR/.invarx-export-XXXXXX,
 *   made by mkdtemp, so nothing planted there is followed) and each entry is renamed into
 *   place: an existing one is moved aside first (a planted symlink is moved as the link
 *   itself; its target is never written), or for a file kept by a hard link, and restored
 *   if anything fails. So a failed export (full disk) leaves DIR as it was.
 * - Files get the modes `invarx run --out` gives them: 0666 and 0777 less the client's umask.
 * - Never inside the daemon's home.
 */
import { chmod, copyFile, link, lstat, mkdir, mkdtemp, readdir, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { osError } from './oserror';
import { ProtocolError } from './protocol';

export interface ExportOptions {
  /** Replace same-named entries of a non-empty directory. */
  force: boolean;
  /** The client's umask, for the modes of what is written. */
  umask: number;
}

const bad = (message: string) => new ProtocolError('bad-args', message);

const errnoOf = (e: unknown) => (e as NodeJS.ErrnoException).code;

/** realpath of the longest existing prefix of `p`, with the rest appended. */
async function realpathOfPrefix(p: string): Promise<string> {
  const rest: string[] = [];
  for (let cur = resolve(p); ; cur = dirname(cur)) {
    try {
      return join(await realpath(cur), ...rest.reverse());
    } catch {
      if (dirname(cur) === cur) return resolve(p);
      rest.push(basename(cur));
    }
  }
}

/** Creates `dir` and missing parents with directory mode `mode` (the daemon's own umask is stricter). */
async function mkdirs(dir: string, mode: number): Promise<void> {
  const first = await mkdir(dir, { recursive: true });
  if (!first) return;
  for (let d = dir; ; d = dirname(d)) {
    await chmod(d, mode);
    if (d === first || dirname(d) === d) break;
  }
}

/** Copies the tree at `src` (the daemon's own export: files and directories only) to the new path `dst`. */
async function copyTree(src: string, dst: string, fileMode: number, dirMode: number): Promise<void> {
  const st = await lstat(src);
  if (st.isDirectory()) {
    await mkdir(dst);
    for (const name of await readdir(src)) await copyTree(join(src, name), join(dst, name), fileMode, dirMode);
    await chmod(dst, dirMode);
  } else if (st.isFile()) {
    // COPYFILE_EXCL: dst is inside a directory made just now; never write through anything found there.
    await copyFile(src, dst, 1);
    await chmod(dst, fileMode);
  }
}

/** Copies the export at `src` into `out`; returns the real path written and the entries. */
export async function exportTo(src: string, home: string, out: string, opts: ExportOptions): Promise<{ out: string; files: string[] }> {
  // Checked before anything is created; again after, as a symlink may have been followed.
  const realHome = await realpath(home);
  const inHome = (p: string) => p === realHome || p.startsWith(realHome + sep);
  const refuseHome = () => bad(`--out ${out} is inside the daemon's home ${home}; choose a directory outside it`);
  if (inHome(await realpathOfPrefix(out))) throw refuseHome();
  const fileMode = 0o666 & ~opts.umask;
  const dirMode = 0o777 & ~opts.umask;

  let st;
  try {
    st = await stat(out);
  } catch (e) {
    if (errnoOf(e) !== 'ENOENT') throw osError(e, `cannot use --out ${out}`) ?? e;
  }
  if (st && !st.isDirectory()) throw bad(`--out ${out} exists and is not a directory; choose a new or empty directory`);
  try {
    if (!st) await mkdirs(out, dirMode);
  } catch (e) {
    throw osError(e, `cannot create --out ${out}`) ?? e;
  }
  const realOut = await realpath(out);
  if (inHome(realOut)) throw refuseHome();
  const existing = await readdir(realOut);
  if (existing.length > 0 && !opts.force) {
    throw bad(`--out ${out} is not empty (${existing.length} entr${existing.length === 1 ? 'y' : 'ies'}); choose a new or empty directory, or pass --force to replace the export's files in it`);
  }

  const files = (await readdir(src)).sort();
  let staging: string | undefined;
  /** Entries moved aside (old → aside) and new entries placed, for undoing a failure. */
  const asides: [string, string][] = [];
  const placed: string[] = [];
  try {
    staging = await mkdtemp(join(realOut, '.invarx-export-'));
    const fresh = join(staging, 'new');
    const old = join(staging, 'old');
    await mkdir(fresh);
    await mkdir(old);
    for (const f of files) await copyTree(join(src, f), join(fresh, f), fileMode, dirMode);
    for (const f of files) {
      const target = join(realOut, f);
      const was = await lstat(target).catch(() => undefined);
      const isDir = (await lstat(join(fresh, f))).isDirectory();
      // A file over a file (or symlink) is one atomic rename, with the old one kept by a hard
      // link for undoing; anything else is moved aside first.
      if (was && (isDir || was.isDirectory())) {
        await rename(target, join(old, f));
        asides.push([target, join(old, f)]);
      } else if (was) {
        if (await link(target, join(old, f)).then(() => true, () => false)) asides.push([target, join(old, f)]);
      }
      await rename(join(fresh, f), target);
      placed.push(target);
    }
  } catch (e) {
    for (const p of placed.reverse()) await rm(p, { recursive: true, force: true }).catch(() => undefined);
    for (const [target, aside] of asides.reverse()) await rename(aside, target).catch(() => undefined);
    if (staging) await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    throw osError(e, `cannot write the export to ${out}`) ?? e;
  }
  // What was replaced (a planted symlink is removed as the link itself).
  await rm(staging, { recursive: true, force: true });
  return { out: realOut, files };
}
