"""Every native op against the pure-PyTorch reference, on every CPU path this machine runs.
Integer results (packed bytes, x_q, row sums, accumulators) must be identical; float outputs equal
the reference's epilogue bit for bit in float32 and within one rounding in float16/bfloat16."""
import pytest
import torch

import bitlinear
from bitlinear import ops
from bitlinear import reference as ref

from conftest import rand

pytestmark = pytest.mark.skipif(not bitlinear.HAS_BITLINEAR, reason="native extension not built")

ISAS = bitlinear.available_cpu_isas() if bitlinear.HAS_BITLINEAR else []
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 1, 1), (3, 7, 5), (7, 129, 3), (1, 1000, 17), (5, 128, 64), (2, 256, 1),
          (33, 300, 70), (16, 4096, 8)]  # (M, K, N)


@pytest.fixture(params=ISAS)
def isa(request):
    with bitlinear.use_cpu_isa(request.param):
        yield request.param


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("N,K", [(1, 1), (3, 7), (7, 129), (17, 1000), (64, 256), (5, 4096)])
def test_quantize_weights(isa, gen, N, K, per_channel):
    w = rand(gen, N, K, scale=0.02)
    s, p = ops.quantize_weights(w, 1e-6, per_channel)
    rs, rp = ref.quantize_weights(w, 1e-6, per_channel)
    assert p.dtype == torch.uint8 and p.shape == (N, ref.packed_row_bytes(K))
    assert torch.equal(s, rs)
    assert torch.equal(p, rp)
    assert torch.equal(ops.unpack_weights(p, K), ref.unpack_weights(rp, K))
    assert torch.equal(ref.unpack_weights(p, K).float(), ref.ternarize(w, rs))


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_weights_give_nan_scale_and_zero_codes(isa, gen, bad, per_channel):
    """The raw op accepts non-finite weights (training may diverge): the scale they enter is NaN
    and the rows it scales pack to zero weights, on every path and in the reference."""
    w = rand(gen, 5, 300)
    w[2, 7] = bad
    s, p = torch.ops.bitlinear.quantize_weights(w, 1e-6, per_channel)
    rs, rp = ref.quantize_weights(w, 1e-6, per_channel)
    assert torch.equal(s.isnan(), rs.isnan()) and torch.equal(s[~s.isnan()], rs[~rs.isnan()])
    assert torch.equal(p, rp)
    wq = ops.unpack_weights(p, 300)
    assert (wq[2] == 0).all() and torch.isnan(s[2 if per_channel else 0])
    if per_channel:
        assert torch.isfinite(s[[0, 1, 3, 4]]).all() and (wq[[0, 1, 3, 4]] != 0).any()


def test_weight_scale_sum_order_is_the_defined_one(isa):
    """64 + 2^-18 + 62 x 2^-50: summed in order, every 2^-50 is lost and the mean rounds (ties to
    even) to 1.0; in the kernels' order (32 lanes, then a butterfly) they add up first and the
    mean rounds up to 1 + 2^-23. Every path and the reference use the defined order."""
    w = torch.full((1, 64), 2.0 ** -50)
    w[0, 0], w[0, 32] = 64.0, 2.0 ** -18
    for per_channel in (False, True):
        s, _ = ops.quantize_weights(w, 1e-6, per_channel)
        assert s.item() == 1 + 2 ** -23
        assert torch.equal(s, ref.weight_scale(w, 1e-6, per_channel))


@pytest.mark.parametrize("dtype", [None, *DTYPES])
def test_unpack_weights_to_dtype(isa, gen, dtype):
    for N, K in [(1, 1), (7, 129), (33, 1000), (64, 4096)]:
        _, p = ops.quantize_weights(rand(gen, N, K), 1e-6, False)
        got = ops.unpack_weights(p, K, dtype)
        want = ref.unpack_weights(p, K)
        assert got.dtype == (torch.int8 if dtype is None else dtype)
        assert torch.equal(got, want.to(got.dtype))


def test_quantize_weights_dtypes(gen):
    w = rand(gen, 9, 130, scale=0.1)
    for dt in DTYPES:
        s, p = ops.quantize_weights(w.to(dt), 1e-6, True)
        rs, rp = ref.quantize_weights(w.to(dt), 1e-6, True)
        assert torch.equal(s, rs) and torch.equal(p, rp)


