/* paths.h - the CPU paths a C test (fuzz.c, test_directed.c) compares with the plain C reference.
 *
 * Default build: every ISA this CPU supports, through the public API after bl_isa_set (argument
 * checks included). Built with -DBL_EMU (and the VNNI files compiled against SIMDe, see the
 * Makefile's `emulated` rules): the AVX-512 VNNI and AVX-VNNI kernel tables, which may not run
 * natively here, driven through the internal drivers (act_quant.c, gemm.c, weights.c, lut.c) the
 * way dispatch.c drives them. The internal drivers take checked arguments only: callers run an
 * emulated path only where the reference accepted the call (BL_OK, M > 0). Header-only; include
 * once per test program. */
#ifndef BL_TEST_PATHS_H
#define BL_TEST_PATHS_H

#include "../../csrc/bitlinear.h"
#include "../../csrc/cpu/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TP_FN static __attribute__((unused))

typedef struct {
  const char *name;
  int isa;                  /* public ISA index; BL_ISA_REF for the reference */
  const bl_cpu_kernels *kt; /* non-NULL: an emulated table, internal drivers */
} tpath;

#define TP_MAX 8
static tpath tp_list[TP_MAX];
static int tp_count;

#ifdef BL_EMU
static bl_cpu_kernels tp_k512, tp_kvnni;
#endif

/* Fills tp_list with the paths to compare with the reference (the reference itself excluded). */
TP_FN void tp_init(void) {
  tp_count = 0;
#ifdef BL_EMU
  bl_kernels_avx2(&tp_k512);
  bl_kernels_avx512vnni(&tp_k512);
  bl_kernels_avx2(&tp_kvnni);
  bl_kernels_avxvnni(&tp_kvnni);
  tp_list[tp_count++] = (tpath){"avx512vnni(emulated)", BL_ISA_AVX512VNNI, &tp_k512};
  tp_list[tp_count++] = (tpath){"avxvnni(emulated)", BL_ISA_AVXVNNI, &tp_kvnni};
#else
  for (int i = 1; i < BL_ISA_COUNT; i++)
    if (bl_isa_supported(i)) tp_list[tp_count++] = (tpath){bl_isa_name(i), i, NULL};
#endif
}

static const tpath tp_ref = {"ref", BL_ISA_REF, NULL};

TP_FN bl_status tp_quantize_weights(const tpath *p, const void *w, bl_dtype wdt, int64_t N,
                                     int64_t K, int64_t ldw, float eps, int per_channel,
                                     float *scale, uint8_t *packed, int nthreads) {
  if (p->kt)
    return bl_quantize_weights_k(p->kt, w, wdt, N, K, ldw, eps, per_channel, scale, packed,
                                 nthreads);
  bl_isa_set(p->isa);
  return bl_quantize_weights(w, wdt, N, K, ldw, eps, per_channel, scale, packed, nthreads);
}

TP_FN bl_status tp_quantize_acts(const tpath *p, const void *x, bl_dtype dt, int64_t M, int64_t K,
                                  int64_t ldx, float eps, int per_token, int8_t *xq, int64_t ldq,
                                  float *scale, int32_t *rowsum, int nthreads) {
  if (p->kt) {
    bl_quantize_acts_k(p->kt, x, dt, M, K, ldx, eps, per_token, xq, ldq, scale, rowsum, nthreads);
    return BL_OK;
  }
  bl_isa_set(p->isa);
  return bl_quantize_acts(x, dt, M, K, ldx, eps, per_token, xq, ldq, scale, rowsum, nthreads);
}

TP_FN bl_status tp_gemm_acc(const tpath *p, const int8_t *xq, int64_t ldq, const int32_t *rowsum,
                             const uint8_t *packed, int64_t M, int64_t N, int64_t K, int32_t *acc,
                             int64_t ldacc, int nthreads) {
  if (p->kt) {
    bl_gemm_acc_k(p->kt, xq, ldq, rowsum, packed, M, N, K, acc, ldacc, nthreads);
    return BL_OK;
  }
  bl_isa_set(p->isa);
  return bl_gemm_acc(xq, ldq, rowsum, packed, M, N, K, acc, ldacc, nthreads);
}

TP_FN bl_status tp_linear_q(const tpath *p, const int8_t *xq, int64_t ldq, const float *xscale,
                             const int32_t *rowsum, int64_t M, const uint8_t *packed, int64_t N,
                             int64_t K, const float *wscale, int w_per_channel, const float *bias,
                             void *y, bl_dtype ydt, int64_t ldy, int nthreads) {
  if (p->kt) {
    bl_gemm_epi_k(p->kt, xq, ldq, rowsum, xscale, packed, M, N, K, wscale, w_per_channel, bias, y,
                  ydt, ldy, nthreads);
    return BL_OK;
  }
  bl_isa_set(p->isa);
  return bl_linear_q(xq, ldq, xscale, rowsum, M, packed, N, K, wscale, w_per_channel, bias, y, ydt,
                     ldy, nthreads);
}

/* bl_linear's workspace layout (dispatch.c): x_q [M, Kp], then M scales, then M row sums. */
TP_FN void tp_carve(void *workspace, int64_t M, int64_t K, int8_t **xq, float **xs, int32_t **rs) {
  const size_t a = ((size_t)M * (size_t)bl_padded_k(K) + 63) / 64 * 64;
  const size_t b = ((size_t)M * 4 + 63) / 64 * 64;
  *xq = (int8_t *)workspace;
  *xs = (float *)((char *)workspace + a);
  *rs = (int32_t *)((char *)workspace + a + b);
}

