// Preloaded (node --import) into a daemon under test where no tmpfs can be mounted: makes
// node:fs fail as a full or read-only file system would, for paths under $IXT_FAULT_ROOT,
// while control files in $IXT_FAULT_CTL say so:
//   full       every write of data under the root fails with ENOSPC (creating files works,
//              as on a full tmpfs)
//   readonly   one path prefix per line: creating, writing, renaming or removing there fails
//              with EACCES
// Worker threads inherit --import, so job threads see the same faults. Only what the daemon
// does through node:fs's public functions is affected (ESM named imports are re-synced).
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join, resolve, sep } from 'node:path';

const root = process.env.IXT_FAULT_ROOT && resolve(process.env.IXT_FAULT_ROOT);
const ctl = process.env.IXT_FAULT_CTL;

if (root && ctl) {
  const real = {};
  for (const k of ['openSync', 'writeSync', 'writeFileSync', 'appendFileSync', 'copyFileSync', 'renameSync', 'mkdirSync', 'unlinkSync', 'rmSync', 'open', 'write', 'writeFile', 'copyFile']) real[k] = fs[k];
  const realP = { open: fs.promises.open, writeFile: fs.promises.writeFile, appendFile: fs.promises.appendFile, copyFile: fs.promises.copyFile, mkdir: fs.promises.mkdir, rename: fs.promises.rename };
  const fdPath = new Map();

  const under = (p, dir) => p === dir || p.startsWith(dir.endsWith(sep) ? dir : dir + sep);
  const abs = (p) => (typeof p === 'string' ? resolve(p) : p instanceof URL ? resolve(p.pathname) : Buffer.isBuffer(p) ? resolve(p.toString()) : undefined);
  const isFull = () => fs.existsSync(join(ctl, 'full'));
  const readonlyDirs = () => {
    try {
      return fs.readFileSync(join(ctl, 'readonly'), 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => resolve(l.trim()));
    } catch {
      return [];
    }
  };
  const err = (code, syscall, p) => {
    const text = code === 'ENOSPC' ? 'no space left on device' : 'permission denied';
    return Object.assign(new Error(`${code}: ${text}, ${syscall}${p ? ` '${p}'` : ''}`), { code, errno: code === 'ENOSPC' ? -28 : -13, syscall, ...(p ? { path: p } : {}) });
  };
  /** The fault for writing data to path p, if any. */
  const dataFault = (p, syscall) => {
    if (!p || !under(p, root)) return undefined;
    if (readonlyDirs().some((d) => under(p, d))) return err('EACCES', syscall, p);
    if (isFull()) return err('ENOSPC', syscall, p);
    return undefined;
  };
  /** The fault for changing directory entries at p (create, rename, remove), if any. */
  const entryFault = (p, syscall) => (p && under(p, root) && readonlyDirs().some((d) => under(p, d)) ? err('EACCES', syscall, p) : undefined);
  const writesData = (flags) => flags !== undefined && flags !== 'r' && flags !== 'rs' && flags !== fs.constants.O_RDONLY;
  const dataOf = (d) => (typeof d === 'string' ? Buffer.byteLength(d) : d?.byteLength ?? 0);

  fs.openSync = function (p, flags, ...rest) {
    const a = abs(p);
    if (writesData(flags)) {
      const f = entryFault(a, 'open');
      if (f) throw f;
    }
    const fd = real.openSync.call(this, p, flags, ...rest);
    if (a && writesData(flags)) fdPath.set(fd, a);
    else fdPath.delete(fd);
    return fd;
  };
  fs.open = function (p, flags, ...rest) {
    const cb = rest.pop();
    const a = abs(p);
    const f = typeof flags === 'function' ? undefined : writesData(flags) ? entryFault(a, 'open') : undefined;
    if (f) return process.nextTick(cb, f);
    return real.open.call(this, p, flags, ...rest, (e, fd) => {
      if (!e && a && typeof flags !== 'function' && writesData(flags)) fdPath.set(fd, a);
      cb(e, fd);
    });
  };
  fs.writeSync = function (fd, data, ...rest) {
    const f = dataOf(data) > 0 ? dataFault(fdPath.get(fd), 'write') : undefined;
    if (f) throw f;
    return real.writeSync.call(this, fd, data, ...rest);
  };
  fs.write = function (fd, data, ...rest) {
    const f = dataOf(data) > 0 ? dataFault(fdPath.get(fd), 'write') : undefined;
    if (f) return process.nextTick(rest.pop(), f);
    return real.write.call(this, fd, data, ...rest);
  };
  const pathWriter = (name, syscall) =>
    function (p, data, ...rest) {
      const a = typeof p === 'number' ? fdPath.get(p) : abs(p);
      const f = entryFault(a, syscall) ?? (dataOf(data) > 0 ? dataFault(a, syscall) : undefined);
      if (f) throw f;
      return real[name].call(this, p, data, ...rest);
    };
  fs.writeFileSync = pathWriter('writeFileSync', 'open');
  fs.appendFileSync = pathWriter('appendFileSync', 'open');
  fs.copyFileSync = function (src, dst, ...rest) {
    const a = abs(dst);
    const f = entryFault(a, 'copyfile') ?? dataFault(a, 'copyfile');
    if (f) throw f;
    return real.copyFileSync.call(this, src, dst, ...rest);
  };
  fs.renameSync = function (from, to) {
    const f = entryFault(abs(from), 'rename') ?? entryFault(abs(to), 'rename');
    if (f) throw f;
    return real.renameSync.call(this, from, to);
  };
  fs.mkdirSync = function (p, ...rest) {
    const a = abs(p);
    if (a && !fs.existsSync(a)) {
      const f = entryFault(a, 'mkdir');
      if (f) throw f;
    }
    return real.mkdirSync.call(this, p, ...rest);
  };
  fs.unlinkSync = function (p) {
    const f = entryFault(abs(p), 'unlink');
    if (f) throw f;
    return real.unlinkSync.call(this, p);
  };
  fs.rmSync = function (p, ...rest) {
    const f = fs.existsSync(p) ? entryFault(abs(p), 'rm') : undefined;
    if (f) throw f;
    return real.rmSync.call(this, p, ...rest);
  };
  fs.promises.open = async function (p, flags, ...rest) {
    const a = abs(p);
    if (writesData(flags)) {
      const f = entryFault(a, 'open');
      if (f) throw f;
    }
    const h = await realP.open.call(this, p, flags, ...rest);
    if (a && writesData(flags)) {
      const w = h.write.bind(h);
      h.write = async (data, ...r) => {
        const f = dataOf(data) > 0 ? dataFault(a, 'write') : undefined;
        if (f) throw f;
        return w(data, ...r);
      };
    }
    return h;
  };
  const asyncWriter = (name, syscall) =>
    async function (p, data, ...rest) {
      const a = abs(p);
      const f = entryFault(a, syscall) ?? (dataOf(data) > 0 ? dataFault(a, syscall) : undefined);
      if (f) throw f;
      return realP[name].call(this, p, data, ...rest);
    };
  fs.promises.writeFile = asyncWriter('writeFile', 'open');
  fs.promises.appendFile = asyncWriter('appendFile', 'open');
  fs.promises.copyFile = async function (src, dst, ...rest) {
    const a = abs(dst);
    const f = entryFault(a, 'copyfile') ?? dataFault(a, 'copyfile');
    if (f) throw f;
    return realP.copyFile.call(this, src, dst, ...rest);
  };
  fs.promises.mkdir = async function (p, ...rest) {
    const a = abs(p);
    const f = a && !fs.existsSync(a) ? entryFault(a, 'mkdir') : undefined;
    if (f) throw f;
    return realP.mkdir.call(this, p, ...rest);
  };
  fs.promises.rename = async function (from, to) {
    const f = entryFault(abs(from), 'rename') ?? entryFault(abs(to), 'rename');
    if (f) throw f;
    return realP.rename.call(this, from, to);
  };
  syncBuiltinESMExports();
}