def test_pack_layout_documented():
    # k = 128 b + 32 s + j sits in byte 32 b + j at bits 2s (docs/packed_format.md)
    K = 300
    w = torch.zeros(1, K)
    w[0, 5] = 1.0      # b0 s0 j5 -> code 2 at byte 5 bits 0-1
    w[0, 37] = -1.0    # b0 s1 j5 -> code 0 at byte 5 bits 2-3
    w[0, 128 + 96 + 31] = 1.0  # b1 s3 j31 -> code 2 at byte 63 bits 6-7
    _, p = ops.quantize_weights(w, 1e-6, False)
    assert p.shape == (1, 96)
    assert p[0, 5].item() == (2 | (0 << 2) | (1 << 4) | (1 << 6))
    assert p[0, 63].item() == (1 | (1 << 2) | (1 << 4) | (2 << 6))
    assert p[0, 64 + 31].item() == 0b01010101  # padding (k >= 300) is code 1


@pytest.mark.parametrize("per_token", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_quantize_acts(isa, gen, M, K, N, dtype, per_token):
    x = rand(gen, M, K, dtype=dtype, scale=3.0)
    q, s, r = ops.quantize_acts(x, 1e-6, per_token)
    rq, rs, rr = ref.quantize_acts(x, 1e-6, per_token)
    assert torch.equal(s, rs)
    assert torch.equal(q, rq)
    assert torch.equal(r, rr)


@pytest.mark.parametrize("M,K,N", SHAPES + [(130, 513, 33), (9, 2560, 40)])
def test_gemm_acc_exact(isa, gen, M, K, N):
    w = rand(gen, N, K)
    _, p = ops.quantize_weights(w, 1e-6, False)
    xq = torch.randint(-128, 128, (M, ref.padded_k(K)), generator=gen, dtype=torch.int8)
    xq[:, K:] = 0
    assert torch.equal(ops.gemm_acc(xq, p, K), ref.gemm_acc(xq, p, K))


def test_gemm_acc_extremes(isa):
    # all -128 against all -1 / +1: the largest magnitudes the int32 path must hold exactly
    K, N = 4096, 3
    w = torch.ones(N, K)
    w[1] = -1
    w[2, ::2] = 0
    _, p = ops.quantize_weights(w, 1e-6, False)
    xq = torch.full((2, K), -128, dtype=torch.int8)
    xq[1] = 127
    acc = ops.gemm_acc(xq, p, K)
    assert torch.equal(acc, ref.gemm_acc(xq, p, K))
    assert acc[0, 0].item() == -128 * K and acc[1, 1].item() == -127 * K


def _assert_close_to_ref(y, r, dtype):
    # The epilogue rounds float32 -> float16/bfloat16 once, to nearest even, exactly as torch does.
    assert torch.equal(y, r)


@pytest.mark.parametrize("qt", list(ref.QUANT_TYPES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_linear_matches_reference(isa, gen, M, K, N, dtype, qt):
    spec = ref.parse_quant_type(qt)
    w = rand(gen, N, K, scale=0.05)
    s, p = ops.quantize_weights(w, 1e-6, spec.weight_per_channel)
    b = rand(gen, N)
    x = rand(gen, M, K, dtype=dtype)
    y = ops.linear(x, s, p, b, 1e-6, K, spec.act_per_token)
    r = ref.linear(x, s, p, b, 1e-6, K, spec.act_per_token)
    assert y.dtype == dtype and y.shape == (M, N)
    _assert_close_to_ref(y, r, dtype)
    y0 = ops.linear(x, s, p, None, 1e-6, K, spec.act_per_token)
    _assert_close_to_ref(y0, ref.linear(x, s, p, None, 1e-6, K, spec.act_per_token), dtype)


def test_linear_leading_shapes_and_noncontiguous(gen):
    K, N = 70, 9
    s, p = ops.quantize_weights(rand(gen, N, K), 1e-6, False)
    for shape in [(K,), (2, 3, K), (4, 1, 2, K)]:
        x = rand(gen, *shape)
        y = ops.linear(x, s, p, None, 1e-6, K, True)
        assert y.shape == (*shape[:-1], N)
        assert torch.equal(y, ref.linear(x, s, p, None, 1e-6, K, True))
    big = rand(gen, 6, 2 * K)
    for x in (big[:, ::2], big[:, :K], rand(gen, K, 6).T, rand(gen, 3, 4, K).transpose(0, 1)):
        assert not x.is_contiguous()
        assert torch.equal(ops.linear(x, s, p, None, 1e-6, K, True),
                           ref.linear(x.contiguous(), s, p, None, 1e-6, K, True))


def test_linear_empty_batch(gen):
    s, p = ops.quantize_weights(rand(gen, 4, 10), 1e-6, False)
    for shape in [(0, 10), (2, 0, 10)]:
        y = ops.linear(torch.empty(shape), s, p, None, 1e-6, 10, True)
        assert y.shape == (*shape[:-1], 4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("per_token", [True, False])
def test_nonfinite_inputs(isa, gen, bad, per_token):
    K, N = 200, 13
    s, p = ops.quantize_weights(rand(gen, N, K), 1e-6, False)
    x = rand(gen, 5, K)
    x[2, 17] = bad
    y = ops.linear(x, s, p, rand(gen, N), 1e-6, K, per_token)
    r = ref.linear(x, s, p, rand(gen, N) * 0, 1e-6, K, per_token)
    assert torch.equal(torch.isnan(y), torch.isnan(r))
    if per_token:
        assert torch.isnan(y[2]).all() and torch.isfinite(y[[0, 1, 3, 4]]).all()
    else:
        assert torch.isnan(y).all()


def test_nonfinite_weights_rejected():
    w = torch.randn(4, 8)
    w[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        ops.quantize_weights(w, 1e-6, False)


@pytest.mark.parametrize("M,K,N", [(1, 4096, 256), (64, 1000, 129), (7, 2560, 96)])
def test_thread_count_does_not_change_results(isa, gen, M, K, N):
    s, p = ops.quantize_weights(rand(gen, N, K), 1e-6, True)
    x = rand(gen, M, K)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = ops.linear(x, s, p, None, 1e-6, K, True)
        p1 = ops.quantize_weights(rand(gen, N, K), 1e-6, False)
        torch.set_num_threads(2)
        y2 = ops.linear(x, s, p, None, 1e-6, K, True)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(y1, y2)
    assert p1[1].shape == p.shape


@pytest.mark.parametrize("op,args", [
    ("quantize_weights", lambda g: (rand(g, 7, 130), 1e-6, True)),
    ("linear_q", lambda g: (*ops.quantize_acts(rand(g, 3, 130), 1e-6, True),
                            *ops.quantize_weights(rand(g, 5, 130), 1e-6, False), rand(g, 5), 130,
                            torch.bfloat16)),
    ("linear_train", lambda g: (rand(g, 2, 3, 130).requires_grad_(),
                                rand(g, 5, 130).requires_grad_(), rand(g, 5).requires_grad_(), 1e-6,
                                True, False)),
    ("unpack_weights", lambda g: (ops.quantize_weights(rand(g, 5, 33), 1e-6, False)[1], 33)),
    ("quantize_acts", lambda g: (rand(g, 3, 130), 1e-6, True)),
    ("gemm_acc", lambda g: (ops.quantize_acts(rand(g, 3, 130), 1e-6, True)[0],
                            ops.quantize_weights(rand(g, 5, 130), 1e-6, False)[1], 130)),
    ("linear", lambda g: (rand(g, 2, 3, 130), *ops.quantize_weights(rand(g, 5, 130), 1e-6, False),
                          rand(g, 5), 1e-6, 130, True)),
    ("linear_group2", lambda g: (rand(g, 2, 3, 130),
                                 *ops.quantize_weights(rand(g, 5, 130), 1e-6, False), rand(g, 5),
                                 *ops.quantize_weights(rand(g, 9, 130), 1e-6, True), None,
                                 1e-6, 130, True)),
    ("linear_group3", lambda g: (rand(g, 3, 130),
                                 *ops.quantize_weights(rand(g, 5, 130), 1e-6, False), None,
                                 *ops.quantize_weights(rand(g, 1, 130), 1e-6, True), rand(g, 1),
                                 *ops.quantize_weights(rand(g, 7, 130), 1e-6, True), None,
                                 1e-6, 130, False)),
])
def test_opcheck(gen, op, args):
    torch.library.opcheck(getattr(torch.ops.bitlinear, op).default, args(gen))


_ERRORS_SCRIPT = r"""
import re, sys, torch, bitlinear
from bitlinear import ops
s, p = ops.quantize_weights(torch.randn(4, 10), 1e-6, False)
x = torch.randn(3, 10)
cases = [
    ("in_features", lambda: torch.ops.bitlinear.linear(torch.randn(3, 11), s, p, None, 1e-6, 10, True)),
    ("w_packed", lambda: torch.ops.bitlinear.linear(x, s, p[:, :16].contiguous(), None, 1e-6, 10, True)),
    ("w_scale", lambda: torch.ops.bitlinear.linear(x, torch.ones(3), p, None, 1e-6, 10, True)),
    ("bias", lambda: torch.ops.bitlinear.linear(x, s, p, torch.ones(5), 1e-6, 10, True)),
    ("float32, float16 or bfloat16",
     lambda: torch.ops.bitlinear.linear(x.to(torch.int32), s, p, None, 1e-6, 10, True)),
    ("float32, float16 or bfloat16", lambda: torch.ops.bitlinear.quantize_weights(
        torch.ones(2, 3, dtype=torch.int32), 1e-6, False)),
    ("x_rowsum", lambda: torch.ops.bitlinear.linear_q(
        *ops.quantize_acts(x, 1e-6, True)[:2], torch.ones(2, dtype=torch.int32), s, p, None, 10,
        torch.float32)),
]
for want, fn in cases:
    try:
        fn()
    except RuntimeError as e:
        assert re.search(want, str(e)), (want, str(e))
    else:
        sys.exit(f"no error for {want}")
print("ok")
"""


def test_native_op_errors_name_the_problem():
    """Errors raised inside the native op reach Python as RuntimeErrors naming the problem.
    In a subprocess: if the C++ exception cannot cross into torch (seen once on a GPU host whose
    compiler differs from torch's), this test fails instead of taking the whole run down."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", _ERRORS_SCRIPT], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-2000:])


@pytest.mark.parametrize("pattern", ["ff", "random", "every_byte"])
@pytest.mark.parametrize("M,K,N", [(1, 301, 7), (2, 2101, 5), (3, 129, 3), (5, 4229, 9),
                                   (17, 1000, 13), (1, 4096, 33)])
def test_invalid_codes_read_as_plus_one(isa, gen, pattern, M, K, N):
    """Code 3 is not part of the format; the raw ops read it as code 2 (weight +1) on every path,
    equal to the reference bit for bit, without int16 overflow (AVX2's vpmaddubsw sums)."""
    rb = ref.packed_row_bytes(K)
    if pattern == "ff":
        p = torch.full((N, rb), 0xFF, dtype=torch.uint8)
    elif pattern == "random":
        p = torch.randint(0, 256, (N, rb), generator=gen, dtype=torch.uint8)
    else:
        p = (torch.arange(N * rb) * 37 % 256).to(torch.uint8).reshape(N, rb)
    wq = torch.ops.bitlinear.unpack_weights(p, K, None)
    codes = torch.stack([(p >> (2 * s)) & 3 for s in range(4)], 1)  # [N, s, bytes]
    codes = codes.reshape(N, 4, -1, 32).permute(0, 2, 1, 3).reshape(N, -1)[:, :K]
    assert torch.equal(wq, codes.clamp(max=2).to(torch.int8) - 1)
    assert torch.equal(wq, ref.unpack_weights(p, K))
    assert torch.equal(torch.ops.bitlinear.unpack_weights(p, K, torch.float32), wq.float())
    for xmode in ("random", -128, 127):
        xq = (torch.randint(-128, 128, (M, ref.padded_k(K)), generator=gen, dtype=torch.int8)
              if xmode == "random" else torch.full((M, ref.padded_k(K)), xmode, dtype=torch.int8))
        xq[:, K:] = 0
        acc = torch.ops.bitlinear.gemm_acc(xq, p, K)
        assert torch.equal(acc, ref.gemm_acc(xq, p, K)), xmode
        if pattern == "ff":  # weight +1 everywhere
            assert torch.equal(acc, xq.sum(1, dtype=torch.int32)[:, None].expand(M, N))
    s = torch.rand(N, generator=gen) + 0.01
    b = rand(gen, N)
    for x in (rand(gen, M, K), torch.full((M, K), -1.0), torch.ones(M, K)):
        y = torch.ops.bitlinear.linear(x, s, p, b, 1e-6, K, True)
        assert torch.equal(y, ref.linear(x, s, p, b, 1e-6, K, True))
