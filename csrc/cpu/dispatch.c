/* dispatch.c - the public CPU entry points (bitlinear.h). Each validates its arguments once, then
 * runs the selected path (cpu_features.c): the *_ref functions for BL_ISA_REF, else the portable
 * drivers (act_quant.c, gemm.c, weights.c) with that path's kernel table. */
#include "../bitlinear.h"
#include "internal.h"
#include "kernels.h"

#include <stdlib.h>

bl_status bl_quantize_weights(const void *w, bl_dtype wdt, int64_t N, int64_t K, int64_t ldw,
                              float eps, int per_channel, float *scale, uint8_t *packed,
                              int nthreads) {
  const int isa = bl_isa_get();
  if (isa == BL_ISA_REF)
    return bl_quantize_weights_ref(w, wdt, N, K, ldw, eps, per_channel, scale, packed, nthreads);
  bl_status st = bl_check_matrix(w && scale && packed, N, K, ldw);
  if (st != BL_OK) return st;
  if (!bl_dtype_ok(wdt) || bl_check_eps(eps) != BL_OK) return BL_ERR_ARG;
  const bl_cpu_kernels *kt = bl_kernels_of(isa);
  return bl_quantize_weights_k(kt, w, wdt, N, K, ldw, eps, per_channel, scale, packed, nthreads);
}

bl_status bl_quantize_acts(const void *x, bl_dtype dt, int64_t M, int64_t K, int64_t ldx,
                           float eps, int per_token, int8_t *xq, int64_t ldq, float *scale,
                           int32_t *rowsum, int nthreads) {
  const int isa = bl_isa_get();
  if (isa == BL_ISA_REF)
    return bl_quantize_acts_ref(x, dt, M, K, ldx, eps, per_token, xq, ldq, scale, rowsum,
                                nthreads);
  bl_status st = bl_check_acts(x, dt, M, K, ldx, xq, ldq, scale, eps);
  if (st != BL_OK || M == 0) return st;
  const bl_cpu_kernels *kt = bl_kernels_of(isa);
  bl_quantize_acts_k(kt, x, dt, M, K, ldx, eps, per_token, xq, ldq, scale, rowsum, nthreads);
  return BL_OK;
}

bl_status bl_gemm_acc(const int8_t *xq, int64_t ldq, const int32_t *rowsum,
                      const uint8_t *packed, int64_t M, int64_t N, int64_t K, int32_t *acc,
                      int64_t ldacc, int nthreads) {
  const int isa = bl_isa_get();
  if (isa == BL_ISA_REF) return bl_gemm_acc_ref(xq, ldq, packed, M, N, K, acc, ldacc, nthreads);
  bl_status st = bl_check_gemm(xq, ldq, packed, M, N, K, acc, ldacc);
  if (st != BL_OK || M == 0) return st;
  const bl_cpu_kernels *kt = bl_kernels_of(isa);
  bl_gemm_acc_k(kt, xq, ldq, rowsum, packed, M, N, K, acc, ldacc, nthreads);
  return BL_OK;
}

/* Quantized rows [M, Kp], then M scales, then M row sums. */
size_t bl_linear_workspace_bytes(int64_t M, int64_t K) {
  if (M < 0 || K < 1) return 0;
  size_t m = (size_t)M;
  return bl_align64(m * (size_t)bl_padded_k(K)) + bl_align64(m * 4) + bl_align64(m * 4);
}

/* GEMM + epilogue from quantized activations; the reference path keeps int32 accumulators. */
static bl_status linear_q(int isa, const int8_t *xq, int64_t ldq, const float *xscale,
                          const int32_t *rowsum, int64_t M, const uint8_t *packed, int64_t N,
                          int64_t K, const float *wscale, int w_per_channel, const float *bias,
                          void *y, bl_dtype ydt, int64_t ldy, int nthreads) {
  if (isa != BL_ISA_REF) {
    const bl_cpu_kernels *kt = bl_kernels_of(isa);
    bl_gemm_epi_k(kt, xq, ldq, rowsum, xscale, packed, M, N, K, wscale, w_per_channel, bias, y,
                  ydt, ldy, nthreads);
    return BL_OK;
  }
  int32_t *acc = (int32_t *)malloc((size_t)M * (size_t)N * sizeof(int32_t));
  if (!acc) return BL_ERR_ALLOC;
  bl_status st = bl_gemm_acc_ref(xq, ldq, packed, M, N, K, acc, N, nthreads);
  if (st == BL_OK)
    st = bl_epilogue_ref(acc, N, M, N, xscale, wscale, w_per_channel, bias, y, ydt, ldy, nthreads);
  free(acc);
  return st;
}

