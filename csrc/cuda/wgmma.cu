/* wgmma.cu - prefill on sm_90a: wgmma (s8 x s8 -> s32), TMA loads, a warp-specialized
 * producer/consumer pipeline on mbarriers. Compiled into every build; the kernel body exists only
 * in sm_90a code (__CUDA_ARCH_FEAT_SM90_ALL), and the host takes this path only when the code
 * loaded for the current device has it (wgmma_available()), else the mma.sync GEMM.
 * NOT RUN YET (written without a GPU): reachable only when forced (BL_CUDA_PATH_WGMMA).
 *
 * Roles swapped as in multirow.cu: the weights are the A operand (64 rows per warpgroup, from
 * registers) and the activations the B operand (from shared memory, the wgmma "N" = tokens):
 *   D[n, m] = sum_k W[n, k] x[m, k],  tile 128 weight rows x 128 tokens x 128 k per stage.
 * A from registers needs no int8 copy of the weights in shared memory: each consumer thread reads
 * the packed words of its rows (TMA-loaded, 32 bytes per row per k-tile) and decodes them like
 * mma.cu's B fragments: for k-step ks, the word at byte 4t (16 + 4t) of row g (g + 8), shifted by
 * 2 ks, masked, minus 1 per byte, is a0 / a2 (a1 / a3): k = 32 ks + 4t.. (16 + 4t..), the natural
 * order, so the activations need no permutation. The invalid code 3 reads as 2 (clamp_codes).
 *
 * Block: 3 warpgroups. Warpgroup 0 is the producer (one thread issues the TMA copies of a stage:
 * the 128 x 128-byte activation box with 128-byte swizzle, and the 128 x 32-byte packed box, on
 * the stage's "full" mbarrier with its transaction bytes); warpgroups 1 and 2 consume (64 weight
 * rows each: wgmma.m64n128k32, four per stage, then release the stage on its "empty" mbarrier).
 * kStages stages. Rows past M or N are zero-filled by TMA (their outputs are not stored).
 * The activation descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart, start
 * advanced 32 bytes per k32 step inside the swizzle atom.
 */
#include <cuda.h> /* CUtensorMap and its enums (types only; the encoder comes from the runtime) */

#include "common.cuh"

namespace {

using blc::clamp_codes;

constexpr int kBN = 128;      /* weight rows per block (2 consumer warpgroups x 64) */
constexpr int kBM = 128;      /* tokens per block (the wgmma N) */
constexpr int kBK = 128;      /* k per stage */
constexpr int kStages = 5;
constexpr int kThreads = 384;
constexpr int kActBytes = kBM * kBK;               /* 16384, 1024-aligned */
constexpr int kPackBytes = kBN * BL_BLOCK_BYTES;   /* 4096 */
constexpr int kStageBytes = kActBytes + kPackBytes;
constexpr int kSmemBytes = kStages * kStageBytes + 1024; /* + alignment slack */

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define BL_WGMMA_BODY 1
#endif

#ifdef BL_WGMMA_BODY
__device__ __forceinline__ uint32_t smem_u32(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  }
}

/* 2D TMA: box at (inner c0, outer c1) of the tensor map into shared memory, on barrier bar. */
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap *map, int c0, int c1,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

/* codes 0..2 of four bytes -> int8 weights -1..1: (c + 128 - 1) ^ 128, no borrow between bytes */
__device__ __forceinline__ uint32_t codes_to_s8(uint32_t c) {
  return ((c | 0x80808080u) - 0x01010101u) ^ 0x80808080u;
}

/* Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart. */
__device__ __forceinline__ uint64_t desc_sw128(uint32_t saddr) {
  uint64_t d = 0;
  d |= (uint64_t)((saddr & 0x3FFFF) >> 4);
  d |= (uint64_t)1 << 16;                 /* leading byte offset (unused with this swizzle) */
  d |= (uint64_t)(1024 >> 4) << 32;       /* stride byte offset */
  d |= (uint64_t)1 << 62;                 /* layout: 128-byte swizzle */
  return d;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait0() {
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
}

/* D[64 x 128] += A[64 x 32] (registers, s8) * B[32 x 128] (shared, s8, descriptor). */
__device__ __forceinline__ void wgmma_m64n128k32(int32_t (&d)[64], uint32_t a0, uint32_t a1,
                                                 uint32_t a2, uint32_t a3, uint64_t desc_b) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p;\n"
      "}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]),
        "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]),
        "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]),
        "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]),
        "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]),
        "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]),
        "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]),
        "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]),
        "+r"(d[62]), "+r"(d[63])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc_b), "r"(1)
      : "memory");
}
#endif  // BL_WGMMA_BODY

