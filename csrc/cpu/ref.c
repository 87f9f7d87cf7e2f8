/* ref.c - the plain portable C ground truth of every CPU entry point.
 * Written for clarity, not speed: every SIMD and CUDA path is tested against it. */
#include "../bitlinear.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *bl_status_str(bl_status s) {
  switch (s) {
    case BL_OK: return "ok";
    case BL_ERR_NULL: return "a required pointer is NULL";
    case BL_ERR_SIZE: return "invalid size";
    case BL_ERR_STRIDE: return "leading dimension smaller than the row";
    case BL_ERR_ARG: return "argument out of range";
    case BL_ERR_ISA: return "ISA not available on this build or CPU";
    case BL_ERR_ALLOC: return "allocation failed";
    case BL_ERR_CUDA: return "CUDA runtime error";
    case BL_ERR_NO_CUDA: return "built without CUDA";
    case BL_ERR_NONFINITE: return "weights contain NaN or Inf";
  }
  return "unknown status";
}

/* ---------------------------------------------------------------- dtype conversion */
float bl_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: normalise */
      int e = -1;
      do { man <<= 1; e++; } while (!(man & 0x400u));
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0);
  } else {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t bl_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) /* Inf or NaN (quiet) */
    return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0);
  if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow to Inf */
    return sign | 0x7c00u;
  if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
    if (ax < 0x33000000u) return sign; /* < 2^-25 rounds to 0 */
    uint32_t e = ax >> 23;
    uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t q = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return sign | (uint16_t)q;
  }
  uint32_t q = ((ax >> 13) - (112u << 10)); /* rebias exponent */
  uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) q++;
  return sign | (uint16_t)q;
}

float bl_bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t bl_f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

float bl_load_f(const void *p, bl_dtype dt, int64_t i) {
  switch (dt) {
    case BL_F16: return bl_f16_to_f32(((const uint16_t *)p)[i]);
    case BL_BF16: return bl_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
  }
}

void bl_store_f(void *p, bl_dtype dt, int64_t i, float v) {
  switch (dt) {
    case BL_F16: ((uint16_t *)p)[i] = bl_f32_to_f16(v); break;
    case BL_BF16: ((uint16_t *)p)[i] = bl_f32_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
  }
}

/* ---------------------------------------------------------------- argument checks */
bl_status bl_check_dims(int64_t rows, int64_t cols, int64_t ld) {
  if (rows < 0 || cols < 0) return BL_ERR_SIZE;
  if (cols > ((int64_t)1 << 40) || rows > ((int64_t)1 << 40)) return BL_ERR_SIZE;
  if (ld < cols) return BL_ERR_STRIDE;
  return BL_OK;
}

int bl_dtype_ok(bl_dtype dt) { return dt == BL_F32 || dt == BL_F16 || dt == BL_BF16; }

/* ---------------------------------------------------------------- weights */
static inline uint8_t ternary_code(float w, float s) {
  float q = rintf(w / s);
  if (q > 1.0f) q = 1.0f;
  if (q < -1.0f) q = -1.0f;
  return (uint8_t)((int)q + 1);
}

void bl_pack_row(const float *w, int64_t K, float s, uint8_t *out) {
  int64_t nb = bl_padded_k(K) / BL_QK;
  memset(out, 0, (size_t)nb * BL_BLOCK_BYTES);
  for (int64_t k = 0; k < nb * BL_QK; k++) {
    uint8_t c = k < K ? ternary_code(w[k], s) : BL_CODE_ZERO;
    int64_t b = k / BL_QK, r = k % BL_QK;
    out[b * BL_BLOCK_BYTES + (r % 32)] |= (uint8_t)(c << (2 * (r / 32)));
  }
}

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

bl_status bl_quantize_weights_ref(const float *w, int64_t N, int64_t K, int64_t ldw, float eps,
                                  int per_channel, float *scale, uint8_t *packed, int nthreads) {
  if (!w || !scale || !packed) return BL_ERR_NULL;
  if (N < 1 || K < 1) return BL_ERR_SIZE;
  bl_status st = bl_check_dims(N, K, ldw);
  if (st != BL_OK) return st;
  const int64_t rb = bl_packed_row_bytes(K);
  int bad = 0;
  for (int64_t n = 0; n < N; n++) bad |= !bl_row_finite(w + n * ldw, K);
  if (bad) return BL_ERR_NONFINITE;
  if (per_channel) {
#pragma omp parallel for num_threads(bl_nthreads(nthreads)) schedule(static)
    for (int64_t n = 0; n < N; n++) {
      float s = (float)(bl_sum_abs_f64(w + n * ldw, K) / (double)K);
      scale[n] = fmaxf(s, eps);
      bl_pack_row(w + n * ldw, K, scale[n], packed + n * rb);
    }
  } else {
    double total = 0.0;
    for (int64_t n = 0; n < N; n++) total += bl_sum_abs_f64(w + n * ldw, K);
    float s = fmaxf((float)(total / ((double)N * (double)K)), eps);
    scale[0] = s;
#pragma omp parallel for num_threads(bl_nthreads(nthreads)) schedule(static)
    for (int64_t n = 0; n < N; n++) bl_pack_row(w + n * ldw, K, s, packed + n * rb);
  }
  return BL_OK;
}

