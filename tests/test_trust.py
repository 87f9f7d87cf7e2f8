"""Issue 18: nothing a Python user does to a deployed layer makes the eager fast path read out of
bounds, answer stale, or disagree with the op path (``bitlinear.set_fast_path(False)``) and
``bitlinear.reference``. Each test acts as a hostile user would, through the module as users call
it, with the op path and the reference as the oracle."""
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from torch import nn

import bitlinear
from bitlinear import BitLinear, _fast
from bitlinear import reference as ref

from conftest import make_deployed as make, rand

pytestmark = pytest.mark.skipif(not _fast.fast_path_enabled(), reason="no native fast path")

MS = [1, 2, 3, 8]  # M = 1 is where a decode layout would be read; the rest the packed GEMM


@pytest.fixture(autouse=True)
def _restore():
    mode = bitlinear.cpu_lut()
    yield
    bitlinear.set_cpu_lut(mode)
    bitlinear.set_fast_path(True)


def outcome(fn):
    try:
        with torch.no_grad():
            return "ok", fn()
    except Exception as e:  # noqa: BLE001 - the type is compared with the op path's
        return "error", type(e)


def via_op(layer, x):
    bitlinear.set_fast_path(False)
    try:
        return outcome(lambda: layer(x))
    finally:
        bitlinear.set_fast_path(True)


def assert_agrees(layer, x):
    """The fast path's outcome (output or exception type) is the op path's."""
    fast, op = outcome(lambda: layer(x)), via_op(layer, x)
    assert fast[0] == op[0], (fast, op)
    if fast[0] == "ok":
        assert torch.equal(fast[1], op[1]), (fast[1] - op[1]).abs().max()
    else:
        assert fast[1] is op[1]
    return fast


def reference_of(layer, x):
    return ref.linear(x, layer.w_scale, layer.w_packed, layer.bias, layer.eps, layer.in_features,
                      layer.spec.act_per_token)


# ---------------------------------------------------------------- finding 1: sizes changed
@pytest.mark.parametrize("attr,delta", [("out_features", 1), ("out_features", -1),
                                        ("out_features", 1000), ("in_features", 128),
                                        ("in_features", -1)])
def test_changed_features_never_read_past_the_buffers(gen, attr, delta):
    layer = make(gen, 130, 40)
    x = rand(gen, 1, 130)
    with torch.no_grad():
        layer(x)  # a first call records the buffers
    setattr(layer, attr, getattr(layer, attr) + delta)
    for m in MS:
        K = layer.in_features
        xm = rand(gen, m, K)
        fast = assert_agrees(layer, xm)
        if fast[0] == "ok":  # the op reads N from w_packed; K pads to the same blocks
            assert torch.equal(fast[1], reference_of(layer, xm))


