/* mma.cu - the prefill path: int8 tensor-core GEMM (mma.sync m16n8k32 s8.s8.s32, sm_80+).
 *
 * Block tile 128 (M) x 128 (N) x 128 (K = one packed block per weight row), 8 warps as
 * 2 (M) x 4 (N), warp tile 64 x 32 (or 128 x 256 with 64 x 64 warp tiles, one block per SM,
 * selected by bl_cuda_set_option(BL_CUDA_OPT_MMA_BN, 256)). A (activations, int8) and the packed weights are brought
 * to shared memory by a 3-stage cp.async pipeline; rows past M or N are zero-filled. The
 * weights stay packed in shared memory: a B fragment register (k = 4t..4t+3 of one 32-k step)
 * is the packed word at byte 4t of the row, shifted by 2*step, masked, minus 1 per byte
 * (__vsub4), so no row sum is needed. The invalid code 3 reads as 2 (weight +1): each packed word
 * is clamped once per k-tile (clamp_codes, 2 instructions), before its four shifts. Padded row
 * strides (144 and 48 bytes) keep ldmatrix and
 * the packed-word loads free of bank conflicts. K needs no tail: Kp is a multiple of 128.
 */
#include "common.cuh"

namespace {

using blc::clamp_codes;

constexpr int kBM = 128, kBK = 128;
constexpr int kStages = 3;
constexpr int kThreads = 256;
constexpr int kAStride = kBK + 16;       /* bytes per A row in shared memory */
constexpr int kBStride = 48;             /* bytes per packed B row (32 used) */
constexpr int kAStage = kBM * kAStride;  /* 18432 */

/* Tile shape: WN = warp tile width (32 or 64), BN = 4 * WN. */
template <int WN>
struct Tile {
  static constexpr int kBN = 4 * WN;
  static constexpr int kNT = WN / 8;                  /* n-tiles of 8 per warp */
  static constexpr int kBStage = kBN * kBStride;      /* 6144 or 12288 */
  static constexpr int kStageBytes = kAStage + kBStage;
  static constexpr int kSmemBytes = kStages * kStageBytes; /* 73728 or 92160 */
  static constexpr int kBChunks = kBN * 2 / kThreads;      /* 16-byte B chunks per thread */
};


__device__ __forceinline__ uint32_t smem_u32(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool valid) {
  const int n = valid ? 16 : 0; /* 0: zero-fill, nothing read */
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void mma_s8(int32_t (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                       uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Issues the cp.async of k-tile kt into shared stage buffer `stage`. */
template <int WN>
__device__ __forceinline__ void load_tile(uint8_t *stage, const int8_t *xq, int64_t ldq,
                                          const uint8_t *packed, int64_t rb, int64_t M,
                                          int64_t N, int64_t m_base, int64_t n_base,
                                          int64_t kt) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < (kBM * kBK / 16) / kThreads; i++) { /* 4 chunks of A per thread */
    const int chunk = tid + i * kThreads;
    const int row = chunk / (kBK / 16), col = chunk % (kBK / 16);
    const int64_t m = m_base + row;
    const bool ok = m < M;
    const int8_t *src = ok ? xq + m * ldq + kt * kBK + col * 16 : xq;
    cp_async16(smem_u32(stage + row * kAStride + col * 16), src, ok);
  }
#pragma unroll
  for (int i = 0; i < Tile<WN>::kBChunks; i++) { /* packed B: row chunk / 2, half chunk % 2 */
    const int chunk = tid + i * kThreads;
    const int row = chunk / 2, half = chunk % 2;
    const int64_t n = n_base + row;
    const bool ok = n < N;
    const uint8_t *src = ok ? packed + n * rb + kt * BL_BLOCK_BYTES + half * 16 : packed;
    cp_async16(smem_u32(stage + kAStage + row * kBStride + half * 16), src, ok);
  }
}

template <int OUT, int WN>
__global__ void __launch_bounds__(kThreads, WN == 32 ? 2 : 1)
    mma_kernel(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M, int64_t N,
               int64_t K, int64_t tiles_per_split, blc::Epilogue ep) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int warp_m = warp / 4, warp_n = warp % 4;
  const int g = lane / 4, t = lane % 4;
  using T = Tile<WN>;
  const int64_t m_base = (int64_t)blockIdx.y * kBM, n_base = (int64_t)blockIdx.x * T::kBN;
  const int64_t rb = bl_packed_row_bytes(K);
  /* Split-K: this block's k-tiles [kt0, kt0 + ktiles); its int32 partials go to slice z. */
  const int64_t kt0 = (int64_t)blockIdx.z * tiles_per_split;
  const int64_t ktiles = max((int64_t)0, min(bl_padded_k(K) / kBK - kt0, tiles_per_split));
  if (gridDim.z > 1) ep.y = reinterpret_cast<int32_t *>(ep.y) + (int64_t)blockIdx.z * M * N;

  int32_t acc[4][T::kNT][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < T::kNT; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0;

#pragma unroll
  for (int s = 0; s < kStages - 1; s++) {
    if (s < ktiles)
      load_tile<WN>(smem + s * T::kStageBytes, xq, ldq, packed, rb, M, N, m_base, n_base,
                    kt0 + s);
    cp_async_commit();
  }

  for (int64_t kt = 0; kt < ktiles; kt++) {
    cp_async_wait<kStages - 2>();
    __syncthreads(); /* tile kt landed for all threads; stage (kt-1) % kStages is free */
    const int64_t next = kt + kStages - 1;
    if (next < ktiles)
      load_tile<WN>(smem + (next % kStages) * T::kStageBytes, xq, ldq, packed, rb, M, N, m_base,
                    n_base, kt0 + next);
    cp_async_commit();

    const uint8_t *sa = smem + (kt % kStages) * T::kStageBytes;
    const uint8_t *sb = sa + kAStage;
    uint32_t bw[T::kNT][2]; /* packed words of this warp's n-tiles, bytes 4t and 16 + 4t */
#pragma unroll
    for (int j = 0; j < T::kNT; j++) {
      const uint8_t *brow = sb + (warp_n * WN + j * 8 + g) * kBStride;
      bw[j][0] = clamp_codes(*reinterpret_cast<const uint32_t *>(brow + 4 * t));
      bw[j][1] = clamp_codes(*reinterpret_cast<const uint32_t *>(brow + 16 + 4 * t));
    }
    const uint32_t a_addr =
        smem_u32(sa + (warp_m * 64 + (lane % 16)) * kAStride + (lane / 16) * 16);
#pragma unroll
    for (int ks = 0; ks < kBK / 32; ks++) {
      uint32_t af[4][4];
#pragma unroll
      for (int i = 0; i < 4; i++) ldmatrix_x4(af[i], a_addr + i * 16 * kAStride + ks * 32);
#pragma unroll
      for (int j = 0; j < T::kNT; j++) {
        const uint32_t b0 = __vsub4((bw[j][0] >> (2 * ks)) & 0x03030303u, 0x01010101u);
        const uint32_t b1 = __vsub4((bw[j][1] >> (2 * ks)) & 0x03030303u, 0x01010101u);
#pragma unroll
        for (int i = 0; i < 4; i++) mma_s8(acc[i][j], af[i], b0, b1);
      }
    }
  }
  cp_async_wait<0>(); /* nothing real is pending; leave no async copy behind */

#pragma unroll
  for (int i = 0; i < 4; i++) {
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int64_t m = m_base + warp_m * 64 + i * 16 + g + half * 8;
      if (m >= M) continue;
      const float sx = OUT == blc::kOutAcc ? 0.0f : ep.xscale[m];
#pragma unroll
      for (int j = 0; j < T::kNT; j++) {
        const int64_t n = n_base + warp_n * WN + j * 8 + 2 * t; /* even */
        if (n < N)
          blc::store_out2<OUT>(ep, m, n, N, acc[i][j][half * 2], acc[i][j][half * 2 + 1], sx);
      }
    }
  }
}

/* Split-K when the output tiles alone cannot fill the GPU (few rows and columns, long K). */
template <int WN>
int splits_for(int64_t M, int64_t N, int64_t K) {
  const int64_t blocks = blc::ceil_div(N, Tile<WN>::kBN) * blc::ceil_div(M, kBM);
  const int64_t ktiles = bl_padded_k(K) / kBK;
  if (blocks >= 132) return 1;
  int64_t s = min(blc::ceil_div(264, blocks), ktiles / 4); /* >= 4 k-tiles per split */
  s = min(s, ((int64_t)32 << 20) / max((int64_t)1, M * N * 4)); /* partials stay in L2 */
  return (int)max((int64_t)1, min(s, (int64_t)16));
}

template <int OUT, int WN>
bl_status launch_tile(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M, int64_t N,
                      int64_t K, int splits, const blc::Epilogue &ep, cudaStream_t stream) {
  using T = Tile<WN>;
  const int64_t gx = blc::ceil_div(N, T::kBN), gy = blc::ceil_div(M, kBM);
  if (gx > 0x7fffffff || gy > 65535 || splits > 65535) return BL_ERR_SIZE;
  const int64_t tiles_per_split = blc::ceil_div(bl_padded_k(K) / kBK, splits);
  /* Per device, but cheap and idempotent; not a stream operation (capture-safe). */
  if (cudaFuncSetAttribute(mma_kernel<OUT, WN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           T::kSmemBytes) != cudaSuccess)
    return BL_ERR_CUDA;
  const dim3 grid((unsigned)gx, (unsigned)gy, (unsigned)splits);
  mma_kernel<OUT, WN><<<grid, kThreads, T::kSmemBytes, stream>>>(xq, ldq, packed, M, N, K,
                                                                 tiles_per_split, ep);
  return blc::launch_status();
}

/* bn == 256 (BL_CUDA_OPT_MMA_BN) selects the 128 x 256 tile (benchmarked side by side). */
template <int OUT>
bl_status launch_out(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M, int64_t N,
                     int64_t K, int splits, const blc::Epilogue &ep, int bn, cudaStream_t stream) {
  if (bn == 256) return launch_tile<OUT, 64>(xq, ldq, packed, M, N, K, splits, ep, stream);
  return launch_tile<OUT, 32>(xq, ldq, packed, M, N, K, splits, ep, stream);
}

}  // namespace

