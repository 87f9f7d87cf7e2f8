/* harness.h - what the plain C test programs share (test_core.c, test_directed.c, test_fp_mode.c,
 * test_q4.c, test_attn.c, test_norm.c): PASS/FAIL lines with their counters, the seeded xorshift64*
 * generator with irand / frand on it (set rng_state from the seed the program prints; fresh_seed
 * for the programs seeded per run), and element loads / stores of the three float dtypes.
 * Header-only; include once per test program. */
#ifndef BL_TEST_HARNESS_H
#define BL_TEST_HARNESS_H

#include "bitlinear.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int n_pass, n_fail;
static uint64_t rng_state;

static void check(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", ok ? "PASS" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  if (ok) n_pass++; else n_fail++;
}

static uint64_t rnd(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ULL;
}

/* uniform in [0, n), and a float uniform in [-1, 1) */
static inline int irand(int n) { return (int)(rnd() % (uint64_t)n); }
static inline float frand(void) {
  return (float)((double)(rnd() >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

/* A fresh seed per run, or BL_TEST_SEED's; printed with the program's name so a failure repeats.
 * Sets rng_state. */
static inline uint64_t fresh_seed(const char *prog) {
  const char *env = getenv("BL_TEST_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
  if (!seed) seed = 1;
  rng_state = seed;
  printf("%s seed %llu (BL_TEST_SEED=%llu repeats it)\n", prog, (unsigned long long)seed,
         (unsigned long long)seed);
  return seed;
}

/* Element i of a float32 / float16 / bfloat16 row, as float32; and a float32 stored there
 * (rounded to nearest even: exact for a value the dtype holds). */
static inline size_t elem_bytes(bl_dtype dt) { return dt == BL_F32 ? 4 : 2; }
static inline float load_elem(const void *p, bl_dtype dt, int64_t i) {
  if (dt == BL_F32) return ((const float *)p)[i];
  const uint16_t h = ((const uint16_t *)p)[i];
  return dt == BL_F16 ? bl_f16_to_f32(h) : bl_bf16_to_f32(h);
}
static inline void store_elem(void *p, bl_dtype dt, int64_t i, float v) {
  if (dt == BL_F32) ((float *)p)[i] = v;
  else ((uint16_t *)p)[i] = dt == BL_F16 ? bl_f32_to_f16(v) : bl_f32_to_bf16(v);
}

#endif
