/* internal.h - helpers shared by the portable C files of the CPU core. Not part of the API. */
#ifndef BITLINEAR_CPU_INTERNAL_H
#define BITLINEAR_CPU_INTERNAL_H

#include "../bitlinear.h"
#include "../bl_checks.h" /* bl_check_* argument checks (shared with CUDA) */

#include <math.h>
#include <omp.h>
#include <string.h>

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

/* Bytes of one element of a float32/float16/bfloat16 row. */
static inline size_t bl_dtype_bytes(bl_dtype dt) { return dt == BL_F32 ? 4 : 2; }

/* n rounded up to a whole number of 64-byte lines (the pieces of a workspace). */
static inline size_t bl_align64(size_t n) { return (n + 63) / 64 * 64; }

/* ---------------------------------------------------------------- parallel regions
 * Every OpenMP region of the CPU core (weight and activation quantization, the GEMMs and their
 * epilogue, unpacking, the decode-layout pack, and the ref.c loops) runs through these:
 *
 *   bl_region r;
 *   if (bl_region_begin(&r, nt) > 1) {        // the governor's thread count for this region
 *   #pragma omp parallel num_threads(r.nt)
 *     { bl_region_thread t; bl_region_enter(&r, &t); ...work...; bl_region_leave(&r, &t); }
 *     bl_region_end(&r);                       // report how long the region waited
 *   } else { ...the same work, serially... }
 *
 * - Oversubscription governor (governor.c): a region whose wall time is far above the CPU time its
 *   busiest thread got waited for a descheduled thread; the next regions, of any kind, then run on
 *   one thread for a while. One shared state, so a training step's quantization, unpacking and
 *   GEMMs all drop to one thread together.
 * - Floating-point mode: OpenMP's worker threads keep their own FTZ/DAZ and rounding bits (MXCSR
 *   on x86, FPCR on aarch64), while torch.set_flush_denormal sets the calling thread's only.
 *   bl_region_begin reads the caller's mode (only when the region has several threads: a serial
 *   region runs on the caller and reads nothing), bl_region_enter puts it in each thread (a write
 *   only where it differs) and bl_region_leave restores the thread's own. So every thread that
 *   computes for one call computes in the caller's mode, and results do not depend on the thread
 *   count in any mode (bitlinear.h, "Numerics"). */
#if defined(__x86_64__) || defined(__i386__)
/* MXCSR: DAZ (bit 6), rounding control (bits 13-14), FTZ (bit 15) */
#define BL_FP_MODE_BITS 0xE040ull
static inline unsigned long long bl_fp_reg_get(void) {
  unsigned int v;
  __asm__ volatile("stmxcsr %0" : "=m"(v));
  return v;
}
static inline void bl_fp_reg_set(unsigned long long v) {
  unsigned int x = (unsigned int)v;
  __asm__ volatile("ldmxcsr %0" : : "m"(x) : "memory");
}
#elif defined(__aarch64__)
/* FPCR: FIZ (bit 0) and AH (bit 1) where FEAT_AFP has them (else they read 0 everywhere), FZ16
 * (bit 19), rounding mode (bits 22-23), FZ (bit 24) */
#define BL_FP_MODE_BITS ((3ull << 0) | (1ull << 19) | (3ull << 22) | (1ull << 24))
static inline unsigned long long bl_fp_reg_get(void) {
  unsigned long long v;
  __asm__ volatile("mrs %0, fpcr" : "=r"(v));
  return v;
}
static inline void bl_fp_reg_set(unsigned long long v) {
  __asm__ volatile("msr fpcr, %0" : : "r"(v) : "memory");
}
#else
#define BL_FP_MODE_BITS 0ull /* no known mode register: nothing to carry */
static inline unsigned long long bl_fp_reg_get(void) { return 0; }
static inline void bl_fp_reg_set(unsigned long long v) { (void)v; }
#endif

typedef struct {
  int nt;                  /* threads of the region: 1 runs it serially on the caller */
  unsigned long long fp;   /* the caller's mode bits (BL_FP_MODE_BITS), read when nt > 1 */
  double t0, busiest;      /* wall clock at the start; CPU seconds of the busiest thread */
} bl_region;
typedef struct {
  unsigned long long saved; /* the thread's own register */
  double c0;                /* its CPU clock at the start */
} bl_region_thread;

/* governor.c. begin: the threads a region that could use nt may use now (nt, or 1 while the governor
 * says so), stored in r->nt and returned; end: the region's report to the governor (nt > 1).
 * enter / leave: first and last thing of every thread of a parallel region (nothing when r->nt is
 * 1, so a region that may run with one thread can call them unconditionally). */
int bl_region_begin(bl_region *r, int nt);
void bl_region_end(const bl_region *r);
void bl_region_enter(const bl_region *r, bl_region_thread *t);
void bl_region_leave(bl_region *r, const bl_region_thread *t);

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

/* float32 -> bfloat16, round to nearest even, NaN kept quiet (bl_f32_to_bf16; inline for loops) */
static inline uint16_t bl_bf16_rne(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

static inline float bl_bf16_f32(uint16_t h) {
  const uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
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

/* ---------------------------------------------------------------- int4 head (q4) */
/* The argument checks of bl_q4_linear and bl_q4_linear_ref (q4.c): the status of the call. */
bl_status bl_q4_check(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                      const uint8_t *w4, const float *wscale, int64_t N, int64_t G, float eps,
                      const void *y, bl_dtype ydt, int64_t ldy, const void *workspace);
/* The workspace of M tokens (bl_q4_linear_workspace_bytes): x_q [M, Kg * G], then M scales, then
 * the lane corrections [M, Kg * 8] (int32), each piece 64-byte aligned. */
static inline void bl_q4_carve(void *workspace, int64_t M, int64_t Kg, int64_t G, int8_t **xq,
                               float **sx, int32_t **corr) {
  char *p = (char *)workspace;
  *xq = (int8_t *)p;
  p += bl_align64((size_t)M * (size_t)(Kg * G));
  *sx = (float *)p;
  p += bl_align64((size_t)M * 4);
  *corr = (int32_t *)p;
}

#endif
