"""The eager fast path of deployed layers (bitlinear/_fast.py, csrc/binding/fastpath.cpp): the same
output as torch.ops.bitlinear.linear bit for bit, taken only where it may be, and the op's checks
and errors everywhere else."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import bitlinear
from bitlinear import _fast
from bitlinear import reference as ref

from conftest import make_deployed as make, op_output, rand

pytestmark = pytest.mark.skipif(not _fast.fast_path_enabled(), reason="no native fast path")

SHAPES = [(1, 1), (3, 7), (7, 129), (129, 3), (1000, 33), (256, 64)]  # (K, N)
LEADING = [(), (1,), (5,), (2, 3), (0,), (17,)]


class Spy:
    """Counts the native fast-path calls (and still runs them)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = _fast._linear_cpu

        def spy(*args):
            self.calls += 1
            return real(*args)
        monkeypatch.setattr(_fast, "_linear_cpu", spy)


@pytest.mark.parametrize("K,N", SHAPES)
@pytest.mark.parametrize("quant_type", ref.QUANT_TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fast_path_equals_op(gen, monkeypatch, K, N, quant_type, dtype):
    layer = make(gen, K, N, quant_type, bias=bool(K % 2))
    spy = Spy(monkeypatch)
    for lead in LEADING:
        x = rand(gen, *lead, K, dtype=dtype, scale=3.0)
        with torch.no_grad():
            y = layer(x)
        expect = op_output(layer, x)
        assert y.shape == (*lead, N) and y.dtype == dtype
        assert torch.equal(y, expect), (lead, (y.float() - expect.float()).abs().max())
    assert spy.calls == sum(1 for lead in LEADING if 0 not in lead)


def test_fast_path_matches_reference_and_threads(gen):
    layer = make(gen, 300, 70)
    x = rand(gen, 9, 300)
    expect = ref.linear(x, layer.w_scale, layer.w_packed, layer.bias, layer.eps, 300, True)
    n = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2):
            torch.set_num_threads(t)
            with torch.no_grad():
                outs.append(layer(x))
    finally:
        torch.set_num_threads(n)
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(outs[0], expect)


def test_threads_share_a_layer_above_the_gil_threshold(gen):
    # M * N * K above the size where the native call releases the GIL: several Python threads
    # calling one layer at once get the op's result every time
    import threading
    layer = make(gen, 512, 256)
    x = rand(gen, 16, 512)
    expect = op_output(layer, x)
    bad = []

    def run():
        for _ in range(20):
            with torch.no_grad():
                if not torch.equal(layer(x), expect):
                    bad.append(1)
    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_inputs_that_take_the_op(gen, monkeypatch):
    layer = make(gen, 64, 32)
    spy = Spy(monkeypatch)
    x = rand(gen, 64, 8).t()  # not contiguous
    with torch.no_grad():
        assert torch.equal(layer(x), op_output(layer, x.contiguous()))
    assert spy.calls == 0
    with pytest.raises(ValueError, match="in_features"):
        layer(rand(gen, 3, 63))
    with pytest.raises(TypeError):
        layer(torch.ones(3, 64, dtype=torch.int32))
    xg = rand(gen, 2, 64).requires_grad_()
    with pytest.raises(RuntimeError, match="inference-only"):
        layer(xg)
    assert spy.calls == 0
    with torch.no_grad():  # a leaf that requires grad, with grad off: fine, and fast
        layer(xg)
    assert spy.calls == 1


def test_dispatch_mode_sees_the_op(gen, monkeypatch):
    layer = make(gen, 64, 32)
    spy = Spy(monkeypatch)
    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))
    x = rand(gen, 2, 64)
    with torch.no_grad(), Record():
        y = layer(x)
    assert any("bitlinear.linear" in s for s in seen)
    assert spy.calls == 0
    assert torch.equal(y, op_output(layer, x))


