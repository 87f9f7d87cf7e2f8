/* cuda_host_check.cu - the host side of csrc/cuda/ on a machine without a GPU (CI): options and
 * their validation, path names, workspace sizes by path, split counts within their bounds, the
 * argument checks of bl_cuda_linear that return before any launch, and a CPU emulation of the
 * data movement of the fused and multi-row kernels (their index maps from common.cuh, the
 * mma.m16n8k32 fragment layout of the PTX ISA) against a plain dot product, code 3 included.
 * No CUDA runtime call is made. Built and run by tests/cuda/cuda_host_check.sh. Exit status 0 iff
 * every check passed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "../../csrc/cuda/common.cuh"

static int g_fail = 0;
#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      g_fail = 1;                                                       \
    }                                                                   \
  } while (0)

static uint32_t rng_state = 12345u;
static uint32_t rnd() {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

static void check_options() {
  CHECK(bl_cuda_get_option(BL_CUDA_OPT_PATH) == BL_CUDA_PATH_AUTO);
  /* defaults: auto reaches verified kernels only (fused and multi-row off) */
  CHECK(bl_cuda_get_option(BL_CUDA_OPT_FUSED_MAX_M) == 0);
  CHECK(bl_cuda_get_option(BL_CUDA_OPT_MULTIROW_MIN_M) == 0);
  CHECK(bl_cuda_get_option(BL_CUDA_OPT_MMA_MIN_M) == 9);
  CHECK(bl_cuda_get_option(BL_CUDA_OPT_MMA_BN) == 128);
  CHECK(bl_cuda_get_option(-1) == -1 && bl_cuda_get_option(BL_CUDA_OPT_COUNT) == -1);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_PATH, BL_CUDA_PATH_COUNT) == BL_ERR_ARG);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_PATH, -1) == BL_ERR_ARG);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_FUSED_MAX_M, 17) == BL_ERR_ARG);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MMA_MIN_M, 0) == BL_ERR_ARG);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MULTIROW_MIN_M, -1) == BL_ERR_ARG);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MULTIROW_MIN_M, 0) == BL_OK); /* 0: off */
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MMA_BN, 64) == BL_ERR_ARG);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_COUNT, 1) == BL_ERR_ARG);
  CHECK(bl_cuda_get_option(BL_CUDA_OPT_MMA_BN) == 128); /* nothing changed */
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MMA_BN, 256) == BL_OK);
  CHECK(bl_cuda_get_option(BL_CUDA_OPT_MMA_BN) == 256);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MMA_BN, 128) == BL_OK);
  const char *names[] = {"auto", "simple", "gemv", "fused", "multirow", "mma", "wgmma"};
  for (int i = 0; i < BL_CUDA_PATH_COUNT; i++) CHECK(strcmp(bl_cuda_path_name(i), names[i]) == 0);
  CHECK(strcmp(bl_cuda_path_name(BL_CUDA_PATH_COUNT), "unknown") == 0);
}

static size_t ru(size_t v) { return (v + 255) / 256 * 256; }

