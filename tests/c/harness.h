/* harness.h - what the plain C test programs share (test_core.c, test_directed.c, test_fp_mode.c,
 * test_q4.c, test_attn.c, test_norm.c): PASS/FAIL lines with their counters, and the seeded xorshift64*
 * generator with irand / frand on it (set rng_state from the seed the program prints).
 * Header-only; include once per test program. */
#ifndef BL_TEST_HARNESS_H
#define BL_TEST_HARNESS_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

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

#endif