/* torch.clamp(min=) semantics: NaN stays NaN (fmaxf would drop it). */
static inline float clamp_min_nan(float v, float lo) { return v != v ? v : fmaxf(v, lo); }

/* Portable on purpose: the loop vectorises as written (-O3, -fno-math-errno), and the float64
 * row sums are the same serial loops as the packing path, so scales match bit for bit. */
bl_status bl_fake_quant_weights(const float *w, int64_t N, int64_t K, int64_t ldw, float eps,
                                int per_channel, float *scale, float *wdq, int64_t ldo,
                                int nthreads) {
  if (!w || !scale || !wdq) return BL_ERR_NULL;
  if (N < 1 || K < 1) return BL_ERR_SIZE;
  bl_status st = bl_check_dims(N, K, ldw);
  if (st == BL_OK) st = bl_check_dims(N, K, ldo);
  if (st != BL_OK) return st;
  double *sums = (double *)malloc((size_t)N * sizeof(double));
  if (!sums) return BL_ERR_ALLOC;
#pragma omp parallel for num_threads(bl_nthreads(nthreads)) schedule(static)
  for (int64_t n = 0; n < N; n++) sums[n] = bl_sum_abs_f64(w + n * ldw, K);
  /* Non-finite weights are not an error here (training may diverge): as in torch, the scale
   * becomes NaN/Inf and every weight it scales NaN (clamp keeps NaN; 0 * Inf is NaN). */
  double total = 0.0;
  for (int64_t n = 0; n < N; n++) total += sums[n];
  if (per_channel) {
    for (int64_t n = 0; n < N; n++) scale[n] = clamp_min_nan((float)(sums[n] / (double)K), eps);
  } else {
    scale[0] = clamp_min_nan((float)(total / ((double)N * (double)K)), eps);
  }
  free(sums);
#pragma omp parallel for num_threads(bl_nthreads(nthreads)) schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float s = scale[per_channel ? n : 0];
    const float *src = w + n * ldw;
    float *dst = wdq + n * ldo;
    for (int64_t k = 0; k < K; k++) {
      float q = rintf(src[k] / s);
      q = q > 1.0f ? 1.0f : q;
      q = q < -1.0f ? -1.0f : q;
      dst[k] = q * s;
    }
  }
  return BL_OK;
}

