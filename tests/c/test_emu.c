/* test_emu.c - runs the AVX-512 VNNI and AVX-VNNI tile kernels on a CPU without them: the ISA
 * files are compiled against SIMDe's portable intrinsics (emu/immintrin.h) and their tables are
 * driven directly through the internal GEMM driver, against the plain C reference. The decode
 * layout (LUT) too: the AVX-512 table's vpermw kernels (the portable C ones for AVX-VNNI, which has
 * none) against the reference GEMM and the packed path's epilogue.
 * Built by `make -C tests/c emulated` (x86-64 with AVX2, Debian libsimde-dev). */
#include "../../csrc/cpu/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t s = 88172645463325252ULL;
static uint64_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }
static int n_pass, n_fail;

static void run(const char *name, const bl_cpu_kernels *kt, int64_t M, int64_t N, int64_t K, int extreme) {
  const int64_t Kp = bl_padded_k(K), rb = bl_packed_row_bytes(K), ldq = Kp + (rnd() % 2) * 5;
  int8_t *xq = malloc((size_t)(M * ldq));
  uint8_t *p = calloc((size_t)(N * rb), 1);
  int32_t *a = malloc((size_t)(M * N) * 4), *b = malloc((size_t)(M * N) * 4), *c = malloc((size_t)(M * N) * 4);
  int32_t *rs = malloc((size_t)M * 4);
  for (int64_t m = 0; m < M; m++) {
    rs[m] = 0;
    for (int64_t k = 0; k < ldq; k++) {
      int v = k >= K ? 0 : extreme == 1 ? -128 : extreme == 2 ? 127 : (int)(rnd() % 256) - 128;
      xq[m * ldq + k] = (int8_t)v;
      if (k < Kp) rs[m] += v;
    }
  }
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < Kp; k++) {
      int code = k >= K ? 1 : extreme ? 2 : (int)(rnd() % 3);
      p[n * rb + (k / 128) * 32 + (k % 32)] |= (uint8_t)(code << (2 * ((k % 128) / 32)));
    }
  bl_gemm_acc_ref(xq, ldq, p, M, N, K, a, N, 1);
  bl_gemm_acc_k(kt, xq, ldq, rs, p, M, N, K, b, N, 1);
  bl_gemm_acc_k(kt, xq, ldq, NULL, p, M, N, K, c, N, 2);
  int ok = !memcmp(a, b, (size_t)(M * N) * 4) && !memcmp(a, c, (size_t)(M * N) * 4);
  printf("%s %s (emulated) gemm M=%lld N=%lld K=%lld extreme=%d\n", ok ? "PASS" : "FAIL", name,
         (long long)M, (long long)N, (long long)K, extreme);
  if (ok) n_pass++; else n_fail++;
  free(xq); free(p); free(a); free(b); free(c); free(rs);
}

/* Invalid packed codes (code 3 reads as 2, docs/packed_format.md): arbitrary weight bytes
 * (wpat 0: 0xFF everywhere, 1: random bytes, 2: every byte value in turn) with activations
 * xmode 0: random, 1: all -128, 2: all +127; 1 and 2 threads, bit for bit against the reference. */
static void run_invalid(const char *name, const bl_cpu_kernels *kt, int64_t M, int64_t N, int64_t K,
                        int wpat, int xmode) {
  const int64_t Kp = bl_padded_k(K), rb = bl_packed_row_bytes(K), ldq = Kp + (rnd() % 2) * 5;
  int8_t *xq = malloc((size_t)(M * ldq));
  uint8_t *p = malloc((size_t)(N * rb));
  int32_t *a = malloc((size_t)(M * N) * 4), *b = malloc((size_t)(M * N) * 4), *c = malloc((size_t)(M * N) * 4);
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < ldq; k++)
      xq[m * ldq + k] = (int8_t)(k >= K ? 0 : xmode == 1 ? -128 : xmode == 2 ? 127 : (int)(rnd() % 256) - 128);
  for (int64_t i = 0; i < N * rb; i++)
    p[i] = (uint8_t)(wpat == 0 ? 0xFF : wpat == 1 ? rnd() % 256 : (uint64_t)(i * 37 + i / 256) % 256);
  bl_gemm_acc_ref(xq, ldq, p, M, N, K, a, N, 1);
  bl_gemm_acc_k(kt, xq, ldq, NULL, p, M, N, K, b, N, 1);
  bl_gemm_acc_k(kt, xq, ldq, NULL, p, M, N, K, c, N, 2);
  int ok = !memcmp(a, b, (size_t)(M * N) * 4) && !memcmp(a, c, (size_t)(M * N) * 4);
  /* 0xFF everywhere is weight +1 everywhere: acc = sum of x over K */
  if (wpat == 0)
    for (int64_t m = 0; m < M && ok; m++) {
      int32_t e = 0;
      for (int64_t k = 0; k < K; k++) e += xq[m * ldq + k];
      for (int64_t n = 0; n < N; n++) ok &= a[m * N + n] == e;
    }
  printf("%s %s (emulated) gemm invalid codes M=%lld N=%lld K=%lld weights=%d x=%d\n",
         ok ? "PASS" : "FAIL", name, (long long)M, (long long)N, (long long)K, wpat, xmode);
  if (ok) n_pass++; else n_fail++;
  free(xq); free(p); free(a); free(b); free(c);
}