/* blockIdx.x: 128-row weight tile, blockIdx.y: 128-token tile. */
template <int OUT>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_kernel(const __grid_constant__ CUtensorMap act_map,
                 const __grid_constant__ CUtensorMap pack_map, int64_t M, int64_t N, int64_t K,
                 blc::Epilogue ep) {
#ifdef BL_WGMMA_BODY
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t full_bar[kStages], empty_bar[kStages];
  uint8_t *smem = (uint8_t *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  const int tid = threadIdx.x, lane = tid % 32, warp_in_wg = (tid % 128) / 32;
  /* warp-uniform by construction (a shuffle), so the role branch is not divergent for ptxas */
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);
  const int64_t n0 = (int64_t)blockIdx.x * kBN, m0 = (int64_t)blockIdx.y * kBM;
  const int ktiles = (int)(bl_padded_k(K) / kBK);

  if (tid == 0) {
    for (int s = 0; s < kStages; s++) {
      mbar_init(smem_u32(&full_bar[s]), 1);
      mbar_init(smem_u32(&empty_bar[s]), 256); /* every consumer thread arrives */
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {
    /* producer: one thread; a fresh barrier's previous phase (parity 1) counts as complete */
    if (tid == 0) {
      for (int kt = 0; kt < ktiles; kt++) {
        const int s = kt % kStages;
        const uint32_t phase = (uint32_t)(kt / kStages) & 1u;
        mbar_wait(smem_u32(&empty_bar[s]), phase ^ 1u);
        uint8_t *st = smem + s * kStageBytes;
        const uint32_t fb = smem_u32(&full_bar[s]);
        mbar_expect_tx(fb, kStageBytes);
        tma_load_2d(smem_u32(st), &act_map, kt * kBK, (int)m0, fb);
        tma_load_2d(smem_u32(st + kActBytes), &pack_map, kt * BL_BLOCK_BYTES, (int)n0, fb);
      }
    }
    return;
  }

  /* consumers: warpgroup c = wg - 1 owns weight rows n0 + 64 c .. + 63; warp w of it rows
   * 16 w + g and 16 w + g + 8 of those */
  const int c = wg - 1, g = lane / 4, t = lane % 4;
  const int r0 = 64 * c + 16 * warp_in_wg + g; /* row in the tile (and r0 + 8) */
  int32_t acc[64];
#pragma unroll
  for (int i = 0; i < 64; i++) acc[i] = 0;

  for (int kt = 0; kt < ktiles; kt++) {
    const int s = kt % kStages;
    const uint32_t phase = (uint32_t)(kt / kStages) & 1u;
    mbar_wait(smem_u32(&full_bar[s]), phase);
    const uint8_t *st = smem + s * kStageBytes;
    const uint8_t *pk = st + kActBytes;
    const uint32_t w0 = clamp_codes(*reinterpret_cast<const uint32_t *>(pk + r0 * 32 + 4 * t));
    const uint32_t w1 = clamp_codes(*reinterpret_cast<const uint32_t *>(pk + (r0 + 8) * 32 + 4 * t));
    const uint32_t w2 = clamp_codes(*reinterpret_cast<const uint32_t *>(pk + r0 * 32 + 16 + 4 * t));
    const uint32_t w3 =
        clamp_codes(*reinterpret_cast<const uint32_t *>(pk + (r0 + 8) * 32 + 16 + 4 * t));
    const uint64_t desc = desc_sw128(smem_u32(st));
    /* every A register of the stage written before the fence (wgmma.fence orders register
     * writes before the wgmmas that read them) */
    uint32_t a[4][4];
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
      a[ks][0] = codes_to_s8((w0 >> (2 * ks)) & 0x03030303u);
      a[ks][1] = codes_to_s8((w1 >> (2 * ks)) & 0x03030303u);
      a[ks][2] = codes_to_s8((w2 >> (2 * ks)) & 0x03030303u);
      a[ks][3] = codes_to_s8((w3 >> (2 * ks)) & 0x03030303u);
    }
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ks++)
      wgmma_m64n128k32(acc, a[ks][0], a[ks][1], a[ks][2], a[ks][3],
                       desc + (uint64_t)((32 * ks) >> 4));
    wgmma_commit();
    wgmma_wait0(); /* the A registers and this stage may be reused only after completion */
    mbar_arrive(smem_u32(&empty_bar[s]));
  }

  /* D fragment: acc[4 j + q] is weight row r0 + 8 (q / 2), token 8 j + 2 t + (q % 2). */
#pragma unroll
  for (int j = 0; j < 16; j++) {
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const int64_t n = n0 + r0 + 8 * (q / 2), m = m0 + 8 * j + 2 * t + (q % 2);
      if (n < N && m < M)
        blc::store_out<OUT>(ep.y, m * ep.ldy + n, acc[4 * j + q],
                            OUT == blc::kOutAcc ? 0.0f : ep.xscale[m], ep.wscale,
                            ep.w_per_channel, ep.bias, n);
    }
  }
