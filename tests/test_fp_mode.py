"""Results do not depend on the thread count under any floating-point mode torch exposes (issue 18,
finding 7). torch.set_flush_denormal(True) sets FTZ/DAZ in the calling thread only; the OpenMP
worker threads kept their own mode, so subnormal activations, a subnormal product of the scales or
a subnormal scale gave different bits at 1 and 2 threads (the oversubscription governor switches
between the two at will). Every parallel region now computes in the caller's mode (internal.h,
bl_region_*), which is also what the reference computes in when torch runs it on one thread.

Inputs are valid ones (normal scales, finite values) except where a test says otherwise: tiny
activations with eps at its minimum, weights around 1e-19 whose scale times a tiny activation
scale underflows to a subnormal, weights mixing subnormals into a normal mean."""
import os

import pytest
import torch

import bitlinear
from bitlinear import reference as ref

pytestmark = [
    pytest.mark.skipif(not bitlinear.HAS_BITLINEAR, reason="native extension not built"),
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores"),
]

EPS = ref.MIN_EPS
TRIES = 3  # a 2-thread call may run on one thread while the governor sees load: try a few times


@pytest.fixture
def flush_denormal():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    # Worker threads created while FTZ is on inherit it from their creator: make sure the pool
    # exists first (a torch region and one of ours, 2 threads each), as in any real session.
    torch.randn(1 << 20).abs_().sum()
    torch.ops.bitlinear.quantize_acts(torch.ones(64, 1024), 1e-6, True)
    if not torch.set_flush_denormal(True):
        torch.set_num_threads(old)
        pytest.skip("torch.set_flush_denormal is not supported on this CPU")
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(old)


def at(threads, fn):
    torch.set_num_threads(threads)
    try:
        out = fn()
    finally:
        torch.set_num_threads(2)
    return out if isinstance(out, (tuple, list)) else (out,)


def same_at_1_and_2(fn, what):
    one = at(1, fn)
    for _ in range(TRIES):
        two = at(2, fn)
        for i, (a, b) in enumerate(zip(one, two)):
            assert a.dtype == b.dtype and a.shape == b.shape
            diff = (a.view(torch.uint8) != b.view(torch.uint8)).sum().item() if a.is_floating_point() \
                else (a != b).sum().item()
            assert diff == 0, f"{what}: output {i} differs at 1 and 2 threads in {diff} bytes/values"
    return one


def _from_bits(sign, exp, man, dtype):
    """Floats built from their fields (so no arithmetic, and no flush, makes them)."""
    if dtype == torch.bfloat16:
        bits, width = (sign << 15) | (exp << 7) | (man >> 16), 16
    else:
        bits, width = (sign << 31) | (exp << 23) | man, 32
    bits = torch.where(bits >= 1 << (width - 1), bits - (1 << width), bits)  # two's complement
    return bits.to(torch.int16 if width == 16 else torch.int32).view(dtype)


def tiny_acts(gen, M, K, dtype=torch.float32):
    """|x| below 4 FLT_MIN, two thirds of them subnormal: with eps = MIN_EPS the scale is FLT_MIN,
    and a subnormal x quantizes to 0 or +-1 unless DAZ reads it as 0."""
    exp = torch.randint(0, 3, (M, K), generator=gen) // 2  # exponent field 0 (2/3) or 1
    man = torch.randint(1 << 16, 1 << 23, (M, K), generator=gen)
    sign = torch.randint(0, 2, (M, K), generator=gen)
    return _from_bits(sign, exp, man, dtype)


def subnormal_weights(gen, N, K):
    """Subnormal weights with one in 97 columns around 1e-33: the float64 mean of |w| rounds to
    another float32 when DAZ drops the subnormals."""
    man = torch.randint(1 << 20, 1 << 23, (N, K), generator=gen)
    w = _from_bits(torch.randint(0, 2, (N, K), generator=gen), torch.zeros_like(man), man,
                   torch.float32)
    w[:, ::97] = torch.randn(N, w[:, ::97].shape[1], generator=gen) * 1e-33  # normal: no flush
    return w


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_token", [True, False])
def test_quantize_acts_subnormal_inputs(flush_denormal, gen, dtype, per_token):
    x = tiny_acts(gen, 64, 1024, dtype)
    bits = x.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)
    assert (bits != 0).all() and (bits != bits.new_tensor(-1 << (bits.element_size() * 8 - 1))).all()
    q, s, r = same_at_1_and_2(lambda: torch.ops.bitlinear.quantize_acts(x, EPS, per_token),
                              "quantize_acts")
    # the caller's mode is the reference's when torch runs it on one thread
    rq, rs, rr = at(1, lambda: ref.quantize_acts(x, EPS, per_token))
    assert torch.equal(q, rq) and torch.equal(s, rs) and torch.equal(r, rr)


