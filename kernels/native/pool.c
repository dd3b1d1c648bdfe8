/*
 * A call hands each helper its task, runs task 0 itself, and waits for the helpers: a short
 * spin (the next product often follows at once), then the condition variable. Creating
 * threads per call cost ~5% of a decode step.
 */
#include "pool.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

typedef struct {
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  Task task;
  void *arg;
  unsigned long gen, done;
  int quit;
} Helper;

struct Pool {
  Helper h[MAX_THREADS];
  size_t started;
};

static void *helper_main(void *p) {
  Helper *h = p;
  unsigned long seen = 0;
  for (;;) {
    pthread_mutex_lock(&h->mu);
    while (h->gen == seen && !h->quit) pthread_cond_wait(&h->cv, &h->mu);
    if (h->quit) {
      pthread_mutex_unlock(&h->mu);
      return NULL;
    }
    seen = h->gen;
    Task task = h->task;
    void *arg = h->arg;
    pthread_mutex_unlock(&h->mu);
    task(arg);
    pthread_mutex_lock(&h->mu);
    h->done = seen;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
  }
}

Pool *pool_new(void) { return calloc(1, sizeof(Pool)); }

/* Helpers 1..want-1 running (fewer if the system refuses threads); returns how many run. */
static size_t pool_grow(Pool *pool, size_t want) {
  while (pool->started + 1 < want) {
    Helper *h = &pool->h[pool->started + 1];
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    if (pthread_create(&h->th, NULL, helper_main, h) != 0) break;
    pool->started++;
  }
  return pool->started + 1;
}

void pool_free(Pool *pool) {
  for (size_t t = 1; t <= pool->started; t++) {
    Helper *h = &pool->h[t];
    pthread_mutex_lock(&h->mu);
    h->quit = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->th, NULL);
  }
  free(pool);
}

void pool_run(Pool *pool, Task task, void *args, size_t stride, size_t T) {
  char *a = args;
  if (T > MAX_THREADS) T = MAX_THREADS;
  size_t have = pool_grow(pool, T);
  for (size_t t = 1; t < T && t < have; t++) {
    Helper *h = &pool->h[t];
    pthread_mutex_lock(&h->mu);
    h->task = task;
    h->arg = a + t * stride;
    h->gen++;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
  }
  task(a);
  for (size_t t = have; t < T; t++) task(a + t * stride); /* helpers the system refused: here */
  for (size_t t = 1; t < T && t < have; t++) {
    Helper *h = &pool->h[t];
    for (int spin = 0; spin < 2000 && __atomic_load_n(&h->done, __ATOMIC_ACQUIRE) != h->gen; spin++) cpu_relax();
    pthread_mutex_lock(&h->mu);
    while (h->done != h->gen) pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
  }
}
