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
/* the register-pinning asm of the kernels does not apply to SIMDe's struct types */
#define BL_PIN(v) ((void)0)
#endif