static void check_workspace() {
  /* auto with the defaults: never fused, so bl_cuda_linear always takes a workspace */
  for (int64_t M : {1, 2, 4, 16}) CHECK(bl_cuda_linear_workspace_bytes(M, 4096, 4096) > 0);
  /* fused_max_m = 4: fused for M <= 4 (no workspace) while M * Kp fits 46 KiB */
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_FUSED_MAX_M, 4) == BL_OK);
  CHECK(bl_cuda_linear_workspace_bytes(1, 4096, 4096) == 0);
  CHECK(bl_cuda_linear_workspace_bytes(4, 4096, 11008) == 0);   /* 4 * 11008 = 44032 */
  CHECK(bl_cuda_linear_workspace_bytes(4, 4096, 11900) > 0);    /* 4 * 11904 > 47104 */
  CHECK(bl_cuda_linear_workspace_bytes(1, 7, 47104) == 0);
  CHECK(bl_cuda_linear_workspace_bytes(1, 7, 47105) > 0);
  CHECK(bl_cuda_linear_workspace_bytes(5, 4096, 4096) > 0);
  CHECK(bl_cuda_linear_workspace_bytes(0, 4096, 4096) == 0);
  CHECK(bl_cuda_linear_workspace_bytes(1, 0, 4096) == 0 && bl_cuda_linear_workspace_bytes(-1, 1, 1) == 0);
  /* unfused: at least x_q, scales, row sums, amax */
  for (int64_t M : {5, 9, 64, 65, 300}) {
    const int64_t K = 1000, N = 129, Kp = bl_padded_k(K);
    const size_t need = ru(M * Kp) + ru(M * 4) + ru(M * 4) + 256;
    CHECK(bl_cuda_linear_workspace_bytes(M, N, K) >= need);
    CHECK(bl_cuda_gemm_workspace_bytes(M, N, K) >= ru(M * 4));
  }
  /* fused forced: up to M = 16 when it fits; off: never */
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_PATH, BL_CUDA_PATH_FUSED) == BL_OK);
  CHECK(bl_cuda_linear_workspace_bytes(16, 100, 2944) == 0);   /* 16 * 2944 = 47104 */
  CHECK(bl_cuda_linear_workspace_bytes(16, 100, 2945) > 0);
  CHECK(bl_cuda_linear_workspace_bytes(17, 100, 128) > 0);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_PATH, BL_CUDA_PATH_GEMV) == BL_OK);
  CHECK(bl_cuda_linear_workspace_bytes(1, 100, 128) > 0);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_PATH, BL_CUDA_PATH_AUTO) == BL_OK);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_FUSED_MAX_M, 0) == BL_OK);
  CHECK(bl_cuda_linear_workspace_bytes(1, 100, 128) > 0);
  /* split-K partials are counted: N small, K long (the multi-row path, enabled) */
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MULTIROW_MIN_M, 2) == BL_OK);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MMA_MIN_M, 65) == BL_OK);
  const int64_t M = 8, N = 64, K = 16384;
  const int s = blc::multirow_splits(M, N, K);
  CHECK(s > 1);
  CHECK(bl_cuda_gemm_workspace_bytes(M, N, K) == ru(M * 4) + (size_t)s * M * N * 4);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MULTIROW_MIN_M, 0) == BL_OK);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MMA_MIN_M, 9) == BL_OK);
}

/* Restores every option to its default (each line of cuda_auto_paths.txt starts from them). */
static void default_options() {
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_PATH, BL_CUDA_PATH_AUTO) == BL_OK);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_FUSED_MAX_M, 0) == BL_OK);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MULTIROW_MIN_M, 0) == BL_OK);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MMA_MIN_M, 9) == BL_OK);
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_MMA_BN, 128) == BL_OK);
}

static int path_index(const char *name) {
  for (int i = 0; i < BL_CUDA_PATH_COUNT; i++)
    if (strcmp(bl_cuda_path_name(i), name) == 0) return i;
  return -1;
}

/* The path choice (blc::chosen_path: the decisions of bl_cuda_linear and bl_cuda_gemm_acc /
 * linear_q) against tests/cuda/cuda_auto_paths.txt, the table tests/test_gpu_auto.py checks the
 * Python mirror against; then, with the defaults, every M from 1 to 5000 at several K: only the
 * verified kernels (GEMV, MMA). */
