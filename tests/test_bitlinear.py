"""BitLinear as users drive it: training, from_linear, deploy, state dicts, devices, compile,
bad input. Runs with or without the native extension (the fallback must behave the same)."""
import io

import pytest
import torch
from torch import nn

import bitlinear
from bitlinear import BitLinear
from bitlinear import reference as ref

from conftest import rand

QTS = list(ref.QUANT_TYPES)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def make(gen, K, N, qt="ai8pc_wpt", bias=True, dtype=None):
    layer = BitLinear(K, N, bias=bias, quant_type=qt, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(rand(gen, N, K, scale=0.05))
        if bias:
            layer.bias.copy_(rand(gen, N))
    return layer


# ---------------------------------------------------------------------- seed API compatibility
def test_seed_readme_examples():
    layer = BitLinear(in_features=512, out_features=256, bias=True)
    x = torch.randn(32, 512)
    out = layer(x)
    assert out.shape == (32, 256)
    layer.deploy()
    with torch.no_grad():
        out2 = layer(x)
    assert out2.shape == (32, 256)
    linear = nn.Linear(512, 256)
    bl = BitLinear.from_linear(linear, quant_type="ai8pc_wpt")
    assert torch.equal(bl.weight, linear.weight) and torch.equal(bl.bias, linear.bias)


def test_seed_training_formulas(gen):
    """The earlier package's training forward, written out from its documented formulas."""
    layer = make(gen, 96, 40)
    x = rand(gen, 6, 96)
    eps = layer.eps
    w = layer.weight.detach()
    w_scale = w.abs().mean().clamp(min=eps)
    w_q = torch.round(w / w_scale).clamp(-1, 1)
    x_scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=eps) / 127
    x_q = torch.round(x / x_scale).clamp(-128, 127)
    expect = nn.functional.linear(x_scale * x_q, w_scale * w_q, layer.bias.detach())
    assert rel_err(layer(x).detach(), expect) < 1e-5


def test_native_module_compat():
    if not bitlinear.HAS_BITLINEAR:
        pytest.skip("native extension not built")
    import _bitlinear
    w = torch.randn(20, 33) * 0.1
    s, p = _bitlinear.prepare_weights(w, 1e-6, "ai8pc_wpt")
    x = torch.randn(4, 33)
    b = torch.randn(20)
    y = _bitlinear.bitlinear(x, s, p, b, 1e-6)
    assert torch.equal(y, ref.linear(x, s, p, b, 1e-6, 33, True))
    with pytest.raises(ValueError, match="unknown quant_type 'int4'"):
        _bitlinear.prepare_weights(w, 1e-6, "int4")
    # the earlier package's spellings: its default "per_tensor" is our ai8pc_wpt
    for qt, per_channel in (("per_tensor", False), ("per_channel", True)):
        s2, p2 = _bitlinear.prepare_weights(w, 1e-6, qt)
        e_s, e_p = bitlinear.ops.quantize_weights(w, 1e-6, per_channel)
        assert torch.equal(s2, e_s) and torch.equal(p2, e_p)
    s3, p3 = _bitlinear.prepare_weights(w)
    assert torch.equal(s3, s) and torch.equal(p3, p)


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("qt", QTS)
def test_gradients_reach_weight_bias_input(gen, qt):
    layer = make(gen, 33, 7, qt)
    x = rand(gen, 5, 33).requires_grad_()
    layer(x).square().sum().backward()
    for t in (x, layer.weight, layer.bias):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_training_loss_decreases(gen):
    torch.manual_seed(0)
    model = nn.Sequential(BitLinear(8, 32), nn.ReLU(), BitLinear(32, 1))
    x = rand(gen, 256, 8)
    y = x[:, :1] * 2 - x[:, 1:2]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = (model(x) - y).square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


# ---------------------------------------------------------------------- deploy parity
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("qt", QTS)
@pytest.mark.parametrize("K,N", [(1, 1), (7, 3), (129, 65), (1000, 33), (512, 256)])
def test_deploy_matches_training_eval_bit_for_bit(gen, qt, K, N, dtype):
    """Training runs the deployed kernels on weights quantized at each step, so the training-mode
    output and the deployed output are the same bits, in every dtype and quant type."""
    layer = make(gen, K, N, qt).to(dtype)
    x = rand(gen, 2, 5, K, dtype=dtype)
    train_out = layer(x)  # training mode, with autograd
    with torch.no_grad():
        eval_out = layer.eval()(x)
        layer.deploy()
        got = layer(x)
    assert layer.deployed and got.shape == eval_out.shape and got.dtype == dtype
    assert torch.equal(got, eval_out) and torch.equal(got, train_out.detach())


def test_deployed_buffers_and_size(gen):
    layer = make(gen, 4096, 256).deploy()
    names = dict(layer.named_buffers())
    assert set(names) == {"w_scale", "w_packed", "bias"}
    assert not list(layer.parameters())
    assert names["w_packed"].dtype == torch.uint8 and names["w_packed"].shape == (256, 1024)
    dense = 4096 * 256 * 4
    packed = sum(b.numel() * b.element_size() for b in names.values())
    assert dense / packed > 15


