"""Quick side-by-side CPU timing while tuning the kernels: the bench CPU suite (profile/bench/cpu.py,
its implementations and timer) with weights in cache, printed as microseconds and ratios against
bitlinear. The reported numbers come from `python profile/bench`.

  python profile/cpu_tune.py [--threads 1 2] [--m 1 128 512] [--shapes 4096x4096 2560x6912] [--int-mm]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu  # noqa: E402  (profile/bench/, next to this file)

COLUMNS = ("bitlinear", "f32", "int_mm", "int8_dynamic")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--m", type=int, nargs="+", default=[1, 128, 512])
    ap.add_argument("--shapes", nargs="+", default=["4096x4096", "2560x6912", "6912x2560"])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--int-mm", action="store_true", help="also time torch._int_mm (slow on CPU)")
    a = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes]
    impls = [n for n in COLUMNS if n != "int_mm" or a.int_mm]
    recs = cpu.run_layer_suite(shapes, a.m, a.threads, impls, reps=a.reps, max_seconds=1.0,
                               progress=False, cold_bytes=0, max_call_seconds=1.0)
    us = {(r["K"], r["N"], r["M"], r["threads"], r["impl"]): r["median_ms"] * 1e3
          for r in recs if "median_ms" in r}
    print(f"{'K x N':>11} {'M':>4} {'thr':>3} | " + " ".join(f"{n[:10]:>10}" for n in COLUMNS)
          + " | x f32  x int_mm  x qdyn  GOPS")
    for K, N in shapes:
        for t in a.threads:
            for M in a.m:
                t_us = [us.get((K, N, M, t, n), float("nan")) for n in COLUMNS]
                tb = t_us[0]
                print(f"{f'{K}x{N}':>11} {M:>4} {t:>3} | " + " ".join(f"{v:10.1f}" for v in t_us)
                      + f" | {t_us[1] / tb:5.1f} {t_us[2] / tb:7.1f} {t_us[3] / tb:7.1f}"
                        f"  {2 * M * N * K / tb / 1e3:5.0f}")


if __name__ == "__main__":
    main()