static void check_auto_paths(const char *table) {
  static const char *const opt_names[BL_CUDA_OPT_COUNT] = {"path", "fused_max_m",
                                                           "multirow_min_m", "mma_min_m", "mma_bn"};
  FILE *f = fopen(table, "r");
  CHECK(f != nullptr);
  if (!f) return;
  char line[512];
  int lines = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#' || line[0] == '\n') continue;
    default_options();
    char *save = nullptr, *tok = strtok_r(line, " \t\n", &save);
    const bool linear = strcmp(tok, "linear") == 0;
    CHECK(linear || strcmp(tok, "gemm") == 0);
    const long long M = atoll(strtok_r(nullptr, " \t\n", &save));
    const long long K = atoll(strtok_r(nullptr, " \t\n", &save));
    int want = -2;
    while ((tok = strtok_r(nullptr, " \t\n", &save))) {
      if (strcmp(tok, "->") == 0) {
        want = path_index(strtok_r(nullptr, " \t\n", &save));
        break;
      }
      char *eq = strchr(tok, '=');
      CHECK(eq != nullptr);
      if (!eq) break;
      *eq = 0;
      int opt = -1;
      for (int i = 0; i < BL_CUDA_OPT_COUNT; i++)
        if (strcmp(opt_names[i], tok) == 0) opt = i;
      CHECK(opt >= 0);
      if (opt < 0) break;
      const int64_t v = opt == BL_CUDA_OPT_PATH ? path_index(eq + 1) : atoll(eq + 1);
      CHECK(bl_cuda_set_option(opt, v) == BL_OK);
    }
    CHECK(want >= 0);
    const int got = blc::chosen_path(linear, M, K);
    if (got != want)
      fprintf(stderr, "cuda_auto_paths.txt line %d: %s M=%lld K=%lld: got %s, want %s\n",
              lines + 1, linear ? "linear" : "gemm", M, K, bl_cuda_path_name(got),
              want >= 0 ? bl_cuda_path_name(want) : "?");
    CHECK(got == want);
    lines++;
  }
  fclose(f);
  CHECK(lines >= 20);
  default_options();
  for (int64_t M = 1; M <= 5000; M++)
    for (int64_t K : {1, 1000, 3001, 4096, 11008, 28672})
      for (bool linear : {true, false}) {
        const int p = blc::chosen_path(linear, M, K);
        CHECK(p == (M < 9 ? BL_CUDA_PATH_GEMV : BL_CUDA_PATH_MMA));
      }
}

static void check_splits() {
  const int64_t ms[] = {1, 2, 3, 8, 9, 16, 17, 32, 33, 64, 65, 300, 4096};
  const int64_t ks[] = {1, 127, 128, 129, 1000, 4096, 11008, 28672, 16777215};
  const int64_t ns[] = {1, 3, 64, 129, 4096, 28672};
  for (int64_t M : ms)
    for (int64_t K : ks)
      for (int64_t N : ns) {
        const int64_t Kp = bl_padded_k(K), nblk = Kp / 128, nspans = (nblk + 1) / 2;
        const int g = blc::gemv_splits(M, N, K);
        CHECK(g >= 1 && g <= 32);
        const int r = blc::multirow_splits(M, N, K);
        CHECK(r >= 1 && r <= 32);
        if (r > 1) {
          CHECK(r <= nspans / 8);                       /* >= 2 spans per warp */
          CHECK((int64_t)r * M * N * 4 <= N * Kp / 8);  /* partials <= half the weights */
          const int64_t sps = (nspans + r - 1) / r;
          CHECK((r - 1) * sps < nspans);                /* no empty split */
        }
        for (int bn : {128, 256}) {
          const int m = blc::mma_splits(M, N, K, bn);
          CHECK(m >= 1 && m <= 16);
        }
      }
}

static void check_linear_args() {
  default_options();
  float x[4] = {0}, y[4], ws = 1.0f;
  uint8_t packed[32];
  char wsbuf[64];
  /* errors returned before any launch */
  CHECK(bl_cuda_linear(nullptr, BL_F32, 1, 1, 1, packed, 1, &ws, 0, nullptr, 1e-6f, 1, y, BL_F32,
                       1, nullptr, 0, nullptr) == BL_ERR_NULL);
  CHECK(bl_cuda_linear(x, BL_F32, 1, 0, 1, packed, 1, &ws, 0, nullptr, 1e-6f, 1, y, BL_F32, 1,
                       nullptr, 0, nullptr) == BL_ERR_SIZE);
  CHECK(bl_cuda_linear(x, BL_F32, 1, 4, 3, packed, 1, &ws, 0, nullptr, 1e-6f, 1, y, BL_F32, 1,
                       nullptr, 0, nullptr) == BL_ERR_STRIDE);
  CHECK(bl_cuda_linear(x, BL_F32, 1, 4, 4, packed, 1, &ws, 0, nullptr, 1e-6f, 1, y, BL_I8, 1,
                       nullptr, 0, nullptr) == BL_ERR_ARG);
  CHECK(bl_cuda_linear(x, BL_F32, 0, 4, 4, packed, 1, &ws, 0, nullptr, 1e-6f, 1, y, BL_F32, 1,
                       nullptr, 0, nullptr) == BL_OK);
  /* unfused: a missing or short workspace is refused, nothing launched */
  CHECK(bl_cuda_set_option(BL_CUDA_OPT_FUSED_MAX_M, 0) == BL_OK);
  CHECK(bl_cuda_linear(x, BL_F32, 1, 4, 4, packed, 1, &ws, 0, nullptr, 1e-6f, 1, y, BL_F32, 1,
                       nullptr, 0, nullptr) == BL_ERR_NULL);
  CHECK(bl_cuda_linear(x, BL_F32, 1, 4, 4, packed, 1, &ws, 0, nullptr, 1e-6f, 1, y, BL_F32, 1,
                       wsbuf, sizeof wsbuf, nullptr) == BL_ERR_SIZE);
  default_options();
}

