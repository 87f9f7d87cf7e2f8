"""Every CPU kernel path this machine runs, side by side: deployed BitLinear latency and GOPS per
ISA against float32 F.linear, with the measured int8 peak. Meant for machines whose CPU has paths
ours lack (e.g. AVX-512 VNNI on a GPU host); the suite (`python profile/bench`) is the
reference benchmark.

  python profile/cpu_isa_compare.py [--threads 2] [--ms 1 8 128] [--shape 4096x4096] [--json F]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import bitlinear  # noqa: E402
import hw  # noqa: E402  (profile/hw.py, next to this file)
from bitlinear import ops  # noqa: E402
from bench.timing import time_fn  # noqa: E402  (profile/bench/)


def median_s(fn):
    return time_fn(fn, reps=30, warmup=2)["median_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--ms", type=int, nargs="+", default=[1, 8, 128])
    ap.add_argument("--shape", default="4096x4096", help="KxN")
    ap.add_argument("--json")
    a = ap.parse_args()
    K, N = map(int, a.shape.split("x"))
    w = torch.randn(N, K) * 0.02
    s, p = ops.quantize_weights(w, 1e-6, False)
    rows = []
    for t in a.threads:
        torch.set_num_threads(t)
        peak = hw.limits(t)
        for m in a.ms:
            x = torch.randn(m, K)
            f32 = median_s(lambda: F.linear(x, w))
            for isa in bitlinear.available_cpu_isas():
                if isa == "ref" and m * K * N > 2**26:
                    continue
                with bitlinear.use_cpu_isa(isa):
                    dt = median_s(lambda: ops.linear(x, s, p, None, 1e-6, K, True))
                gops = 2 * m * K * N / dt / 1e9
                rows.append(dict(threads=t, M=m, K=K, N=N, isa=isa, us=dt * 1e6, gops=gops,
                                 speedup_vs_f32=f32 / dt, peak_gops=peak.get("int8_peak_gops"),
                                 peak_isa=peak.get("int8_peak_isa")))
    print(f"{'thr':>3} {'M':>4} {'isa':>11} {'us':>9} {'GOPS':>7} {'x f32':>6} {'peak':>14}")
    for r in rows:
        pk = f"{r['peak_gops']:.0f} {r['peak_isa']}" if r["peak_gops"] else "-"
        print(f"{r['threads']:>3} {r['M']:>4} {r['isa']:>11} {r['us']:>9.1f} {r['gops']:>7.1f} "
              f"{r['speedup_vs_f32']:>6.1f} {pk:>14}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
