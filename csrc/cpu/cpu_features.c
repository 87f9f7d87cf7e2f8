/* cpu_features.c - which CPU path runs: what this build compiles and this CPU supports (cpuid and
 * xgetbv on x86-64, hwcaps on aarch64), the path in use (bl_isa_get / bl_isa_set, BITLINEAR_ISA),
 * and each path's kernel table (kernels.h), filled once and cached. */
#include "../bitlinear.h"
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

/* The kernel table of a non-ref path: a few pointer stores. */
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

const bl_cpu_kernels *bl_kernels_of(int isa) {
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
