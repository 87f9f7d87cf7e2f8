"""BitLinear training on the exact integer kernels: the forward is the deployed computation (and
reference.train_forward), the backward the straight-through estimator in the gradient's dtype,
checked against autograd through the reference formula (reference.ste_linear); what is kept for
backward; torch.compile; non-finite and extreme inputs."""
import pytest
import torch
from torch import nn

import bitlinear
from bitlinear import BitLinear
from bitlinear import reference as ref

from conftest import rand

QTS = list(ref.QUANT_TYPES)
ISAS = bitlinear.available_cpu_isas() if bitlinear.HAS_BITLINEAR else []
# relative error (2-norm) of the gradients against autograd through the float32 STE formula:
# float32 rounding; a few roundings of the dtype (its operands, then its output)
TOL = {torch.float32: 1e-5, torch.bfloat16: 1.5e-2, torch.float16: 2e-3}


def make(gen, K, N, qt="ai8pc_wpt", bias=True, dtype=torch.float32):
    layer = BitLinear(K, N, bias=bias, quant_type=qt)
    with torch.no_grad():
        layer.weight.copy_(rand(gen, N, K, scale=0.05))
        if bias:
            layer.bias.copy_(rand(gen, N))
    return layer.to(dtype)


@pytest.fixture(params=ISAS or [None])
def isa(request):
    if request.param is None:
        yield None
        return
    with bitlinear.use_cpu_isa(request.param):
        yield request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("qt", QTS)
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 7, 5), (5, 129, 33), (7, 1000, 3), (64, 256, 96)])
def test_forward_equals_reference_train_forward(isa, gen, qt, M, K, N, dtype):
    layer = make(gen, K, N, qt, dtype=dtype)
    x = rand(gen, M, K, dtype=dtype)
    y, x_q, x_scale, w_scale, w_packed = torch.ops.bitlinear.linear_train(
        x, layer.weight, layer.bias, layer.eps, layer.spec.act_per_token,
        layer.spec.weight_per_channel)
    want = ref.train_forward(x, layer.weight, layer.bias, layer.eps, layer.spec)
    for got, exp in zip((y, x_q, x_scale, w_scale, w_packed), want):
        assert got.dtype == exp.dtype and torch.equal(got, exp)
    assert torch.equal(layer(x), y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("qt", QTS)
@pytest.mark.parametrize("bias", [True, False])
def test_gradients_match_autograd_through_the_ste_formula(isa, gen, qt, dtype, bias):
    layer = make(gen, 300, 70, qt, bias=bias, dtype=dtype)
    x = rand(gen, 2, 9, 300, dtype=dtype).requires_grad_()
    g = rand(gen, 2, 9, 70, dtype=dtype)
    layer(x).backward(g)
    got = [x.grad, layer.weight.grad] + ([layer.bias.grad] if bias else [])
    assert all(t.dtype == dtype for t in got)
    # oracle: autograd through the float32 formula, from the same float inputs
    xr = x.detach().float().requires_grad_()
    wr = layer.weight.detach().float().requires_grad_()
    br = layer.bias.detach().float().requires_grad_() if bias else None
    ref.ste_linear(xr, wr, br, layer.eps, layer.spec).backward(g.float())
    want = [xr.grad, wr.grad] + ([br.grad] if bias else [])
    for a, b in zip(got, want):
        err = ((a.double() - b.double()).norm() / b.double().norm()).item()
        assert err <= TOL[dtype], (a.shape, err)


@pytest.mark.parametrize("M,K,N,qt", [(3, 16, 4, "ai8pc_wpt"), (4, 40, 6, "ai8pc_wpc")])
def test_gradients_against_explicit_formulas(gen, M, K, N, qt):
    """Straight-through estimator, written out: grad_x = g @ (s_w W_q) (F.linear's with the
    dequantized weight), grad_W = g^T @ (s_x X_q), grad_b = sum(g); per-tensor and per-channel
    weight scales."""
    layer = make(gen, K, N, qt)
    x = rand(gen, M, K).requires_grad_()
    g = rand(gen, M, N)
    layer(x).backward(g)
    per_channel = qt.endswith("wpc")
    sw = ref.weight_scale(layer.weight, layer.eps, per_channel)
    wdq = ref.ternarize(layer.weight, sw) * (sw[:, None] if per_channel else sw)
    sx = ref.act_scale(x.detach(), layer.eps, True)[:, None]
    xdq = torch.round(x.detach() / sx).clamp(-128, 127) * sx
    torch.testing.assert_close(x.grad, g @ wdq)
    torch.testing.assert_close(layer.weight.grad, g.T @ xdq)
    torch.testing.assert_close(layer.bias.grad, g.sum(0))


def _saved(fn):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn()
    return out, saved


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_keeps_only_integer_operands_and_scales(gen, dtype):
    K, N, M = 1024, 512, 64
    layer = make(gen, K, N, dtype=dtype)
    lin = nn.Linear(K, N).to(dtype)
    x = rand(gen, M, K, dtype=dtype).requires_grad_()
    _, saved = _saved(lambda: layer(x))
    kinds = sorted((str(t.dtype), tuple(t.shape)) for t in saved)
    assert kinds == sorted([("torch.int8", (M, K)), ("torch.float32", (M,)),
                            ("torch.float32", (1,)), ("torch.uint8", (N, K // 4))]), kinds
    ours = sum(t.numel() * t.element_size() for t in saved)
    _, saved_lin = _saved(lambda: lin(x))
    theirs = sum(t.numel() * t.element_size() for t in saved_lin)
    # nn.Linear keeps x and W in their dtype; we keep int8 x_q, 2-bit W and scales
    assert ours < theirs / (6 if dtype == torch.float32 else 3)


def test_compile_fullgraph_training_step_matches_eager(gen):
    layer = make(gen, 200, 24, "ai8pc_wpc")
    twin = make(gen, 200, 24, "ai8pc_wpc")
    twin.load_state_dict(layer.state_dict())
    x = rand(gen, 5, 200)
    g = rand(gen, 5, 24)

    def step(m, x):
        x = x.clone().requires_grad_()
        y = m(x)
        y.backward(g)
        return y.detach(), x.grad

    y0, gx0 = step(layer, x)
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    y1, gx1 = step(compiled, x)
    assert torch.equal(y0, y1)
    torch.testing.assert_close(gx1, gx0)
    torch.testing.assert_close(twin.weight.grad, layer.weight.grad)
    torch.testing.assert_close(twin.bias.grad, layer.bias.grad)


def test_nonfinite_inputs_and_weights_give_nan_not_a_crash(gen):
    layer = make(gen, 64, 8)
    x = rand(gen, 4, 64)
    x[1, 3] = float("nan")
    y = layer(x.requires_grad_())
    assert torch.isnan(y[1]).all() and torch.isfinite(y[[0, 2, 3]]).all()
    y.sum().backward()  # defined, no exception
    with torch.no_grad():
        layer.weight[2, 5] = float("inf")
    y = layer(rand(gen, 3, 64))
    assert torch.isnan(y).all()  # one weight scale per tensor: every output
    pc = make(gen, 64, 8, "ai8pc_wpc")
    with torch.no_grad():
        pc.weight[2, 5] = float("nan")
    y = pc(rand(gen, 3, 64))
    assert torch.isnan(y[:, 2]).all() and torch.isfinite(y[:, [0, 1, 3, 4, 5, 6, 7]]).all()
    with pytest.raises(ValueError, match="NaN or Inf"):
        pc.deploy()  # deploying them is refused


def test_half_precision_extremes_are_defined(gen):
    """float16 inputs at the format's limits: the scales are float32 (amax / 127 cannot
    overflow), the forward equals the deployed path and the reference, gradients are finite."""
    layer = make(gen, 32, 4, dtype=torch.float16)
    x = torch.full((3, 32), 65504.0, dtype=torch.float16)
    x[1] = -65504.0
    x[2, ::2] = 6e-8  # subnormals
    y, _, x_scale, _, _ = torch.ops.bitlinear.linear_train(x, layer.weight, layer.bias, 1e-6,
                                                          True, False)
    assert x_scale.dtype == torch.float32 and torch.isfinite(x_scale).all()
    want = ref.train_forward(x, layer.weight, layer.bias, 1e-6, layer.spec)[0]
    assert torch.equal(y, want)
    xg = x.clone().requires_grad_()
    layer(xg).backward(torch.ones(3, 4, dtype=torch.float16))
    assert torch.isfinite(xg.grad).all() and torch.isfinite(layer.weight.grad).all()
