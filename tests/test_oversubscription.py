"""Threaded kernels under CPU contention: another process keeping both cores busy used to make a
2-thread M=1 call 60-80x slower than a 1-thread one (the join waited for a descheduled thread).
The GEMM now notices a region that waited on the OS and runs the next calls on one thread. This
checks the behaviour with a wide margin (2 busy processes; mean call time within 10x of one
thread's, against 60-150x before); the measured figures come
from profile/oversubscription.py, not from here."""
import os
import subprocess
import sys
import time

import pytest
import torch

import bitlinear

pytestmark = [
    pytest.mark.skipif(not bitlinear.HAS_BITLINEAR, reason="native extension not built"),
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores"),
]

LOAD = "import torch\ntorch.set_num_threads(2)\na = torch.randn(1024, 1024)\nwhile True: a @ a\n"


def _mean_call(layer, x, threads, calls=600):
    """Mean, not median: the collapse came and went in stretches of calls."""
    torch.set_num_threads(threads)
    for _ in range(20):
        layer(x)
    t = time.perf_counter()
    for _ in range(calls):
        layer(x)
    return (time.perf_counter() - t) / calls


def test_two_threads_degrade_gracefully_under_load():
    layer = bitlinear.BitLinear(4096, 4096).deploy()
    x = torch.randn(1, 4096)
    old = torch.get_num_threads()
    loads = [subprocess.Popen([sys.executable, "-c", LOAD]) for _ in range(2)]
    ratios = []
    try:
        time.sleep(1.5)
        with torch.no_grad():
            for _ in range(3):  # the collapse came and went: every round must stay in bounds
                one = _mean_call(layer, x, 1)
                two = _mean_call(layer, x, 2)
                ratios.append(two / one)
    finally:
        for p in loads:
            p.kill()
            p.wait()
        torch.set_num_threads(old)
    assert max(ratios) <= 10, f"2-thread / 1-thread mean call time per round: {ratios}"
