/*
 * bitlinear.h - the whole C API of the bitlinear kernel core.
 *
 * Plain C11 (and CUDA C for the bl_cuda_* entry points). No torch, no Python.
 * Everything takes raw pointers, sizes and strides (in elements) and returns a
 * bl_status. Nothing here aborts, prints or reads outside the ranges described
 * by its arguments.
 *
 * Numerics (identical to bitlinear/reference.py, bit for bit):
 *   weights, per tensor  : s_w = max((float)(sum_f64 |w| / (N*K)), (float)eps)
 *   weights, per channel : s_w[n] = max((float)(sum_f64 |w[n,:]| / K), (float)eps)
 *                          w_q = clamp(rint(w / s_w), -1, 1)        (float32 division)
 *                          A non-finite sum (NaN/Inf in w) gives s_w = NaN and w_q = 0.
 *   activations          : s_x = max(amax|x|, (float)eps) / 127.0f  (per row or per tensor)
 *                          x_q = clamp(rint(x / s_x), -128, 127)    (float32 division)
 *   output               : y[m,n] = (float)acc[m,n] * (s_x[m] * s_w[n]) + bias[n]
 *                          (float32, no FMA contraction), then rounded to the output dtype.
 *                          A row whose s_x is not finite (NaN/Inf in x) is all NaN.
 * rint is round-half-to-even (the default FP environment).
 * Floating-point mode: every thread that computes for a call computes in the calling thread's
 *   mode (x86 MXCSR FTZ, DAZ and rounding bits; aarch64 FPCR FZ, FZ16, FIZ, AH and rounding
 *   bits): each parallel region puts the caller's bits in its OpenMP workers and restores theirs
 *   after (csrc/cpu/internal.h, bl_region_*). So results never depend on the thread count, in any
 *   mode. In the default mode they are the numerics above; with flush-to-zero on in the caller
 *   (torch.set_flush_denormal(True)), subnormal inputs read as 0 and subnormal results flush to 0
 *   everywhere, which is what bitlinear/reference.py computes when torch runs it on one thread
 *   (torch's own worker threads do not get the caller's mode, so the reference itself mixes modes
 *   at several threads). Computing in IEEE mode instead would make us disagree with the reference
 *   in every thread configuration under flush-to-zero, and cost the caller's FTZ speed.
 *
 * Packed weight format, version BL_FORMAT_VERSION (docs/packed_format.md):
 *   K is padded to Kp = ceil(K / 128) * 128. Each of the N rows is Kp/128 blocks
 *   of 32 bytes (row stride Kp/4 bytes, rows contiguous). Code c = w + 1 in {0,1,2}.
 *   In block b, byte j (0..31) holds the values at k = 128*b + 32*s + j in bits
 *   [2s, 2s+1] for s = 0..3. Padding positions hold code 1 (weight 0).
 *   Code 3 is invalid (never written). Every kernel, CPU and CUDA, reads it as code 2
 *   (weight +1), so any byte pattern gives the same result on every path without overflow;
 *   deploy() and checkpoint loading reject buffers that contain it.
 */
#ifndef BITLINEAR_H
#define BITLINEAR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BL_FORMAT_VERSION 1
#define BL_QK 128           /* weights per block along K */
#define BL_BLOCK_BYTES 32   /* bytes per block: 128 x 2 bits */
#define BL_CODE_ZERO 1      /* code of a zero weight (and of padding) */
/* Largest K (in_features): |acc| <= 128 K must fit int32, so every GEMM entry point refuses more
 * (BL_ERR_SIZE). */
#define BL_MAX_K 16777215
/* Smallest eps: every scale max(amax, eps) / 127 and max(mean, eps) must be a positive normal
 * float (127 * FLT_MIN); eps must also be finite. Entry points that take eps refuse others
 * (BL_ERR_ARG). */
#define BL_MIN_EPS (127.0f * 1.17549435082228750797e-38f)

