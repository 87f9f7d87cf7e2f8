/* peak.c - hardware limits for the benchmark suite, compiled at run time by profile/hw.py with `cc`
 * and loaded with ctypes. Plain pthreads (no OpenMP, so it cannot clash with torch's runtime).
 *   bl_peak_int8(kind, threads, iters) -> seconds for iters steps of 12 independent int8
 *     dot-product chains per thread (kind 0: AVX2 vpmaddubsw+vpmaddwd+vpaddd on ymm,
 *     1: AVX-VNNI vpdpbusd ymm, 2: AVX-512 VNNI vpdpbusd zmm, 3: portable C)
 *   bl_peak_has_vnni() -> 1 if kinds 1 and 2 were compiled in
 *   bl_peak_last_cpu_rate: the same run from each thread's CPU time (see below)
 *   bl_peak_ops_per_step(kind) -> int8 ops (2 per multiply-add) of one step of one chain
 *   bl_read_bw(bytes, threads, reps) -> best seconds to sum a fresh `bytes`-byte buffer once */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define CHAINS 12

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

volatile int64_t bl_peak_sink;
/* sum over threads of iterations per second of each thread's own CPU time, from the last
 * bl_peak_int8 (robust to other processes taking a core; not to SMT siblings) */
double bl_peak_last_cpu_rate;

static double thread_cpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static void loop_avx2(long iters) {
  __m256i acc[CHAINS];
  const __m256i b = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1), c = _mm256_set1_epi32(1);
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_epi8((char)(i + 1));
  for (long it = 0; it < iters; it++)
    for (int i = 0; i < CHAINS; i++) /* u8 x s8 pairs -> int16, pairs -> int32, accumulate */
      acc[i] = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(acc[i], b), one), c);
  int64_t s = 0;
  for (int i = 0; i < CHAINS; i++) s += _mm256_extract_epi32(acc[i], 0);
  bl_peak_sink = s;
}

#ifndef BL_NO_VNNI
__attribute__((target("avx2,avxvnni"))) static void loop_avxvnni(long iters) {
  __m256i acc[CHAINS];
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_epi32(i);
  for (long it = 0; it < iters; it++)
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_dpbusd_avx_epi32(acc[i], a, b);
  int64_t s = 0;
  for (int i = 0; i < CHAINS; i++) s += _mm256_extract_epi32(acc[i], 0);
  bl_peak_sink = s;
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void loop_avx512vnni(long iters) {
  __m512i acc[CHAINS];
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_epi32(i);
  for (long it = 0; it < iters; it++)
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  int64_t s = 0;
  for (int i = 0; i < CHAINS; i++) s += _mm512_reduce_add_epi32(acc[i]);
  bl_peak_sink = s;
}
#endif
#endif

static void loop_c(long iters) {
  int32_t acc[CHAINS][16];
  for (int i = 0; i < CHAINS; i++)
    for (int j = 0; j < 16; j++) acc[i][j] = i + j;
  for (long it = 0; it < iters; it++)
    for (int i = 0; i < CHAINS; i++)
      for (int j = 0; j < 16; j++) acc[i][j] += (int8_t)acc[i][j] * 3 + (int8_t)(acc[i][j] >> 8) * 5;
  bl_peak_sink = acc[0][0];
}

int bl_peak_has_vnni(void) {
#if defined(__x86_64__) && !defined(BL_NO_VNNI)
  return 1;
#else
  return 0;
#endif
}

int bl_peak_ops_per_step(int kind) {
  switch (kind) {
    case 0: return 2 * 32; /* 32 u8*s8 products per ymm step */
    case 1: return 2 * 32;
    case 2: return 2 * 64;
    default: return 2 * 32; /* 16 lanes x 2 products */
  }
}

typedef struct {
  int kind;
  long iters;
  const uint8_t *buf;
  size_t bytes;
  pthread_barrier_t *bar;
  uint64_t sum;
  double cpu_s;
} job;

static void *run_peak(void *p) {
  job *j = (job *)p;
  pthread_barrier_wait(j->bar);
  const double c0 = thread_cpu();
  switch (j->kind) {
#if defined(__x86_64__)
    case 0: loop_avx2(j->iters); break;
#ifndef BL_NO_VNNI
    case 1: loop_avxvnni(j->iters); break;
    case 2: loop_avx512vnni(j->iters); break;
#endif
#endif
    default: loop_c(j->iters); break;
  }
  j->cpu_s = thread_cpu() - c0;
  pthread_barrier_wait(j->bar);
  return NULL;
}

static void *run_read(void *p) {
  job *j = (job *)p;
  pthread_barrier_wait(j->bar);
  const uint64_t *q = (const uint64_t *)j->buf;
  size_t n = j->bytes / 8;
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t i = 0; i + 4 <= n; i += 4) s0 += q[i], s1 += q[i + 1], s2 += q[i + 2], s3 += q[i + 3];
  j->sum = s0 + s1 + s2 + s3;
  pthread_barrier_wait(j->bar);
  return NULL;
}

/* Starts `threads` workers, times from the first barrier to the second. */
static double run(void *(*fn)(void *), job *proto, int threads, size_t slice) {
  if (threads < 1) threads = 1;
  if (threads > 256) threads = 256;
  pthread_t tid[256];
  job jobs[256];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, (unsigned)threads + 1);
  for (int t = 0; t < threads; t++) {
    jobs[t] = *proto;
    jobs[t].bar = &bar;
    if (proto->buf) jobs[t].buf = proto->buf + (size_t)t * slice, jobs[t].bytes = slice;
    pthread_create(&tid[t], NULL, fn, &jobs[t]);
  }
  pthread_barrier_wait(&bar);
  double t0 = now();
  pthread_barrier_wait(&bar);
  double dt = now() - t0;
  uint64_t s = 0;
  double rate = 0.0;
  for (int t = 0; t < threads; t++) {
    pthread_join(tid[t], NULL);
    s += jobs[t].sum;
    if (jobs[t].cpu_s > 0) rate += (double)jobs[t].iters / jobs[t].cpu_s;
  }
  bl_peak_last_cpu_rate = rate;
  bl_peak_sink = (int64_t)s;
  pthread_barrier_destroy(&bar);
  return dt;
}

double bl_peak_int8(int kind, int threads, long iters) {
  job j = {kind, iters, NULL, 0, NULL, 0, 0.0};
  return run(run_peak, &j, threads, 0);
}

double bl_read_bw(size_t bytes, int threads, int reps) {
  if (threads < 1) threads = 1;
  size_t slice = bytes / (size_t)threads / 64 * 64;
  uint8_t *buf = (uint8_t *)malloc(slice * (size_t)threads + 64);
  if (!buf) return -1.0;
  memset(buf, 1, slice * (size_t)threads); /* real pages, not the shared zero page */
  job j = {0, 0, buf, slice, NULL, 0, 0.0};
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double dt = run(run_read, &j, threads, slice);
    if (dt < best) best = dt;
  }
  free(buf);
  return best * (double)bytes / (double)(slice * (size_t)threads); /* time for all bytes */
}
