/**
 * Benchmarks print figures, one JSON object per line on stdout (`npm run bench`), and
 * never pass or fail on time. Progress and notes go to stderr.
 */
export function emit(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/** A note for the person watching, kept off stdout so the JSON lines stay parseable. */
export function note(msg: string): void {
  process.stderr.write(`# ${msg}\n`);
}

/** Best (minimum) wall time in ms of `fn` over repetitions after one warm-up call: at least `minReps`, and more while under `budgetMs`. */
export function bestMs(fn: () => void, minReps = 5, budgetMs = 1500): { ms: number; reps: number } {
  fn();
  let best = Infinity;
  let reps = 0;
  const start = performance.now();
  while (reps < minReps || performance.now() - start < budgetMs) {
    const t0 = performance.now();
    fn();
    best = Math.min(best, performance.now() - t0);
    reps++;
    if (reps >= 200) break;
  }
  return { ms: best, reps };
}

/** One module of `npm run bench`: bench/index.ts runs each listed module in turn. */
export interface BenchModule {
  /** Name to select it: `node dist/bench.js <name> …`. */
  name: string;
  /** Long-running: skipped by a plain `npm run bench`, run when named. */
  byNameOnly?: boolean;
  run(): Promise<void> | void;
}