bl_status bl_linear_q(const int8_t *xq, int64_t ldq, const float *xscale, const int32_t *rowsum,
                      int64_t M, const uint8_t *packed, int64_t N, int64_t K,
                      const float *wscale, int w_per_channel, const float *bias, void *y,
                      bl_dtype ydt, int64_t ldy, int nthreads) {
  if (M > 0 && (!xscale || !wscale || !y)) return BL_ERR_NULL;
  if (!bl_dtype_ok(ydt)) return BL_ERR_ARG;
  bl_status st = bl_check_gemm(xq, ldq, packed, M, N, K, (const int32_t *)y, ldy);
  if (st != BL_OK || M == 0) return st;
  return linear_q(bl_isa_get(), xq, ldq, xscale, rowsum, M, packed, N, K, wscale, w_per_channel,
                  bias, y, ydt, ldy, nthreads);
}

/* The activations quantized into bl_linear's workspace: x_q [M, Kp], then M scales, M sums. */
static bl_status quantize_into(int isa, const bl_cpu_kernels *kt, const void *x, bl_dtype xdt,
                               int64_t M, int64_t K, int64_t ldx, float eps, int per_token,
                               char *ws, int8_t **xq, float **xs, int32_t **rs, int nthreads) {
  const int64_t Kp = bl_padded_k(K);
  *xq = (int8_t *)ws;
  *xs = (float *)(ws + bl_align64((size_t)M * (size_t)Kp));
  *rs = (int32_t *)((char *)*xs + bl_align64((size_t)M * 4));
  if (isa != BL_ISA_REF) {
    bl_quantize_acts_k(kt, x, xdt, M, K, ldx, eps, per_token, *xq, Kp, *xs, *rs, nthreads);
    return BL_OK;
  }
  return bl_quantize_acts_ref(x, xdt, M, K, ldx, eps, per_token, *xq, Kp, *xs, *rs, nthreads);
}

/* bl_linear; with lut (the decode layout of packed), the GEMM reads it instead (the caller
 * decided: bl_linear_lut), and the workspace holds the M tables after bl_linear's. */
static bl_status linear_impl(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                             const uint8_t *packed, const uint8_t *lut, int64_t N,
                             const float *wscale, int w_per_channel, const float *bias, float eps,
                             int per_token, void *y, bl_dtype ydt, int64_t ldy, void *workspace,
                             int nthreads) {
  if (M > 0 && (!x || !packed || !wscale || !y || !workspace)) return BL_ERR_NULL;
  if (N < 1 || K < 1 || K > BL_MAX_K || M < 0) return BL_ERR_SIZE;
  if (!bl_dtype_ok(xdt) || !bl_dtype_ok(ydt) || bl_check_eps(eps) != BL_OK) return BL_ERR_ARG;
  bl_status st = bl_check_dims(M, K, ldx);
  if (st == BL_OK) st = bl_check_dims(M, N, ldy);
  if (st != BL_OK) return st;
  if (M == 0) return BL_OK;
  const int64_t Kp = bl_padded_k(K);
  char *ws = (char *)workspace;
  int8_t *xq;
  float *xs;
  int32_t *rs;
  const int isa = bl_isa_get();
  const bl_cpu_kernels *kt = bl_kernels_of(isa); /* all NULL for ref: the portable loops */
  if ((st = quantize_into(isa, kt, x, xdt, M, K, ldx, eps, per_token, ws, &xq, &xs, &rs,
                          nthreads)) != BL_OK)
    return st;
  if (!lut)
    return linear_q(isa, xq, Kp, xs, rs, M, packed, N, K, wscale, w_per_channel, bias, y, ydt,
                    ldy, nthreads);
  int16_t *tabs = (int16_t *)(ws + bl_linear_workspace_bytes(M, K));
  bl_lut_tables_k(kt, xq, Kp, M, K, tabs);
  bl_lut_gemm_epi_k(kt, tabs, lut, M, N, K, xs, wscale, w_per_channel, bias, y, ydt, ldy,
                    nthreads);
  return BL_OK;
}

bl_status bl_linear(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                    const uint8_t *packed, int64_t N, const float *wscale, int w_per_channel,
                    const float *bias, float eps, int per_token, void *y, bl_dtype ydt,
                    int64_t ldy, void *workspace, int nthreads) {
  return linear_impl(x, xdt, M, K, ldx, packed, NULL, N, wscale, w_per_channel, bias, eps,
                     per_token, y, ydt, ldy, workspace, nthreads);
}

