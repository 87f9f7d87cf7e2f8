/* governor.c - the oversubscription governor and the parallel regions of the CPU core
 * (internal.h, bl_region_*): every region asks here how many threads it may use, carries the
 * caller's floating-point mode into its threads, and reports how long it waited.
 *
 * When other processes keep the cores busy, a thread of the team gets descheduled and the join
 * waits for it: a 0.1 ms GEMV then took 6-8 ms with 2 threads against 0.1 ms with 1. A region whose
 * wall time is far above the CPU time its busiest thread got was waiting for the OS, so the next
 * regions run on one thread, for a window that doubles while the load lasts (up to 4096 regions)
 * and resets after a parallel region that runs clean. Every parallel region of the CPU core asks
 * and reports here (internal.h, bl_region_*): the GEMMs, weight and activation quantization,
 * unpacking, the decode-layout pack. Results never depend on the thread count (each output is
 * computed by exactly one thread, in the caller's floating-point mode). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, CLOCK_THREAD_CPUTIME_ID under -std=c11 */
#include "internal.h"

#include <time.h>

static int solo_calls;  /* regions left to run on one thread */
static int solo_window = 16;

static double wall_seconds(void) { return omp_get_wtime(); }

static double thread_cpu_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int take_solo_call(void) {
  int left = __atomic_load_n(&solo_calls, __ATOMIC_RELAXED);
  while (left > 0)
    if (__atomic_compare_exchange_n(&solo_calls, &left, left - 1, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
      return 1;
  return 0;
}

static void note_parallel_run(double wall, double busiest_cpu) {
  int window = __atomic_load_n(&solo_window, __ATOMIC_RELAXED);
  if (wall > 4.0 * busiest_cpu + 200e-6) { /* waited for a descheduled thread */
    __atomic_store_n(&solo_calls, window, __ATOMIC_RELAXED);
    __atomic_store_n(&solo_window, window < 4096 ? 2 * window : 4096, __ATOMIC_RELAXED);
  } else if (window != 16) {
    __atomic_store_n(&solo_window, 16, __ATOMIC_RELAXED);
  }
}

int bl_cpu_threads_now(int nthreads) {
  if (nthreads <= 1) return 1;
  return take_solo_call() ? 1 : nthreads;
}

int bl_region_begin(bl_region *r, int nt) {
  if (nt > 1 && take_solo_call()) nt = 1;
  r->nt = nt > 1 ? nt : 1;
  r->fp = 0;
  r->busiest = 0.0;
  r->t0 = 0.0;
  if (r->nt > 1) {
    r->fp = bl_fp_reg_get() & BL_FP_MODE_BITS;
    r->t0 = wall_seconds();
  }
  return r->nt;
}

void bl_region_enter(const bl_region *r, bl_region_thread *t) {
  if (r->nt == 1) return; /* the caller itself: nothing to switch, nothing to report */
  const unsigned long long cur = bl_fp_reg_get();
  t->saved = cur;
  if ((cur & BL_FP_MODE_BITS) != r->fp) bl_fp_reg_set((cur & ~BL_FP_MODE_BITS) | r->fp);
  t->c0 = thread_cpu_seconds();
}

void bl_region_leave(bl_region *r, const bl_region_thread *t) {
  if (r->nt == 1) return;
  const double c = thread_cpu_seconds() - t->c0;
  if ((t->saved & BL_FP_MODE_BITS) != r->fp) /* the thread's own mode; its status flags stay */
    bl_fp_reg_set((bl_fp_reg_get() & ~BL_FP_MODE_BITS) | (t->saved & BL_FP_MODE_BITS));
#pragma omp critical(bl_busiest)
  r->busiest = c > r->busiest ? c : r->busiest;
}

void bl_region_end(const bl_region *r) {
  if (r->nt > 1) note_parallel_run(wall_seconds() - r->t0, r->busiest);
}