/* Marks the inline helpers of this header and of bl_checks.h that CUDA device code uses too. */
#if defined(__CUDACC__)
#define BL_HD __host__ __device__
#else
#define BL_HD
#endif

/* Activation rows are stored padded to Kp with zeros, so every kernel may read whole blocks. */
static inline BL_HD int64_t bl_padded_k(int64_t K) { return (K + BL_QK - 1) / BL_QK * BL_QK; }
static inline BL_HD int64_t bl_packed_row_bytes(int64_t K) { return bl_padded_k(K) / 4; }

typedef enum {
  BL_OK = 0,
  BL_ERR_NULL = 1,        /* a required pointer is NULL */
  BL_ERR_SIZE = 2,        /* a size is negative, zero where it must not be, or overflows */
  BL_ERR_STRIDE = 3,      /* a leading dimension is smaller than the row it describes */
  BL_ERR_ARG = 4,         /* an enum or flag argument is out of range */
  BL_ERR_ISA = 5,         /* the requested ISA is not compiled in or not supported by this CPU */
  BL_ERR_ALLOC = 6,       /* an internal allocation failed */
  BL_ERR_CUDA = 7,        /* a CUDA runtime call failed */
  BL_ERR_NO_CUDA = 8,     /* the library was built without CUDA */
  BL_ERR_NONFINITE = 9    /* weights contain NaN or Inf (no longer returned; kept for the ABI) */
} bl_status;

const char *bl_status_str(bl_status s);

typedef enum { BL_F32 = 0, BL_F16 = 1, BL_BF16 = 2, BL_I8 = 3 } bl_dtype; /* I8: unpack only */

/* ------------------------------------------------------------------ CPU ISA */
typedef enum {
  BL_ISA_REF = 0,          /* plain portable C, the ground truth */
  BL_ISA_AVX2 = 1,
  BL_ISA_AVX512VNNI = 2,
  BL_ISA_AVXVNNI = 3,
  BL_ISA_NEON_DOT = 4,
  BL_ISA_COUNT = 5
} bl_isa;

const char *bl_isa_name(int isa);          /* "ref", "avx2", ... or "unknown" */
int bl_isa_from_name(const char *name);    /* -1 if unknown */
int bl_isa_compiled(int isa);              /* 1 if this build contains the path */
int bl_isa_supported(int isa);             /* compiled and this CPU can run it */
int bl_isa_best(void);                     /* fastest supported path (cpuid, cached) */
int bl_isa_get(void);                      /* the path in use */
/* Select a path; BL_ERR_ISA if not supported. The initial choice is bl_isa_best(),
 * lowered by the environment variable BITLINEAR_ISA if it is set. */
bl_status bl_isa_set(int isa);

/* ------------------------------------------------------------------ CPU API
 * nthreads <= 0 means 1. All entry points use the current ISA (bl_isa_get()).
 * The *_ref variants always run the plain C path (used by tests). */

/* w: [N, K] of dtype wdt (float32, float16 or bfloat16: no float32 copy of a half-precision
 * weight is made), row stride ldw >= K. scale: N floats if per_channel else 1.
 * packed: N * bl_packed_row_bytes(K) bytes. Non-finite weights are not an error (training may
 * diverge): the scale they enter is NaN and the rows it scales pack to zero weights, so every
 * output they touch is NaN. (Python refuses them at deploy.) */
bl_status bl_quantize_weights(const void *w, bl_dtype wdt, int64_t N, int64_t K, int64_t ldw,
                              float eps, int per_channel, float *scale, uint8_t *packed,
                              int nthreads);

/* packed -> int8 w_q [N, K] with row stride ldq. */
bl_status bl_unpack_weights(const uint8_t *packed, int64_t N, int64_t K, int8_t *wq, int64_t ldq);
/* packed -> w_q [N, K] as values -1, 0, 1 of dtype dt (BL_F32, BL_F16, BL_BF16 or BL_I8), row
 * stride ldo: the operand of the training backward's grad_input = grad_out @ (s_w w_q). */
