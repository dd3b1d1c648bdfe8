/**
 * Figures about a live child process read from /proc (Linux), for the benchmarks that
 * run the CLI as a separate process.
 */
import { readFileSync } from 'node:fs';

/** Peak resident set (VmHWM) of a live process in MB, or 0 once it is gone. */
export function vmHwmMB(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}
