"""M=1 call time of a deployed 4096x4096 layer with 1 and 2 threads, idle and while another
process keeps 2 threads busy (a torch 1024^2 matmul loop), several trials each.

    python profile/oversubscription.py [--trials 5] [--calls 200] [--load-procs 1]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

import bitlinear

LOAD = "import torch\ntorch.set_num_threads(2)\na = torch.randn(1024, 1024)\nwhile True: a @ a\n"


def medians(layer, x, threads, trials, calls):
    torch.set_num_threads(threads)
    out = []
    for _ in range(trials):
        for _ in range(10):
            layer(x)
        s = []
        for _ in range(calls):
            t = time.perf_counter()
            layer(x)
            s.append(time.perf_counter() - t)
        out.append(statistics.median(s) * 1e3)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--load-procs", type=int, default=1, help="busy processes (2 threads each)")
    args = ap.parse_args(argv)
    layer = bitlinear.BitLinear(4096, 4096).deploy()
    x = torch.randn(1, 4096)
    result = {}
    with torch.no_grad():
        for state in ("idle", "loaded"):
            procs = [subprocess.Popen([sys.executable, "-c", LOAD])
                     for _ in range(args.load_procs if state == "loaded" else 0)]
            try:
                time.sleep(1.5 if procs else 0)
                for t in (1, 2):
                    result[f"{state}_{t}t_ms"] = medians(layer, x, t, args.trials, args.calls)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    for k, v in result.items():
        print(f"{k:<14} " + " ".join(f"{m:7.3f}" for m in v))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
