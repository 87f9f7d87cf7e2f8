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

/* A prefetch of the weight bytes at base + off. Integer address arithmetic: past the matrix end
 * (the last tiles of a range prefetch beyond it) a prefetch does not fault. */
#define BL_PREFETCH_NEXT_TILE(base, off) \
  _mm_prefetch((const char *)((uintptr_t)(base) + (uintptr_t)(off)), _MM_HINT_T0)

/* Software prefetch distance (bytes) of the weight stream, every x86 tile. Measured on Zen 5
 * (AVX-512 and AVX2 paths, 1 thread, 4096 x 4096, weights from DRAM): M = 1 took 306 / 236 us
 * with no prefetch / next-tile prefetch, 152 / 167 us at 8 KiB (4 KiB: slower, 16 KiB: no
 * better). Overridable for tuning (-DBL_PF_DIST=...). */
#ifndef BL_PF_DIST
#define BL_PF_DIST 8192
#endif

/* GEMV weight streaming: a tile of NR packed rows (NR * rb contiguous bytes, the rows of a thread's
 * range follow one another) is read block by block, the NR rows side by side. At block b this
 * prefetches the NR * 32 bytes at dist + b * NR * 32 from the tile's start: one linear sweep
 * `dist` bytes ahead of the reads, whatever K is, that runs on through the next tiles (a thread's
 * range is contiguous, gemm.c). One prefetch per 64-byte line (NR even; NR = 1, 3 round up). */
#define BL_PREFETCH_AHEAD(w, dist, b, NR)                                                  \
  do {                                                                                   \
    for (int pf_ = 0; pf_ < (NR); pf_ += 2)                                              \
      BL_PREFETCH_NEXT_TILE(w, (dist) + ((b) * (NR) + pf_) * BL_BLOCK_BYTES);            \
  } while (0)

/* Sum of the eight int32 lanes. */
BL_INLINE int32_t bl_hsum8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
#endif
