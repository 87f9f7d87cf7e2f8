/* test_emu.c - runs the AVX-512 VNNI and AVX-VNNI tile kernels on a CPU without them: the ISA
 * files are compiled against SIMDe's portable intrinsics (emu/immintrin.h) and their tables are
 * driven directly through the internal GEMM driver, against the plain C reference.
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

int main(void) {
  s ^= (uint64_t)time(NULL);
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
  }
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail != 0;
}
