/* api.cu - the bl_cuda_* GEMM entry points: options, argument checks, workspace layout, path
 * choice.
 *
 * Paths (bl_cuda_path, docs/cuda.md): FUSED (bl_cuda_linear only: activation quantization and
 * the dp4a GEMV in one kernel, M <= BL_CUDA_OPT_FUSED_MAX_M), GEMV (quantized inputs, small M),
 * MULTIROW (skinny mma.sync, BL_CUDA_OPT_MULTIROW_MIN_M <= M < BL_CUDA_OPT_MMA_MIN_M), MMA
 * (larger M), WGMMA (sm_90a; only when forced, not yet run on a GPU) and SIMPLE (unaligned
 * operands, or forced). AUTO with the default options reaches only the kernels whose design
 * passed profile/gpu_check.sh on a GPU (docs/cuda.md, "Verification"): the GEMV for
 * M < BL_CUDA_OPT_MMA_MIN_M and the MMA GEMM from there; FUSED and MULTIROW are off by default
 * (their options at 0) until they pass it, and stay reachable by forcing or by their options. The options live in process-wide
 * atomics set by bl_cuda_set_option; each entry point reads them once (one snapshot per call):
 * no getenv, no locks on the launch path. Everything is asynchronous on the given stream: no host
 * sync, no allocation.
 *
 * Workspace of bl_cuda_linear (offsets rounded to 256 bytes), none on the fused path:
 *   xq [M, Kp] int8 | scale [M] f32 | rowsum [M] i32 | amax 16 B | split-K partials [s, M, N] i32
 * (partials only when the chosen path splits K: small grids, see *_splits).
 * bl_cuda_gemm_acc and bl_cuda_linear_q use at most bl_cuda_gemm_workspace_bytes(M, N, K) (row
 * sums when none are given, split-K partials); with less they take fewer splits or the plain path.
 */
#include <atomic>

#include "common.cuh"

