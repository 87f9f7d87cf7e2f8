"""The CPU decode layout and its table-lookup GEMV (issue 12; csrc/cpu/lut.c, the AVX-512 kernel in
csrc/cpu/isa_avx512vnni.c): a deployed layer that reads it gives the op's output bit for bit on
every path, dtype and shape; the layout follows w_packed through every way it can change; the
mode controls do what they say. Under "force" every CPU path reads it (portable C where the path
has no kernel), so these run on any machine."""
import copy
import io

import pytest
import torch

import bitlinear
from bitlinear import BitLinear, _fast
from bitlinear import reference as ref

from conftest import make_deployed as make, op_output, rand

pytestmark = pytest.mark.skipif(not _fast.fast_path_enabled(), reason="no native fast path")

SHAPES = [(1, 1), (3, 7), (7, 129), (9, 3), (10, 33), (129, 513), (1000, 1000), (1153, 31)]  # K, N


@pytest.fixture(autouse=True)
def restore_lut_mode():
    mode, max_m, isa = bitlinear.cpu_lut(), bitlinear.cpu_lut_max_m(), bitlinear.cpu_isa()
    yield
    bitlinear.set_cpu_isa(isa)
    bitlinear.set_cpu_lut_max_m(max_m)
    bitlinear.set_cpu_lut(mode)


def lut_of(layer):
    e = layer.__dict__.get("_lut")
    return None if e is None else e.view