bl_status bl_unpack_weights_f(const uint8_t *packed, int64_t N, int64_t K, void *out, bl_dtype dt,
                              int64_t ldo, int nthreads);

/* x: [M, K] of dtype dt, row stride ldx >= K (elements). xq: [M, Kp] with row stride
 * ldq >= Kp, padding columns set to 0. scale: M floats (per tensor: all equal).
 * rowsum: M int32 sums of x_q (may be NULL). */
bl_status bl_quantize_acts(const void *x, bl_dtype dt, int64_t M, int64_t K, int64_t ldx,
                           float eps, int per_token, int8_t *xq, int64_t ldq, float *scale,
                           int32_t *rowsum, int nthreads);

/* acc[m, n] = sum_k x_q[m, k] * w_q[n, k] (int32), acc row stride ldacc >= N.
 * rowsum may be NULL (kernels that need it recompute it). */
bl_status bl_gemm_acc(const int8_t *xq, int64_t ldq, const int32_t *rowsum,
                      const uint8_t *packed, int64_t M, int64_t N, int64_t K,
                      int32_t *acc, int64_t ldacc, int nthreads);

/* GEMM + epilogue from activations quantized by bl_quantize_acts (x_q [M, Kp] with row stride
 * ldq, xscale and rowsum M values; rowsum may be NULL): y as bl_linear writes it, bit for bit.
 * Training keeps x_q for the backward pass and runs its forward through this. */
bl_status bl_linear_q(const int8_t *xq, int64_t ldq, const float *xscale, const int32_t *rowsum,
                      int64_t M, const uint8_t *packed, int64_t N, int64_t K,
                      const float *wscale, int w_per_channel, const float *bias, void *y,
                      bl_dtype ydt, int64_t ldy, int nthreads);

/* Bytes of scratch bl_linear needs for M rows of K (quantized rows, scales, sums). */
size_t bl_linear_workspace_bytes(int64_t M, int64_t K);

/* The fused forward: quantize x, packed GEMM, epilogue, y in dtype ydt with row stride ldy.
 * wscale: N floats if w_per_channel else 1. bias: N floats or NULL.
 * workspace: at least bl_linear_workspace_bytes(M, K) bytes, 64-byte aligned. */
bl_status bl_linear(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                    const uint8_t *packed, int64_t N, const float *wscale, int w_per_channel,
                    const float *bias, float eps, int per_token, void *y, bl_dtype ydt,
                    int64_t ldy, void *workspace, int nthreads);

/* One segment of a fused call (bl_linear_segments): n rows of the stacked weights, with their
 * own scale(s) (n floats if w_per_channel else 1), bias (n floats or NULL) and output y [M, n]
 * (dtype of the call, row stride ldy >= n). */
typedef struct {
  int64_t n;
  const float *wscale;
  int w_per_channel;
  const float *bias;
  void *y;
  int64_t ldy;
} bl_segment;

/* Projections that share their input (q/k/v, gate/up) in one call: packed holds the nseg
 * segments' rows one after the other (sum of n rows in the packed format). The activations are
 * quantized once and the weights streamed once; segment s's output is bit for bit what bl_linear
 * gives on its rows, scale and bias alone. Workspace: bl_linear_workspace_bytes(M, K). */
bl_status bl_linear_segments(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                             const uint8_t *packed, const bl_segment *segs, int nseg, float eps,
                             int per_token, bl_dtype ydt, void *workspace, int nthreads);
#define BL_MAX_SEGMENTS 16

/* ------------------------------------------------------------------ CPU decode layout (LUT)
 * A second, in-memory copy of the weights for small batches (decode), read by table lookup:
 * per token and per group of 3 activations, a table of the 27 sums (c0-1) x0 + (c1-1) x1 +
 * (c2-1) x2, and the GEMV adds entries indexed by the weights instead of multiplying
 * (docs/packed_format.md, "Decode layout"). Built from the packed format by bl_lut_pack, never
 * saved: checkpoints keep the packed format. Results are bit for bit those of bl_linear (the int32
 * sums are exact), on any byte pattern (code 3 reads as 2, as everywhere).
 * Layout: rows in tiles of BL_LUT_TILE_ROWS, tiles in super-tiles of BL_LUT_SUPER_TILES; K in
 * columns of 9 (BL_LUT_COL_K). The word (uint16) of row n and column c holds three 5-bit indices
 * i_j = sum_{t<3} code(n, 9c + 3j + t) * 3^t (j = 0..2, bits 5j..5j+4; k >= K reads code 1). */