namespace {

/* Defaults: AUTO reaches verified kernels only (docs/cuda.md, "Verification"). The GEMV / MMA
 * switch at M = 9 was placed on the H100 run of 2026-11-26 (MMA 1.6x the GEMV at M = 16,
 * 4096^2). The fused (suggested: 4) and multi-row (suggested: 2, with MMA from 65) kernels have
 * never run on a GPU: 0 keeps them out of AUTO until profile/gpu_check.sh passes them. */
std::atomic<int64_t> g_opts[BL_CUDA_OPT_COUNT] = {
    {BL_CUDA_PATH_AUTO}, /* BL_CUDA_OPT_PATH */
    {0},                 /* BL_CUDA_OPT_FUSED_MAX_M: 0 = AUTO never fuses */
    {0},                 /* BL_CUDA_OPT_MULTIROW_MIN_M: 0 = AUTO never picks MULTIROW */
    {9},                 /* BL_CUDA_OPT_MMA_MIN_M */
    {128},               /* BL_CUDA_OPT_MMA_BN */
};

/* The options of one call, read once. */
struct Opts {
  int path;
  int64_t fused_max_m, multirow_min_m, mma_min_m;
  int bn;
};

Opts snapshot() {
  Opts o;
  o.path = (int)g_opts[BL_CUDA_OPT_PATH].load(std::memory_order_relaxed);
  o.fused_max_m = g_opts[BL_CUDA_OPT_FUSED_MAX_M].load(std::memory_order_relaxed);
  o.multirow_min_m = g_opts[BL_CUDA_OPT_MULTIROW_MIN_M].load(std::memory_order_relaxed);
  o.mma_min_m = g_opts[BL_CUDA_OPT_MMA_MIN_M].load(std::memory_order_relaxed);
  o.bn = (int)g_opts[BL_CUDA_OPT_MMA_BN].load(std::memory_order_relaxed);
  return o;
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* The GEMM path for quantized activations (FUSED is decided by bl_cuda_linear before this). */
int gemm_path(const Opts &o, int64_t M) {
  switch (o.path) {
    case BL_CUDA_PATH_SIMPLE: return BL_CUDA_PATH_SIMPLE;
    case BL_CUDA_PATH_GEMV:
    case BL_CUDA_PATH_FUSED: return BL_CUDA_PATH_GEMV;
    case BL_CUDA_PATH_MULTIROW: return BL_CUDA_PATH_MULTIROW;
    case BL_CUDA_PATH_MMA: return BL_CUDA_PATH_MMA;
    case BL_CUDA_PATH_WGMMA: return BL_CUDA_PATH_WGMMA; /* MMA at launch where not available */
    default: /* AUTO */
      if (M >= o.mma_min_m) return BL_CUDA_PATH_MMA;
      if (o.multirow_min_m >= 1 && M >= o.multirow_min_m) return BL_CUDA_PATH_MULTIROW;
      return BL_CUDA_PATH_GEMV;
  }
}

/* Whether bl_cuda_linear takes the fused kernel (one launch, no workspace). */
bool linear_fused(const Opts &o, int64_t M, int64_t K) {
  const bool want = o.path == BL_CUDA_PATH_FUSED ||
                    (o.path == BL_CUDA_PATH_AUTO && M <= o.fused_max_m);
  return want && M >= 1 && M <= blc::kFusedMaxM && blc::fused_fits(M, K);
}

int path_splits(const Opts &o, int p, int64_t M, int64_t N, int64_t K) {
  switch (p) {
    case BL_CUDA_PATH_GEMV: return blc::gemv_splits(M, N, K);
    case BL_CUDA_PATH_MULTIROW: return blc::multirow_splits(M, N, K);
    case BL_CUDA_PATH_MMA:
    case BL_CUDA_PATH_WGMMA: return blc::mma_splits(M, N, K, o.bn); /* wgmma: none, or MMA's */
    default: return 1;
  }
}

size_t partial_bytes(const Opts &o, int p, int64_t M, int64_t N, int64_t K) {
  const int splits = path_splits(o, p, M, N, K);
  return splits > 1 ? (size_t)splits * (size_t)M * (size_t)N * sizeof(int32_t) : 0;
}

size_t rowsum_bytes(int64_t M) { return blc::round_up((size_t)M * sizeof(int32_t), 256); }

struct Layout {
  size_t xq, scale, rowsum, amax, partials, total;
  bool fused;
};

Layout linear_layout(const Opts &o, int64_t M, int64_t N, int64_t K) {
  Layout l{};
  l.fused = linear_fused(o, M, K);
  if (l.fused) return l; /* everything 0 */
  const size_t m = (size_t)M;
  l.xq = 0;
  l.scale = blc::round_up(m * (size_t)bl_padded_k(K), 256);
  l.rowsum = l.scale + blc::round_up(m * sizeof(float), 256);
  l.amax = l.rowsum + rowsum_bytes(M);
  l.partials = l.amax + 256;
  l.total = l.partials + partial_bytes(o, gemm_path(o, M), M, N, K);
  return l;
}

bool option_ok(int option, int64_t v) {
  switch (option) {
    case BL_CUDA_OPT_PATH: return v >= 0 && v < BL_CUDA_PATH_COUNT;
    case BL_CUDA_OPT_FUSED_MAX_M: return v >= 0 && v <= blc::kFusedMaxM;
    case BL_CUDA_OPT_MULTIROW_MIN_M: return v >= 0; /* 0: off */
    case BL_CUDA_OPT_MMA_MIN_M: return v >= 1;
    case BL_CUDA_OPT_MMA_BN: return v == 128 || v == 256;
    default: return false;
  }
}

}  // namespace

namespace blc {

/* The kernel a call would run with the current options (host only: no CUDA call). linear: a
 * bl_cuda_linear call (which may fuse), else bl_cuda_gemm_acc / bl_cuda_linear_q (the training
 * forward's GEMM). Operands assumed 16-byte aligned (else SIMPLE); WGMMA is reported as chosen
 * (MMA runs at launch where the device has no sm_90a code). The same decisions as the entry
 * points: linear_fused, then gemm_path. */
int chosen_path(bool linear, int64_t M, int64_t K) {
  const Opts o = snapshot();
  if (linear && linear_fused(o, M, K)) return BL_CUDA_PATH_FUSED;
  return gemm_path(o, M);
}

}  // namespace blc

extern "C" {

bl_status bl_cuda_set_option(int option, int64_t value) {
  if (!option_ok(option, value)) return BL_ERR_ARG;
  g_opts[option].store(value, std::memory_order_relaxed);
  return BL_OK;
}

int64_t bl_cuda_get_option(int option) {
  if (option < 0 || option >= BL_CUDA_OPT_COUNT) return -1;
  return g_opts[option].load(std::memory_order_relaxed);
}

const char *bl_cuda_path_name(int path) {
  static const char *const names[BL_CUDA_PATH_COUNT] = {"auto", "simple", "gemv", "fused",
                                                          "multirow", "mma", "wgmma"};
  return path >= 0 && path < BL_CUDA_PATH_COUNT ? names[path] : "unknown";
}

size_t bl_cuda_linear_workspace_bytes(int64_t M, int64_t N, int64_t K) {
  if (M < 1 || N < 1 || K < 1) return 0; /* M = 0: nothing runs (and no split count to divide) */
  return linear_layout(snapshot(), M, N, K).total;
}

size_t bl_cuda_gemm_workspace_bytes(int64_t M, int64_t N, int64_t K) {
  if (M < 1 || N < 1 || K < 1) return 0;
  const Opts o = snapshot();
  return rowsum_bytes(M) + partial_bytes(o, gemm_path(o, M), M, N, K);
}

}  // extern "C"

namespace {

/* The GEMM of every entry point, from quantized activations: int32 accumulators (out ==
 * kOutAcc) or the epilogue into y. The workspace holds row sums when none are given (GEMV,
 * multi-row) and split-K partials; with less than bl_cuda_gemm_workspace_bytes(M, N, K) the
 * call takes fewer splits or the plain path. */
bl_status run_gemm(const Opts &o, const int8_t *xq, int64_t ldq, const int32_t *rowsum,
                   const uint8_t *packed, int64_t M, int64_t N, int64_t K, int out,
                   const blc::Epilogue &ep, void *workspace, size_t workspace_bytes,
                   cudaStream_t stream) {
  if (!workspace) workspace_bytes = 0;
  int path = gemm_path(o, M);
  if (!aligned16(xq) || !aligned16(packed) || ldq % 16 != 0) path = BL_CUDA_PATH_SIMPLE;
  if (path == BL_CUDA_PATH_WGMMA) {
    if (blc::wgmma_available())
      return blc::launch_wgmma(xq, ldq, packed, M, N, K, out, ep, stream);
    path = BL_CUDA_PATH_MMA;
  }
  if (path == BL_CUDA_PATH_MMA) {
    int splits = blc::mma_splits(M, N, K, o.bn);
    if (splits > 1 && partial_bytes(o, path, M, N, K) > workspace_bytes) splits = 1;
    return blc::launch_mma(xq, ldq, packed, M, N, K, splits, (int32_t *)workspace, out, ep, o.bn,
                           stream);
  }
  if (path == BL_CUDA_PATH_GEMV || path == BL_CUDA_PATH_MULTIROW) {
    const size_t need_rowsum = rowsum ? 0 : rowsum_bytes(M);
    if (need_rowsum <= workspace_bytes) {
      int32_t *rs = rowsum ? const_cast<int32_t *>(rowsum) : (int32_t *)workspace;
      bl_status st;
      if (!rowsum && (st = blc::launch_rowsum(xq, ldq, M, K, rs, stream)) != BL_OK) return st;
      int splits = path_splits(o, path, M, N, K);
      const size_t part = (size_t)splits * (size_t)M * (size_t)N * sizeof(int32_t);
      if (splits > 1 && need_rowsum + part > workspace_bytes) splits = 1;
      int32_t *partials = (int32_t *)((char *)workspace + need_rowsum);
      if (path == BL_CUDA_PATH_MULTIROW)
        return blc::launch_multirow(xq, ldq, rs, packed, M, N, K, splits, partials, out, ep,
                                    stream);
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
  return run_gemm(snapshot(), xq, ldq, rowsum, packed, M, N, K, blc::kOutAcc, ep, workspace,
                  workspace_bytes, stream);
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
  return run_gemm(snapshot(), xq, ldq, rowsum, packed, M, N, K, ydt, ep, workspace,
                  workspace_bytes, stream);
}

bl_status bl_cuda_linear(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                         const uint8_t *packed, int64_t N, const float *wscale, int w_per_channel,
                         const float *bias, float eps, int per_token, void *y, bl_dtype ydt,
                         int64_t ldy, void *workspace, size_t workspace_bytes,
                         struct CUstream_st *stream) {
  if (M > 0 && (!x || !packed || !wscale || !y)) return BL_ERR_NULL;
  if (N < 1 || K < 1 || K > BL_MAX_K) return BL_ERR_SIZE;
  if (!bl_dtype_ok(xdt) || !bl_dtype_ok(ydt) || bl_check_eps(eps) != BL_OK) return BL_ERR_ARG;
  bl_status st = bl_check_dims(M, K, ldx);
  if (st != BL_OK) return st;
  if ((st = bl_check_dims(M, N, ldy)) != BL_OK) return st;
  if (M == 0) return BL_OK;
  const Opts o = snapshot();
  const Layout l = linear_layout(o, M, N, K);
  const blc::Epilogue ep0{y, ldy, nullptr, wscale, w_per_channel, bias};
  if (l.fused) return blc::launch_fused(x, xdt, M, K, ldx, eps, per_token, packed, N, ydt, ep0,
                                        stream);
  if (!workspace) return BL_ERR_NULL;
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
  return run_gemm(o, xq, Kp, rowsum, packed, M, N, K, ydt, ep, ws + l.partials,
                  l.total - l.partials, stream);
}

}  // extern "C"
