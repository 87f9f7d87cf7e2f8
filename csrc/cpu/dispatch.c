/* dispatch.c - run-time ISA selection and the public CPU entry points.
 * Every entry point validates its arguments once here, then runs the selected path: the *_ref
 * functions for BL_ISA_REF, else the portable drivers (gemm.c, weights.c) with that ISA's kernel
 * table. */
#include "../bitlinear.h"
#include "internal.h"
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#if defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

static const char *const isa_names[BL_ISA_COUNT] = {"ref", "avx2", "avx512vnni", "avxvnni",
                                                    "neon_dot"};

const char *bl_isa_name(int isa) {
  return (isa >= 0 && isa < BL_ISA_COUNT) ? isa_names[isa] : "unknown";
}

int bl_isa_from_name(const char *name) {
  if (!name) return -1;
  for (int i = 0; i < BL_ISA_COUNT; i++)
    if (strcmp(name, isa_names[i]) == 0) return i;
  if (strcmp(name, "scalar") == 0) return BL_ISA_REF;
  return -1;
}

/* Compiled paths follow the architecture the compiler targets, not -D flags. */
int bl_isa_compiled(int isa) {
  switch (isa) {
    case BL_ISA_REF: return 1;
#if defined(__x86_64__)
    case BL_ISA_AVX2:
    case BL_ISA_AVX512VNNI:
    case BL_ISA_AVXVNNI: return 1;
#endif
#if defined(__aarch64__)
    case BL_ISA_NEON_DOT: return 1;
#endif
    default: return 0;
  }
}

#if defined(__x86_64__)
static uint64_t xcr0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

/* Bit mask of the supported paths, from cpuid and the OS-enabled register state (xgetbv). */
static int detect_isas(void) {
  int mask = 1 << BL_ISA_REF;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return mask;
  const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1,
            f16c = (c >> 29) & 1;
  if (!(osxsave && avx && fma && f16c)) return mask;
  const uint64_t xcr = xcr0();
  if ((xcr & 0x6) != 0x6) return mask; /* xmm + ymm state */
  if (__get_cpuid_max(0, NULL) < 7) return mask;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned max_subleaf = a;
  const int avx2 = (b >> 5) & 1, bmi2 = (b >> 8) & 1, avx512f = (b >> 16) & 1,
            avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1,
            avx512vnni = (c >> 11) & 1;
  if (!(avx2 && bmi2)) return mask;
  mask |= 1 << BL_ISA_AVX2;
  if (avx512f && avx512dq && avx512bw && avx512vl && avx512vnni && (xcr & 0xe0) == 0xe0)
    mask |= 1 << BL_ISA_AVX512VNNI; /* + opmask, zmm0-15 upper halves, zmm16-31 */
  if (max_subleaf >= 1) {
    unsigned a1, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    if ((a1 >> 4) & 1) mask |= 1 << BL_ISA_AVXVNNI;
  }
  return mask;
}
#elif defined(__aarch64__)
static int detect_isas(void) {
  int mask = 1 << BL_ISA_REF;
#if defined(__linux__)
  if (getauxval(AT_HWCAP) & (1UL << 20)) mask |= 1 << BL_ISA_NEON_DOT; /* HWCAP_ASIMDDP */
#elif defined(__APPLE__)
  int v = 0;
  size_t len = sizeof(v);
  if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, NULL, 0) == 0 && v)
    mask |= 1 << BL_ISA_NEON_DOT;
#endif
  return mask;
}
#else
static int detect_isas(void) { return 1 << BL_ISA_REF; }
#endif

static int isa_mask(void) {
  static int cached = 0; /* 0 = not yet detected (REF is always set once detected) */
  int m = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (!m) {
    m = detect_isas();
    __atomic_store_n(&cached, m, __ATOMIC_RELAXED);
  }
  return m;
}

int bl_isa_supported(int isa) {
  return isa >= 0 && isa < BL_ISA_COUNT && bl_isa_compiled(isa) && ((isa_mask() >> isa) & 1);
}

int bl_isa_best(void) {
  static const int order[] = {BL_ISA_AVX512VNNI, BL_ISA_AVXVNNI, BL_ISA_AVX2, BL_ISA_NEON_DOT};
  for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
    if (bl_isa_supported(order[i])) return order[i];
  return BL_ISA_REF;
}

static int current_isa = -1;