@pytest.mark.parametrize("per_channel", [True, False])
def test_quantize_weights_subnormal_weights(flush_denormal, gen, per_channel):
    w = subnormal_weights(gen, 256, 1024)
    s, p = same_at_1_and_2(lambda: torch.ops.bitlinear.quantize_weights(w, EPS, per_channel),
                           "quantize_weights")
    rs, rp = at(1, lambda: ref.quantize_weights(w, EPS, per_channel))
    assert torch.equal(s, rs) and torch.equal(p, rp)


def _tiny_layer_weights(gen, N, K):
    return torch.randn(N, K, generator=gen) * 1e-19  # s_w ~ 1e-19: s_x * s_w underflows


@pytest.mark.parametrize("M", [1, 64])
def test_linear_op_subnormal_scale_product(flush_denormal, gen, M):
    N, K = 1024, 1024
    w_scale, w_packed = torch.ops.bitlinear.quantize_weights(_tiny_layer_weights(gen, N, K), EPS,
                                                             False)
    x = torch.randn(M, K, generator=gen) * 1e-18  # s_x ~ 1e-20, s_x * s_w ~ 1e-39: subnormal
    y, = same_at_1_and_2(lambda: torch.ops.bitlinear.linear(x, w_scale, w_packed, None, EPS, K,
                                                             True), "linear")
    ry, = at(1, lambda: ref.linear(x, w_scale, w_packed, None, EPS, K, True))
    assert torch.equal(y, ry)


def test_linear_q_and_gemm_acc_subnormal_weight_scale(flush_denormal, gen):
    # a subnormal w_scale given straight to the ops (the loaders refuse one; the ops take what
    # they are given): DAZ reads it as 0
    M, N, K = 64, 1024, 512
    w_packed = torch.ops.bitlinear.quantize_weights(torch.randn(N, K, generator=gen), 1e-6,
                                                    True)[1]
    w_scale = torch.full((N,), 71362, dtype=torch.int32).view(torch.float32)  # 1e-40
    # (compared as bits: under DAZ, float comparisons and .item() read a subnormal as 0)
    x = torch.randn(M, K, generator=gen) * 1e10
    xq, xs, rs = torch.ops.bitlinear.quantize_acts(x, 1e-6, True)
    same_at_1_and_2(lambda: torch.ops.bitlinear.gemm_acc(xq, w_packed, K), "gemm_acc")
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        y, = same_at_1_and_2(lambda: torch.ops.bitlinear.linear_q(xq, xs, rs, w_scale, w_packed,
                                                                   None, K, dt), "linear_q")
        ry = at(1, lambda: ref.linear_q(xq, xs, w_scale, w_packed, None, K, dt))[0]
        assert torch.equal(y, ry)
    same_at_1_and_2(lambda: torch.ops.bitlinear.linear(x, w_scale, w_packed, None, 1e-6, K, True),
                    "linear")
    same_at_1_and_2(lambda: torch.ops.bitlinear.unpack_weights(w_packed, K, torch.float32),
                    "unpack_weights")


def test_linear_train_op(flush_denormal, gen):
    N, K, M = 1024, 1024, 64
    w = _tiny_layer_weights(gen, N, K)
    x = torch.randn(M, K, generator=gen) * 1e-18
    out = same_at_1_and_2(lambda: torch.ops.bitlinear.linear_train(x, w, None, EPS, True, False),
                          "linear_train")
    ry = at(1, lambda: ref.train_forward(x, w, None, EPS, ref.QUANT_TYPES["ai8pc_wpt"]))[0]
    assert torch.equal(out[0], ry)


@pytest.mark.parametrize("quant_type", ["ai8pc_wpt", "ai8pt_wpt", "ai8pc_wpc"])
def test_bitlinear_module_training_and_deployed(flush_denormal, gen, quant_type):
    N, K = 1024, 1024
    layer = bitlinear.BitLinear(K, N, bias=True, eps=EPS, quant_type=quant_type)
    with torch.no_grad():
        layer.weight.copy_(_tiny_layer_weights(gen, N, K))
        layer.bias.zero_()
    inputs = {"tiny": torch.randn(64, K, generator=gen) * 1e-18,
              "subnormal": tiny_acts(gen, 64, K)}

    def train_step(x):
        def f():
            layer.zero_grad(set_to_none=True)
            xx = x.clone().requires_grad_(True)
            y = layer(xx)
            y.sum().backward()
            return y.detach(), xx.grad, layer.weight.grad, layer.bias.grad
        return f

    for name, x in inputs.items():
        y, gx, gw, gb = same_at_1_and_2(train_step(x), f"training forward/backward ({name})")
        assert torch.isfinite(y).all()
    layer.deploy()
    for name, x in {**inputs, "tiny M=1": inputs["tiny"][:1]}.items():
        with torch.no_grad():
            y, = same_at_1_and_2(lambda: layer(x), f"deployed ({name})")
            ry, = at(1, lambda: ref.linear(x, layer.w_scale, layer.w_packed, layer.bias,
                                           layer.eps, K, layer.spec.act_per_token))
        assert torch.equal(y, ry), name
