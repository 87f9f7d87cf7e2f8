/* internal.h - helpers shared by the portable C files of the CPU core. Not part of the API. */
#ifndef BITLINEAR_CPU_INTERNAL_H
#define BITLINEAR_CPU_INTERNAL_H

#include "../bitlinear.h"
#include "../bl_checks.h" /* bl_check_* argument checks (shared with CUDA) */

#include <math.h>

static inline int bl_nthreads(int n) { return n < 1 ? 1 : n; }

/* max(v, lo) with torch.clamp(min=) semantics: NaN stays NaN (fmaxf would drop it). */
static inline float bl_clamp_min_nan(float v, float lo) { return v != v ? v : fmaxf(v, lo); }

/* clamp(rint(w / s), -1, 1) (float32 division, round half to even); NaN stays NaN. */
static inline float bl_ternary(float w, float s) {
  float q = rintf(w / s);
  q = q > 1.0f ? 1.0f : q;
  q = q < -1.0f ? -1.0f : q;
  return q;
}

/* convert.c: element i of a row of dtype dt, as float32 / rounded from float32 */
float bl_load_f(const void *p, bl_dtype dt, int64_t i);
void bl_store_f(void *p, bl_dtype dt, int64_t i, float v);

/* weights.c: packed format and float64 row sums */
void bl_pack_row(const float *w, int64_t K, float s, uint8_t *out);
double bl_sum_abs_f64(const float *w, int64_t K);
int bl_row_finite(const float *w, int64_t K);

/* ref.c: reference row functions, also the fallbacks of a kernel table (kernels.h) */
float bl_act_scale(float amax, float eps);
float bl_row_amax_ref(const void *x, bl_dtype dt, int64_t K);
int32_t bl_quantize_row_ref(const void *x, bl_dtype dt, int64_t K, float s, int8_t *q, int64_t Kp);
void bl_epilogue_row(const int32_t *acc, int64_t N, float sx, const float *wscale,
                     int w_per_channel, const float *bias, void *y, bl_dtype ydt, int64_t off);

#endif