def test_other_devices_take_the_op(gen, monkeypatch):
    layer = make(gen, 64, 32)
    spy = Spy(monkeypatch)
    with pytest.raises(ValueError, match="meta"):
        layer(torch.empty(4, 64, device="meta"))
    x = rand(gen, 4, 64)
    with torch.no_grad():
        layer(x)
    assert spy.calls == 1
    layer.w_scale = layer.w_scale.to("meta")  # a buffer moved behind the layer's back
    with pytest.raises((ValueError, RuntimeError), match="device| is on "), torch.no_grad():
        layer(x)
    assert spy.calls == 1
    layer.w_scale = torch.ones(1, dtype=torch.float16)  # a wrong dtype: the op's error
    with pytest.raises((ValueError, RuntimeError), match="w_scale"), torch.no_grad():
        layer(x)
    layer.w_scale = torch.ones(2)  # a wrong size
    with pytest.raises((ValueError, RuntimeError), match="w_scale"), torch.no_grad():
        layer(x)
    assert spy.calls == 1
    layer.w_scale = torch.ones(1)
    with torch.no_grad():
        layer(x)
    assert spy.calls == 2
    meta = make(gen, 64, 32).to("meta")  # a whole meta layer: shapes only, through the op's fake
    y = meta(torch.empty(4, 64, device="meta"))
    assert y.shape == (4, 32) and y.device.type == "meta"
    assert spy.calls == 2


def test_set_fast_path_off(gen, monkeypatch):
    layer = make(gen, 64, 32)
    spy = Spy(monkeypatch)
    x = rand(gen, 3, 64)
    try:
        bitlinear.set_fast_path(False)
        assert not bitlinear.fast_path_enabled()
        with torch.no_grad():
            y_op = layer(x)
    finally:
        bitlinear.set_fast_path(True)
    assert spy.calls == 0
    with torch.no_grad():
        assert torch.equal(layer(x), y_op)
    assert spy.calls == 1


def test_reloaded_buffers_are_read_each_call(gen):
    # load_state_dict copies into the buffers; .to() replaces them: both must be seen
    a, b = make(gen, 64, 32), make(gen, 64, 32)
    x = rand(gen, 2, 64)
    with torch.no_grad():
        a.load_state_dict(b.state_dict())
        assert torch.equal(a(x), b(x))
        a.w_packed = b.w_packed.clone()
        assert torch.equal(a(x), b(x))


def test_native_entry_refuses_bad_arguments():
    native = bitlinear._ext.native()
    x = torch.randn(2, 8)
    w_scale, w_packed = bitlinear.ops.quantize_weights(torch.randn(4, 8), 1e-6, False)
    y = torch.empty(2, 4)
    good = [x.data_ptr(), 0, 2, 8, 8, w_packed.data_ptr(), 4, w_scale.data_ptr(), 0, 0, 1e-6, 1,
            y.data_ptr(), 1, 0]
    native.linear_cpu(*good)
    assert torch.equal(y, op_output_raw(x, w_scale, w_packed))
    with pytest.raises(TypeError, match="15 arguments"):
        native.linear_cpu(*good[:-1])
    for i, v, exc in [(1, 7, ValueError), (3, 0, RuntimeError), (4, 4, RuntimeError),
                      (5, 0, RuntimeError), (0, 0, RuntimeError), (10, 0.0, RuntimeError),
                      (10, float("nan"), RuntimeError), (2, -1, None)]:
        args = list(good)
        args[i] = v
        if exc is None:
            native.linear_cpu(*args)  # M <= 0: nothing to do
            continue
        with pytest.raises(exc):
            native.linear_cpu(*args)
    with pytest.raises(RuntimeError, match="CUDA|cuda"):
        if not bitlinear.HAS_CUDA_KERNELS:
            native.linear_cuda(*good[:-2], 0, 0, 0)
        else:
            raise RuntimeError("cuda build: not checked here")


def op_output_raw(x, w_scale, w_packed):
    return torch.ops.bitlinear.linear(x, w_scale, w_packed, None, 1e-6, 8, True)


def test_fast_path_calls_show_in_a_torch_profile(gen, monkeypatch):
    # users profile whole models with torch.profiler: our eager calls must appear in the trace,
    # and still run the fast path (same bits)
    layer = make(gen, 96, 40)
    x = rand(gen, 3, 96)
    spy = Spy(monkeypatch)
    with torch.no_grad():
        plain = layer(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            y = layer(x)
        after = layer(x)
    names = [e.name for e in prof.events()]
    assert "bitlinear::linear" in names
    assert spy.calls == 3 and torch.equal(y, plain) and torch.equal(after, plain)
