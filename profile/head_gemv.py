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
  int_mm                  torch._int_mm (int8 x int8 -> int32, activations already int8).
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
        for t in a.threads:
            torch.set_num_threads(t)
            res = {}
            for name, fn in cands.items():
                try:
                    res[name] = _t(fn, a.reps)
                except Exception as e:  # noqa: BLE001
                    res[name] = f"{type(e).__name__}: {str(e)[:60]}"
            print(f"V={V} threads={t}: " + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} ({v})" for k, v in res.items()),
                flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