bl_status bl_unpack_weights(const uint8_t *packed, int64_t N, int64_t K, int8_t *wq, int64_t ldq) {
  if (!packed || !wq) return BL_ERR_NULL;
  if (N < 1 || K < 1) return BL_ERR_SIZE;
  bl_status st = bl_check_dims(N, K, ldq);
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

/* ---------------------------------------------------------------- activations */
/* torch.clamp propagates NaN; fmaxf would not. */
float bl_act_scale(float amax, float eps) {
  return clamp_min_nan(amax, eps) / 127.0f;
}

/* Quantize one row with a given scale; a non-finite scale gives zeros (the epilogue
 * turns the row into NaN). Returns the sum of the codes. */
int32_t bl_quantize_row_ref(const void *x, bl_dtype dt, int64_t K, float s, int8_t *q, int64_t Kp) {
  int32_t sum = 0;
  int finite = isfinite(s);
  for (int64_t k = 0; k < K; k++) {
    float v = finite ? rintf(bl_load_f(x, dt, k) / s) : 0.0f;
    if (v > 127.0f) v = 127.0f;
    if (v < -128.0f) v = -128.0f;
    if (v != v) v = 0.0f; /* unreachable for a finite scale; keeps the cast defined */
    q[k] = (int8_t)v;
    sum += q[k];
  }
  for (int64_t k = K; k < Kp; k++) q[k] = 0;
  return sum;
}

/* amax with NaN propagation, as torch.amax */
float bl_row_amax_ref(const void *x, bl_dtype dt, int64_t K) {
  float m = 0.0f;
  for (int64_t k = 0; k < K; k++) {
    float v = fabsf(bl_load_f(x, dt, k));
    if (v != v) return v;
    if (v > m) m = v;
  }
  return m;
}

bl_status bl_check_acts(const void *x, bl_dtype dt, int64_t M, int64_t K, int64_t ldx,
                        int8_t *xq, int64_t ldq, float *scale) {
  if (M > 0 && (!x || !xq || !scale)) return BL_ERR_NULL;
  if (K < 1) return BL_ERR_SIZE;
  if (!bl_dtype_ok(dt)) return BL_ERR_ARG;
  bl_status st = bl_check_dims(M, K, ldx);
  if (st != BL_OK) return st;
  if (ldq < bl_padded_k(K)) return BL_ERR_STRIDE;
  return BL_OK;
}

bl_status bl_quantize_acts_ref(const void *x, bl_dtype dt, int64_t M, int64_t K, int64_t ldx,
                               float eps, int per_token, int8_t *xq, int64_t ldq, float *scale,
                               int32_t *rowsum, int nthreads) {
  bl_status st = bl_check_acts(x, dt, M, K, ldx, xq, ldq, scale);
  if (st != BL_OK || M == 0) return st;
  const size_t es = dt == BL_F32 ? 4 : 2;
  const int64_t Kp = bl_padded_k(K);
  if (!per_token) {
    float m = 0.0f;
    for (int64_t i = 0; i < M; i++) {
      float r = bl_row_amax_ref((const char *)x + (size_t)(i * ldx) * es, dt, K);
      if (r != r || r > m) m = r;
      if (m != m) break;
    }
    float s = bl_act_scale(m, eps);
    for (int64_t i = 0; i < M; i++) scale[i] = s;
  }
#pragma omp parallel for num_threads(bl_nthreads(nthreads)) schedule(static)
  for (int64_t i = 0; i < M; i++) {
    const void *row = (const char *)x + (size_t)(i * ldx) * es;
    if (per_token) scale[i] = bl_act_scale(bl_row_amax_ref(row, dt, K), eps);
    int32_t s = bl_quantize_row_ref(row, dt, K, scale[i], xq + i * ldq, Kp);
    if (rowsum) rowsum[i] = s;
  }
  return BL_OK;
}

/* ---------------------------------------------------------------- GEMM */
bl_status bl_check_gemm(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M,
                        int64_t N, int64_t K, int32_t *acc, int64_t ldacc) {
  if (M > 0 && (!xq || !packed || !acc)) return BL_ERR_NULL;
  if (N < 1 || K < 1) return BL_ERR_SIZE;
  bl_status st = bl_check_dims(M, N, ldacc);
  if (st != BL_OK) return st;
  if (ldq < bl_padded_k(K)) return BL_ERR_STRIDE;
  return BL_OK;
}

bl_status bl_gemm_acc_ref(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M,
                          int64_t N, int64_t K, int32_t *acc, int64_t ldacc, int nthreads) {
  bl_status st = bl_check_gemm(xq, ldq, packed, M, N, K, acc, ldacc);
  if (st != BL_OK || M == 0) return st;
  const int64_t rb = bl_packed_row_bytes(K), nb = bl_padded_k(K) / BL_QK;
#pragma omp parallel for collapse(2) num_threads(bl_nthreads(nthreads)) schedule(static)
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      const int8_t *x = xq + m * ldq;
      const uint8_t *w = packed + n * rb;
      int32_t s = 0;
      for (int64_t b = 0; b < nb; b++)
        for (int j = 0; j < 32; j++) {
          uint8_t byte = w[b * BL_BLOCK_BYTES + j];
          for (int g = 0; g < 4; g++)
            s += (int32_t)x[b * BL_QK + 32 * g + j] * (((byte >> (2 * g)) & 3) - 1);
        }
      acc[m * ldacc + n] = s;
    }
  return BL_OK;
}

/* ---------------------------------------------------------------- epilogue */
bl_status bl_epilogue_ref(const int32_t *acc, int64_t ldacc, int64_t M, int64_t N,
                          const float *xscale, const float *wscale, int w_per_channel,
                          const float *bias, void *y, bl_dtype ydt, int64_t ldy, int nthreads) {
  if (M > 0 && (!acc || !xscale || !wscale || !y)) return BL_ERR_NULL;
  if (!bl_dtype_ok(ydt)) return BL_ERR_ARG;
  if (bl_check_dims(M, N, ldacc) != BL_OK || bl_check_dims(M, N, ldy) != BL_OK)
    return BL_ERR_STRIDE;
#pragma omp parallel for num_threads(bl_nthreads(nthreads)) schedule(static)
  for (int64_t m = 0; m < M; m++) {
    bl_epilogue_row(acc + m * ldacc, N, xscale[m], wscale, w_per_channel, bias, y, ydt,
                    m * ldy);
  }
  return BL_OK;
}

void bl_epilogue_row(const int32_t *acc, int64_t N, float sx, const float *wscale,
                     int w_per_channel, const float *bias, void *y, bl_dtype ydt, int64_t off) {
  const int finite = isfinite(sx);
  for (int64_t n = 0; n < N; n++) {
    float v;
    if (!finite) {
      v = NAN;
    } else {
      float s = sx * wscale[w_per_channel ? n : 0];
      v = (float)acc[n] * s;
      if (bias) v = v + bias[n];
    }
    bl_store_f(y, ydt, off + n, v);
  }
}