#define BL_LUT_COL_K 9
#define BL_LUT_TILE_ROWS 32
#define BL_LUT_SUPER_TILES 16

/* Bytes of the decode layout of an [N, K] matrix (64 * ceil(N/32) * ceil(K/9)); 0 for N < 1,
 * K < 1, K > BL_MAX_K or N > 2^40. */
size_t bl_lut_bytes(int64_t N, int64_t K);
/* packed ([N, K] in the packed format) -> lut (bl_lut_bytes(N, K) bytes, 64-byte aligned). */
bl_status bl_lut_pack(const uint8_t *packed, int64_t N, int64_t K, uint8_t *lut, int nthreads);

/* CPU options, process-wide (never read from the environment). */
typedef enum {
  BL_CPU_LUT_OFF = 0,    /* bl_linear_lut never reads the decode layout (the default) */
  BL_CPU_LUT_AUTO = 1,   /* it does for M <= BL_CPU_OPT_LUT_MAX_M where the ISA's LUT kernel was
                            measured faster than its packed GEMV (AVX-512; weights in cache) */
  BL_CPU_LUT_FORCE = 2   /* it does for every M, on any ISA (portable C where none): tests */
} bl_cpu_lut_mode;
typedef enum {
  BL_CPU_OPT_LUT = 0,        /* a bl_cpu_lut_mode (default OFF) */
  BL_CPU_OPT_LUT_MAX_M = 1,  /* AUTO: largest M of the LUT path, 0..64 (default: measured) */
  BL_CPU_OPT_COUNT = 2
} bl_cpu_option;
bl_status bl_cpu_set_option(int option, int64_t value); /* BL_ERR_ARG: unknown or out of range */
int64_t bl_cpu_get_option(int option);                  /* -1 for an unknown option */
/* The threads a parallel region the caller runs itself (torch's ops around ours, e.g. the
 * training backward's matmuls) should use now: 1 while the oversubscription governor runs
 * regions on one thread (the caller's region then counts as one of them), else nthreads. */
int bl_cpu_threads_now(int nthreads);
/* 1 if the current ISA has a SIMD LUT kernel (else the layout is read by portable C; AUTO
 * uses only the measured ones, bl_lut_used). */
int bl_lut_kernel(void);
/* 1 if bl_linear_lut with a decode layout would read it for M rows (current ISA and options). */
int bl_lut_used(int64_t M);

/* acc[m, n] as bl_gemm_acc, from the decode layout (any M; the options do not apply). */
bl_status bl_lut_gemm_acc(const int8_t *xq, int64_t ldq, const uint8_t *lut, int64_t M,
                          int64_t N, int64_t K, int32_t *acc, int64_t ldacc, int nthreads);
/* Workspace of bl_linear_lut: bl_linear's, plus the tables of M tokens. */
size_t bl_linear_lut_workspace_bytes(int64_t M, int64_t K);
/* bl_linear, reading lut (the decode layout of packed; NULL: none) where bl_lut_used(M) says so,
 * else packed. Same result bit for bit either way. */
bl_status bl_linear_lut(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                        const uint8_t *packed, const uint8_t *lut, int64_t N,
                        const float *wscale, int w_per_channel, const float *bias, float eps,
                        int per_token, void *y, bl_dtype ydt, int64_t ldy, void *workspace,
                        int nthreads);