int bl_isa_get(void) {
  int cur = __atomic_load_n(&current_isa, __ATOMIC_RELAXED);
  if (cur < 0) {
    int best = bl_isa_best();
    const char *env = getenv("BITLINEAR_ISA");
    int want = env ? bl_isa_from_name(env) : -1;
    cur = (want >= 0 && bl_isa_supported(want)) ? want : best;
    __atomic_store_n(&current_isa, cur, __ATOMIC_RELAXED);
  }
  return cur;
}

bl_status bl_isa_set(int isa) {
  if (!bl_isa_supported(isa)) return BL_ERR_ISA;
  __atomic_store_n(&current_isa, isa, __ATOMIC_RELAXED);
  return BL_OK;
}

/* The kernel table of a non-ref path (cheap: a few pointer stores, built per call). */
static void fill_kernels(int isa, bl_cpu_kernels *k) {
  memset(k, 0, sizeof(*k));
  switch (isa) {
#if defined(__x86_64__)
    case BL_ISA_AVX2: bl_kernels_avx2(k); break;
    case BL_ISA_AVXVNNI: bl_kernels_avx2(k); bl_kernels_avxvnni(k); break;
    case BL_ISA_AVX512VNNI: bl_kernels_avx2(k); bl_kernels_avx512vnni(k); break;
#endif
#if defined(__aarch64__)
    case BL_ISA_NEON_DOT: bl_kernels_neon_dot(k); break;
#endif
    default: break;
  }
}

/* Each ISA's kernel table, filled once, on first use (filling it per call cost a memset and the
 * fills, twice per forward). Only an ISA that is in use is filled: an ISA file's fill function is
 * compiled for its ISA and may use its instructions. The first caller fills; others wait. */
static bl_cpu_kernels kernel_tables[BL_ISA_COUNT];
static int kernel_tables_state[BL_ISA_COUNT]; /* 0: not filled, 1: being filled, 2: ready */

