/**
 * How a queue worker's V8 collects garbage. A worker runs one job per core it is given
 * (`--concurrency`), usually beside other workers, so every core is some job's. V8's default
 * collector spreads each heap's marking, scavenging, compaction and sweeping over helper
 * threads on all cores: CPU taken from the other jobs. Measured on the 2-core machine
 * (stories260K search jobs of 5 s), the helpers cost a job about 11% more CPU in all, for
 * a few percent less wall time when it runs alone; a sweep is paced by CPU, so by default
 * the worker collects each heap on the thread that owns it.
 *
 * These are V8 flags that may change after start-up (V8 reads them when a collection
 * starts; `--no-parallel-marking` is not one of them: V8 aborts). They must be set before
 * the job threads start, whose heaps then never use helper threads.
 */
import { setFlagsFromString } from 'node:v8';

const OWN_THREAD_GC = ['--no-concurrent-marking', '--no-parallel-scavenge', '--no-parallel-compaction', '--no-parallel-pointer-update', '--no-concurrent-sweeping'];

export function collectOnOwnThread(): void {
  for (const f of OWN_THREAD_GC) setFlagsFromString(f);
}
