"""The benchmark's timers and its weight rotation, for both suites.

  time_fn            CPU wall clock, median of reps after warm-up, capped per point
  time_cuda_eager    CUDA events around one call after a sync: what a Python caller sees
  time_cuda_graph    CUDA events around the replay of a graph of consecutive calls: GPU time per
                     call, without launch gaps
  time_calls         host time per call of loops of many back-to-back calls (a sync, e.g.
                     torch.cuda.synchronize, only around each loop): the per-call overhead
  Rotation           copies of a layer's weights, used in turn so that every call reads its weights
                     from memory, not from a cache the previous call warmed

Every timer returns the same dict: median_s, min_s, p90_s (seconds per call) and reps.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any, Callable, List, Optional

__all__ = ["time_fn", "time_cuda_eager", "time_cuda_graph", "time_calls", "Rotation", "summarize",
           "last_level_cache_bytes", "gpu_l2_bytes"]

MIN_CALLS_PER_GRAPH = 8


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


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (sysfs); 32 MiB if unknown."""
    best = 0
    for idx in range(8):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{idx}/size") as f:
                txt = f.read().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(txt[-1:], 1)
        try:
            best = max(best, int(txt.rstrip("KMG")) * mult)
        except ValueError:
            pass
    return best or 32 << 20


def gpu_l2_bytes() -> int:
    """L2 cache of the current CUDA device; 50 MiB (an H100's) if torch does not say."""
    import torch
    return int(getattr(torch.cuda.get_device_properties(torch.cuda.current_device()),
                       "L2_cache_size", 0) or 50 << 20)


class Rotation:
    """`weights` and copies of it (copy.deepcopy, or `clone`), enough that together they hold at
    least `budget_bytes` (at most `cap`; budget 0: the weights alone, a warm cache). bind(fn) gives
    a call that runs fn on the next copy each time, so consecutive calls, also inside a CUDA graph,
    stream their weights from memory as the layers of a model too large for the cache do."""

    def __init__(self, weights: Any, nbytes: int, budget_bytes: int, cap: int = 64,
                 clone: Optional[Callable[[Any], Any]] = None):
        n = max(1, min(cap, math.ceil(budget_bytes / max(nbytes, 1))))
        clone = clone or copy.deepcopy
        self.copies: List[Any] = [weights] + [clone(weights) for _ in range(n - 1)]

    def __len__(self) -> int:
        return len(self.copies)

    def bind(self, fn: Callable[[Any], Any]) -> Callable[[], Any]:
        copies, state = self.copies, [0]

        def call():
            w = copies[state[0] % len(copies)]
            state[0] += 1
            return fn(w)
        return call


def _events():
    import torch
    return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)


def time_cuda_eager(fn: Callable[[], object], reps: int = 30, warmup: int = 3) -> dict:
    """CUDA event time of one call between a synchronize and the end of its kernels."""
    import torch
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        torch.cuda.synchronize()
        a, b = _events()
        a.record()
        fn()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1e-3)
    return summarize(samples)


def time_cuda_graph(fn: Callable[[], object], n_rot: int = 1, reps: int = 30, warmup: int = 3) -> dict:
    """Per-call time of `reps` replays of a CUDA graph of consecutive calls: a multiple of n_rot
    (the rotation's copy count, so each replay reads every copy) and at least MIN_CALLS_PER_GRAPH."""
    import torch
    inner = n_rot * max(1, math.ceil(MIN_CALLS_PER_GRAPH / n_rot))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up on a side stream, as torch.cuda.graphs asks
        for _ in range(n_rot):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(inner):
            fn()
    for _ in range(warmup):
        g.replay()
    samples = []
    for _ in range(reps):
        a, b = _events()
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1e-3 / inner)
    del g
    return summarize(samples)


def time_calls(fn: Callable[[], object], calls: int = 1000, loops: int = 15,
               sync: Optional[Callable[[], object]] = None) -> dict:
    """Host time per call: `loops` timed loops (after one warm-up loop) of `calls` back-to-back
    calls each, `sync` (torch.cuda.synchronize on a GPU) only at the start and end of each loop.
    The times are per call (loop time / calls); "reps" counts loops and "calls" is recorded."""
    def loop():
        if sync is not None:
            sync()
        for _ in range(calls):
            fn()
        if sync is not None:
            sync()
    tm = time_fn(loop, reps=loops, warmup=1)
    return {**{k: v / calls if k.endswith("_s") else v for k, v in tm.items()}, "calls": calls}