/* The decode layout on an emulated table: bl_lut_pack, the table's LUT tables + GEMV through the
 * internal drivers (1 and 2 threads) against bl_gemm_acc_ref, bit for bit (gaps untouched); then y
 * through the LUT epilogue driver against the packed GEMM's (same table, a random output dtype).
 * xmode 0: random with a quarter -128 and a quarter 127, 1: all -128, 2: all 127. wpat 0: random
 * bytes (code 3 included); 1: rows of code 0 / 2 / 3 (0x00, 0xAA, 0xFF) in turn, with x constant
 * the largest int16 partial sums the flush interval allows (acc checked against its closed form). */
static void run_lut(const char *name, const bl_cpu_kernels *kt, int64_t M, int64_t N, int64_t K,
                    int xmode, int wpat) {
  const int64_t Kp = bl_padded_k(K), rb = bl_packed_row_bytes(K), ldq = Kp + (int64_t)(rnd() % 2) * 5;
  const int64_t ldacc = N + (int64_t)(rnd() % 3), ldy = N + (int64_t)(rnd() % 2);
  const bl_dtype ydt = (bl_dtype)(rnd() % 3);
  const int pc = (int)(rnd() % 2);
  const size_t es = ydt == BL_F32 ? 4 : 2, lb = bl_lut_bytes(N, K);
  const size_t ab = (size_t)((M - 1) * ldacc + N) * 4, yb = (size_t)((M - 1) * ldy + N) * es;
  int8_t *xq = malloc((size_t)(M * ldq));
  uint8_t *p = malloc((size_t)(N * rb)), *lut = aligned_alloc(64, lb);
  int16_t *tabs = malloc((size_t)M * (size_t)bl_lut_table_len(K) * 2);
  int32_t *a = malloc(ab), *b = malloc(ab);
  float *xs = malloc((size_t)M * 4), *ws = malloc((size_t)N * 4), *bias = malloc((size_t)N * 4);
  char *y0 = malloc(yb), *y1 = malloc(yb);
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < ldq; k++) {
      const int r = (int)(rnd() % 4);
      xq[m * ldq + k] = (int8_t)(k >= K ? (k < Kp ? 0 : 0x5a)
                                 : xmode == 1 ? -128 : xmode == 2 ? 127
                                 : r == 0 ? -128 : r == 1 ? 127 : (int)(rnd() % 256) - 128);
    }
  for (int64_t n = 0; n < N; n++)
    for (int64_t i = 0; i < rb; i++)
      p[n * rb + i] = (uint8_t)(wpat == 0 ? rnd() % 256 : n % 3 == 0 ? 0x00 : n % 3 == 1 ? 0xAA : 0xFF);
  for (int64_t m = 0; m < M; m++) xs[m] = (float)(rnd() % 1000 + 1) / 4096.0f;
  for (int64_t n = 0; n < N; n++)
    ws[n] = (float)(rnd() % 1000 + 1) / 512.0f, bias[n] = (float)(rnd() % 2001) / 100.0f - 10.0f;
  memset(a, 0x33, ab);
  int ok = bl_lut_pack(p, N, K, lut, 1) == BL_OK && bl_gemm_acc_ref(xq, ldq, p, M, N, K, a, ldacc, 1) == BL_OK;
  if (wpat == 1 && xmode)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++)
        ok &= a[m * ldacc + n] == (n % 3 == 0 ? -1 : 1) * (xmode == 1 ? -128 : 127) * (int32_t)K;
  bl_lut_tables_k(kt, xq, ldq, M, K, tabs);
  for (int nt = 1; nt <= 2; nt++) {
    memset(b, 0x33, ab);
    bl_lut_gemm_acc_k(kt, tabs, lut, M, N, K, b, ldacc, nt);
    ok &= !memcmp(a, b, ab);
  }
  memset(y0, 0x44, yb);
  memset(y1, 0x44, yb);
  bl_gemm_epi_k(kt, xq, ldq, NULL, xs, p, M, N, K, ws, pc, bias, y0, ydt, ldy, 1);
  bl_lut_gemm_epi_k(kt, tabs, lut, M, N, K, xs, ws, pc, bias, y1, ydt, ldy, 2);
  ok &= !memcmp(y0, y1, yb);
  printf("%s %s (emulated) lut M=%lld N=%lld K=%lld x=%d weights=%d: acc == ref, y%d == packed path\n",
         ok ? "PASS" : "FAIL", name, (long long)M, (long long)N, (long long)K, xmode, wpat, (int)ydt);
  if (ok) n_pass++; else n_fail++;
  free(xq); free(p); free(lut); free(tabs); free(a); free(b); free(xs); free(ws); free(bias);
  free(y0); free(y1);
}

