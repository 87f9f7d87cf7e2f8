"""The wall-clock timer: `python -m bitlinear demo` and the CPU benchmark suite both use it."""
from __future__ import annotations

import statistics
import time
from typing import Callable, List, Optional


def summarize(samples: List[float]) -> dict:
    """median / min / p90 seconds and the count of a list of per-call times."""
    samples = sorted(samples)
    return {"median_s": statistics.median(samples), "min_s": samples[0],
            "p90_s": samples[min(len(samples) - 1, int(0.9 * len(samples)))], "reps": len(samples)}


def time_fn(fn: Callable[[], object], reps: int = 30, warmup: int = 3,
            max_seconds: Optional[float] = None, min_reps: int = 5) -> dict:
    """Median wall time of fn() in seconds over `reps` runs after `warmup` runs (see summarize).

    If max_seconds is given and the warm-up shows reps runs would exceed it, fewer runs are made
    (never fewer than min_reps); the count actually used is returned as "reps".
    """
    t_warm = None
    for i in range(max(warmup, 1)):
        t0 = time.perf_counter()
        fn()
        t_warm = time.perf_counter() - t0
        if max_seconds is not None and i >= 1 and t_warm * warmup > max_seconds / 2:
            break  # slow call: two warm-up runs are enough
    if max_seconds is not None and t_warm * reps > max_seconds:
        reps = max(min_reps, int(max_seconds / max(t_warm, 1e-9)))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return summarize(samples)
