/* isa_avxvnni.c - AVX-VNNI (VEX vpdpbusd, e.g. Alder Lake, Zen 5) packed ternary tiles: the
 * shared 256-bit tile (tile256_x86.h) with four products per int32 lane and no int16 flush.
 * The rest of the path (absmax, quantization, epilogue) is the AVX2 one. */
#if defined(__x86_64__)
#include "simd_x86.h"

#define TILE256_CHUNK_BLOCKS 64
#define TILE256_STEP(a, c, x) _mm256_dpbusd_avx_epi32(a, c, x)
#define TILE256_FLUSH(acc, a) _mm256_add_epi32(acc, a)
#define TILE256_PREFETCH BL_PF_DIST
#define TILE256_LUT_DECODE (MR == 1) /* GEMV: lookups; tiles of rows: mask + min (measured) */
#include "tile256_x86.h"

BL_DEF_TILES(tile256_body, 3)

/* Int4 head (q4_x86.h): two vpdpbusd per chunk and row, no int16 step. */
#define Q4_DOT2(p, ul, xl, uh, xh) \
  _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(p, ul, xl), uh, xh)
#define Q4_MT 1 /* the 16 ymm registers */
#include "q4_x86.h"

void bl_kernels_avxvnni(bl_cpu_kernels *k) {
  k->mr = 4;
  k->nr = 3; /* 12 accumulators + 1 code vector + constants: the 16 ymm registers */
  k->nr1 = 0;
  BL_SET_TILES(k, 3);
  k->q4 = q4_kernel;
  k->q4_mt = Q4_MT;
}
#endif
