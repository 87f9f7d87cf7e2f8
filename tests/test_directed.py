"""Directed cases that reach the rounding ties and the conversion edges, through the native ops
(torch.ops.bitlinear.*) on every CPU path this machine runs, against bitlinear.reference AND an
expectation built here from the definition (the same cases as tests/c/test_directed.c):

  weights  w = +-0.5 s_w and +-1.5 s_w exactly (round half to even: 0 and +-2 -> clamp +-1), and
           one float32 ulp either side;
  acts     x = (n + 0.5) s_x exactly (s_x a power of two), and one ulp of x's dtype either side;
  outputs  y exactly halfway between two float16 / bfloat16 values (normal and subnormal), and the
           conversion edges: f32 -> f16 overflow to Inf (65520), FLT_MAX -> bf16, Inf biases,
           quiet and signalling NaN biases (outputs must be quiet NaNs), a NaN input row.

Shapes put the cases in the vector bodies and in the scalar tails (K and N not multiples of the
vector / tile widths), M = 1 (GEMV tiles) and M > 1."""
import pytest
import torch

import bitlinear
from bitlinear import reference as ref

pytestmark = pytest.mark.skipif(not bitlinear.HAS_BITLINEAR, reason="native extension not built")

ISAS = bitlinear.available_cpu_isas() if bitlinear.HAS_BITLINEAR else []
HALF = [torch.float16, torch.bfloat16]
OPS = torch.ops.bitlinear


@pytest.fixture(params=ISAS)
def isa(request):
    with bitlinear.use_cpu_isa(request.param):
        yield request.param


def rne(q: torch.Tensor) -> torch.Tensor:
    """Round half to even of exact float64 values, from floor (independent of torch.round)."""
    f = torch.floor(q)
    frac = q - f
    even = torch.remainder(f, 2) == 0
    return torch.where(frac > 0.5, f + 1, torch.where(frac < 0.5, f, torch.where(even, f, f + 1)))


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)


def assert_same(y: torch.Tensor, want: torch.Tensor, what: str):
    """Equal bits where not NaN, NaN where NaN (payloads may differ between paths)."""
    assert y.dtype == want.dtype and y.shape == want.shape, what
    nan = torch.isnan(want.float())
    assert torch.equal(torch.isnan(y.float()), nan), f"{what}: NaN positions differ"
    ok = bits(y)[~nan] == bits(want)[~nan]
    assert bool(ok.all()), f"{what}: {int((~ok).sum())} values differ, first " \
        f"{y[~nan][~ok][:4].tolist()} vs {want[~nan][~ok][:4].tolist()}"


def is_quiet_nan(y: torch.Tensor) -> torch.Tensor:
    b = bits(y).to(torch.int64) & (0xFFFFFFFF if y.dtype == torch.float32 else 0xFFFF)
    exp, quiet = {torch.float32: (0x7F800000, 0x400000), torch.float16: (0x7C00, 0x200),
                  torch.bfloat16: (0x7F80, 0x40)}[y.dtype]
    return ((b & exp) == exp) & ((b & quiet) != 0)


def ulp_step(v: torch.Tensor, dtype, direction: torch.Tensor) -> torch.Tensor:
    """The neighbour of each (nonzero, finite) value of dtype away from zero (+1) or toward it
    (-1): the bit pattern plus or minus one."""
    t = v.to(dtype)
    b = bits(t)
    return (b + direction.to(b.dtype)).view(dtype)