/* w = min(c, 2) - 1 of value k of a packed row (docs/packed_format.md) */
static int weight(const uint8_t *row, int64_t k) {
  const int64_t b = k / 128, s = (k % 128) / 32, j = k % 32;
  const int c = (row[32 * b + j] >> (2 * s)) & 3;
  return (c > 2 ? 2 : c) - 1;
}

static uint32_t clamp_codes(uint32_t w) { return w & ~((w >> 1) & 0x55555555u); }
static uint32_t word_at(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static int byte_u(uint32_t w, int i) { return (int)((w >> (8 * i)) & 0xff); }
static int byte_s(uint32_t w, int i) { return (int)(int8_t)((w >> (8 * i)) & 0xff); }

/* fused.cu: codes written to shared memory by fused_code_offset, read per weight chunk and
 * shift with fused_chunk_offset, decoded as the kernel does: dot products as the reference. */
static void emulate_fused(int64_t M, int64_t N, int64_t K) {
  const int64_t Kp = bl_padded_k(K), rb = Kp / 4, nchunks = rb / 16;
  std::vector<uint8_t> W(N * rb);
  for (auto &b : W) b = (uint8_t)rnd();
  std::vector<int8_t> X(M * Kp, 0);
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < K; k++) X[m * Kp + k] = (int8_t)(rnd() % 256 - 128);
  std::vector<uint8_t> xs(M * Kp, 0xAB); /* every byte must be written */
  std::vector<int32_t> rowsum(M, 0);
  for (int64_t m = 0; m < M; m++)
    for (int64_t k0 = 0; k0 < Kp; k0 += 4)
      for (int i = 0; i < 4; i++) {
        xs[blc::fused_code_offset(m, k0, Kp) + i] = (uint8_t)X[m * Kp + k0 + i];
        rowsum[m] += X[m * Kp + k0 + i];
      }
  for (int64_t n = 0; n < N; n++)
    for (int64_t m = 0; m < M; m++) {
      int32_t acc = 0, want = 0;
      for (int64_t c = 0; c < nchunks; c++)
        for (int i = 0; i < 4; i++) {
          const uint32_t wc = clamp_codes(word_at(&W[n * rb + c * 16 + 4 * i]));
          for (int s = 0; s < 4; s++) {
            const uint32_t codes = (wc >> (2 * s)) & 0x03030303u;
            const uint32_t xv = word_at(&xs[blc::fused_chunk_offset(m, s, c, Kp) + 4 * i]);
            for (int j = 0; j < 4; j++) acc += byte_u(codes, j) * byte_s(xv, j);
          }
        }
      for (int64_t k = 0; k < Kp; k++) want += weight(&W[n * rb], k) * X[m * Kp + k];
      CHECK(acc - rowsum[m] == want);
      if (acc - rowsum[m] != want) return;
    }
}

/* multirow.cu: one 16-row m-tile x 8-token tile per (nb, m0); each "thread" (g, t) builds its
 * registers as the kernel does (weights of rows nb+g and nb+g+8 at mr_weight_byte, activations of
 * token m0+g at mr_act_k), the registers are placed by the PTX fragment layout of
 * mma.m16n8k32 (.u8 A row-major, .s8 B column-major), and C = A B is added. */