/* ------------------------------------------------------------------ CPU int4 head (q4)
 * An opt-in 4-bit output head (lm_head): int4 weights with one float32 scale per group of G
 * consecutive weights of a row, times per-token int8 activations (docs/packed_format.md, "Int4
 * head format (q4)"). Not ternary: its own format and entry points (csrc/cpu/q4.c).
 * Format: G a positive multiple of 64, at most BL_Q4_MAX_GROUP; Kg = ceil(K / G) groups per row,
 *   Kp4 = Kg * G. w4: uint8 [N, Kp4 / 2], rows contiguous; row n, chunk c (k = 64c .. 64c + 63),
 *   byte 32c + j (j < 32): low nibble q[n, 64c + j] + 8, high nibble q[n, 64c + 32 + j] + 8
 *   (every byte is valid: nibble u reads as q = u - 8). wscale: float32 [N, Kg] (not checked:
 *   NaN / Inf propagate).
 * Numerics (every CPU path gives these float32 bits): x_q, s_x of bl_quantize_acts (per token,
 *   eps), zeros for K <= k < Kp4; per row n and token m, eight float32 lanes f[l] = +0, then for
 *   g = 0 .. Kg - 1 in order: p[l] = the exact int32 sum over the chunks c of group g and
 *   i = 0..3 of q[n, 64c + 4l + i] x_q[m, 64c + 4l + i] + q[n, 64c + 32 + 4l + i]
 *   x_q[m, 64c + 32 + 4l + i], and f[l] = fmaf((float)p[l], wscale[n, g], f[l]); then
 *   r = ((f0 + f4) + (f2 + f6)) + ((f1 + f5) + (f3 + f7)), y[m, n] = r * s_x[m] (+ bias[n], a
 *   separate add), rounded to ydt. A token whose s_x is not finite gives an all-NaN row. */
#define BL_Q4_MAX_GROUP 1024
/* ceil(K / G); 0 if K < 1 or G is not a positive multiple of 64 up to BL_Q4_MAX_GROUP. */
int64_t bl_q4_groups(int64_t K, int64_t G);
/* Bytes of one w4 row, Kg * G / 2; 0 where bl_q4_groups is 0. */
int64_t bl_q4_row_bytes(int64_t K, int64_t G);
/* Scratch of bl_q4_linear for M tokens (quantized rows, scales, lane corrections); 0 for M < 0,
 * K < 1, K > BL_MAX_K or an invalid G. */
size_t bl_q4_linear_workspace_bytes(int64_t M, int64_t K, int64_t G);
/* y [M, N] (dtype ydt, row stride ldy >= N) from x [M, K] (dtype xdt, row stride ldx >= K), the
 * q4 weights w4 / wscale of N rows and bias (N floats or NULL). workspace: at least
 * bl_q4_linear_workspace_bytes(M, K, G) bytes, 64-byte aligned (may be NULL when M is 0).
 * Statuses: BL_ERR_NULL (x, w4, wscale, y or workspace NULL with M > 0), BL_ERR_SIZE (M < 0,
 * N < 1, K < 1, K > BL_MAX_K, N or M above 2^40, G not a positive multiple of 64 up to
 * BL_Q4_MAX_GROUP), BL_ERR_ARG (a dtype other than float32 / float16 / bfloat16, eps out of
 * range), BL_ERR_STRIDE (ldx < K, ldy < N). M = 0 writes nothing. */
bl_status bl_q4_linear(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                       const uint8_t *w4, const float *wscale, int64_t N, int64_t G,
                       const float *bias, float eps, void *y, bl_dtype ydt, int64_t ldy,
                       void *workspace, int nthreads);