bl_status bl_linear_segments(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                             const uint8_t *packed, const bl_segment *segs, int nseg, float eps,
                             int per_token, bl_dtype ydt, void *workspace, int nthreads) {
  if (!segs) return BL_ERR_NULL;
  if (nseg < 1 || nseg > BL_MAX_SEGMENTS) return BL_ERR_SIZE;
  if (K < 1 || K > BL_MAX_K || M < 0) return BL_ERR_SIZE;
  if (!bl_dtype_ok(xdt) || !bl_dtype_ok(ydt) || bl_check_eps(eps) != BL_OK) return BL_ERR_ARG;
  int64_t N = 0;
  for (int s = 0; s < nseg; s++) {
    const bl_segment *g = &segs[s];
    if (g->n < 1 || g->n > ((int64_t)1 << 40) || (g->w_per_channel != 0 && g->w_per_channel != 1))
      return g->n < 1 || g->n > ((int64_t)1 << 40) ? BL_ERR_SIZE : BL_ERR_ARG;
    if (M > 0 && (!g->wscale || !g->y)) return BL_ERR_NULL;
    bl_status st = bl_check_dims(M, g->n, g->ldy);
    if (st != BL_OK) return st;
    N += g->n;
  }
  if (N > ((int64_t)1 << 40)) return BL_ERR_SIZE;
  if (M > 0 && (!x || !packed || !workspace)) return BL_ERR_NULL;
  bl_status st = bl_check_dims(M, K, ldx);
  if (st != BL_OK || M == 0) return st;
  int8_t *xq;
  float *xs;
  int32_t *rs;
  const int isa = bl_isa_get();
  const bl_cpu_kernels *kt = bl_kernels_of(isa);
  if ((st = quantize_into(isa, kt, x, xdt, M, K, ldx, eps, per_token, (char *)workspace, &xq, &xs,
                          &rs, nthreads)) != BL_OK)
    return st;
  const int64_t Kp = bl_padded_k(K);
  if (isa != BL_ISA_REF) {
    bl_gemm_segments_k(kt, xq, Kp, rs, xs, packed, M, N, K, segs, nseg, ydt, nthreads);
    return BL_OK;
  }
  int32_t *acc = (int32_t *)malloc((size_t)M * (size_t)N * sizeof(int32_t));
  if (!acc) return BL_ERR_ALLOC;
  st = bl_gemm_acc_ref(xq, Kp, packed, M, N, K, acc, N, nthreads);
  int64_t start = 0;
  for (int s = 0; s < nseg && st == BL_OK; s++) {
    const bl_segment *g = &segs[s];
    st = bl_epilogue_ref(acc + start, N, M, g->n, xs, g->wscale, g->w_per_channel, g->bias, g->y,
                         ydt, g->ldy, nthreads);
    start += g->n;
  }
  free(acc);
  return st;
}

/* ---------------------------------------------------------------- decode layout (LUT) */
/* The int16 tables of M tokens, after bl_linear's workspace. */
size_t bl_linear_lut_workspace_bytes(int64_t M, int64_t K) {
  if (M < 0 || K < 1 || K > BL_MAX_K) return 0;
  return bl_linear_workspace_bytes(M, K) +
         bl_align64((size_t)M * (size_t)bl_lut_table_len(K) * sizeof(int16_t));
}

bl_status bl_lut_gemm_acc(const int8_t *xq, int64_t ldq, const uint8_t *lut, int64_t M,
                          int64_t N, int64_t K, int32_t *acc, int64_t ldacc, int nthreads) {
  bl_status st = bl_check_gemm(xq, ldq, lut, M, N, K, acc, ldacc);
  if (st != BL_OK || M == 0) return st;
  int16_t *tabs = (int16_t *)malloc((size_t)M * (size_t)bl_lut_table_len(K) * sizeof(int16_t));
  if (!tabs) return BL_ERR_ALLOC;
  const bl_cpu_kernels *kt = bl_kernels_of(bl_isa_get());
  bl_lut_tables_k(kt, xq, ldq, M, K, tabs);
  bl_lut_gemm_acc_k(kt, tabs, lut, M, N, K, acc, ldacc, nthreads);
  free(tabs);
  return BL_OK;
}

bl_status bl_linear_lut(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                        const uint8_t *packed, const uint8_t *lut, int64_t N,
                        const float *wscale, int w_per_channel, const float *bias, float eps,
                        int per_token, void *y, bl_dtype ydt, int64_t ldy, void *workspace,
                        int nthreads) {
  const bl_cpu_kernels *kt = bl_kernels_of(bl_isa_get());
  const int use = lut && bl_lut_chosen(M, bl_lut_auto_kernel(kt));
  return linear_impl(x, xdt, M, K, ldx, packed, use ? lut : NULL, N, wscale, w_per_channel, bias,
                     eps, per_token, y, ydt, ldy, workspace, nthreads);
}
