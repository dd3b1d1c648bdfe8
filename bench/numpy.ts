/**
 * The NumPy/OpenBLAS fp32 baseline, measured in the same run as our kernels: a
 * `python3 -c` child per shape and thread count (OPENBLAS_NUM_THREADS), timing
 * a @ b.T for a [M, K], b [N, K] — the same y = x·wᵀ layout as Backend.matmulT.
 */
import { spawnSync } from 'node:child_process';

const SCRIPT = String.raw`
import json, sys, time
try:
    import numpy as np
except Exception as e:
    print(json.dumps({"available": False, "reason": "numpy import failed: %s" % e}))
    sys.exit(0)
M, K, N, budget = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
blas = "unknown"
try:
    dep = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    blas = "%s %s" % (dep.get("name"), dep.get("version"))
except Exception:
    pass
rng = np.random.default_rng(0)
a = rng.standard_normal((M, K), dtype=np.float32)
b = rng.standard_normal((N, K), dtype=np.float32)
c = a @ b.T
best, reps, start = float("inf"), 0, time.perf_counter()
while reps < 5 or (time.perf_counter() - start < budget and reps < 200):
    t = time.perf_counter()
    c = a @ b.T
    best = min(best, time.perf_counter() - t)
    reps += 1
print(json.dumps({"available": True, "numpy": np.__version__, "blas": blas, "best_ms": best * 1e3, "reps": reps}))
`;

export type NumpyResult =
  | { available: true; numpy: string; blas: string; best_ms: number; reps: number }
  | { available: false; reason: string };

/** Best time of numpy's fp32 a @ b.T on `threads` BLAS threads; never throws. */
export function numpyMatmul(M: number, K: number, N: number, threads: number, budgetS = 1.5): NumpyResult {
  const t = String(threads);
  const r = spawnSync('python3', ['-c', SCRIPT, String(M), String(K), String(N), String(budgetS)], {
    encoding: 'utf8',
    env: { ...process.env, OPENBLAS_NUM_THREADS: t, OMP_NUM_THREADS: t, MKL_NUM_THREADS: t },
    timeout: 120_000,
  });
  if (r.error) return { available: false, reason: `python3 did not run (${r.error.message})` };
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as NumpyResult;
  } catch {
    return { available: false, reason: `python3 exited ${r.status}: ${(r.stderr || line).trim().split('\n').pop()}` };
  }
}
