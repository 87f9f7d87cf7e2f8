"""Decode side by side, module level: the deployed BitLinear on float32 inputs (what users call),
weights hot, on the table-lookup path (forced at every M; auto uses it at M <= cpu_lut_max_m()),
the packed GEMV of the same path (LUT off) and the forced AVX2 GEMV, interleaved in rounds; the best median of the rounds per case. With --llama-log, the
us/run of a llama.cpp `test-backend-ops perf -o MUL_MAT` log for the same shapes (type_a tq2_0 /
tq1_0, m = N, n = M, k = K) is put next to them (docs/benchmarks.md, "The lookup-table GEMV").

    python profile/decode_side.py [--threads 1,2] [--ms 1,2,4,8] [--llama-log FILE ...] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time

import torch

import bitlinear
from bitlinear import BitLinear

SHAPES = ((4096, 4096), (2560, 6912), (6912, 2560))
VARIANTS = (("lut", None, "force"), ("packed", None, "off"), ("avx2", "avx2", "off"))


def median_us(layer, x, reps: int) -> float:
    for _ in range(10):
        layer(x)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        layer(x)
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e6


def llama_times(paths) -> dict:
    """{(type, threads, K, N, M): us} from test-backend-ops perf logs (threads from 'n_threads: T')."""
    out, threads = {}, None
    pat = re.compile(r"type_a=(tq[12]_0),type_b=f32,m=(\d+),n=(\d+),k=(\d+),.*?([\d.]+) us/run")
    for p in paths:
        for line in open(p):
            m = re.search(r"n_threads:\s*(\d+)", line)
            if m:
                threads = int(m.group(1))
            m = pat.search(line)
            if m and threads:
                t, N, M, K, us = m.groups()
                out[(t, threads, int(K), int(N), int(M))] = float(us)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--ms", default="1,2,4,8")
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--llama-log", nargs="*", default=[])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    isa = bitlinear.cpu_isa()
    variants = [v for v in VARIANTS if v[1] is None or v[1] in bitlinear.available_cpu_isas()]
    if not bitlinear._ext.native().lut_status(1)[0]:
        variants = [v for v in variants if v[0] != "lut"]  # no lookup kernel on this path
    llama = llama_times(a.llama_log)
    torch.manual_seed(0)
    rows = []
    names = [v[0] for v in variants]
    head = ["K×N", "threads", "M", *names] + (["TQ2_0", "TQ2_0 / " + names[0]] if llama else [])
    print(f"# {isa}, torch {torch.__version__}, bitlinear {bitlinear.__version__}; microseconds")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    prev = torch.get_num_threads()
    try:
        for t in (int(v) for v in a.threads.split(",")):
            torch.set_num_threads(t)
            for K, N in SHAPES:
                layer = BitLinear(K, N, bias=False).deploy()
                for M in (int(v) for v in a.ms.split(",")):
                    x = torch.randn(M, K)
                    best = {}
                    with torch.no_grad():
                        for _ in range(a.rounds):
                            for name, path, mode in variants:
                                with bitlinear.use_cpu_isa(path or isa), bitlinear.use_cpu_lut(mode):
                                    us = median_us(layer, x, a.reps)
                                best[name] = min(best.get(name, float("inf")), us)
                    rec = {"K": K, "N": N, "M": M, "threads": t, **best}
                    cells = [f"{K}×{N}", str(t), str(M), *(f"{best[n]:.1f}" for n in names)]
                    tq = llama.get(("tq2_0", t, K, N, M))
                    if llama:
                        rec["tq2_0"] = tq
                        cells += [f"{tq:.1f}" if tq else "-",
                                  f"{tq / best[names[0]]:.1f}×" if tq else "-"]
                    rows.append(rec)
                    print("| " + " | ".join(cells) + " |", flush=True)
    finally:
        torch.set_num_threads(prev)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"isa": isa, "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
