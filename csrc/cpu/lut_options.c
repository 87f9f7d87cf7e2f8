/* lut_options.c - when a call reads the decode layout (LUT): the CPU options (the LUT mode OFF /
 * AUTO / FORCE, AUTO's largest M) and the answers built on them (bl_lut_kernel, bl_lut_used). The
 * rule itself, bl_lut_chosen, is inline in kernels.h: bl_linear_lut asks it on every call. */
#include "../bitlinear.h"
#include "kernels.h"

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
  const bl_cpu_kernels *kt = bl_kernels_of(bl_isa_get());
  return kt->lut_gemv != NULL;
}

int bl_lut_used(int64_t M) {
  const bl_cpu_kernels *kt = bl_kernels_of(bl_isa_get());
  return M >= 0 && bl_lut_chosen(M, bl_lut_auto_kernel(kt));
}
