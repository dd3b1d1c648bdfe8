/**
 * A small disk for a daemon's home: a 2 MiB (or `size`) tmpfs where one can be mounted (root, Linux),
 * else a directory whose writes the daemon process sees fail through test/daemon/faults.mjs
 * (INVARX_TEST_NO_TMPFS=1 forces that fallback). `fill()` makes it full, `free()` gives the
 * space back, `readOnly(dir)` (injected faults only) makes a directory refuse writes.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { ROOT } from '../helpers';
import { DaemonProc } from './harness';

const FAULTS = join(ROOT, 'test', 'daemon', 'faults.mjs');

function tryMountTmpfs(dir: string, size: string): boolean {
  if (process.platform !== 'linux' || process.env.INVARX_TEST_NO_TMPFS === '1') return false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export class SmallDisk {
  /** The daemon's home, on the small disk (short: socket paths are limited). */
  readonly home: string;
  private readonly ctl: string;

  private constructor(
    readonly root: string,
    readonly mode: 'tmpfs' | 'injected',
  ) {
    this.home = join(root, 'h');
    this.ctl = `${root}.ctl`;
    mkdirSync(this.home, { mode: 0o700 });
    mkdirSync(this.ctl);
  }

  /** `injected` forces the fault-injection mode (readOnly needs it); `size` is the tmpfs size (default 2m). */
  static create(opts: { injected?: boolean; size?: string } = {}): SmallDisk {
    const root = mkdtempSync(join(tmpdir(), 'ixs-'));
    const mounted = !opts.injected && tryMountTmpfs(root, opts.size ?? '2m');
    return new SmallDisk(root, mounted ? 'tmpfs' : 'injected');
  }

  /** Node options and environment for the daemon process. */
  get nodeArgs(): string[] {
    return this.mode === 'injected' ? ['--import', FAULTS] : [];
  }

  get env(): Record<string, string> {
    return this.mode === 'injected' ? { IXT_FAULT_ROOT: this.root, IXT_FAULT_CTL: this.ctl } : {};
  }

  /** No room for one more byte of file data. */
  fill(): void {
    if (this.mode === 'injected') {
      writeFileSync(join(this.ctl, 'full'), '');
      return;
    }
    // tmpfs counts whole pages: first use up the last page of the files that are appended to
    // (a log line fitting there would otherwise still succeed), then the free pages.
    const page = 4096;
    for (const log of [join(this.home, 'daemon.log')]) {
      if (!existsSync(log)) continue;
      const r = (page - (statSync(log).size % page)) % page;
      if (r > 0) writeFileSync(log, r >= 16 ? `{"pad":"${'x'.repeat(r - 11)}"}\n` : '\n'.repeat(r), { flag: 'a' });
    }
    const fd = openSync(join(this.root, 'filler'), 'a');
    const chunk = Buffer.alloc(page);
    try {
      for (;;) writeSync(fd, chunk);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
    } finally {
      closeSync(fd);
    }
  }

  free(): void {
    rmSync(join(this.ctl, 'full'), { force: true });
    rmSync(join(this.root, 'filler'), { force: true });
  }

  /** Writes under `dir` fail with EACCES (injected mode only: root ignores permissions). */
  readOnly(dir: string): void {
    if (this.mode !== 'injected') throw new Error('readOnly needs SmallDisk.create({ injected: true })');
    writeFileSync(join(this.ctl, 'readonly'), `${dir}\n`, { flag: 'a' });
  }

  writable(): void {
    rmSync(join(this.ctl, 'readonly'), { force: true });
  }

  /** Unmounts and removes everything (the daemons using it must be stopped first). */
  dispose(): void {
    if (this.mode === 'tmpfs') {
      try {
        execFileSync('umount', ['-l', this.root], { stdio: 'ignore' });
      } catch {
        /* left mounted: nothing more to do */
      }
    }
    rmSync(this.root, { recursive: true, force: true });
    rmSync(this.ctl, { recursive: true, force: true });
  }
}

/**
 * Small disks for one test file and daemons started on them (checkpoint every 5 steps):
 * after the file, every daemon still alive is killed and every disk disposed.
 */
export function smallDiskDaemons(): { disk(opts?: { injected?: boolean; size?: string }): SmallDisk; start(disk: SmallDisk): Promise<DaemonProc> } {
  const daemons: DaemonProc[] = [];
  const disks: SmallDisk[] = [];
  afterAll(async () => {
    for (const d of daemons) if (d.alive()) await d.kill('SIGKILL');
    for (const disk of disks) disk.dispose();
  });
  return {
    disk(opts) {
      const disk = SmallDisk.create(opts);
      disks.push(disk);
      return disk;
    },
    async start(disk) {
      const d = await DaemonProc.start(disk.home, ['--checkpoint-steps', '5'], disk);
      daemons.push(d);
      return d;
    },
  };
}
