/* weights.c - weight side of the CPU core: the packed format (bl_pack_row, bl_unpack_weights),
 * the float64 row sums behind the weight scales, and the portable drivers of bl_quantize_weights
 * and bl_fake_quant_weights for the SIMD paths (a kernel table may supply the row loops). */
#include "kernels.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- packed format */
void bl_pack_row(const float *w, int64_t K, float s, uint8_t *out) {
  int64_t nb = bl_padded_k(K) / BL_QK;
  memset(out, 0, (size_t)nb * BL_BLOCK_BYTES);
  for (int64_t k = 0; k < nb * BL_QK; k++) {
    uint8_t c = k < K ? (uint8_t)((int)bl_ternary(w[k], s) + 1) : BL_CODE_ZERO;
    int64_t b = k / BL_QK, r = k % BL_QK;
    out[b * BL_BLOCK_BYTES + (r % 32)] |= (uint8_t)(c << (2 * (r / 32)));
  }
}

bl_status bl_unpack_weights(const uint8_t *packed, int64_t N, int64_t K, int8_t *wq, int64_t ldq) {
  bl_status st = bl_check_matrix(packed && wq, N, K, ldq);
  if (st != BL_OK) return st;
  const int64_t rb = bl_packed_row_bytes(K);
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++) {
      int64_t b = k / BL_QK, r = k % BL_QK;
      uint8_t c = (packed[n * rb + b * BL_BLOCK_BYTES + (r % 32)] >> (2 * (r / 32))) & 3u;
      wq[n * ldq + k] = (int8_t)((int)c - 1);
    }
  return BL_OK;
}

/* ---------------------------------------------------------------- scales */
double bl_sum_abs_f64(const float *w, int64_t K) {
  double s = 0.0;
  for (int64_t k = 0; k < K; k++) s += fabs((double)w[k]);
  return s;
}

int bl_row_finite(const float *w, int64_t K) {
  for (int64_t k = 0; k < K; k++)
    if (!isfinite(w[k])) return 0;
  return 1;
}

/* out[k] = s * clamp(rint(w[k] / s), -1, 1): the portable row loop (bl_ternary inlined). */
static void fake_quant_row(const float *w, int64_t K, float s, float *out) {
  for (int64_t k = 0; k < K; k++) out[k] = bl_ternary(w[k], s) * s;
}

/* ---------------------------------------------------------------- drivers */
/* Both weight drivers: the scale(s), then every row in parallel, packed (packed != NULL) or
 * fake-quantized into wdq. The same numbers as the reference: per-row float64 sums (each a
 * serial loop, only the rows run in parallel), added in row order for the per-tensor scale.
 * A non-finite weight makes its row sum Inf or NaN (|w| >= 0, and finite floats cannot overflow
 * a double sum): BL_ERR_NONFINITE when packing, a NaN or Inf scale when fake-quantizing. */
static bl_status weights_k(const bl_cpu_kernels *kt, const float *w, int64_t N, int64_t K,
                           int64_t ldw, float eps, int per_channel, float *scale,
                           uint8_t *packed, float *wdq, int64_t ldo, int nthreads) {
  const int nt = bl_nthreads(nthreads);
  const int64_t rb = bl_packed_row_bytes(K);
  bl_pack_row_fn pack = kt->pack_row ? kt->pack_row : bl_pack_row;
  bl_fake_quant_row_fn fake = kt->fake_quant_row ? kt->fake_quant_row : fake_quant_row;
  double *sums = (double *)malloc((size_t)N * sizeof(double));
  if (!sums) return BL_ERR_ALLOC;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t n = 0; n < N; n++) sums[n] = bl_sum_abs_f64(w + n * ldw, K);
  int bad = 0;
  if (packed)
    for (int64_t n = 0; n < N; n++) bad |= !isfinite(sums[n]);
  if (bad) {
    free(sums);
    return BL_ERR_NONFINITE;
  }
  if (per_channel) {
    for (int64_t n = 0; n < N; n++) scale[n] = bl_clamp_min_nan((float)(sums[n] / (double)K), eps);
  } else {
    double total = 0.0;
    for (int64_t n = 0; n < N; n++) total += sums[n];
    scale[0] = bl_clamp_min_nan((float)(total / ((double)N * (double)K)), eps);
  }
  free(sums);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float s = scale[per_channel ? n : 0];
    if (packed)
      pack(w + n * ldw, K, s, packed + n * rb);
    else
      fake(w + n * ldw, K, s, wdq + n * ldo);
  }
  return BL_OK;
}

bl_status bl_quantize_weights_k(const bl_cpu_kernels *kt, const float *w, int64_t N, int64_t K,
                                int64_t ldw, float eps, int per_channel, float *scale,
                                uint8_t *packed, int nthreads) {
  return weights_k(kt, w, N, K, ldw, eps, per_channel, scale, packed, NULL, 0, nthreads);
}

bl_status bl_fake_quant_weights_k(const bl_cpu_kernels *kt, const float *w, int64_t N,
                                  int64_t K, int64_t ldw, float eps, int per_channel,
                                  float *scale, float *wdq, int64_t ldo, int nthreads) {
  return weights_k(kt, w, N, K, ldw, eps, per_channel, scale, NULL, wdq, ldo, nthreads);
}