# ---------------------------------------------------------------------- state dict / save / load / to
@pytest.mark.parametrize("qt", QTS)
@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_round_trip(gen, qt, bias):
    layer = make(gen, 130, 9, qt, bias=bias).deploy()
    x = rand(gen, 3, 130)
    with torch.no_grad():
        y = layer(x)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    fresh = BitLinear(130, 9, bias=bias, quant_type=qt).deploy()
    fresh.load_state_dict(sd)
    with torch.no_grad():
        assert torch.equal(fresh(x), y)
    assert sd["_extra_state"]["format_version"] == ref.FORMAT_VERSION


def test_format_version_mismatch_is_refused(gen):
    sd = make(gen, 20, 4).deploy().state_dict()
    sd["_extra_state"] = dict(sd["_extra_state"], format_version=99)
    with pytest.raises(ValueError, match="format version"):
        BitLinear(20, 4).deploy().load_state_dict(sd)


@pytest.mark.parametrize("key,value,match", [
    ("w_packed", torch.zeros(4, 16, dtype=torch.uint8), "w_packed"),
    ("w_packed", torch.zeros(4, 32, dtype=torch.float32), "w_packed"),
    ("w_packed", torch.zeros(5, 32, dtype=torch.uint8), "w_packed"),
    ("w_scale", torch.ones(1, dtype=torch.float64), "w_scale"),
    ("w_scale", torch.ones(7), "w_scale"),
    ("bias", torch.ones(3), "bias"),
])
def test_corrupted_checkpoint_is_refused(gen, key, value, match):
    sd = make(gen, 20, 4).deploy().state_dict()
    sd[key] = value
    with pytest.raises(ValueError, match=match):
        BitLinear(20, 4).deploy().load_state_dict(sd)


def test_deployed_checkpoint_into_undeployed_layer(gen):
    sd = make(gen, 20, 4).deploy().state_dict()
    with pytest.raises(ValueError, match="deploy"):
        BitLinear(20, 4).load_state_dict(sd)


def test_to_keeps_float32_scales(gen):
    layer = make(gen, 64, 8).deploy()
    x = rand(gen, 2, 64)
    with torch.no_grad():
        y = layer(x)
        layer.half()
        assert layer.w_scale.dtype == torch.float32 and layer.bias.dtype == torch.float32
        assert layer.w_packed.dtype == torch.uint8
        assert torch.equal(layer.to("cpu")(x), y)
        assert layer(x.half()).dtype == torch.float16


# ---------------------------------------------------------------------- deployed behaviour
def test_deployed_layer_refuses_gradients(gen):
    layer = make(gen, 16, 4).deploy()
    with pytest.raises(RuntimeError, match="inference-only"):
        layer(rand(gen, 2, 16).requires_grad_())


def test_compile_fullgraph_matches_eager(gen):
    layer = make(gen, 200, 24).deploy()
    x = rand(gen, 5, 200)
    with torch.no_grad():
        eager = layer(x)
        compiled = torch.compile(layer, fullgraph=True)
        assert torch.equal(compiled(x), eager)
        x2 = rand(gen, 3, 7, 200)
        assert torch.equal(compiled(x2), layer(x2))


def test_compiled_layer_compiles_once(gen):
    """A compiled deployed layer replays its graph: nothing read at trace time (the fast path's
    is-compiling check) may leave a guard that fails on every call and recompiles to the limit,
    which would leave compiled models on the eager path."""
    from torch._dynamo.testing import CompileCounter
    layer = make(gen, 129, 7).deploy()
    torch._dynamo.reset()
    cnt = CompileCounter()
    compiled = torch.compile(layer, backend=cnt, fullgraph=True)
    x = rand(gen, 3, 129)
    with torch.no_grad():
        for _ in range(5):
            assert torch.equal(compiled(x), layer(x))
    assert cnt.frame_count == 1


# ---------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors(gen):
    layer = make(gen, 16, 4)
    with pytest.raises(ValueError, match="in_features=16"):
        layer(rand(gen, 2, 15))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        layer(torch.ones(2, 16, dtype=torch.int64))
    layer.deploy()
    with pytest.raises(ValueError, match="in_features=16"):
        layer(rand(gen, 2, 15))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        layer(torch.ones(2, 16, dtype=torch.int8))
    with pytest.raises(ValueError, match="valid quant types are: ai8pc_wpt"):
        BitLinear(4, 4, quant_type="ai4")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="in_features"):
            BitLinear(bad, 4)


def test_device_mismatch_is_reported(gen):
    layer = make(gen, 16, 4).deploy()
    layer.w_packed = torch.empty(4, 32, dtype=torch.uint8, device="meta")
    with pytest.raises(ValueError, match="device|on meta"):
        layer(rand(gen, 2, 16))
