/* test_norm.c - bl_rms_norm_apply (bitlinear.h, "RMSNorm"; csrc/cpu/norm.c).
 *
 * Against the formula written out here one element at a time with the exported conversions
 * (bl_f32_to_bf16 / bl_f32_to_f16 and back): r = 1 / sqrtf(var + eps), h = round_xdt(x r),
 * y = round_ydt(w h), bit for bit, on random shapes (K from 1 to 3000, rows of a larger strided
 * buffer), every mix of float32 / float16 / bfloat16 for x, w and y, values from tiny to large,
 * and NaN / Inf / zero rows. Then the same bits at 1, 2 and 3 threads on a batch that splits, the
 * gaps between output rows untouched, every error status, and M = 0 writing nothing. A fresh seed
 * per run (printed; BL_TEST_SEED repeats it). --small: fewer cases. Ends with "N passed, N
 * failed". */
#define _POSIX_C_SOURCE 200809L
#include "bitlinear.h"

#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int small;

static float round_to(bl_dtype dt, float v) {
  if (dt == BL_F32) return v;
  return dt == BL_BF16 ? bl_bf16_to_f32(bl_f32_to_bf16(v)) : bl_f16_to_f32(bl_f32_to_f16(v));
}

/* the expected y[m, k], as the bits of ydt */
static uint32_t expected_bits(const void *x, bl_dtype xdt, int64_t ldx, const float *var, float eps,
                              const void *w, bl_dtype wdt, bl_dtype ydt, int64_t m, int64_t k) {
  volatile float r = 1.0f / sqrtf(var[m] + eps); /* volatile: no contraction, no reassociation */
  volatile float xr = load_elem(x, xdt, m * ldx + k) * r;
  const float h = round_to(xdt, xr);
  volatile float y = load_elem(w, wdt, k) * h;
  uint32_t out = 0;
  uint16_t h16;
  if (ydt == BL_F32) {
    const float f = y;
    memcpy(&out, &f, 4);
  } else {
    store_elem(&h16, ydt, 0, y);
    out = h16;
  }
  return out;
}

static uint32_t bits_at(const void *y, bl_dtype ydt, int64_t i) {
  uint32_t b = 0;
  if (ydt == BL_F32) memcpy(&b, (const float *)y + i, 4);
  else b = ((const uint16_t *)y)[i];
  return b;
}

static int is_nan_bits(uint32_t b, bl_dtype dt) {
  if (dt == BL_F32) return (b & 0x7fffffffu) > 0x7f800000u;
  if (dt == BL_BF16) return (b & 0x7fffu) > 0x7f80u;
  return (b & 0x7fffu) > 0x7c00u;
}

static float value(int kind) {
  const float f = frand();
  switch (kind) {
    case 0: return f * 3.0f;
    case 1: return f * 1e-3f;
    case 2: return f * 4000.0f;
    default: return f * powf(2.0f, (float)(irand(40) - 20));
  }
}

static void one_case(int id) {
  const bl_dtype xdt = (bl_dtype)irand(3), wdt = (bl_dtype)irand(3), ydt = (bl_dtype)irand(3);
  const int64_t K = id % 4 == 0 ? 1 + irand(8) : 1 + irand(small ? 300 : 3000);
  const int64_t M = 1 + irand(id % 5 == 0 ? 40 : 4);
  const int64_t ldx = K + irand(3), ldy = K + irand(3);
  const float eps = irand(2) ? 1e-5f : (float)irand(4) * 0.25f;
  void *x = malloc((size_t)(M * ldx) * elem_bytes(xdt));
  void *w = malloc((size_t)K * elem_bytes(wdt));
  void *y = malloc((size_t)(M * ldy) * elem_bytes(ydt));
  float *var = malloc((size_t)M * sizeof(float));
  const int kind = irand(4);
  for (int64_t i = 0; i < M * ldx; i++) store_elem(x, xdt, i, value(kind));
  for (int64_t k = 0; k < K; k++) store_elem(w, wdt, k, value(0));
  for (int64_t m = 0; m < M; m++) { /* a variance of the row's scale, not necessarily its own */
    double s = 0;
    for (int64_t k = 0; k < K; k++) s += (double)load_elem(x, xdt, m * ldx + k) * load_elem(x, xdt, m * ldx + k);
    var[m] = (float)(s / (double)K) * (irand(4) ? 1.0f : frand() + 1.5f);
  }
  if (id % 7 == 3) { /* non-finite inputs and a zero row */
    store_elem(x, xdt, irand((int)K), NAN);
    if (M > 1) store_elem(x, xdt, ldx + irand((int)K), INFINITY);
    if (M > 2) {
      for (int64_t k = 0; k < K; k++) store_elem(x, xdt, 2 * ldx + k, 0.0f);
      var[2] = 0.0f;
    }
  }
  memset(y, 0x5a, (size_t)(M * ldy) * elem_bytes(ydt));
  const bl_status st = bl_rms_norm_apply(x, xdt, M, K, ldx, var, eps, w, wdt, y, ydt, ldy,
                                         1 + irand(3));
  int bad = 0, gaps = 0;
  for (int64_t m = 0; m < M && st == BL_OK; m++) {
    for (int64_t k = 0; k < K; k++) {
      const uint32_t want = expected_bits(x, xdt, ldx, var, eps, w, wdt, ydt, m, k);
      const uint32_t got = bits_at(y, ydt, m * ldy + k);
      if (got != want && !(is_nan_bits(got, ydt) && is_nan_bits(want, ydt))) bad++;
    }
    for (int64_t k = K; k < ldy && m + 1 < M; k++) {
      const uint32_t g = bits_at(y, ydt, m * ldy + k);
      if (g != (ydt == BL_F32 ? 0x5a5a5a5au : 0x5a5au)) gaps++;
    }
  }
  check(st == BL_OK && !bad && !gaps,
        "case %d: M=%lld K=%lld x/w/y dtypes %d/%d/%d eps %g: %d wrong, %d gap writes", id,
        (long long)M, (long long)K, xdt, wdt, ydt, eps, bad, gaps);
  free(x);
  free(w);
  free(y);
  free(var);
}

