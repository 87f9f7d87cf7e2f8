/* test_fp_mode.c - results do not depend on the thread count in any floating-point mode
 * (issue 18): with FTZ/DAZ set in the calling thread only (what torch.set_flush_denormal does),
 * and with the opposite (the caller in IEEE mode, the OpenMP workers left with FTZ/DAZ), every
 * entry point gives the same bytes at 1 and 2 threads on every ISA of this CPU, and every thread
 * keeps its own mode after the call. Inputs: subnormal activations with eps = BL_MIN_EPS,
 * subnormal weights under a normal mean, scales whose product underflows, a subnormal weight
 * scale; the int4 head (q4) with subnormal group scales and outputs that underflow. Where the architecture has no known mode register the program says so and passes. */
#include "cpu/internal.h" /* bl_fp_reg_get / bl_fp_reg_set / BL_FP_MODE_BITS: the code under test */
#include "harness.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define FLUSH_BITS 0x8040ull /* FTZ | DAZ */
#elif defined(__aarch64__)
#define FLUSH_BITS (1ull << 24) /* FZ */
#else
#define FLUSH_BITS 0ull
#endif

static float f_bits(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}

static void set_flush(int on) {
  const unsigned long long r = bl_fp_reg_get();
  bl_fp_reg_set(on ? (r | FLUSH_BITS) : (r & ~FLUSH_BITS));
}

/* Each thread of a 2-thread team: its mode bits into modes[thread]. */
static void team_modes(unsigned long long modes[2]) {
  modes[0] = modes[1] = ~0ull;
#pragma omp parallel num_threads(2)
  modes[omp_get_thread_num() & 1] = bl_fp_reg_get() & BL_FP_MODE_BITS;
}

/* The workers of the pool into flush mode (`on`), whatever the caller's. */
static void team_flush(int on) {
#pragma omp parallel num_threads(2)
  if (omp_get_thread_num() != 0) set_flush(on);
}

enum { M = 64, N = 512, K = 1024, KP = 1024, RB = KP / 4, TRIES = 3 };

/* Every output of run_all, compared as bytes. */
typedef struct {
  int8_t xq[M * KP], xq16[M * KP], xq2[M * KP];
  float xs[M], xs16[M], xs2[M];
  int32_t rs[M], rs16[M], rs2[M];
  float wsc[N], wst[N], wss;
  uint8_t pc[N * RB], pt[N * RB], ps[N * RB];
  float y[M * N], y1[N], y2[M * N], y3[M * N];
  uint16_t y16[M * N];
  int32_t acc[M * N];
  float y4[M * N];
  uint16_t y4b[M * N];
  int status;
} outputs;

static float x_sub[M * K], x_tiny[M * K], x_big[M * K], w_sub[N * K], w_tiny[N * K];
static uint16_t x_sub_bf16[M * K];
static uint8_t w4[N * K / 2];                  /* the int4 head: random bytes */
static float s4_sub[N * K / 64], s4_tiny[N * K / 64]; /* its scales (G = 64; G = 128 reads half) */
static uint8_t *lut;
static void *ws_buf;

/* Every entry point on the current ISA at nt threads. */
static void run_all(outputs *o, int nt) {
  memset(o, 0, sizeof(*o));
  int st = 0;
  /* activations: subnormal rows (float32 per token, bfloat16 per tensor), eps = BL_MIN_EPS */
  st |= bl_quantize_acts(x_sub, BL_F32, M, K, K, BL_MIN_EPS, 1, o->xq, KP, o->xs, o->rs, nt);
  st |= bl_quantize_acts(x_sub_bf16, BL_BF16, M, K, K, BL_MIN_EPS, 0, o->xq16, KP, o->xs16,
                         o->rs16, nt);
  /* weights: subnormals under a normal mean, per channel and per tensor */
  st |= bl_quantize_weights(w_sub, BL_F32, N, K, K, BL_MIN_EPS, 1, o->wsc, o->pc, nt);
  st |= bl_quantize_weights(w_sub, BL_F32, N, K, K, BL_MIN_EPS, 0, &o->wss, o->ps, nt);
  /* the forward on tiny weights and activations: s_x * s_w underflows to a subnormal */
  st |= bl_quantize_weights(w_tiny, BL_F32, N, K, K, BL_MIN_EPS, 0, o->wst, o->pt, nt);
  st |= bl_linear(x_tiny, BL_F32, M, K, K, o->pt, N, o->wst, 0, NULL, BL_MIN_EPS, 1, o->y,
                  BL_F32, N, ws_buf, nt);
  /* M = 1 through the decode layout (read where bl_lut_used(1)), and its GEMM */
  st |= bl_lut_pack(o->pt, N, K, lut, nt);
  st |= bl_linear_lut(x_tiny, BL_F32, 1, K, K, o->pt, lut, N, o->wst, 0, NULL, BL_MIN_EPS, 1,
                      o->y1, BL_F32, N, ws_buf, nt);
  st |= bl_lut_gemm_acc(o->xq, KP, lut, M, N, K, o->acc, N, nt);
  /* a subnormal weight scale (about 1e-40) and large activations, float32 and float16 out */
  float wsub[N];
  for (int n = 0; n < N; n++) wsub[n] = f_bits(71362);
  st |= bl_quantize_acts(x_big, BL_F32, M, K, K, 1e-6f, 1, o->xq2, KP, o->xs2, o->rs2, nt);
  st |= bl_linear_q(o->xq2, KP, o->xs2, o->rs2, M, o->pc, N, K, wsub, 1, NULL, o->y2, BL_F32, N,
                    nt);
  st |= bl_linear_q(o->xq2, KP, o->xs2, o->rs2, M, o->pc, N, K, wsub, 1, NULL, o->y16, BL_F16, N,
                    nt);
  int32_t *acc = (int32_t *)malloc(sizeof(int32_t) * M * N);
  st |= bl_gemm_acc(o->xq2, KP, o->rs2, o->pc, M, N, K, acc, N, nt);
  st |= bl_epilogue_ref(acc, N, M, N, o->xs2, wsub, 1, NULL, o->y3, BL_F32, N, nt);
  free(acc);
  /* the int4 head: subnormal activations and group scales (fmaf results subnormal), and tiny
   * activations whose outputs underflow in the multiply by s_x (bfloat16 out) */
  st |= bl_q4_linear(x_sub, BL_F32, M, K, K, w4, s4_sub, N, 64, NULL, BL_MIN_EPS, o->y4, BL_F32,
                     N, ws_buf, nt);
  st |= bl_q4_linear(x_tiny, BL_F32, M, K, K, w4, s4_tiny, N, 128, NULL, BL_MIN_EPS, o->y4b,
                     BL_BF16, N, ws_buf, nt);
  o->status = st;
}

