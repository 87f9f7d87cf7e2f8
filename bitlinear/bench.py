"""`python -m bitlinear bench`: a small layer sweep that needs no source checkout. Deployed BitLinear
against float32 nn.Linear of the same shape (no bias, like BitNet's projections) over batch sizes M
on the CPU: the median wall time of each (bitlinear/_timing.py), one weight copy (weights stay in
cache where they fit), the same input for both.

The full suite (torch's int8 paths and bf16, weights streamed from memory, training and host
time, whole models, the GPU, JSON and plots) runs from a source checkout: `python profile/bench`
(docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Sequence, Tuple

SHAPES: Tuple[Tuple[int, int], ...] = ((4096, 4096), (2560, 6912), (6912, 2560))
MS: Tuple[int, ...] = (1, 8, 64, 512)
QUICK_SHAPES: Tuple[Tuple[int, int], ...] = ((256, 384), (384, 256))
QUICK_MS: Tuple[int, ...] = (1, 8, 64)


def _positive_ints(s: str) -> List[int]:
    try:
        out = [int(v) for v in s.replace(",", " ").split()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {s!r}")
    return out


def _shapes(s: str) -> List[Tuple[int, int]]:
    try:
        out = [tuple(int(v) for v in item.lower().split("x")) for item in s.replace(" ", "").split(",")
               if item]
    except ValueError:
        out = []
    if not out or any(len(kn) != 2 or min(kn) < 1 for kn in out):
        raise argparse.ArgumentTypeError(f"shapes are KxN, comma separated (4096x4096,2560x6912); "
                                         f"got {s!r}")
    return out


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="time deployed BitLinear against nn.Linear (a small layer sweep)",
        description="Time deployed BitLinear against float32 nn.Linear of the same shape over "
                    "batch sizes M on the CPU: median wall time per call, weights hot (one copy). "
                    "The full benchmark suite runs from a source checkout: python profile/bench "
                    "(docs/benchmarks.md).")
    p.add_argument("--quick", action="store_true", help="tiny shapes and few calls (seconds)")
    p.add_argument("--shapes", type=_shapes, default=None,
                   help="KxN list (in x out features), default 4096x4096,2560x6912,6912x2560")
    p.add_argument("--ms", type=_positive_ints, default=None,
                   help="batch sizes M, default 1,8,64,512 (--quick: 1,8,64)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's, all cores)")
    p.add_argument("--reps", type=int, default=None,
                   help="timed calls per point (median), default 30 (--quick: 10)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the records as JSON")
    p.set_defaults(func=run_cli)
    return p


def sweep(shapes: Sequence[Tuple[int, int]], ms: Sequence[int], reps: int = 30,
          warmup: int = 3, seed: int = 0) -> List[dict]:
    """One record per (K, N, M): the median ms per call of nn.Linear and of deployed BitLinear,
    nn.Linear's time / BitLinear's, and the bytes of each layer's weights."""
    import torch
    from torch import nn

    from ._timing import median_seconds
    from .convert import model_size_bytes
    from .nn import BitLinear

    records = []
    for K, N in shapes:
        torch.manual_seed(seed)
        linear = nn.Linear(K, N, bias=False).eval()
        deployed = BitLinear.from_linear(linear).deploy().eval()
        sizes = {"linear_bytes": model_size_bytes(linear), "bitlinear_bytes": model_size_bytes(deployed)}
        for M in ms:
            x = torch.randn(M, K, generator=torch.Generator().manual_seed(seed + M))
            with torch.inference_mode():
                t_lin = median_seconds(lambda: linear(x), reps, warmup)
                t_bit = median_seconds(lambda: deployed(x), reps, warmup)
            records.append({"K": K, "N": N, "M": M, "linear_ms": t_lin * 1e3,
                            "bitlinear_ms": t_bit * 1e3, "speedup": t_lin / t_bit, **sizes})
    return records


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


def render(records: Sequence[dict]) -> str:
    lines = [f"{'K x N':>11} {'M':>5} {'nn.Linear':>11} {'BitLinear':>11} {'speedup':>8}   weights"]
    shape = None
    for r in records:
        weights = ""
        if (r["K"], r["N"]) != shape:
            shape = (r["K"], r["N"])
            weights = f"{_size(r['linear_bytes'])} f32 -> {_size(r['bitlinear_bytes'])}"
        lines.append(f"{r['K']:>5}x{r['N']:<5} {r['M']:>5} {r['linear_ms']:>8.3f} ms "
                     f"{r['bitlinear_ms']:>8.3f} ms {r['speedup']:>7.2f}x   {weights}".rstrip())
    return "\n".join(lines)


def run_cli(args) -> int:
    import torch

    from . import __version__, cpu_isa

    if args.threads is not None:
        if args.threads < 1:
            print("bench: --threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if args.reps is not None and args.reps < 1:
        print("bench: --reps must be >= 1", file=sys.stderr)
        return 2
    shapes = args.shapes or list(QUICK_SHAPES if args.quick else SHAPES)
    ms = args.ms or list(QUICK_MS if args.quick else MS)
    reps = args.reps or (10 if args.quick else 30)
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    print(f"bitlinear {__version__}, CPU path {cpu_isa()}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}" + ("" if load is None else f", load average {load:.1f} "
                                          f"on {cores} cores"))
    if load is not None and load >= cores and torch.get_num_threads() > 1:
        print("(a busy machine: a multi-threaded call that loses a core waits for it, so single "
              "times can jump by orders of magnitude; --threads 1 is steadier)")
    print(f"Deployed BitLinear against float32 nn.Linear (no bias), median of {reps} calls, "
          f"weights hot (one copy):")
    records = sweep(shapes, ms, reps)
    print(render(records))
    print("speedup: nn.Linear's time / BitLinear's. The full suite (cold weights, int8 and bf16 "
          "baselines, training, models, GPU): python profile/bench in a source checkout "
          "(docs/benchmarks.md).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bitlinear": __version__, "torch": torch.__version__, "cpu_path": cpu_isa(),
                       "threads": torch.get_num_threads(), "cores": cores, "loadavg": load,
                       "reps": reps, "records": records}, f, indent=1)
        print(f"wrote {args.json}")
    return 0
