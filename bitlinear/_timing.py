"""The package's wall-clock timer, for `python -m bitlinear demo` and `python -m bitlinear bench`
(the benchmark suite in profile/bench/ has its own, with per-point caps and CUDA timers)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], reps: int = 30, warmup: int = 3) -> float:
    """Median wall time of fn() in seconds over `reps` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(reps, 1)):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)