static void compare(const char *isa, const char *mode) {
  static outputs one, two;
  run_all(&one, 1);
  int same = 1;
  for (int t = 0; t < TRIES; t++) { /* a 2-thread call may run on one thread under load */
    run_all(&two, 2);
    same &= memcmp(&one, &two, sizeof(one)) == 0;
  }
  check(same && one.status == BL_OK,
        "%s: every entry point gives the same bytes at 1 and 2 threads, %s", isa, mode);
}

int main(void) {
  if (FLUSH_BITS == 0) {
    printf("PASS fp mode: no known mode register on this architecture, nothing to carry\n");
    return 0;
  }
  rng_state = 0x2545F4914F6CDD1DULL;
  for (int i = 0; i < M * K; i++) {
    const uint32_t r = (uint32_t)(rnd() >> 32), sign = (r & 1u) << 31;
    const uint32_t bits = sign | ((r % 3 == 0) << 23) | ((uint32_t)(rnd() >> 41) | 1u);
    x_sub[i] = f_bits(bits); /* 2/3 subnormal, the rest below 2 FLT_MIN: the scale is FLT_MIN */
    x_sub_bf16[i] = (uint16_t)((bits >> 16) | 1u);
    x_tiny[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-21f; /* s_x about 8e-21 */
    x_big[i] = (float)((int)(rnd() % 2001) - 1000) * 1e7f;
  }
  for (int i = 0; i < N * K; i++) {
    const uint32_t sign = (uint32_t)(rnd() >> 63) << 31;
    w_sub[i] = i % 97 == 0 ? (float)((int)(rnd() % 2001) - 1000) * 1e-36f
                           : f_bits(sign | (uint32_t)(rnd() >> 44) | (1u << 20));
    w_tiny[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-22f; /* s_w about 5e-20 */
  }
  for (int i = 0; i < N * K / 2; i++) w4[i] = (uint8_t)(rnd() >> 56);
  for (int i = 0; i < N * K / 64; i++) {
    s4_sub[i] = f_bits((uint32_t)(rnd() >> 63) << 31 | (uint32_t)(rnd() >> 48)); /* < 2^-133 */
    s4_tiny[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-24f;
  }
  lut = (uint8_t *)aligned_alloc(64, (bl_lut_bytes(N, K) + 63) / 64 * 64);
  size_t wsb = bl_linear_lut_workspace_bytes(M, K);
  if (wsb < bl_q4_linear_workspace_bytes(M, K, 64)) wsb = bl_q4_linear_workspace_bytes(M, K, 64);
  ws_buf = aligned_alloc(64, (wsb + 63) / 64 * 64);
  static outputs ieee;
  for (int isa = 0; isa < BL_ISA_COUNT; isa++) {
    if (!bl_isa_supported(isa)) continue;
    bl_isa_set(isa);
    const char *name = bl_isa_name(isa);
    unsigned long long before[2], after[2];
    /* 1. the caller flushes, the workers do not (torch.set_flush_denormal) */
    set_flush(0);
    team_flush(0);
    run_all(&ieee, 1);
    set_flush(1);
    team_modes(before);
    compare(name, "caller FTZ/DAZ, workers IEEE");
    team_modes(after);
    check(before[0] == after[0] && before[1] == after[1] && (after[0] & FLUSH_BITS) &&
              !(after[1] & FLUSH_BITS),
          "%s: each thread keeps its own mode after the calls", name);
    static outputs flushed;
    run_all(&flushed, 2);
    check(memcmp(&flushed, &ieee, sizeof(ieee)) != 0,
          "%s: the inputs do tell FTZ/DAZ from IEEE (else this test checks nothing)", name);
    /* 2. the caller is IEEE, the workers flush (a pool created while FTZ was on) */
    team_flush(1);
    set_flush(0);
    team_modes(before);
    compare(name, "caller IEEE, workers FTZ/DAZ");
    static outputs two;
    run_all(&two, 2);
    check(memcmp(&two, &ieee, sizeof(ieee)) == 0, "%s: IEEE caller, 2 threads = IEEE, 1 thread", name);
    team_modes(after);
    check(before[0] == after[0] && before[1] == after[1] && !(after[0] & FLUSH_BITS) &&
              (after[1] & FLUSH_BITS),
          "%s: each thread keeps its own mode after the calls (workers FTZ)", name);
    team_flush(0);
  }
  free(lut);
  free(ws_buf);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