static void emulate_multirow(int64_t M, int64_t N, int64_t K) {
  const int64_t Kp = bl_padded_k(K), rb = Kp / 4, nblk = Kp / 128, nspans = (nblk + 1) / 2;
  std::vector<uint8_t> W(N * rb);
  for (auto &b : W) b = (uint8_t)rnd();
  std::vector<int8_t> X(M * Kp, 0);
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < K; k++) X[m * Kp + k] = (int8_t)(rnd() % 256 - 128);
  std::vector<int32_t> rowsum(M, 0);
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < Kp; k++) rowsum[m] += X[m * Kp + k];
  for (int64_t nb = 0; nb < N; nb += 16)
    for (int64_t m0 = 0; m0 < M; m0 += 8) {
      int32_t C[16][8] = {};
      for (int64_t sp = 0; sp < nspans; sp++)
        for (int s = 0; s < 4; s++)
          for (int p = 0; p < 2; p++) {
            int A[16][32], B[32][8];
            for (int g = 0; g < 8; g++)
              for (int t = 0; t < 4; t++) {
                const bool have = blc::mr_present(sp, t, nblk);
                uint32_t w0[4] = {0, 0, 0, 0}, w1[4] = {0, 0, 0, 0}, xv[4] = {0, 0, 0, 0};
                const int64_t r0 = nb + g < N ? nb + g : N - 1, r1 = nb + g + 8 < N ? nb + g + 8 : N - 1;
                const int64_t tok = m0 + g;
                for (int i = 0; i < 4; i++) {
                  if (have) {
                    w0[i] = clamp_codes(word_at(&W[r0 * rb + blc::mr_weight_byte(sp, t) + 4 * i]));
                    w1[i] = clamp_codes(word_at(&W[r1 * rb + blc::mr_weight_byte(sp, t) + 4 * i]));
                    CHECK(blc::mr_weight_byte(sp, t) + 4 * i + 4 <= rb);
                  }
                  if (have && tok < M) {
                    CHECK(blc::mr_act_k(sp, t, s) + 4 * i + 4 <= Kp);
                    xv[i] = word_at((const uint8_t *)&X[tok * Kp + blc::mr_act_k(sp, t, s) + 4 * i]);
                  }
                }
                const uint32_t a0 = (w0[2 * p] >> (2 * s)) & 0x03030303u;
                const uint32_t a1 = (w1[2 * p] >> (2 * s)) & 0x03030303u;
                const uint32_t a2 = (w0[2 * p + 1] >> (2 * s)) & 0x03030303u;
                const uint32_t a3 = (w1[2 * p + 1] >> (2 * s)) & 0x03030303u;
                const uint32_t b0 = xv[2 * p], b1 = xv[2 * p + 1];
                for (int i = 0; i < 4; i++) {
                  A[g][4 * t + i] = byte_u(a0, i);
                  A[g + 8][4 * t + i] = byte_u(a1, i);
                  A[g][16 + 4 * t + i] = byte_u(a2, i);
                  A[g + 8][16 + 4 * t + i] = byte_u(a3, i);
                  B[4 * t + i][g] = byte_s(b0, i);
                  B[16 + 4 * t + i][g] = byte_s(b1, i);
                }
              }
            for (int r = 0; r < 16; r++)
              for (int c = 0; c < 8; c++)
                for (int k = 0; k < 32; k++) C[r][c] += A[r][k] * B[k][c];
          }
      /* c0, c1: row g, columns 2t, 2t+1; c2, c3: row g+8: every (row, token) once */
      for (int r = 0; r < 16; r++)
        for (int c = 0; c < 8; c++) {
          const int64_t n = nb + r, m = m0 + c;
          if (n >= N || m >= M) continue;
          int32_t want = 0;
          for (int64_t k = 0; k < Kp; k++) want += weight(&W[n * rb], k) * X[m * Kp + k];
          CHECK(C[r][c] - rowsum[m] == want);
          if (C[r][c] - rowsum[m] != want) return;
        }
    }
}

int main(int argc, char **argv) {
  check_options();
  check_auto_paths(argc > 1 ? argv[1] : "tests/cuda/cuda_auto_paths.txt");
  check_workspace();
  check_splits();
  check_linear_args();
  const int64_t shapes[][3] = {{1, 1, 1}, {3, 7, 129}, {7, 129, 3}, {16, 300, 70}, {2, 1000, 17},
                               {9, 385, 33}, {33, 1000, 40}, {5, 256, 16}, {8, 640, 19}};
  for (auto &sh : shapes) {
    emulate_fused(sh[0] > 16 ? 16 : sh[0], sh[2], sh[1]);
    emulate_multirow(sh[0], sh[2], sh[1]);
  }
  printf("cuda_host_check: %s\n", g_fail ? "FAILED" : "all checks passed");
  return g_fail;
}