TP_FN bl_status tp_linear(const tpath *p, const void *x, bl_dtype xdt, int64_t M, int64_t K,
                           int64_t ldx, const uint8_t *packed, int64_t N, const float *wscale,
                           int w_per_channel, const float *bias, float eps, int per_token, void *y,
                           bl_dtype ydt, int64_t ldy, void *workspace, int nthreads) {
  if (p->kt) {
    const int64_t Kp = bl_padded_k(K);
    int8_t *xq;
    float *xs;
    int32_t *rs;
    tp_carve(workspace, M, K, &xq, &xs, &rs);
    bl_quantize_acts_k(p->kt, x, xdt, M, K, ldx, eps, per_token, xq, Kp, xs, rs, nthreads);
    bl_gemm_epi_k(p->kt, xq, Kp, rs, xs, packed, M, N, K, wscale, w_per_channel, bias, y, ydt, ldy,
                  nthreads);
    return BL_OK;
  }
  bl_isa_set(p->isa);
  return bl_linear(x, xdt, M, K, ldx, packed, N, wscale, w_per_channel, bias, eps, per_token, y,
                   ydt, ldy, workspace, nthreads);
}

/* The decode layout (bitlinear.h, "CPU decode layout (LUT)"): bl_lut_gemm_acc on `lut` (the layout
 * of the packed weights). Emulated: the table's LUT kernels (or the portable C ones where it has
 * none) through the internal drivers, as dispatch.c drives them. */
TP_FN bl_status tp_lut_gemm_acc(const tpath *p, const int8_t *xq, int64_t ldq, const uint8_t *lut,
                                 int64_t M, int64_t N, int64_t K, int32_t *acc, int64_t ldacc,
                                 int nthreads) {
  if (p->kt) {
    int16_t *tabs = (int16_t *)malloc((size_t)M * (size_t)bl_lut_table_len(K) * sizeof(int16_t));
    if (!tabs) return BL_ERR_ALLOC;
    bl_lut_tables_k(p->kt, xq, ldq, M, K, tabs);
    bl_lut_gemm_acc_k(p->kt, tabs, lut, M, N, K, acc, ldacc, nthreads);
    free(tabs);
    return BL_OK;
  }
  bl_isa_set(p->isa);
  return bl_lut_gemm_acc(xq, ldq, lut, M, N, K, acc, ldacc, nthreads);
}

/* bl_linear_lut: natively with the CPU options as they are; emulated, the layout is always read
 * (bl_linear_lut's workspace: bl_linear's, then the M tables). */
TP_FN bl_status tp_linear_lut(const tpath *p, const void *x, bl_dtype xdt, int64_t M, int64_t K,
                               int64_t ldx, const uint8_t *packed, const uint8_t *lut, int64_t N,
                               const float *wscale, int w_per_channel, const float *bias, float eps,
                               int per_token, void *y, bl_dtype ydt, int64_t ldy, void *workspace,
                               int nthreads) {
  if (p->kt) {
    const int64_t Kp = bl_padded_k(K);
    int8_t *xq;
    float *xs;
    int32_t *rs;
    tp_carve(workspace, M, K, &xq, &xs, &rs);
    int16_t *tabs = (int16_t *)((char *)workspace + bl_linear_workspace_bytes(M, K));
    bl_quantize_acts_k(p->kt, x, xdt, M, K, ldx, eps, per_token, xq, Kp, xs, rs, nthreads);
    bl_lut_tables_k(p->kt, xq, Kp, M, K, tabs);
    bl_lut_gemm_epi_k(p->kt, tabs, lut, M, N, K, xs, wscale, w_per_channel, bias, y, ydt, ldy,
                      nthreads);
    return BL_OK;
  }
  bl_isa_set(p->isa);
  return bl_linear_lut(x, xdt, M, K, ldx, packed, lut, N, wscale, w_per_channel, bias, eps,
                       per_token, y, ydt, ldy, workspace, nthreads);
}

/* The int4 head (bl_q4_linear). Emulated: the table's q4 kernel (the portable C one where it has
 * none) through the internal driver, as bl_q4_linear drives it (checked arguments only). */
TP_FN bl_status tp_q4_linear(const tpath *p, const void *x, bl_dtype xdt, int64_t M, int64_t K,
                             int64_t ldx, const uint8_t *w4, const float *wscale, int64_t N,
                             int64_t G, const float *bias, float eps, void *y, bl_dtype ydt,
                             int64_t ldy, void *workspace, int nthreads) {
  if (p->kt) {
    bl_q4_linear_k(p->kt, x, xdt, M, K, ldx, w4, wscale, N, G, bias, eps, y, ydt, ldy, workspace,
                   nthreads);
    return BL_OK;
  }
  bl_isa_set(p->isa);
  return bl_q4_linear(x, xdt, M, K, ldx, w4, wscale, N, G, bias, eps, y, ydt, ldy, workspace,
                      nthreads);
}

/* The value the reference GEMM gives the invalid code 3 (2 before the format made it read as code
 * 2, i.e. weight +1): one row of 0xFF bytes times ones. */
TP_FN int tp_code3_weight(void) {
  uint8_t pk[32];
  int8_t xq[128];
  int32_t acc = 0;
  memset(pk, 0xff, sizeof(pk));
  memset(xq, 1, sizeof(xq));
  if (bl_gemm_acc_ref(xq, 128, pk, 1, 1, 128, &acc, 1, 1) != BL_OK) return -99;
  return acc / 128;
}

#endif