# ---------------------------------------------------------------------------- weights
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("K", [1, 2, 3, 31, 33, 127, 128, 129, 257, 1000])
def test_weight_ties(isa, gen, dtype, per_channel, K):
    """Pairs (a, 4 - a) 2^e with random signs (an odd K ends with 2^(e+1)): every row's mean |w| is
    exactly 2^(e+1), so s_w = 2^(e+1) and w / s_w hits +-0.5, +-1.5, +-1, 0, 2 (and for float32
    0.5 + 2^-23, 1.5 - 2^-23, 0.5 - 2^-23, 1.5 + 2^-23)."""
    N, e = 5, -7
    lo = [1.0, 1.0, 0.0] + ([1.0 + 2.0**-22, 1.0 - 2.0**-22] if dtype == torch.float32 else [])
    w = torch.empty(N, K, dtype=torch.float64)
    for n in range(N):
        for k in range(K):
            a = lo[(n + k // 2) % len(lo)]
            w[n, k] = 2.0 if (k ^ 1) >= K else (4.0 - a if k & 1 else a)
    signs = torch.randint(0, 2, (N, K), generator=gen) * 2 - 1
    w = (w * signs * 2.0**e).to(dtype)
    s_want = 2.0 ** (e + 1)
    q = w.to(torch.float64) / s_want  # exact
    want = torch.where(q.abs() > 0.5, q.sign(), torch.zeros_like(q)).to(torch.int8)
    if K >= 2:
        assert bool(((q.abs() == 0.5) | (q.abs() == 1.5)).any())  # the ties are there
    s, p = OPS.quantize_weights(w, 1e-5, per_channel)
    rs, rp = ref.quantize_weights(w, 1e-5, per_channel)
    assert torch.equal(s, rs) and bool((s == s_want).all())
    assert torch.equal(p, rp)
    assert torch.equal(ref.unpack_weights(p, K), want)
    assert torch.equal(OPS.unpack_weights(p, K, None), want)


# ---------------------------------------------------------------------------- activations
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("near", [False, True])
@pytest.mark.parametrize("K", [2, 7, 8, 9, 31, 32, 33, 64, 65, 129, 300])
def test_activation_ties(isa, gen, dtype, per_token, near, K):
    """x = (n + 0.5) 2^e with one +-127 2^e per row: s_x = 2^e (per token and per tensor), so
    x / s_x = n + 0.5 exactly; near: one ulp of x's dtype away from or toward zero."""
    M, e = 3, -3
    n = torch.randint(-127, 126, (M, K), generator=gen).to(torch.float64)
    x = ((n + 0.5) * 2.0**e).to(dtype)
    if near:
        step = torch.randint(-1, 2, (M, K), generator=gen)
        x = ulp_step(x.float(), dtype, step) if dtype != torch.float32 else \
            ulp_step(x, torch.float32, step)
    for m in range(M):
        x[m, (m * 37 + 5) % K] = (127.0 if m % 2 == 0 else -127.0) * 2.0**e
    s_want = 2.0**e
    q = x.to(torch.float64) / s_want
    if not near and K >= 8:
        assert bool((q - torch.floor(q) == 0.5).any())
    want = torch.zeros(M, ref.padded_k(K), dtype=torch.int8)
    want[:, :K] = rne(q).clamp(-128, 127).to(torch.int8)
    xq, sx, rs = OPS.quantize_acts(x, 1e-5, per_token)
    rxq, rsx, rrs = ref.quantize_acts(x, 1e-5, per_token)
    assert torch.equal(xq, rxq) and torch.equal(sx, rsx) and torch.equal(rs, rrs)
    assert torch.equal(xq, want)
    assert bool((sx == s_want).all())
    assert torch.equal(rs, want.sum(1, dtype=torch.int32))


# ---------------------------------------------------------------------------- epilogue
def tie_targets(gen, dtype, N, E=None):
    """N values halfway between neighbouring values of dtype (float16: normal or subnormal), one
    binade 2^E each (or all in E), and the spacing res of each (y = a multiple of res / 8 plus
    bias is exact near them)."""
    if dtype == torch.float16:
        Es = torch.randint(-24, 16, (N,), generator=gen) if E is None else torch.full((N,), E)
        m = torch.randint(0, 1024, (N,), generator=gen).to(torch.float64)
        sub = Es < -14
        res = torch.where(sub, torch.full((N,), 2.0**-25, dtype=torch.float64),
                          torch.pow(2.0, (Es - 11).to(torch.float64)))
        T = torch.where(sub, (2 * m + 1) * res, (2048 + 2 * m + 1) * res)
    elif dtype == torch.bfloat16:
        Es = torch.randint(-40, 41, (N,), generator=gen) if E is None else torch.full((N,), E)
        m = torch.randint(0, 128, (N,), generator=gen).to(torch.float64)
        res = torch.pow(2.0, (Es - 8).to(torch.float64))
        T = (256 + 2 * m + 1) * res
    else:
        Es = torch.randint(-40, 41, (N,), generator=gen) if E is None else torch.full((N,), E)
        m = torch.randint(0, 2**19, (N,), generator=gen).to(torch.float64)
        res = torch.pow(2.0, (Es - 19).to(torch.float64))
        T = (2**19 + m) * res
    signs = torch.randint(0, 2, (N,), generator=gen) * 2 - 1
    return (T * signs).to(torch.float32), res


def _floats(bit_patterns):
    return torch.tensor([b - (1 << 32) if b >= 1 << 31 else b for b in bit_patterns],
                        dtype=torch.int32).view(torch.float32)


# 65520 (f16: Inf), 65504 + 15.99 (f16: 65504), -65520, 1e6, FLT_MAX, the bf16 midpoint at the
# top (-Inf), +-Inf, quiet NaN, signalling NaNs, 2^-25 and 1.5 2^-24 (f16 subnormal ties), 2^-149
EDGES = _floats([0x477FF000, 0x477FEFFF, 0xC77FF000, 0x49742400, 0x7F7FFFFF, 0xFF7F8000,
                 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFA00000, 0x33000000,
                 0x33C00000, 0x00000001])


def is_tie(v: torch.Tensor, dtype) -> torch.Tensor:
    """v (float32) is halfway between two values of dtype: its float32 neighbours round apart."""
    lo = torch.nextafter(v, torch.zeros_like(v)).to(dtype).float()
    hi = torch.nextafter(v, torch.full_like(v, float("inf")) * v.sign()).to(dtype).float()
    return (lo != hi) & torch.isfinite(v) & (v != 0)


def epilogue_case(gen, out_dtype, M, N, K, per_channel, edge):
    """Integer x (amax 127: s_x = 1) with identical rows, random ternary weights, weight scales
    that make acc s_w exact, biases that put y on the targets. -> (x, w_scale, w_packed, bias,
    y_want (float32), n_ties)."""
    xi = torch.randint(-127, 128, (1, K), generator=gen).to(torch.float32)
    xi[0, 1 if K > 1 else 0] = 127.0
    x = xi.repeat(M, 1)
    if edge and M > 1:
        x[M - 1, K // 2] = float("nan")
    w_packed = ref.pack_ternary(torch.randint(-1, 2, (N, K), generator=gen))
    T, res = tie_targets(gen, out_dtype, N, None if per_channel else int(torch.randint(-8, 9, (1,), generator=gen)))
    is_edge = torch.zeros(N, dtype=torch.bool)
    if edge:
        is_edge = torch.randint(0, 3, (N,), generator=gen) == 0
        T = torch.where(is_edge, EDGES[torch.randint(0, len(EDGES), (N,), generator=gen)], T)
    w_scale = (res / 8).to(torch.float32) if per_channel else (res[:1] / 8).to(torch.float32)
    if edge and per_channel and N > 3:
        w_scale[2], w_scale[3] = float("nan"), float("inf")
        is_edge[2] = is_edge[3] = True
    xq, sx, _ = ref.quantize_acts(x[:1], 1e-5, True)
    assert float(sx[0]) == 1.0
    acc = ref.gemm_acc(xq, w_packed, K)[0]
    a = acc.to(torch.float32) * (sx[0] * w_scale)
    bias = torch.where(torch.isfinite(T), T - a, T)
    y = a + bias
    assert torch.equal(bits(y)[~is_edge], bits(T)[~is_edge])  # the targets are hit exactly
    want = y.reshape(1, N).repeat(M, 1)
    if edge and M > 1:
        want[M - 1] = float("nan")
    return x, w_scale, w_packed, bias.contiguous(), want, int(is_tie(y[~is_edge], out_dtype).sum())


def expected_out(want32: torch.Tensor, dtype) -> torch.Tensor:
    """float32 -> dtype, round to nearest even (torch's conversion; NaN stays NaN)."""
    return want32.to(dtype)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M,N,K", [(1, 8, 32), (1, 13, 100), (2, 21, 129), (5, 67, 300),
                                   (2, 8, 300), (5, 13, 32)])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("edge", [False, True])
def test_output_ties_and_edges(isa, gen, out_dtype, M, N, K, per_channel, edge):
    """y = acc s_x s_w + bias placed exactly halfway between float16 / bfloat16 neighbours (or on
    a conversion edge): linear_q in every output dtype, and linear with x in that dtype."""
    x, w_scale, w_packed, bias, want32, ties = epilogue_case(gen, out_dtype, M, N, K, per_channel,
                                                             edge)
    if out_dtype != torch.float32 and not edge:
        assert ties == N  # every target is a tie
    want = expected_out(want32, out_dtype)
    xq, sx, rs = OPS.quantize_acts(x, 1e-5, True)
    y = OPS.linear_q(xq, sx, rs, w_scale, w_packed, bias, K, out_dtype)
    yr = ref.linear_q(xq, sx, w_scale, w_packed, bias, K, out_dtype)
    assert_same(y, yr, "linear_q vs reference")
    assert_same(y, want, "linear_q vs expected")
    assert bool(is_quiet_nan(y)[torch.isnan(y.float())].all()), "a NaN output is not quiet"
    xd = x.to(out_dtype)  # integers and NaN: exact in every dtype
    y2 = OPS.linear(xd, w_scale, w_packed, bias, 1e-5, K, True)
    assert_same(y2, ref.linear(xd, w_scale, w_packed, bias, 1e-5, K, True), "linear vs reference")
    assert_same(y2, want, "linear vs expected")
    assert bool(is_quiet_nan(y2)[torch.isnan(y2.float())].all()), "a NaN output is not quiet"


@pytest.mark.parametrize("out_dtype", HALF)
def test_conversion_edges_exact(isa, out_dtype):
    """The named edges, one per column of one row (N = 16: the vector body plus a tail)."""
    K, N = 40, 16
    x = torch.zeros(1, K)
    x[0, 0] = 127.0  # s_x = 1, x_q = (127, 0, ...)
    w_packed = ref.pack_ternary(torch.zeros(N, K, dtype=torch.int64))  # acc = 0: y = bias
    w_scale = torch.ones(1)
    bias = torch.cat([EDGES, torch.tensor([65504.0, -65504.0])])[:N].contiguous()
    xq, sx, rs = OPS.quantize_acts(x, 1e-5, True)
    y = OPS.linear_q(xq, sx, rs, w_scale, w_packed, bias, K, out_dtype)
    want = {torch.float16: [float("inf"), 65504.0, float("-inf"), float("inf")],
            torch.bfloat16: [65536.0, 65536.0, -65536.0, 999424.0]}[out_dtype]
    assert y[0, :4].float().tolist() == want
    assert float(y[0, 4]) == float("inf")  # FLT_MAX
    assert float(y[0, 5]) == float("-inf")  # -(bf16 top midpoint): RNE goes up to -Inf
    assert y[0, 6].item() == float("inf") and y[0, 7].item() == float("-inf")
    assert bool(is_quiet_nan(y[0, 8:11]).all())  # quiet and signalling NaN biases: quiet NaN
    if out_dtype == torch.float16:  # subnormal ties: 2^-25 -> 0, 1.5 2^-24 -> 2^-23, 2^-149 -> 0
        assert bits(y[0, 11:14]).tolist() == [0, 2, 0]
    assert_same(y, ref.linear_q(xq, sx, w_scale, w_packed, bias, K, out_dtype), "vs reference")