static const bl_cpu_kernels *kernels_of(int isa) {
  if (isa < 0 || isa >= BL_ISA_COUNT) isa = BL_ISA_REF;
  int *state = &kernel_tables_state[isa];
  if (__atomic_load_n(state, __ATOMIC_ACQUIRE) != 2) {
    int expected = 0;
    if (__atomic_compare_exchange_n(state, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      fill_kernels(isa, &kernel_tables[isa]);
      __atomic_store_n(state, 2, __ATOMIC_RELEASE);
    } else {
      while (__atomic_load_n(state, __ATOMIC_ACQUIRE) != 2) {
      }
    }
  }
  return &kernel_tables[isa];
}

bl_status bl_quantize_weights(const void *w, bl_dtype wdt, int64_t N, int64_t K, int64_t ldw,
                              float eps, int per_channel, float *scale, uint8_t *packed,
                              int nthreads) {
  const int isa = bl_isa_get();
  if (isa == BL_ISA_REF)
    return bl_quantize_weights_ref(w, wdt, N, K, ldw, eps, per_channel, scale, packed, nthreads);
  bl_status st = bl_check_matrix(w && scale && packed, N, K, ldw);
  if (st != BL_OK) return st;
  if (!bl_dtype_ok(wdt) || bl_check_eps(eps) != BL_OK) return BL_ERR_ARG;
  const bl_cpu_kernels *kt = kernels_of(isa);
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
  const bl_cpu_kernels *kt = kernels_of(isa);
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
  const bl_cpu_kernels *kt = kernels_of(isa);
  bl_gemm_acc_k(kt, xq, ldq, rowsum, packed, M, N, K, acc, ldacc, nthreads);
  return BL_OK;
}

static size_t align64(size_t n) { return (n + 63) / 64 * 64; }

/* Quantized rows [M, Kp], then M scales, then M row sums. */
size_t bl_linear_workspace_bytes(int64_t M, int64_t K) {
  if (M < 0 || K < 1) return 0;
  size_t m = (size_t)M;
  return align64(m * (size_t)bl_padded_k(K)) + align64(m * 4) + align64(m * 4);
}

/* GEMM + epilogue from quantized activations; the reference path keeps int32 accumulators. */
static bl_status linear_q(int isa, const int8_t *xq, int64_t ldq, const float *xscale,
                          const int32_t *rowsum, int64_t M, const uint8_t *packed, int64_t N,
                          int64_t K, const float *wscale, int w_per_channel, const float *bias,
                          void *y, bl_dtype ydt, int64_t ldy, int nthreads) {
  if (isa != BL_ISA_REF) {
    const bl_cpu_kernels *kt = kernels_of(isa);
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
  *xs = (float *)(ws + align64((size_t)M * (size_t)Kp));
  *rs = (int32_t *)((char *)*xs + align64((size_t)M * 4));
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
  const bl_cpu_kernels *kt = kernels_of(isa); /* all NULL for ref: the portable loops */
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
  const bl_cpu_kernels *kt = kernels_of(isa);
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
/* AUTO's largest M: measured on Zen 5 (docs/benchmarks.md, "Decode"): M = 2 wins hot but loses
 * with the weights streamed from DRAM (a real model's case), M = 1 wins both.
 * The mode starts OFF: the decode layout is a second copy of the weights (1.78 bits per weight on
 * top of the packed 2), and on Zen 4 with the weights streamed from DRAM the packed GEMV was as
 * fast at M = 1 (docs/benchmarks.md, "One resident copy"). AUTO is an opt-in. */
#define LUT_MAX_M_DEFAULT 1
static int64_t cpu_options[BL_CPU_OPT_COUNT] = {BL_CPU_LUT_OFF, LUT_MAX_M_DEFAULT};

bl_status bl_cpu_set_option(int option, int64_t value) {
  switch (option) {
    case BL_CPU_OPT_LUT:
      if (value < BL_CPU_LUT_OFF || value > BL_CPU_LUT_FORCE) return BL_ERR_ARG;
      break;
    case BL_CPU_OPT_LUT_MAX_M:
      if (value < 0 || value > 64) return BL_ERR_ARG;
      break;
    default: return BL_ERR_ARG;
  }
  __atomic_store_n(&cpu_options[option], value, __ATOMIC_RELAXED);
  return BL_OK;
}

int64_t bl_cpu_get_option(int option) {
  if (option < 0 || option >= BL_CPU_OPT_COUNT) return -1;
  return __atomic_load_n(&cpu_options[option], __ATOMIC_RELAXED);
}

int bl_lut_kernel(void) {
  const bl_cpu_kernels *kt = kernels_of(bl_isa_get());
  return kt->lut_gemv != NULL;
}

/* A kernel AUTO may use: one measured faster than the packed GEMV. */
static int lut_auto_kernel(const bl_cpu_kernels *kt) { return kt->lut_gemv && kt->lut_auto; }

static int lut_used(int64_t M, int has_kernel) {
  const int64_t mode = bl_cpu_get_option(BL_CPU_OPT_LUT);
  if (mode == BL_CPU_LUT_FORCE) return 1;
  return mode == BL_CPU_LUT_AUTO && has_kernel && M <= bl_cpu_get_option(BL_CPU_OPT_LUT_MAX_M);
}

int bl_lut_used(int64_t M) {
  const bl_cpu_kernels *kt = kernels_of(bl_isa_get());
  return M >= 0 && lut_used(M, lut_auto_kernel(kt));
}

/* The int16 tables of M tokens, after bl_linear's workspace. */
size_t bl_linear_lut_workspace_bytes(int64_t M, int64_t K) {
  if (M < 0 || K < 1 || K > BL_MAX_K) return 0;
  return bl_linear_workspace_bytes(M, K) +
         align64((size_t)M * (size_t)bl_lut_table_len(K) * sizeof(int16_t));
}

bl_status bl_lut_gemm_acc(const int8_t *xq, int64_t ldq, const uint8_t *lut, int64_t M,
                          int64_t N, int64_t K, int32_t *acc, int64_t ldacc, int nthreads) {
  bl_status st = bl_check_gemm(xq, ldq, lut, M, N, K, acc, ldacc);
  if (st != BL_OK || M == 0) return st;
  int16_t *tabs = (int16_t *)malloc((size_t)M * (size_t)bl_lut_table_len(K) * sizeof(int16_t));
  if (!tabs) return BL_ERR_ALLOC;
  const bl_cpu_kernels *kt = kernels_of(bl_isa_get());
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
  const bl_cpu_kernels *kt = kernels_of(bl_isa_get());
  const int use = lut && lut_used(M, lut_auto_kernel(kt));
  return linear_impl(x, xdt, M, K, ldx, packed, use ? lut : NULL, N, wscale, w_per_channel, bias,
                     eps, per_token, y, ydt, ldy, workspace, nthreads);
}
