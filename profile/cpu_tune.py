"""Quick side-by-side CPU timing while tuning the kernels (the reported numbers come from
`python -m bitlinear bench`). Medians of repeated runs, all impls in one process.

  python profile/cpu_tune.py [--threads 1 2] [--m 1 128 512] [--shapes 4096x4096 2560x6912]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from functools import partial

import torch
import torch.nn.functional as F

from bitlinear import ops


def median_us(fn, reps: int, min_time: float = 0.3) -> float:
    fn()
    fn()
    ts = []
    t_end = time.perf_counter() + min_time
    while len(ts) < reps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        if len(ts) >= 200:
            break
    return statistics.median(ts) * 1e6


def int_mm_fn(w: torch.Tensor):
    sw = w.abs().amax(dim=1).clamp_min(1e-8) / 127
    wq_t = (w / sw[:, None]).round().clamp(-127, 127).to(torch.int8).t().contiguous()

    def fn(x):
        sx = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 127
        xq = (x / sx).round().clamp(-128, 127).to(torch.int8)
        if xq.shape[0] <= 16:  # _int_mm wants M > 16 on CPU in some builds
            xq = torch.nn.functional.pad(xq, (0, 0, 0, 17 - xq.shape[0]))
        return torch._int_mm(xq, wq_t)[: x.shape[0]].float() * (sx * sw)

    return fn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--m", type=int, nargs="+", default=[1, 128, 512])
    ap.add_argument("--shapes", nargs="+", default=["4096x4096", "2560x6912", "6912x2560"])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--int-mm", action="store_true", help="also time torch._int_mm (slow on CPU)")
    a = ap.parse_args()
    torch.manual_seed(0)
    print(f"{'K x N':>11} {'M':>4} {'thr':>3} | {'bitlinear':>10} {'f32 linear':>10} "
          f"{'int_mm':>10} {'qdyn int8':>10} | x f32  x int_mm  x qdyn  GOPS")
    for shape in a.shapes:
        K, N = (int(v) for v in shape.split("x"))
        w = torch.randn(N, K) * 0.02
        s, packed = ops.quantize_weights(w, 1e-5, False)
        lin = torch.nn.Linear(K, N, bias=False)
        lin.weight.data.copy_(w)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qd = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear},
                                                        dtype=torch.qint8)
        imm = int_mm_fn(w)
        for t in a.threads:
            torch.set_num_threads(t)
            for M in a.m:
                x = torch.randn(M, K)
                with torch.inference_mode():
                    tb = median_us(partial(ops.linear, x, s, packed, None, 1e-5, K, True), a.reps)
                    tf = median_us(partial(F.linear, x, w), a.reps)
                    ti = median_us(partial(imm, x), 3, 0.0) if a.int_mm else float("nan")
                    tq = median_us(partial(qd, x), a.reps)
                print(f"{shape:>11} {M:>4} {t:>3} | {tb:10.1f} {tf:10.1f} {ti:10.1f} {tq:10.1f} | "
                      f"{tf / tb:5.1f} {ti / tb:7.1f} {tq / tb:7.1f}  {2 * M * N * K / tb / 1e3:5.0f}")


if __name__ == "__main__":
    main()