int main(void) {
  const char *seed_env = getenv("BL_TEST_SEED"); /* fixed default: reproducible coverage */
  const uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : 1;
  s ^= seed * 0x9E3779B97F4A7C15ULL;
  printf("seed %llu (set BL_TEST_SEED to change)\n", (unsigned long long)seed);
  bl_cpu_kernels k512, kvnni;
  bl_kernels_avx2(&k512);
  bl_kernels_avx512vnni(&k512);
  bl_kernels_avx2(&kvnni);
  bl_kernels_avxvnni(&kvnni);
  static const int64_t sz[] = {1, 3, 7, 129, 300};
  for (int t = 0; t < 2; t++) {
    const bl_cpu_kernels *kt = t ? &kvnni : &k512;
    const char *name = t ? "avxvnni" : "avx512vnni";
    for (int i = 0; i < 5; i++)
      for (int j = 0; j < 5; j++) run(name, kt, sz[i] % 20 + 1, sz[j], sz[(i + j) % 5] * 3, 0);
    for (int e = 0; e < 3; e++) run(name, kt, 6, 9, 2100, e);
    run(name, kt, 9, 5, 4096, 1);
    static const int64_t ms[] = {1, 2, 3, 4, 5, 9}, ks[] = {1, 301, 2101, 4229};
    for (int i = 0; i < 6; i++)
      for (int j = 0; j < 4; j++)
        for (int w = 0; w < 3; w++)
          run_invalid(name, kt, ms[i], 1 + 2 * (int64_t)(rnd() % 7), ks[j], w, (i + j + w) % 3);
    /* decode layout: 1..5 tokens (single and pairs), 1 to 17 tiles (one super-tile and past it;
     * pieces of 16, 8, 4, 2, 1), K odd against 9 and across the 28-column int16 flush */
    if (t == 0) {
      const int k = kt->lut_gemv != NULL && kt->lut_tables != NULL;
      printf("%s avx512vnni (emulated) has its LUT kernels (tables and GEMV)\n", k ? "PASS" : "FAIL");
      if (k) n_pass++; else n_fail++;
    }
    static const int64_t ln[] = {1, 33, 480, 512, 513}, lk[] = {1, 10, 28, 253, 1267};
    for (int i = 0; i < 5; i++)
      for (int j = 0; j < 5; j++) run_lut(name, kt, 1 + (i + 2 * j) % 5, ln[i], lk[j], 0, 0);
    for (int xm = 1; xm <= 2; xm++)
      for (int64_t m = 1; m <= 3; m++) run_lut(name, kt, m, 97, 2300, xm, 1);
    run_lut(name, kt, 2, 1000, 1153, 0, 0); /* 2 threads split the tiles */
  }
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail != 0;
}
