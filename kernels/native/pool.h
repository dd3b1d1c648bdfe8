/*
 * The addon's thread pool: one per JS thread that loads the addon (N-API instance data), so
 * the search's worker threads never share one. pool_run hands task t (t ≥ 1) to helper t,
 * runs task 0 itself and waits for the helpers.
 */
#ifndef INVARX_POOL_H
#define INVARX_POOL_H
#include <stddef.h>

#define MAX_THREADS 64

typedef struct Pool Pool;
typedef void (*Task)(void *arg);

Pool *pool_new(void);
void pool_free(Pool *pool);
/* The threads a call over `units` independent units takes: `threads` within [1, MAX_THREADS], at most one a unit (0: no units). */
static inline size_t pool_threads(size_t threads, size_t units) {
  size_t T = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
  return T > units ? units : T;
}

/* Runs task(args + t·stride) for t < T, on up to T threads (here where the system refuses one). */
void pool_run(Pool *pool, Task task, void *args, size_t stride, size_t T);

#endif