@pytest.mark.parametrize("K,N", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_forced_lut_equals_op(gen, K, N, dtype):
    layer = make(gen, K, N)
    bitlinear.set_cpu_lut("force")
    with torch.no_grad():
        for lead in [(1,), (2,), (3, 1), (5,)]:
            x = rand(gen, *lead, K).to(dtype)
            y = layer(x)
            assert lut_of(layer) is not None
            assert torch.equal(y, op_output(layer, x)), (lead, dtype)


@pytest.mark.parametrize("isa", bitlinear.available_cpu_isas())
@pytest.mark.parametrize("quant_type", ref.QUANT_TYPES)
def test_every_path_and_quant_type(gen, isa, quant_type):
    bitlinear.set_cpu_isa(isa)
    bitlinear.set_cpu_lut("force")
    for K, N in [(129, 100), (1000, 33), (27, 513)]:
        layer = make(gen, K, N, quant_type=quant_type, bias=K != 27)
        x = rand(gen, 3, K) * 5
        with torch.no_grad():
            assert torch.equal(layer(x), op_output(layer, x)), (isa, quant_type, K, N)
            assert torch.equal(layer(x[:1]), op_output(layer, x[:1]))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_give_the_same_bits(gen, threads):
    layer = make(gen, 1000, 1100)
    x = rand(gen, 1, 1000)
    bitlinear.set_cpu_lut("force")
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        with torch.no_grad():
            y = layer(x)
    finally:
        torch.set_num_threads(prev)
    with torch.no_grad():
        assert torch.equal(y, op_output(layer, x))


def test_extreme_activations_do_not_overflow(gen):
    # |table entry| <= 384 and int16 partial sums are flushed every 28 columns: all weights +1 or
    # all -1 against inputs that quantize to +-127 over a long K stress exactly that bound
    K, N = 4099, 64
    layer = make(gen, K, N, bias=False)
    with torch.no_grad():
        layer.w_packed.copy_(torch.where(torch.arange(N)[:, None] % 2 == 0,
                                         torch.tensor(0xAA, dtype=torch.uint8),
                                         torch.tensor(0x00, dtype=torch.uint8))
                             .expand_as(layer.w_packed))
    bitlinear.set_cpu_lut("force")
    for x in [torch.full((1, K), -3.0), torch.full((1, K), 2.0),
              torch.where(torch.arange(K) % 2 == 0, -1.0, 1.0)[None]]:
        with torch.no_grad():
            y = layer(x)
            assert torch.equal(y, op_output(layer, x))
            assert y.abs().max() > 0


def test_invalid_code_three_reads_as_plus_one(gen):
    layer = make(gen, 300, 70)
    with torch.no_grad():
        layer.w_packed[::3] |= 0xC3  # code 3 in two of every byte's four positions
    x = rand(gen, 1, 300)
    bitlinear.set_cpu_lut("force")
    with torch.no_grad():
        assert torch.equal(layer(x), op_output(layer, x))


def test_layout_follows_w_packed(gen):
    a, b = make(gen, 200, 300), make(gen, 200, 300)
    x = rand(gen, 1, 200)
    bitlinear.set_cpu_lut("force")
    with torch.no_grad():
        a(x)
        first = lut_of(a)
        # an in-place write (version counter), a new tensor, a load_state_dict (in-place copy)
        a.w_packed[5:9] = b.w_packed[5:9]
        assert torch.equal(a(x), op_output(a, x))
        assert lut_of(a) is not first
        a.w_packed = b.w_packed.clone()
        assert torch.equal(a(x), op_output(a, x))
        c = make(gen, 200, 300)
        a.load_state_dict(c.state_dict())
        assert torch.equal(a(x), op_output(c, x))
        before = a(x)
        a.w_packed.data = b.w_packed.clone()  # a new storage behind the same tensor object
        assert torch.equal(a(x), op_output(a, x)) and not torch.equal(a(x), before)


def test_not_saved_and_not_pickled(gen):
    layer = make(gen, 100, 40)
    bitlinear.set_cpu_lut("force")
    x = rand(gen, 1, 100)
    with torch.no_grad():
        y = layer(x)
    assert lut_of(layer) is not None
    assert set(layer.state_dict()) == {"w_scale", "w_packed", "bias", "_extra_state"}
    assert all("lut" not in n for n, _ in layer.named_buffers())
    buf = io.BytesIO()
    torch.save(layer, buf)
    bare = io.BytesIO()
    _fast.forget(layer)
    torch.save(layer, bare)
    assert abs(len(buf.getvalue()) - len(bare.getvalue())) < 64  # the layout is not in the file
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    dup = copy.deepcopy(layer)
    # rebuilt when restored (as at load), not on the first call
    assert lut_of(back) is not None and lut_of(dup) is not None
    orig = _fast.decode_layout(layer)
    assert torch.equal(lut_of(dup), orig) and lut_of(dup).data_ptr() != orig.data_ptr()
    with torch.no_grad():
        assert torch.equal(back(x), y) and torch.equal(dup(x), y)


def test_built_at_deploy_and_dropped_off_cpu_or_when_off(gen):
    bitlinear.set_cpu_lut("force")
    layer = make(gen, 64, 96)
    lut = lut_of(layer)
    assert lut is not None and lut.numel() == bitlinear._ext.native().lut_bytes(96, 64)
    assert lut.data_ptr() % 64 == 0
    layer.to("meta")
    assert lut_of(layer) is None
    bitlinear.set_cpu_lut("off")
    other = make(gen, 64, 96)
    assert lut_of(other) is None
    x = rand(gen, 1, 64)
    with torch.no_grad():
        other(x)
    assert lut_of(other) is None  # off: never built
    bitlinear.set_cpu_lut("force")
    with torch.no_grad():
        assert torch.equal(other(x), op_output(other, x))
    assert lut_of(other) is not None  # built on the first call after the mode changed


def test_auto_uses_it_only_where_measured():
    native = bitlinear._ext.native()
    bitlinear.set_cpu_lut("auto")
    for isa in bitlinear.available_cpu_isas():
        bitlinear.set_cpu_isa(isa)
        kernel, _ = native.lut_status(1)
        # AUTO reads the layout only with the AVX-512 kernel (measured faster; docs/cpu.md)
        assert bitlinear.cpu_lut_used(1) == (isa == "avx512vnni"), isa
        assert kernel == (isa in ("avx512vnni", "neon_dot")), isa  # NEON: forced only
        assert not bitlinear.cpu_lut_used(bitlinear.cpu_lut_max_m() + 1)
    bitlinear.set_cpu_lut("force")
    assert all(bitlinear.cpu_lut_used(m) for m in (1, 7, 1000))
    bitlinear.set_cpu_lut("off")
    assert not any(bitlinear.cpu_lut_used(m) for m in (1, 7))


def test_auto_max_m_moves_the_switch(gen):
    if "avx512vnni" not in bitlinear.available_cpu_isas():
        pytest.skip("AUTO uses the LUT only on the AVX-512 path")
    bitlinear.set_cpu_isa("avx512vnni")
    bitlinear.set_cpu_lut("auto")
    bitlinear.set_cpu_lut_max_m(3)
    assert bitlinear.cpu_lut_used(3) and not bitlinear.cpu_lut_used(4)
    layer = make(gen, 300, 200)
    for m in (1, 3, 4):
        x = rand(gen, m, 300)
        with torch.no_grad():
            assert torch.equal(layer(x), op_output(layer, x))
    bitlinear.set_cpu_lut_max_m(0)
    assert not bitlinear.cpu_lut_used(1)


def test_mode_controls_refuse_bad_values():
    with pytest.raises(ValueError, match="decode-layout mode"):
        bitlinear.set_cpu_lut("on")
    for bad in (-1, 65, 1.0, True, "2"):
        with pytest.raises(ValueError, match="cpu_lut_max_m"):
            bitlinear.set_cpu_lut_max_m(bad)
    with pytest.raises(ValueError, match="cannot take"):
        bitlinear._ext.native().cpu_option(0, 3)
    with pytest.raises(ValueError, match="cannot take"):
        bitlinear._ext.native().cpu_option(7, 0)
    before = (bitlinear.cpu_lut(), bitlinear.cpu_lut_max_m())
    with bitlinear.use_cpu_lut("force", max_m=5):
        assert (bitlinear.cpu_lut(), bitlinear.cpu_lut_max_m()) == ("force", 5)
    assert (bitlinear.cpu_lut(), bitlinear.cpu_lut_max_m()) == before


def test_compiled_and_op_calls_do_not_need_it(gen):
    # the op (what torch.compile runs) reads w_packed: same bits as the eager LUT call
    layer = make(gen, 129, 77)
    bitlinear.set_cpu_lut("force")
    x = rand(gen, 1, 129)
    with torch.no_grad():
        eager = layer(x)
        bitlinear.set_fast_path(False)
        try:
            assert torch.equal(layer(x), eager)
        finally:
            bitlinear.set_fast_path(True)


def test_info_names_the_decode_path():
    bitlinear.set_cpu_lut("auto")
    info = bitlinear.collect_info()
    assert "cpu_decode" in info
    if bitlinear.cpu_lut_used(1):
        assert "table-lookup" in info["cpu_decode"]
    bitlinear.set_cpu_lut("off")
    assert "table-lookup" not in bitlinear.collect_info()["cpu_decode"]


def test_size_report_counts_the_decode_layout_apart(gen):
    from torch import nn
    model = nn.Sequential(make(gen, 300, 64), nn.ReLU(), make(gen, 64, 10))
    bitlinear.set_cpu_lut("force")
    for m in model:
        if isinstance(m, BitLinear):
            _fast.prepare(m)
    rep = bitlinear.size_report(model)
    native = bitlinear._ext.native()
    want = native.lut_bytes(64, 300) + native.lut_bytes(10, 64)
    assert rep["decode_layout"] == want and rep["resident"] == rep["total"] + want
    assert rep["total"] == bitlinear.model_size_bytes(model)  # what is saved: no layout
    assert "decode_layout" in rep["text"]
    bitlinear.set_cpu_lut("off")
    for m in model:
        if isinstance(m, BitLinear):
            _fast.prepare(m)
    rep = bitlinear.size_report(model)
    assert rep["decode_layout"] == 0 and "decode_layout" not in rep["text"]


def test_layers_deployed_under_inference_mode(gen):
    # inference tensors have no version counter: the layout must still be built and used
    bitlinear.set_cpu_lut("force")
    with torch.inference_mode():
        layer = make(gen, 200, 70)
        x = rand(gen, 1, 200)
        y = layer(x)
        assert lut_of(layer) is not None
        assert torch.equal(y, op_output(layer, x))
    with torch.no_grad():
        assert torch.equal(layer(x), y)
    with torch.inference_mode():  # (torch refuses in-place writes to inference tensors outside)
        other = make(gen, 200, 70)
        layer.load_state_dict(other.state_dict())  # rebuilt on load
        assert torch.equal(layer(x), op_output(other, x))