/* a batch large enough to split: the same bytes at 1, 2 and 3 threads */
static void threads(void) {
  const int64_t M = 64, K = 2000;
  float *x = malloc(sizeof(float) * M * K), *var = malloc(sizeof(float) * M);
  uint16_t *w = malloc(2 * K), *y[3];
  for (int64_t i = 0; i < M * K; i++) x[i] = value(0);
  for (int64_t k = 0; k < K; k++) w[k] = bl_f32_to_bf16(value(0));
  for (int64_t m = 0; m < M; m++) var[m] = 1.0f + (float)m;
  int ok = 1;
  for (int t = 0; t < 3; t++) {
    y[t] = malloc(2 * M * K);
    ok &= bl_rms_norm_apply(x, BL_F32, M, K, K, var, 1e-6f, w, BL_BF16, y[t], BL_BF16, K,
                            t + 1) == BL_OK;
  }
  ok &= !memcmp(y[0], y[1], 2 * M * K) && !memcmp(y[0], y[2], 2 * M * K);
  check(ok, "threads: the same bytes at 1, 2 and 3 threads (M=%lld, K=%lld)", (long long)M,
        (long long)K);
  for (int t = 0; t < 3; t++) free(y[t]);
  free(x);
  free(var);
  free(w);
}

static void statuses(void) {
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, w[4] = {1, 1, 1, 1}, var[2] = {1, 1}, y[8];
  int ok = 1;
  ok &= bl_rms_norm_apply(NULL, BL_F32, 2, 4, 4, var, 1e-5f, w, BL_F32, y, BL_F32, 4, 1) ==
        BL_ERR_NULL;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 4, 4, NULL, 1e-5f, w, BL_F32, y, BL_F32, 4, 1) ==
        BL_ERR_NULL;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 4, 4, var, 1e-5f, NULL, BL_F32, y, BL_F32, 4, 1) ==
        BL_ERR_NULL;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 4, 4, var, 1e-5f, w, BL_F32, NULL, BL_F32, 4, 1) ==
        BL_ERR_NULL;
  ok &= bl_rms_norm_apply(x, BL_F32, -1, 4, 4, var, 1e-5f, w, BL_F32, y, BL_F32, 4, 1) ==
        BL_ERR_SIZE;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 0, 4, var, 1e-5f, w, BL_F32, y, BL_F32, 4, 1) ==
        BL_ERR_SIZE;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, BL_MAX_K + 1LL, BL_MAX_K + 1LL, var, 1e-5f, w, BL_F32, y,
                          BL_F32, BL_MAX_K + 1LL, 1) == BL_ERR_SIZE;
  ok &= bl_rms_norm_apply(x, BL_F32, (1LL << 40) + 1, 4, 4, var, 1e-5f, w, BL_F32, y, BL_F32, 4,
                          1) == BL_ERR_SIZE;
  ok &= bl_rms_norm_apply(x, (bl_dtype)3, 2, 4, 4, var, 1e-5f, w, BL_F32, y, BL_F32, 4, 1) ==
        BL_ERR_ARG;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 4, 4, var, 1e-5f, w, (bl_dtype)-1, y, BL_F32, 4, 1) ==
        BL_ERR_ARG;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 4, 4, var, 1e-5f, w, BL_F32, y, (bl_dtype)7, 4, 1) ==
        BL_ERR_ARG;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 4, 4, var, -1e-5f, w, BL_F32, y, BL_F32, 4, 1) ==
        BL_ERR_ARG;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 4, 4, var, NAN, w, BL_F32, y, BL_F32, 4, 1) ==
        BL_ERR_ARG;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 4, 4, var, INFINITY, w, BL_F32, y, BL_F32, 4, 1) ==
        BL_ERR_ARG;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 4, 3, var, 1e-5f, w, BL_F32, y, BL_F32, 4, 1) ==
        BL_ERR_STRIDE;
  ok &= bl_rms_norm_apply(x, BL_F32, 2, 4, 4, var, 1e-5f, w, BL_F32, y, BL_F32, 3, 1) ==
        BL_ERR_STRIDE;
  check(ok, "statuses: NULL, sizes, dtypes, eps, strides");
  for (int i = 0; i < 8; i++) y[i] = -7.0f;
  ok = bl_rms_norm_apply(NULL, BL_F32, 0, 4, 4, NULL, 1e-5f, NULL, BL_F32, y, BL_F32, 4, 1) ==
       BL_OK;
  for (int i = 0; i < 8; i++) ok &= y[i] == -7.0f;
  check(ok, "M = 0: OK with NULL pointers, writes nothing");
}

int main(int argc, char **argv) {
  small = argc > 1 && strcmp(argv[1], "--small") == 0;
  fresh_seed("test_norm");
  const int n = small ? 40 : 200;
  for (int i = 0; i < n; i++) one_case(i);
  threads();
  statuses();
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
