"""Decode attention on the CPU: torch's SDPA (enable_gqa) vs bitlinear's kernel at BitNet-2B's
attention shape (q [1, 20, 1, 128], k / v [1, 5, 128, 128] of a static cache with `valid` filled
positions, an additive float32 mask hiding the rest), medians over many calls.

    .venv/bin/python profile/attn_decode.py [--valid 50] [--threads 1 2] [--reps 2000]
"""
import argparse
import statistics
import time

import torch
from torch.nn import functional as F

import bitlinear.attention  # noqa: F401  (defines torch.ops.bitlinear.attn_decode)
from bitlinear.attention import attn_decode


def median_us(fn, reps):
    for _ in range(max(20, reps // 20)):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=20)
    ap.add_argument("--kv-heads", type=int, default=5)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--cache", type=int, default=128, help="static cache length")
    ap.add_argument("--valid", type=int, default=50, help="filled positions")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=2000)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    B, Hq, Hkv, D, L = a.batch, a.heads, a.kv_heads, a.head_dim, a.cache
    q = torch.randn(B, Hq, 1, D, generator=g)
    k = torch.randn(B, Hkv, L, D, generator=g)
    v = torch.randn(B, Hkv, L, D, generator=g)
    mask = torch.zeros(B, 1, 1, L)
    mask[..., a.valid:] = float("-inf")
    scale = D ** -0.5
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    err = (attn_decode(q, k, v, mask, scale) - ref.transpose(1, 2)).abs().max().item()
    print(f"q [{B}, {Hq}, 1, {D}], k/v [{B}, {Hkv}, {L}, {D}], {a.valid} valid positions, "
          f"additive mask; max |ours - sdpa| = {err:.2e}")
    op = torch.ops.bitlinear.attn_decode  # what a compiled graph calls
    print(f"{'threads':>7} {'sdpa us':>9} {'ours us':>9} {'op us':>9} {'speedup':>8}  "
          "(ours: bitlinear.attention.attn_decode eagerly; op: torch.ops.bitlinear.attn_decode)")
    before = torch.get_num_threads()
    try:
        for nt in a.threads:
            torch.set_num_threads(nt)
            t_sdpa = median_us(lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=scale, enable_gqa=True), a.reps)
            t_ours = median_us(lambda: attn_decode(q, k, v, mask, scale), a.reps)
            t_op = median_us(lambda: op(q, k, v, mask, scale), a.reps)
            print(f"{nt:>7} {t_sdpa:>9.1f} {t_ours:>9.1f} {t_op:>9.1f} {t_sdpa / t_op:>7.1f}x")
    finally:
        torch.set_num_threads(before)


if __name__ == "__main__":
    main()
