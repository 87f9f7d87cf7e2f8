/* simd_x86.h - what the x86 ISA files (AVX2, AVX-VNNI, AVX-512 VNNI) share: register pinning,
 * the prefetch of the next tile's weights, the horizontal sum. Each including file compiles them
 * with its own target flags (isa_flags.txt). The 256-bit tile body is in tile256_x86.h. */
#ifndef BITLINEAR_SIMD_X86_H
#define BITLINEAR_SIMD_X86_H
#include "kernels.h"

#include <immintrin.h>
#include <stdint.h>

/* Keeps an accumulator in its register at this point, so the compiler neither re-associates the
 * sums into long-lived products nor copies them around (both spill the vector registers).
 * "v": any vector register of the target (ymm0-15; zmm0-31 with AVX-512). The SIMDe test build
 * (tests/c/emu/immintrin.h) defines it away first: the asm does not apply to SIMDe's types. */
#ifndef BL_PIN
#define BL_PIN(v) __asm__("" : "+v"(v))
#endif

/* The next tile's weight rows (the short per-row streams are not worth a hardware prefetcher's
 * ramp-up). Integer address arithmetic: past the matrix end a prefetch does not fault. */
#define BL_PREFETCH_NEXT_TILE(base, off) \
  _mm_prefetch((const char *)((uintptr_t)(base) + (uintptr_t)(off)), _MM_HINT_T0)

/* Sum of the eight int32 lanes. */
BL_INLINE int32_t bl_hsum8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
#endif
