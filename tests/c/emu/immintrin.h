/* Test-only shim: the real <immintrin.h> plus SIMDe's portable versions of the AVX-512 and
 * VNNI intrinsics, so isa_avx512vnni.c / isa_avxvnni.c run on a CPU without them
 * (make -C tests/c emulated; needs Debian's libsimde-dev). */
#ifndef BL_EMU_IMMINTRIN_H
#define BL_EMU_IMMINTRIN_H
#include_next <immintrin.h>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
/* AVX-VNNI (VEX) has the same semantics as the AVX512VL form */
#define _mm256_dpbusd_avx_epi32(src, a, b) simde_mm256_dpbusd_epi32(src, a, b)
/* SIMDe 0.7.4 has no _mm512_cvtepi16_epi32 (the LUT GEMV's int16 -> int32 flush): without this the
 * name would reach GCC's native AVX-512F intrinsic and fail to inline. Sign extension lane by lane. */
#include <stdint.h>
#include <string.h>
#ifndef _mm512_cvtepi16_epi32 /* a SIMDe that has it defines the native alias as a macro */
static inline simde__m512i bl_emu_mm512_cvtepi16_epi32(simde__m256i a) {
  int16_t s[16];
  int32_t d[16];
  simde__m512i r;
  memcpy(s, &a, sizeof(s));
  for (int i = 0; i < 16; i++) d[i] = s[i];
  memcpy(&r, d, sizeof(r));
  return r;
}
#define _mm512_cvtepi16_epi32(a) bl_emu_mm512_cvtepi16_epi32(a)
#endif
/* the register-pinning asm of the kernels does not apply to SIMDe's struct types */
#define BL_PIN(v) ((void)0)
#endif