/* ------------------------------------------------------------------ CPU decode attention
 * One query token per sequence attending over a key/value cache (csrc/cpu/attn.c), float32 only:
 *   out[b, h, :] = sum_l p[l] v[b, h / (Hq / Hkv), l, :],  p = softmax over l of
 *   s[l] = dot(q[b, h, :], k[b, h / (Hq / Hkv), l, :]) * scale (+ mask[b, h, l] when additive),
 * the softmax taken with the running maximum subtracted (float32 throughout; dot products in 16
 * lanes, so the result is within float rounding of the exact value, not torch's bits).
 * Layout: every tensor is given by its base pointer and element strides; the head_dim axis D is
 * contiguous (stride 1) everywhere. q [B, Hq, D] (strides q_sb, q_sh), k and v [B, Hkv, L, D]
 * (strides *_sb, *_sh, *_sl: a strided view of a static cache works as is), out [B, Hq, D]
 * (strides o_sb, o_sh; its rows may not overlap each other nor any input). GQA: Hq a multiple
 * of Hkv; query head h reads kv head h / (Hq / Hkv).
 * Mask (mask_type): BL_ATTN_MASK_NONE (mask may be NULL), BL_ATTN_MASK_ADD (float32, added to
 * s), BL_ATTN_MASK_BOOL (one byte per entry, 0 = masked, as a torch.bool tensor); strides m_sb,
 * m_sh (0 broadcasts one row to every head), m_sl, any of them may be 0. A position whose mask
 * is -inf (additive) or 0 (bool) for a head gets weight 0 there; one masked for every query head
 * of its kv head is skipped, its k and v rows not read. A query head with every position masked
 * (or L = 0) gets zeros, as torch's CPU scaled_dot_product_attention.
 * Strides are non-negative. Threads over (batch, kv head, group of query heads); the query heads
 * of a kv head are computed together, so each k / v row is read once per group. The result does
 * not depend on nthreads (bit for bit).
 * Statuses: BL_ERR_NULL (q, k, v or out NULL, or mask NULL with a mask type, when B > 0),
 * BL_ERR_SIZE (B, L < 0, Hq, Hkv, D < 1, Hq not a multiple of Hkv, an extent above 2^40 or
 * overflowing), BL_ERR_ARG (unknown mask_type, scale not finite), BL_ERR_STRIDE (a negative
 * stride, out rows that overlap). B = 0 does nothing. */
typedef enum {
  BL_ATTN_MASK_NONE = 0,
  BL_ATTN_MASK_ADD = 1,   /* float32, additive; -inf skips the position */
  BL_ATTN_MASK_BOOL = 2   /* uint8 / torch.bool, nonzero = attend */
} bl_attn_mask_type;
bl_status bl_attn_decode(int64_t B, int64_t Hq, int64_t Hkv, int64_t L, int64_t D,
                         const float *q, int64_t q_sb, int64_t q_sh,
                         const float *k, int64_t k_sb, int64_t k_sh, int64_t k_sl,
                         const float *v, int64_t v_sb, int64_t v_sh, int64_t v_sl,
                         const void *mask, int mask_type, int64_t m_sb, int64_t m_sh,
                         int64_t m_sl, float scale, float *out, int64_t o_sb, int64_t o_sh,
                         int nthreads);

/* ---------------------------------------------------------------- RMSNorm (CPU)
 * transformers' Llama-family RMSNorm (LlamaRMSNorm, BitNetRMSNorm, ...) after its variance, bit for
 * bit (bitlinear/reference.py, rms_norm): for each row m of x [M, K] (dtype xdt, row stride ldx)
 *   r = 1.0f / sqrtf(var[m] + eps)                       (float32; var: the caller's mean of x^2)
 *   h = (float)round_xdt(x[m, k] * r)                    (float32 product, rounded to xdt)
 *   y[m, k] = round_ydt((float)w[k] * h)                 (one float32 product, rounded to ydt)
 * w: K elements of dtype wdt; y: dtype ydt, row stride ldy. torch computes the variance itself
 * (x.float().pow(2).mean(-1)): its reduction order is torch's, so the caller passes it in. The
 * rows are split between threads; each row is computed by one thread (bits do not depend on
 * nthreads). NaN / Inf propagate as in torch (a NaN's payload bits may differ).
 * Statuses: BL_ERR_NULL (x, var, w or y NULL with M > 0), BL_ERR_SIZE (M < 0, K < 1,
 * K > BL_MAX_K, M above 2^40), BL_ERR_ARG (a dtype other than float32 / float16 / bfloat16, eps
 * negative or not finite), BL_ERR_STRIDE (ldx < K, ldy < K). M = 0 writes nothing. */
