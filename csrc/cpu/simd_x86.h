/* simd_x86.h - small always-inline helpers shared by the 256-bit x86 ISA files. Each including
 * file compiles them with its own target flags (isa_flags.txt). */
#ifndef BITLINEAR_SIMD_X86_H
#define BITLINEAR_SIMD_X86_H
#include <immintrin.h>
#include <stdint.h>

/* Sum of the eight int32 lanes. */
static inline __attribute__((always_inline)) int32_t bl_hsum8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
#endif
