/* internal.h - helpers shared by the CPU files of the core. Not part of the public API. */
#ifndef BITLINEAR_CPU_INTERNAL_H
#define BITLINEAR_CPU_INTERNAL_H

#include "../bitlinear.h"

static inline int bl_nthreads(int n) { return n < 1 ? 1 : n; }

float bl_load_f(const void *p, bl_dtype dt, int64_t i);
void bl_store_f(void *p, bl_dtype dt, int64_t i, float v);
bl_status bl_check_dims(int64_t rows, int64_t cols, int64_t ld);
int bl_dtype_ok(bl_dtype dt);
bl_status bl_check_acts(const void *x, bl_dtype dt, int64_t M, int64_t K, int64_t ldx,
                        int8_t *xq, int64_t ldq, float *scale);
bl_status bl_check_gemm(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M,
                        int64_t N, int64_t K, int32_t *acc, int64_t ldacc);

void bl_pack_row(const float *w, int64_t K, float s, uint8_t *out);
double bl_sum_abs_f64(const float *w, int64_t K);
int bl_row_finite(const float *w, int64_t K);
float bl_act_scale(float amax, float eps);
float bl_row_amax_ref(const void *x, bl_dtype dt, int64_t K);
int32_t bl_quantize_row_ref(const void *x, bl_dtype dt, int64_t K, float s, int8_t *q, int64_t Kp);
void bl_epilogue_row(const int32_t *acc, int64_t N, float sx, const float *wscale,
                     int w_per_channel, const float *bias, void *y, bl_dtype ydt, int64_t off);

#endif
