/* norm.c - bl_rms_norm_apply: the part of transformers' Llama-family RMSNorm after the variance,
 * bit for bit (bitlinear.h, "RMSNorm"). Plain C: the float32 and bfloat16 rows are simple loops
 * the compiler vectorizes (no FMA contraction: -ffp-contract=off); other dtype mixes go through
 * the element load / store of convert.c. */
#include "internal.h"

typedef struct {
  const char *x;
  const float *var;
  const void *w;
  char *y;
  bl_dtype xdt, wdt, ydt;
  int64_t K, ldx, ldy;
  float eps;
} norm_job;

static void norm_row_f32(const float *x, float r, const float *w, float *y, int64_t K) {
  for (int64_t k = 0; k < K; k++) y[k] = w[k] * (x[k] * r);
}

static void norm_row_bf16(const uint16_t *x, float r, const uint16_t *w, uint16_t *y, int64_t K) {
  for (int64_t k = 0; k < K; k++) {
    const float h = bl_bf16_f32(bl_bf16_rne(bl_bf16_f32(x[k]) * r));
    y[k] = bl_bf16_rne(bl_bf16_f32(w[k]) * h);
  }
}

static void norm_row_any(const norm_job *j, const void *x, float r, void *y) {
  for (int64_t k = 0; k < j->K; k++) {
    float h = bl_load_f(x, j->xdt, k) * r;
    if (j->xdt != BL_F32) { /* .to(input dtype): round, then widen exactly */
      uint16_t b[1];
      bl_store_f(b, j->xdt, 0, h);
      h = bl_load_f(b, j->xdt, 0);
    }
    bl_store_f(y, j->ydt, k, bl_load_f(j->w, j->wdt, k) * h);
  }
}

static void norm_row(const norm_job *j, int64_t m) {
  const size_t xs = bl_dtype_bytes(j->xdt), ys = bl_dtype_bytes(j->ydt);
  const void *x = j->x + (size_t)(m * j->ldx) * xs;
  void *y = j->y + (size_t)(m * j->ldy) * ys;
  const float r = 1.0f / sqrtf(j->var[m] + j->eps);
  if (j->xdt == BL_F32 && j->wdt == BL_F32 && j->ydt == BL_F32)
    norm_row_f32((const float *)x, r, (const float *)j->w, (float *)y, j->K);
  else if (j->xdt == BL_BF16 && j->wdt == BL_BF16 && j->ydt == BL_BF16)
    norm_row_bf16((const uint16_t *)x, r, (const uint16_t *)j->w, (uint16_t *)y, j->K);
  else
    norm_row_any(j, x, r, y);
}

static int float_dtype(bl_dtype dt) { return dt == BL_F32 || dt == BL_F16 || dt == BL_BF16; }

bl_status bl_rms_norm_apply(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                            const float *var, float eps, const void *w, bl_dtype wdt, void *y,
                            bl_dtype ydt, int64_t ldy, int nthreads) {
  if (M < 0 || K < 1 || K > BL_MAX_K || M > ((int64_t)1 << 40)) return BL_ERR_SIZE;
  if (!float_dtype(xdt) || !float_dtype(wdt) || !float_dtype(ydt) || !(eps >= 0.0f) ||
      !isfinite(eps))
    return BL_ERR_ARG;
  if (ldx < K || ldy < K) return BL_ERR_STRIDE;
  if (M == 0) return BL_OK;
  if (!x || !var || !w || !y) return BL_ERR_NULL;
  const norm_job j = {(const char *)x, var, w, (char *)y, xdt, wdt, ydt, K, ldx, ldy, eps};
  /* a fork / join costs more than a decode token's row (a few thousand elements) */
  const int want = M > 1 && (double)M * (double)K >= 65536.0 ? bl_nthreads(nthreads) : 1;
  bl_region r;
  if (bl_region_begin(&r, want) > 1) {
#pragma omp parallel num_threads(r.nt)
    {
      bl_region_thread th;
      bl_region_enter(&r, &th);
#pragma omp for schedule(static) nowait
      for (int64_t m = 0; m < M; m++) norm_row(&j, m);
      bl_region_leave(&r, &th);
    }
    bl_region_end(&r);
  } else {
    for (int64_t m = 0; m < M; m++) norm_row(&j, m);
  }
  return BL_OK;
}
