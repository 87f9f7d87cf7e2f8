"""Output-head GEMV candidates at M = 1 (issue 20, item 1): 2560 -> V, CPU, weights streamed.

    python profile/head_gemv.py [--vocab 32000 128256] [--threads 1 2] [--reps 20]

Rows (ms per call, median of --reps after 3 warm-up calls, interleaved per thread count):
  f32, bf16               F.linear on float32 / bfloat16 weights (the float heads);
  quantize_dynamic        torch.ao.quantization.quantize_dynamic(nn.Linear, qint8): fbgemm,
                          per-tensor weight scale, reduce_range on;
  fbgemm_per_channel      torch.ops.quantized.linear_dynamic on per-row int8 weights, fbgemm;
  Int8Head                bitlinear.head.Int8Head (the same kernel, plus its per-row activation
                          scaling and the two range columns);
  weight_int8pack_mm      torch._weight_int8pack_mm (float32 and bfloat16 activations);
  int_mm                  torch._int_mm (int8 x int8 -> int32, activations already int8);
  Int4Head g64 / g128     bitlinear.head.Int4Head (4-bit codes, a float32 scale per group of 64 /
                          128 weights; our C kernel, activations int8 per token);
  weight_int4pack_mm g128 torch._weight_int4pack_mm_for_cpu (torch's int4 CPU kernel, groups of
                          128, bfloat16 activations and scales/zeros).
Each line ends with the DRAM floor of the int8 and the int4 (g64) heads' bytes at the read
bandwidth of a torch sum over 1 GiB, measured at that thread count in the same process.
The weights (V x 2560 floats: 328 MB at 32000) exceed the cache, so each call streams them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from bitlinear.head import Int8Head

try:
    from bitlinear.head import Int4Head
except ImportError:  # an older bitlinear
    Int4Head = None

K = 2560


def _t(fn, reps):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def _read_bw() -> float:
    """GB/s: best of 5 torch sums over 1 GiB of float32 (at the current thread count)."""
    t = torch.ones(1 << 28)
    t.sum()
    best = min(_t(t.sum, 1) for _ in range(5)) * 1e-3
    return t.numel() * 4 / best / 1e9


def _torch_int4(w: torch.Tensor, xb: torch.Tensor):
    """torch's CPU int4 GEMV on w quantized asymmetrically in groups of 128 (codes 0..15)."""
    V, gs = w.shape[0], 128
    wg = w.detach().float().reshape(V, K // gs, gs)
    mn, mx = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
    scale = (mx - mn).clamp(min=1e-6) / 15
    q = torch.round((wg - mn) / scale).clamp(0, 15).to(torch.int32).reshape(V, K)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    sz = torch.stack([scale.reshape(V, -1), (mn + 8 * scale).reshape(V, -1)], -1) \
        .transpose(0, 1).contiguous().to(torch.bfloat16)
    return lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, packed, gs, sz)


@torch.no_grad()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", nargs="+", type=int, default=[32000, 128256])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    g = torch.Generator().manual_seed(0)
    for V in a.vocab:
        lin = nn.Linear(K, V, bias=False)
        lin.weight.copy_(torch.randn(V, K, generator=g) * 0.02)
        x = torch.randn(1, K, generator=g)
        cands = {"f32": (lambda: F.linear(x, lin.weight))}
        wb, xb = lin.weight.bfloat16(), x.bfloat16()
        cands["bf16"] = lambda: F.linear(xb, wb)
        try:
            qd = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear},
                                                        dtype=torch.qint8)
            cands["quantize_dynamic"] = lambda: qd(x)
        except Exception as e:  # noqa: BLE001
            print(f"quantize_dynamic: {type(e).__name__}: {e}")
        head = Int8Head.from_linear(lin).prepack()
        s = head.scale
        qw = torch._make_per_channel_quantized_tensor(head.weight, s.double(),
                                                      torch.zeros(V, dtype=torch.long), 0)
        old = torch.backends.quantized.engine
        torch.backends.quantized.engine = "fbgemm"
        packed = torch.ops.quantized.linear_prepack(qw, None)
        torch.backends.quantized.engine = old
        cands["fbgemm_per_channel"] = lambda: torch.ops.quantized.linear_dynamic(x, packed, False)
        cands["Int8Head"] = lambda: head(x)
        sb = s.bfloat16()
        cands["weight_int8pack_mm f32"] = lambda: torch._weight_int8pack_mm(x, head.weight, s)
        cands["weight_int8pack_mm bf16"] = lambda: torch._weight_int8pack_mm(xb, head.weight, sb)
        xq, wt = torch.randint(-127, 128, (1, K), dtype=torch.int8), head.weight.t().contiguous()
        cands["int_mm"] = lambda: torch._int_mm(xq, wt)
        heads4 = {}
        if Int4Head is not None:
            for gs in (64, 128):
                heads4[gs] = Int4Head.from_linear(lin, group_size=gs)
                cands[f"Int4Head g{gs}"] = (lambda h: lambda: h(x))(heads4[gs])
        try:
            cands["weight_int4pack_mm g128"] = _torch_int4(lin.weight, xb)
        except Exception as e:  # noqa: BLE001  (a torch without the CPU int4 kernel)
            print(f"weight_int4pack_mm: {type(e).__name__}: {str(e)[:80]}")
        b8 = V * K + 4 * V
        b4 = sum(t.numel() * t.element_size() for t in (heads4[64].weight, heads4[64].scale)) \
            if heads4 else V * K // 2 + V * K // 16
        for t in a.threads:
            torch.set_num_threads(t)
            res = {}
            for name, fn in cands.items():
                try:
                    res[name] = _t(fn, a.reps)
                except Exception as e:  # noqa: BLE001
                    res[name] = f"{type(e).__name__}: {str(e)[:60]}"
            bw = _read_bw()
            print(f"V={V} threads={t}: " + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} ({v})" for k, v in res.items())
                + f"; floor (read {bw:.1f} GB/s): int8 {b8 / bw / 1e6:.2f}, int4 g64 "
                f"{b4 / bw / 1e6:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