bl_status bl_rms_norm_apply(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                            const float *var, float eps, const void *w, bl_dtype wdt, void *y,
                            bl_dtype ydt, int64_t ldy, int nthreads);

/* Plain-C ground truth of each entry point (same contracts, csrc/cpu/ref.c). */
bl_status bl_q4_linear_ref(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                           const uint8_t *w4, const float *wscale, int64_t N, int64_t G,
                           const float *bias, float eps, void *y, bl_dtype ydt, int64_t ldy,
                           void *workspace, int nthreads);
bl_status bl_quantize_weights_ref(const void *w, bl_dtype wdt, int64_t N, int64_t K, int64_t ldw,
                                  float eps, int per_channel, float *scale, uint8_t *packed,
                                  int nthreads);
bl_status bl_quantize_acts_ref(const void *x, bl_dtype dt, int64_t M, int64_t K, int64_t ldx,
                               float eps, int per_token, int8_t *xq, int64_t ldq, float *scale,
                               int32_t *rowsum, int nthreads);
bl_status bl_gemm_acc_ref(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M,
                          int64_t N, int64_t K, int32_t *acc, int64_t ldacc, int nthreads);
/* Epilogue shared by every CPU path: y = acc * (xscale[m] * wscale[n]) + bias[n]. */
bl_status bl_epilogue_ref(const int32_t *acc, int64_t ldacc, int64_t M, int64_t N,
                          const float *xscale, const float *wscale, int w_per_channel,
                          const float *bias, void *y, bl_dtype ydt, int64_t ldy, int nthreads);

/* float <-> half / bfloat16 conversions used by every path (round to nearest even). */
float bl_f16_to_f32(uint16_t h);
uint16_t bl_f32_to_f16(float f);
float bl_bf16_to_f32(uint16_t h);
uint16_t bl_f32_to_bf16(float f);

/* ------------------------------------------------------------------ CUDA API
 * Same contracts as the CPU entry points, on device pointers, asynchronous on `stream`
 * (a cudaStream_t). No host synchronisation, no allocation: scratch comes from the caller.
 * Without CUDA in the build these return BL_ERR_NO_CUDA. */
struct CUstream_st;
int bl_cuda_compiled(void);

/* GEMM path of the bl_cuda_* entry points (docs/cuda.md). AUTO picks by M (the options below;
 * with the defaults only kernels verified on a GPU: GEMV below BL_CUDA_OPT_MMA_MIN_M, then MMA);
 * any other value forces that kernel where it applies: FUSED only in bl_cuda_linear with
 * M <= 16 and small enough M * Kp (else GEMV), WGMMA only in a build with sm_90a code on an
 * sm_90 GPU (else MMA); every forced fast path falls back to SIMPLE for unaligned operands. */
typedef enum {
  BL_CUDA_PATH_AUTO = 0,
  BL_CUDA_PATH_SIMPLE = 1,    /* one thread per output: the fallback and the diagnosis path */
  BL_CUDA_PATH_GEMV = 2,      /* dp4a GEMV on quantized activations (decode) */
  BL_CUDA_PATH_FUSED = 3,     /* bl_cuda_linear: activation quantization + GEMV, one kernel */
  BL_CUDA_PATH_MULTIROW = 4,  /* skinny mma.sync: each weight read once for up to 64 rows */
  BL_CUDA_PATH_MMA = 5,       /* mma.sync tiled GEMM (prefill) */
  BL_CUDA_PATH_WGMMA = 6,     /* sm_90a wgmma GEMM (prefill); MMA where not built */
  BL_CUDA_PATH_COUNT = 7
} bl_cuda_path;

