/* api.cu - the bl_cuda_* GEMM entry points: argument checks, workspace layout, path choice.
 *
 * Paths: GEMV (decode, M < BITLINEAR_CUDA_MMA_MIN_M, default 9), tensor-core MMA (larger M),
 * and the plain fallback (unaligned inputs, or BITLINEAR_CUDA_SIMPLE=1). The environment is
 * read at each call, so tests can switch paths in-process. Everything is asynchronous on the
 * given stream: no host sync, no allocation.
 *
 * Workspace of bl_cuda_linear (offsets rounded to 256 bytes):
 *   xq [M, Kp] int8 | scale [M] f32 | rowsum [M] i32 | amax 16 B | split-K partials [s, M, N] i32
 * (partials only when the chosen path splits K: small grids, see gemv_splits / mma_splits).
 * bl_cuda_gemm_acc and bl_cuda_linear_q use at most bl_cuda_linear_workspace_bytes(M, N, K) (row
 * sums when none are given, split-K partials); with less they take fewer splits or the plain path.
 */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

namespace {

enum Path { kSimple = 0, kGemv = 1, kMma = 2 };

bool env_flag(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

int64_t mma_min_m() {
  const char *v = getenv("BITLINEAR_CUDA_MMA_MIN_M");
  if (v && *v) {
    const long long x = atoll(v);
    if (x >= 1) return x;
  }
  return 9; /* H100: MMA was 1.6x the GEMV at M=16 (4096^2), gpu_check 2026-11-26 */
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* The path for this shape given aligned inputs (as bl_cuda_linear's own workspace is). */
Path choose_path(int64_t M) {
  if (env_flag("BITLINEAR_CUDA_SIMPLE")) return kSimple;
  return M >= mma_min_m() ? kMma : kGemv;
}

int path_splits(Path p, int64_t M, int64_t N, int64_t K) {
  return p == kGemv ? blc::gemv_splits(M, N, K) : p == kMma ? blc::mma_splits(M, N, K) : 1;
}

size_t partial_bytes(Path p, int64_t M, int64_t N, int64_t K) {
  const int splits = path_splits(p, M, N, K);
  return splits > 1 ? (size_t)splits * (size_t)M * (size_t)N * sizeof(int32_t) : 0;
}

struct Layout {
  size_t xq, scale, rowsum, amax, partials, total;
};

Layout linear_layout(int64_t M, int64_t N, int64_t K) {
  Layout l;
  const size_t m = (size_t)M;
  l.xq = 0;
  l.scale = blc::round_up(m * (size_t)bl_padded_k(K), 256);
  l.rowsum = l.scale + blc::round_up(m * sizeof(float), 256);
  l.amax = l.rowsum + blc::round_up(m * sizeof(int32_t), 256);
  l.partials = l.amax + 256;
  l.total = l.partials + partial_bytes(choose_path(M), M, N, K);
  return l;
}

}  // namespace

extern "C" {

size_t bl_cuda_linear_workspace_bytes(int64_t M, int64_t N, int64_t K) {
  if (M < 0 || N < 1 || K < 1) return 0;
  return linear_layout(M, N, K).total;
}

}  // extern "C"

namespace {

/* The GEMM of every entry point, from quantized activations: int32 accumulators (out ==
 * kOutAcc) or the epilogue into y. Path by M, the plain kernel for unaligned operands; the
 * workspace holds row sums when none are given (GEMV) and split-K partials, and with less than
 * bl_cuda_linear_workspace_bytes(M, N, K) the call takes fewer splits or the plain path. */
bl_status run_gemm(const int8_t *xq, int64_t ldq, const int32_t *rowsum, const uint8_t *packed,
                   int64_t M, int64_t N, int64_t K, int out, const blc::Epilogue &ep,
                   void *workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (!workspace) workspace_bytes = 0;
  Path path = choose_path(M);
  if (!aligned16(xq) || !aligned16(packed) || ldq % 16 != 0) path = kSimple;
  if (path == kMma) {
    int splits = blc::mma_splits(M, N, K);
    if (splits > 1 && partial_bytes(kMma, M, N, K) > workspace_bytes) splits = 1;
    return blc::launch_mma(xq, ldq, packed, M, N, K, splits, (int32_t *)workspace, out, ep,
                           stream);
  }
  if (path == kGemv) {
    const size_t need_rowsum = rowsum ? 0 : blc::round_up((size_t)M * sizeof(int32_t), 256);
    if (need_rowsum <= workspace_bytes) {
      int32_t *rs = rowsum ? const_cast<int32_t *>(rowsum) : (int32_t *)workspace;
      bl_status st;
      if (!rowsum && (st = blc::launch_rowsum(xq, ldq, M, K, rs, stream)) != BL_OK) return st;
      int splits = blc::gemv_splits(M, N, K);
      const size_t part = (size_t)splits * (size_t)M * (size_t)N * sizeof(int32_t);
      if (splits > 1 && need_rowsum + part > workspace_bytes) splits = 1;
      int32_t *partials = (int32_t *)((char *)workspace + need_rowsum);
      return blc::launch_gemv(xq, ldq, rs, packed, M, N, K, splits, partials, out, ep, stream);
    }
  }
  return blc::launch_simple_gemm(xq, ldq, packed, M, N, K, out, ep, stream);
}

}  // namespace

extern "C" {

bl_status bl_cuda_gemm_acc(const int8_t *xq, int64_t ldq, const int32_t *rowsum,
                           const uint8_t *packed, int64_t M, int64_t N, int64_t K,
                           int32_t *acc, int64_t ldacc, void *workspace, size_t workspace_bytes,
                           struct CUstream_st *stream) {
  bl_status st = bl_check_gemm(xq, ldq, packed, M, N, K, acc, ldacc);
  if (st != BL_OK || M == 0) return st;
  const blc::Epilogue ep{acc, ldacc, nullptr, nullptr, 0, nullptr};
  return run_gemm(xq, ldq, rowsum, packed, M, N, K, blc::kOutAcc, ep, workspace, workspace_bytes,
                  stream);
}

bl_status bl_cuda_linear_q(const int8_t *xq, int64_t ldq, const float *xscale,
                           const int32_t *rowsum, int64_t M, const uint8_t *packed, int64_t N,
                           int64_t K, const float *wscale, int w_per_channel, const float *bias,
                           void *y, bl_dtype ydt, int64_t ldy, void *workspace,
                           size_t workspace_bytes, struct CUstream_st *stream) {
  if (M > 0 && (!xscale || !wscale || !y)) return BL_ERR_NULL;
  if (!bl_dtype_ok(ydt)) return BL_ERR_ARG;
  bl_status st = bl_check_gemm(xq, ldq, packed, M, N, K, (const int32_t *)y, ldy);
  if (st != BL_OK || M == 0) return st;
  const blc::Epilogue ep{y, ldy, xscale, wscale, w_per_channel, bias};
  return run_gemm(xq, ldq, rowsum, packed, M, N, K, ydt, ep, workspace, workspace_bytes, stream);
}

bl_status bl_cuda_linear(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                         const uint8_t *packed, int64_t N, const float *wscale, int w_per_channel,
                         const float *bias, float eps, int per_token, void *y, bl_dtype ydt,
                         int64_t ldy, void *workspace, size_t workspace_bytes,
                         struct CUstream_st *stream) {
  if (M > 0 && (!x || !packed || !wscale || !y || !workspace)) return BL_ERR_NULL;
  if (N < 1 || K < 1 || K > BL_MAX_K) return BL_ERR_SIZE;
  if (!bl_dtype_ok(xdt) || !bl_dtype_ok(ydt) || bl_check_eps(eps) != BL_OK) return BL_ERR_ARG;
  bl_status st = bl_check_dims(M, K, ldx);
  if (st != BL_OK) return st;
  if ((st = bl_check_dims(M, N, ldy)) != BL_OK) return st;
  if (M == 0) return BL_OK;
  const Layout l = linear_layout(M, N, K);
  if (workspace_bytes < l.total) return BL_ERR_SIZE;
  if (((uintptr_t)workspace & 3u) != 0) return BL_ERR_ARG; /* f32/i32 parts need 4 */

  char *ws = (char *)workspace;
  int8_t *xq = (int8_t *)(ws + l.xq);
  float *xscale = (float *)(ws + l.scale);
  int32_t *rowsum = (int32_t *)(ws + l.rowsum);
  const int64_t Kp = bl_padded_k(K);
  st = blc::quantize_acts(x, xdt, M, K, ldx, eps, per_token, xq, Kp, xscale, rowsum,
                          (uint32_t *)(ws + l.amax), stream);
  if (st != BL_OK) return st;

  const blc::Epilogue ep{y, ldy, xscale, wscale, w_per_channel, bias};
  return run_gemm(xq, Kp, rowsum, packed, M, N, K, ydt, ep, ws + l.partials, l.total - l.partials,
                  stream);
}

}  // extern "C"
