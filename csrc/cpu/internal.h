/* internal.h - helpers shared by the portable C files of the CPU core. Not part of the API. */
#ifndef BITLINEAR_CPU_INTERNAL_H
#define BITLINEAR_CPU_INTERNAL_H

#include "../bitlinear.h"
#include "../bl_checks.h" /* bl_check_* argument checks (shared with CUDA) */

#include <math.h>
#include <omp.h>

/* The thread count of a parallel region: at least 1, at most the processors OpenMP sees (a huge
 * request, e.g. 100000, would exhaust libgomp; more threads than processors never help). */
static inline int bl_nthreads(int n) {
  /* omp_get_num_procs is a sched_getaffinity system call in libgomp: read once (per file), not
   * on every call (a decode call of a small layer lasts about a microsecond). */
  static int procs_cached;
  if (n <= 1) return 1;
  int procs = __atomic_load_n(&procs_cached, __ATOMIC_RELAXED);
  if (procs <= 0) {
    procs = omp_get_num_procs();
    if (procs <= 0) procs = 1;
    __atomic_store_n(&procs_cached, procs, __ATOMIC_RELAXED);
  }
  return n > procs ? procs : n;
}

/* max(v, lo) with torch.clamp(min=) semantics: NaN stays NaN (fmaxf would drop it). */
static inline float bl_clamp_min_nan(float v, float lo) { return v != v ? v : fmaxf(v, lo); }

/* The weight scale of a float64 mean of |w|: float32, at least eps; NaN when the sum is not
 * finite (a NaN or Inf weight), as on the GPU. */
static inline float bl_weight_scale(double mean, float eps) {
  return isfinite(mean) ? fmaxf((float)mean, eps) : NAN;
}

/* A packed row of zero weights (code 1 in all four positions of every byte): what a row whose
 * scale is not finite packs to. */
#define BL_ZERO_CODES_BYTE 0x55

/* clamp(rint(w / s), -1, 1) (float32 division, round half to even); NaN stays NaN. */
static inline float bl_ternary(float w, float s) {
  float q = rintf(w / s);
  q = q > 1.0f ? 1.0f : q;
  q = q < -1.0f ? -1.0f : q;
  return q;
}

/* convert.c: element i of a row of dtype dt, as float32 / rounded from float32 */
float bl_load_f(const void *p, bl_dtype dt, int64_t i);
/* Row n (row stride ldw) of a float32/float16/bfloat16 matrix as K float32 values: the row itself
 * for BL_F32, else converted (exactly) into buf. */
const float *bl_row_f32(const void *w, bl_dtype dt, int64_t ldw, int64_t n, int64_t K, float *buf);
void bl_store_f(void *p, bl_dtype dt, int64_t i, float v);

/* weights.c: packed format and float64 row sums */
void bl_pack_row(const float *w, int64_t K, float s, uint8_t *out);
/* The weight scale's float64 sums, in the one order every path uses (CPU, CUDA, reference):
 * bl_sum_abs_f64: sum of |w[k]| over a row in 32 lanes (lane j adds k = j (mod 32) in order),
 *   then the lanes pairwise, j += j + 16, + 8, + 4, + 2, + 1 (a CUDA warp's butterfly);
 * bl_sum_rows_f64: the N row sums in 256 partials (partial t adds rows t, t + 256, ... in order),
 *   then pairwise, t += t + 128, ..., + 1 (one CUDA block's tree). */
double bl_sum_abs_f64(const float *w, int64_t K);
double bl_sum_rows_f64(const double *sums, int64_t N);

/* ref.c: reference row functions, also the fallbacks of a kernel table (kernels.h) */
float bl_act_scale(float amax, float eps);
float bl_row_amax_ref(const void *x, bl_dtype dt, int64_t K);
int32_t bl_quantize_row_ref(const void *x, bl_dtype dt, int64_t K, float s, int8_t *q, int64_t Kp);
void bl_epilogue_row(const int32_t *acc, int64_t N, float sx, const float *wscale,
                     int w_per_channel, const float *bias, void *y, bl_dtype ydt, int64_t off);

#endif