def test_huge_features_do_not_crash_the_process():
    # before the fix: garbage up to 1e37, then a segfault at large sizes (a subprocess, so a
    # crash fails this test instead of the run)
    code = textwrap.dedent("""
        import torch, bitlinear
        from bitlinear import BitLinear
        layer = BitLinear(64, 32).deploy()
        x = torch.randn(1, 64)
        with torch.no_grad():
            layer(x)
            for n in (10**5, 10**7):
                layer.out_features = n
                try:
                    layer(x)
                except Exception as e:
                    print("refused", type(e).__name__)
            layer.out_features = 32
            layer.in_features = 64 * 1000
            try:
                layer(torch.randn(1, 64 * 1000))
            except Exception as e:
                print("refused", type(e).__name__)
        print("survived")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "survived" in r.stdout


# ---------------------------------------------------------------- finding 2: writes torch misses
def _write_routes():
    def data_fill(wp, new):
        wp.data.copy_(new)

    def via_numpy(wp, new):
        wp.numpy()[...] = new.numpy()

    def via_storage(wp, new):
        st = wp.untyped_storage()
        torch.tensor([], dtype=torch.uint8).set_(st, wp.storage_offset(), wp.shape).copy_(new)

    def via_set_alias(wp, new):
        alias = torch.empty(0, dtype=torch.uint8)
        alias.set_(wp)
        alias.copy_(new)

    def via_dlpack(wp, new):
        torch.from_dlpack(wp.__dlpack__()).copy_(new)

    def inplace_in_inference_mode(wp, new):
        with torch.inference_mode():
            wp.copy_(new)

    return [data_fill, via_numpy, via_storage, via_set_alias, via_dlpack,
            inplace_in_inference_mode]


@pytest.mark.parametrize("route", _write_routes(), ids=lambda f: f.__name__)
@pytest.mark.parametrize("deploy_in_inference_mode", [False, True])
def test_writes_torch_does_not_record_are_seen_at_every_m(gen, route, deploy_in_inference_mode):
    K, N = 300, 70
    if deploy_in_inference_mode:
        with torch.inference_mode():
            layer = make(gen, K, N)
    else:
        layer = make(gen, K, N)
    other = make(gen, K, N)
    xs = [rand(gen, m, K) for m in MS]
    with torch.no_grad():
        for x in xs:
            layer(x)  # every path warm (record, any cached layout) with the old weights
    route(layer.w_packed, other.w_packed)
    assert torch.equal(layer.w_packed, other.w_packed)
    for x in xs:
        fast = assert_agrees(layer, x)
        assert fast[0] == "ok" and torch.equal(fast[1], reference_of(layer, x))


def test_default_layer_holds_one_copy(gen):
    # the root of finding 2: no second copy of the weights on the default settings
    model = nn.Sequential(make(gen, 256, 96), nn.ReLU(), make(gen, 96, 10))
    with torch.no_grad():
        model(rand(gen, 1, 256))
    rep = bitlinear.size_report(model)
    assert rep["decode_layout"] == 0 and rep["resident"] == rep["total"]
    assert rep["resident_bits_per_weight"] == pytest.approx(
        8 * (96 * 64 + 10 * 32) / (256 * 96 + 96 * 10))


def test_opt_in_decode_layout_is_rebuilt_after_a_write_during_its_pack(gen, monkeypatch):
    # the rebuild race: a write while the layout is packed (GIL released) must not be recorded
    # as seen
    layer = make(gen, 200, 64)
    other = make(gen, 200, 64)
    bitlinear.set_cpu_lut("force")
    _fast.forget(layer)
    real = _fast._lut_pack
    state = {"done": False}

    def racing_pack(*args):
        real(*args)
        if not state["done"]:
            state["done"] = True
            layer.w_packed.copy_(other.w_packed)  # lands after the layout read the old codes

    monkeypatch.setattr(_fast, "_lut_pack", racing_pack)
    x = rand(gen, 1, 200)
    with torch.no_grad():
        layer(x)  # builds the layout; the write races it
        y = layer(x)
    assert state["done"] and torch.equal(layer.w_packed, other.w_packed)
    assert torch.equal(y, reference_of(layer, x))


def test_opt_in_decode_layout_refresh_after_an_untracked_write(gen):
    layer = make(gen, 200, 64)
    other = make(gen, 200, 64)
    bitlinear.set_cpu_lut("force")
    layer.refresh_decode_layout()
    x = rand(gen, 1, 200)
    layer.w_packed.numpy()[...] = other.w_packed.numpy()  # torch does not see this
    layer.refresh_decode_layout()  # the documented remedy for the opt-in second copy
    with torch.no_grad():
        assert torch.equal(layer(x), reference_of(layer, x))


# ---------------------------------------------------------------- finding 3: metadata in place
def _metadata_edits():
    return [
        ("w_packed.resize_ smaller", lambda l: l.w_packed.resize_(l.out_features - 1,
                                                                  l.w_packed.shape[1])),
        ("w_packed.resize_ flat", lambda l: l.w_packed.resize_(l.w_packed.numel())),
        ("w_packed.as_strided_", lambda l: l.w_packed.as_strided_(
            (l.out_features, l.w_packed.shape[1]), (0, 1))),
        ("w_packed.data = row 0 expanded", lambda l: setattr(
            l.w_packed, "data", l.w_packed[:1].expand(l.out_features, -1))),
        ("w_packed.data = int8 view", lambda l: setattr(l.w_packed, "data",
                                                        l.w_packed.view(torch.int8))),
        ("w_scale.data = int32 view", lambda l: setattr(l.w_scale, "data",
                                                        l.w_scale.view(torch.int32))),
        ("w_scale.resize_(2)", lambda l: l.w_scale.resize_(2)),
        ("bias.resize_(1)", lambda l: l.bias.resize_(1)),
        ("bias.data = float64", lambda l: setattr(l.bias, "data", l.bias.double())),
        ("bias.as_strided_", lambda l: l.bias.as_strided_((l.out_features,), (0,))),
        ("w_packed storage shrunk", lambda l: l.w_packed.untyped_storage().resize_(16)),
        ("w_packed.t_()", lambda l: l.w_packed.t_()),
        ("w_packed.unsqueeze_(0)", lambda l: l.w_packed.unsqueeze_(0)),
    ]


@pytest.mark.parametrize("name,edit", _metadata_edits(), ids=[n for n, _ in _metadata_edits()])
def test_in_place_metadata_edits_agree_with_the_op(gen, name, edit):
    layer = make(gen, 260, 48, quant_type="ai8pc_wpt", bias=True)
    xs = [rand(gen, m, 260) for m in MS]
    with torch.no_grad():
        for x in xs:
            layer(x)
    edit(layer)
    for x in xs:
        assert_agrees(layer, x)


# ---------------------------------------------------------------- finding 4: negative views
def test_negative_view_inputs(gen):
    layer = make(gen, 129, 33)
    x = rand(gen, 4, 129)
    neg = torch._neg_view(x)
    assert neg.is_neg()
    with torch.no_grad():
        y = layer(neg)
        assert torch.equal(y, layer(x.neg()))
    assert torch.equal(y, reference_of(layer, -x))
    z = torch.complex(rand(gen, 4, 129), x).conj().imag  # a real tensor with the neg bit
    assert z.is_neg()
    with torch.no_grad():
        assert torch.equal(layer(z), layer(-x))


# ---------------------------------------------------------------- finding 5: buffers as params
@pytest.mark.parametrize("name", ["w_scale", "bias", "w_packed"])
def test_buffer_reassigned_as_parameter(gen, name):
    layer = make(gen, 64, 16)
    x = rand(gen, 1, 64)
    with torch.no_grad():
        layer(x)
    t = getattr(layer, name)
    setattr(layer, name, nn.Parameter(t.clone(), requires_grad=t.is_floating_point()))
    fast = assert_agrees(layer, x)
    assert fast[0] == "error" or torch.equal(fast[1], reference_of(layer, x))


# ---------------------------------------------------------------- finding 6: deploy is atomic
def test_deploy_under_meta_default_device(gen):
    layer = BitLinear(100, 30)
    try:
        torch.set_default_device("meta")
        layer.deploy()
    finally:
        torch.set_default_device(None)
    assert layer.deployed and layer.w_packed.is_cpu and layer.w_scale.is_cpu
    x = rand(gen, 1, 100)
    assert_agrees(layer, x)


def test_failed_deploy_leaves_the_layer_unchanged(gen, monkeypatch):
    layer = BitLinear(100, 30)
    w = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight[3, 5] = float("nan")
    with pytest.raises(ValueError):
        layer.deploy()
    assert not layer.deployed and isinstance(layer.weight, nn.Parameter)
    assert "w_packed" not in layer._buffers
    with torch.no_grad():
        layer.weight[3, 5] = w[3, 5]
    from bitlinear import _checks

    def boom(*a, **k):
        raise RuntimeError("injected")
    monkeypatch.setattr(_checks, "deployed_buffers", boom)
    with pytest.raises(RuntimeError, match="injected"):
        layer.deploy()
    assert not layer.deployed and torch.equal(layer.weight.detach(), w)
    monkeypatch.undo()
    layer.deploy()
    assert layer.deployed


# ---------------------------------------------------------------- a hostile probe of our own
def test_other_attributes_a_user_can_set(gen):
    layer = make(gen, 64, 16)
    x = rand(gen, 2, 64)
    with torch.no_grad():
        layer(x)
    for attr, value in [("eps", float("nan")), ("eps", -1.0), ("eps", 0.0), ("in_features", 64.0),
                        ("out_features", "16"), ("in_features", True)]:
        old = getattr(layer, attr)
        setattr(layer, attr, value)
        try:
            assert_agrees(layer, x)
        finally:
            setattr(layer, attr, old)
    assert_agrees(layer, x)


def test_buffers_swapped_between_layers_and_per_channel_scales(gen):
    a = make(gen, 96, 24, quant_type="ai8pc_wpc")
    b = make(gen, 96, 24, quant_type="ai8pc_wpt")
    x = rand(gen, 1, 96)
    with torch.no_grad():
        a(x), b(x)
    a.w_scale, b.w_scale = b.w_scale, a.w_scale  # per tensor <-> per channel, same pointers kept
    for layer in (a, b):
        fast = assert_agrees(layer, x)
        if fast[0] == "ok":
            assert torch.equal(fast[1], reference_of(layer, x))


def test_buffers_replaced_while_other_threads_call(gen):
    layer = make(gen, 512, 256)
    packs = [make(gen, 512, 256).w_packed for _ in range(2)]
    x = rand(gen, 1, 512)
    expect = [ref.linear(x, layer.w_scale, p, layer.bias, layer.eps, 512, True) for p in packs]
    errors = []

    def caller():
        try:
            for _ in range(200):
                with torch.no_grad():
                    y = layer(x)
                if not any(torch.equal(y, e) for e in expect):
                    errors.append("an output of neither weight set")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    layer.w_packed = packs[0]
    ts = [threading.Thread(target=caller) for _ in range(2)]
    for t in ts:
        t.start()
    for i in range(400):
        layer.w_packed = packs[i % 2]
    for t in ts:
        t.join()
    assert not errors, errors[:3]


def test_storage_of_a_numpy_array_dropped_under_the_layer(gen):
    layer = make(gen, 128, 32)
    arr = layer.w_packed.numpy().copy()
    layer.w_packed = torch.from_numpy(arr)  # user-owned memory
    x = rand(gen, 1, 128)
    with torch.no_grad():
        y = layer(x)
    del arr  # the tensor keeps the array alive
    with torch.no_grad():
        assert torch.equal(layer(x), y)
    assert np.shares_memory(layer.w_packed.numpy(), layer.w_packed.numpy())
