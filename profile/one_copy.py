"""Issue 18's measurement: the deployed layer's speed with one resident copy of the weights (the
default: w_packed only) against the opt-in decode layout (a second copy, bitlinear.set_cpu_lut
("auto")), side by side in one process, at M = 1, 8, 128, with the weights hot (one layer called
again and again) and cold (a ring of layers larger than the last-level cache, as in a model); and
the host time of a 64x64 call against nn.Linear's.

    python profile/one_copy.py [--threads 1,2] [--shapes 4096x4096,2560x6912] [--json out.json]

Medians of interleaved rounds; compare the ratios, not absolute times across runs.
"""
import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

import bitlinear
from bitlinear import BitLinear


def timed(fn, n):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def bench_layers(layers, x, rounds, modes):
    res = {m: [] for m in modes}
    per_round = max(1, int(2e5 // (x.shape[0] * layers[0].in_features * layers[0].out_features
                                   / 1e4 + 1)))
    for _ in range(rounds):
        for mode in modes:
            bitlinear.set_cpu_lut(mode)
            for l in layers:
                l.refresh_decode_layout()
            with torch.no_grad():
                for l in layers:
                    l(x)

                def ring():
                    for l in layers:
                        l(x)
                n = max(1, min(per_round, 50) // len(layers) + 1)
                res[mode].append(timed(ring, n) / len(layers) * 1e6)
    bitlinear.set_cpu_lut("off")
    for l in layers:
        l.refresh_decode_layout()
    return {m: statistics.median(v) for m, v in res.items()}


def host_time(rounds=7, n=20000):
    lin = nn.Linear(64, 64)
    bl = BitLinear.from_linear(lin).deploy()
    x = torch.randn(1, 64)
    out = {"nn.Linear": [], "BitLinear": []}
    with torch.no_grad():
        for _ in range(rounds):
            out["nn.Linear"].append(timed(lambda: lin(x), n) * 1e6)
            out["BitLinear"].append(timed(lambda: bl(x), n) * 1e6)
    return {k: statistics.median(v) for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--shapes", default="4096x4096,2560x6912")
    ap.add_argument("--ms", default="1,8,128")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cold-bytes", type=float, default=96e6, help="ring size of the cold case")
    ap.add_argument("--json")
    a = ap.parse_args()
    modes = ("off", "auto")
    rows = []
    torch.manual_seed(0)
    for shape in a.shapes.split(","):
        K, N = map(int, shape.split("x"))
        ring = max(2, int(a.cold_bytes // (N * K / 4)))
        layers = [BitLinear(K, N, bias=False).deploy() for _ in range(ring)]
        for t in map(int, a.threads.split(",")):
            torch.set_num_threads(t)
            for M in map(int, a.ms.split(",")):
                x = torch.randn(M, K)
                hot = bench_layers(layers[:1], x, a.rounds, modes)
                cold = bench_layers(layers, x, a.rounds if M < 128 else 2, modes)
                row = dict(K=K, N=N, threads=t, M=M,
                           hot_one_copy_us=hot["off"], hot_two_copies_us=hot["auto"],
                           cold_one_copy_us=cold["off"], cold_two_copies_us=cold["auto"])
                rows.append(row)
                print(f"{K}x{N} t={t} M={M:<4} hot  one copy {hot['off']:9.1f} us  two copies "
                      f"{hot['auto']:9.1f} us  ratio {hot['off'] / hot['auto']:.2f} | cold one "
                      f"copy {cold['off']:9.1f} us  two copies {cold['auto']:9.1f} us  ratio "
                      f"{cold['off'] / cold['auto']:.2f}", flush=True)
        del layers
    torch.set_num_threads(1)
    h = host_time()
    print(f"host time 64x64 M=1 (1 thread): BitLinear {h['BitLinear']:.2f} us, nn.Linear "
          f"{h['nn.Linear']:.2f} us, ratio {h['BitLinear'] / h['nn.Linear']:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(),
                       "cpu_isa": bitlinear.cpu_isa(), "rows": rows, "host_time_us": h}, f,
                      indent=1)


if __name__ == "__main__":
    main()