/* Tuning options, process-wide, read once per call (never from the environment). */
typedef enum {
  BL_CUDA_OPT_PATH = 0,          /* a bl_cuda_path (default AUTO) */
  BL_CUDA_OPT_FUSED_MAX_M = 1,   /* AUTO: largest M of the fused path, 0..16 (default 0: off) */
  BL_CUDA_OPT_MULTIROW_MIN_M = 2,/* AUTO: first M of the multi-row path, 0 = off (default 0) */
  BL_CUDA_OPT_MMA_MIN_M = 3,     /* AUTO: first M of the MMA path, >= 1 (default 9) */
  BL_CUDA_OPT_MMA_BN = 4,        /* MMA tile width: 128 or 256 (default 128) */
  BL_CUDA_OPT_COUNT = 5
} bl_cuda_option;

/* BL_ERR_ARG for an unknown option or a value out of range (nothing changes). Not meant to be
 * changed while another thread launches: a call reads each option once, but the workspace size
 * a caller computed before the change may no longer suffice (BL_ERR_SIZE). */
bl_status bl_cuda_set_option(int option, int64_t value);
int64_t bl_cuda_get_option(int option); /* -1 for an unknown option */
const char *bl_cuda_path_name(int path); /* "auto", "simple", ... or "unknown" */
size_t bl_cuda_quantize_weights_workspace_bytes(int64_t N, int64_t K, int per_channel);
bl_status bl_cuda_quantize_weights(const void *w, bl_dtype wdt, int64_t N, int64_t K, int64_t ldw,
                                   float eps, int per_channel, float *scale, uint8_t *packed,
                                   void *workspace, struct CUstream_st *stream);
bl_status bl_cuda_unpack_weights(const uint8_t *packed, int64_t N, int64_t K, int8_t *wq,
                                 int64_t ldq, struct CUstream_st *stream);
size_t bl_cuda_quantize_acts_workspace_bytes(int64_t M, int64_t K, int per_token);
bl_status bl_cuda_quantize_acts(const void *x, bl_dtype dt, int64_t M, int64_t K, int64_t ldx,
                                float eps, int per_token, int8_t *xq, int64_t ldq, float *scale,
                                int32_t *rowsum, void *workspace, struct CUstream_st *stream);
/* Workspace of bl_cuda_gemm_acc / bl_cuda_linear_q with the current options: row sums (when none
 * are given) and split-K partials; with less they take fewer splits or the plain kernel. */
size_t bl_cuda_gemm_workspace_bytes(int64_t M, int64_t N, int64_t K);
bl_status bl_cuda_gemm_acc(const int8_t *xq, int64_t ldq, const int32_t *rowsum,
                           const uint8_t *packed, int64_t M, int64_t N, int64_t K,
                           int32_t *acc, int64_t ldacc, void *workspace, size_t workspace_bytes,
                           struct CUstream_st *stream);
/* Bytes of workspace bl_cuda_linear needs with the current options (0 on the fused path: the
 * workspace pointer may then be NULL). */
size_t bl_cuda_linear_workspace_bytes(int64_t M, int64_t N, int64_t K);
/* bl_linear_q on the GPU; uses at most bl_cuda_gemm_workspace_bytes(M, N, K) bytes of
 * workspace (less: fewer split-K partials or the plain kernel, same result). */
bl_status bl_cuda_linear_q(const int8_t *xq, int64_t ldq, const float *xscale,
                           const int32_t *rowsum, int64_t M, const uint8_t *packed, int64_t N,
                           int64_t K, const float *wscale, int w_per_channel, const float *bias,
                           void *y, bl_dtype ydt, int64_t ldy, void *workspace,
                           size_t workspace_bytes, struct CUstream_st *stream);
bl_status bl_cuda_linear(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                         const uint8_t *packed, int64_t N, const float *wscale, int w_per_channel,
                         const float *bias, float eps, int per_token, void *y, bl_dtype ydt,
                         int64_t ldy, void *workspace, size_t workspace_bytes,
                         struct CUstream_st *stream);

#ifdef __cplusplus
}
#endif
#endif /* BITLINEAR_H */
