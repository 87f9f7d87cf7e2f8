"""What a robustness probe found fine, kept as tests: a deployed layer shared by many Python
threads gives the single-threaded outputs bit for bit, and thousands of forwards do not grow the
process's memory. (Results independent of torch.set_num_threads: tests/test_ops.py,
test_thread_count_does_not_change_results.)"""
import gc
import os
import threading

import pytest
import torch

import bitlinear
from bitlinear import BitLinear

from conftest import rand

pytestmark = pytest.mark.skipif(not bitlinear.HAS_BITLINEAR, reason="native extension not built")


def deployed_layer(gen, K=512, N=256, quant_type=None):
    layer = BitLinear(K, N, quant_type=quant_type)
    with torch.no_grad():
        layer.weight.copy_(rand(gen, N, K, scale=0.05))
        layer.bias.copy_(rand(gen, N))
    return layer.deploy()


@pytest.mark.parametrize("quant_type", ["ai8pc_wpt", "ai8pt_wpt", "ai8pc_wpc"])
def test_threads_share_one_deployed_layer(gen, quant_type):
    """8 threads x 200 calls on one deployed layer, inputs of several shapes (GEMV and tiles)
    interleaved: every output equals the single-threaded one bit for bit."""
    n_threads, calls = 8, 200
    layer = deployed_layer(gen, quant_type=quant_type)
    inputs = [rand(gen, m, 512) for m in (1, 3, 8, 33)]
    inputs.append(rand(gen, 2, 5, 512, dtype=torch.bfloat16))
    with torch.no_grad():
        want = [layer(x) for x in inputs]  # one thread, one call at a time
    done = [0] * n_threads
    errors = []
    start = threading.Barrier(n_threads)

    def worker(t):
        try:
            with torch.no_grad():
                start.wait()
                for i in range(calls):
                    j = (t + i) % len(inputs)
                    y = layer(inputs[j])
                    if not torch.equal(y, want[j]):
                        errors.append(f"thread {t} call {i} input {j}: output differs")
                    done[t] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {t}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread did not finish"
    assert not errors, errors[:5]
    assert sum(done) == n_threads * calls == 1600


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_rss_soak(gen):
    """2000 forwards of a deployed layer (batch sizes 1..64, float32 and bfloat16 inputs): the
    resident set grows by less than 20 MiB after a warm-up (allocator caches, thread pools)."""
    layer = deployed_layer(gen)
    inputs = [rand(gen, m, 512) for m in (1, 4, 17, 64)]
    inputs += [x.to(torch.bfloat16) for x in inputs[:2]]
    with torch.no_grad():
        for _ in range(25):
            for x in inputs:
                layer(x)
        gc.collect()
        before = rss_bytes()
        for i in range(2000):
            layer(inputs[i % len(inputs)])
        gc.collect()
        after = rss_bytes()
    growth = after - before
    assert growth < 20 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 2000 forwards"