namespace blc {

int mma_splits(int64_t M, int64_t N, int64_t K, int bn) {
  return bn == 256 ? splits_for<64>(M, N, K) : splits_for<32>(M, N, K);
}

/* Requires xq and packed 16-byte aligned and ldq % 16 == 0 (checked by the caller).
 * splits > 1: partials holds splits * M * N int32 (exact), added in order by launch_reduce. */
bl_status launch_mma(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M, int64_t N,
                     int64_t K, int splits, int32_t *partials, int out, const Epilogue &ep,
                     int bn, cudaStream_t stream) {
  if (splits > 1) {
    const Epilogue part{partials, N, nullptr, nullptr, 0, nullptr};
    bl_status st = launch_out<kOutAcc>(xq, ldq, packed, M, N, K, splits, part, bn, stream);
    if (st != BL_OK) return st;
    return launch_reduce(partials, splits, nullptr, M, N, out, ep, stream);
  }
  switch (out) {
    case BL_F16: return launch_out<BL_F16>(xq, ldq, packed, M, N, K, 1, ep, bn, stream);
    case BL_BF16: return launch_out<BL_BF16>(xq, ldq, packed, M, N, K, 1, ep, bn, stream);
    case kOutAcc: return launch_out<kOutAcc>(xq, ldq, packed, M, N, K, 1, ep, bn, stream);
    default: return launch_out<BL_F32>(xq, ldq, packed, M, N, K, 1, ep, bn, stream);
  }
}

}  // namespace blc
