/* bl_checks.h - the argument checks of the C API entry points, shared by the CPU core
 * (csrc/cpu/) and the CUDA host wrappers (csrc/cuda/), so both return the same bl_status for the
 * same bad call. Not part of the public API. Plain C, also compiled as CUDA C++. */
#ifndef BITLINEAR_CHECKS_H
#define BITLINEAR_CHECKS_H

#include "bitlinear.h"

#include <float.h>

/* rows x cols with leading dimension ld: sizes in [0, 2^40], ld >= cols. */
static inline bl_status bl_check_dims(int64_t rows, int64_t cols, int64_t ld) {
  if (rows < 0 || cols < 0) return BL_ERR_SIZE;
  if (cols > ((int64_t)1 << 40) || rows > ((int64_t)1 << 40)) return BL_ERR_SIZE;
  if (ld < cols) return BL_ERR_STRIDE;
  return BL_OK;
}

static inline int bl_dtype_ok(bl_dtype dt) { return dt == BL_F32 || dt == BL_F16 || dt == BL_BF16; }

/* A weight-shaped [N, K] matrix with row stride ld (N, K >= 1); ptrs_ok: every pointer the call
 * needs is non-NULL. */
static inline bl_status bl_check_matrix(int ptrs_ok, int64_t N, int64_t K, int64_t ld) {
  if (!ptrs_ok) return BL_ERR_NULL;
  if (N < 1 || K < 1) return BL_ERR_SIZE;
  return bl_check_dims(N, K, ld);
}

/* An eps whose scales are positive normal floats (BL_MIN_EPS <= eps <= FLT_MAX; not NaN). */
static inline bl_status bl_check_eps(float eps) {
  return eps >= BL_MIN_EPS && eps <= FLT_MAX ? BL_OK : BL_ERR_ARG;
}

/* bl_quantize_acts / bl_cuda_quantize_acts (M may be 0). */
static inline bl_status bl_check_acts(const void *x, bl_dtype dt, int64_t M, int64_t K,
                                      int64_t ldx, const int8_t *xq, int64_t ldq,
                                      const float *scale, float eps) {
  if (M > 0 && (!x || !xq || !scale)) return BL_ERR_NULL;
  if (K < 1 || K > BL_MAX_K) return BL_ERR_SIZE;
  if (bl_check_eps(eps) != BL_OK) return BL_ERR_ARG;
  if (!bl_dtype_ok(dt)) return BL_ERR_ARG;
  bl_status st = bl_check_dims(M, K, ldx);
  if (st != BL_OK) return st;
  if (ldq < bl_padded_k(K)) return BL_ERR_STRIDE;
  return BL_OK;
}

/* bl_gemm_acc / bl_cuda_gemm_acc (M may be 0). */
static inline bl_status bl_check_gemm(const int8_t *xq, int64_t ldq, const uint8_t *packed,
                                      int64_t M, int64_t N, int64_t K, const int32_t *acc,
                                      int64_t ldacc) {
  if (M > 0 && (!xq || !packed || !acc)) return BL_ERR_NULL;
  if (N < 1 || K < 1 || K > BL_MAX_K) return BL_ERR_SIZE;
  bl_status st = bl_check_dims(M, N, ldacc);
  if (st != BL_OK) return st;
  if (ldq < bl_padded_k(K)) return BL_ERR_STRIDE;
  return BL_OK;
}

#endif /* BITLINEAR_CHECKS_H */