#else
  (void)M; (void)N; (void)K; (void)ep; (void)act_map; (void)pack_map;
#endif
}

/* The static shared memory of the real body (its mbarriers) tells sm_90a code from the empty
 * stub: the host asks which one the current device loaded. */
bool body_loaded() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
  static int cache[64]; /* 0 unknown, 1 yes, 2 no */
  if (cache[dev] == 0) {
    cudaFuncAttributes a;
    const bool yes = cudaFuncGetAttributes(&a, wgmma_kernel<blc::kOutAcc>) == cudaSuccess &&
                     a.sharedSizeBytes > 0;
    cache[dev] = yes ? 1 : 2;
  }
  return cache[dev] == 1;
}

using EncodeFn = CUresult (*)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                              const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                              const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                              CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeFn encoder() {
  static EncodeFn fn = []() -> EncodeFn {
    void *p = nullptr;
    cudaDriverEntryPointQueryResult q;
#if CUDART_VERSION >= 12050
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      return nullptr;
#else
    if (cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &q) !=
            cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      return nullptr;
#endif
    return reinterpret_cast<EncodeFn>(p);
  }();
  return fn;
}

/* A 2D uint8 tensor map: rows x cols (inner), row stride ld bytes, box box_rows x box_cols. */
bool make_map(CUtensorMap *map, const void *base, int64_t rows, int64_t cols, int64_t ld,
              int box_rows, int box_cols, bool swizzle128) {
  EncodeFn enc = encoder();
  if (!enc) return false;
  const cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows};
  const cuuint64_t strides[1] = {(cuuint64_t)ld};
  const cuuint32_t box[2] = {(cuuint32_t)box_cols, (cuuint32_t)box_rows};
  const cuuint32_t estr[2] = {1, 1};
  return enc(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void *>(base), dims, strides, box,
             estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
             swizzle128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
             CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <int OUT>
bl_status launch_out(const CUtensorMap &am, const CUtensorMap &pm, int64_t M, int64_t N,
                     int64_t K, const blc::Epilogue &ep, cudaStream_t stream) {
  if (cudaFuncSetAttribute(wgmma_kernel<OUT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           kSmemBytes) != cudaSuccess)
    return BL_ERR_CUDA;
  const dim3 grid((unsigned)blc::ceil_div(N, kBN), (unsigned)blc::ceil_div(M, kBM), 1);
  wgmma_kernel<OUT><<<grid, kThreads, kSmemBytes, stream>>>(am, pm, M, N, K, ep);
  return blc::launch_status();
}

}  // namespace

namespace blc {

bool wgmma_available() { return body_loaded() && encoder() != nullptr; }

/* Requires xq and packed 16-byte aligned, ldq % 16 == 0 (checked by the caller) and
 * wgmma_available(); M, N < 2^31 (TMA coordinates are int32). */
bl_status launch_wgmma(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M, int64_t N,
                       int64_t K, int out, const Epilogue &ep, cudaStream_t stream) {
  if (M > 0x7fffffff || N > 0x7fffffff || ceil_div(M, kBM) > 65535) return BL_ERR_SIZE;
  CUtensorMap am, pm;
  if (!make_map(&am, xq, M, bl_padded_k(K), ldq, kBM, kBK, true) ||
      !make_map(&pm, packed, N, bl_packed_row_bytes(K), bl_packed_row_bytes(K), kBN,
                BL_BLOCK_BYTES, false))
    return BL_ERR_CUDA;
  switch (out) {
    case BL_F16: return launch_out<BL_F16>(am, pm, M, N, K, ep, stream);
    case BL_BF16: return launch_out<BL_BF16>(am, pm, M, N, K, ep, stream);
    case kOutAcc: return launch_out<kOutAcc>(am, pm, M, N, K, ep, stream);
    default: return launch_out<BL_F32>(am, pm, M, N, K, ep, stream);
  }
}

}  // namespace blc
