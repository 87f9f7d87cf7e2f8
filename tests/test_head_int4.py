"""The int4 grouped output head (bitlinear/head.py: Int4Head, Int4Embedding, the "q4" format):
quantization, the C kernel against the plain C path and the PyTorch reference, threads, NaN,
torch.compile, autograd, ties, state_dict, writes through every route (no cached copy),
convert(head="int4"), convert_bitnet, save_pretrained / from_pretrained, accuracy."""
import copy
import ctypes
import ctypes.util
import io

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bitlinear import _ext
from bitlinear import _head_hf as HF
from bitlinear import _head_kernels as HK
from bitlinear import head as H
from bitlinear import isa
from bitlinear import reference as ref
from bitlinear.convert import convert, deploy, load_deployed, save_deployed, size_report
from bitlinear.head import (Int4Embedding, Int4Head, Int8Head, dequantize_groups_int4,
                            quantize_groups_int4, quantize_head)
from conftest import head_llama, rand

try:
    import transformers  # noqa: F401
    HAS_TF = True
except ImportError:  # pragma: no cover
    HAS_TF = False
needs_tf = pytest.mark.skipif(not HAS_TF, reason="transformers is not installed")

HAS_Q4 = getattr(_ext._native, "q4_linear_cpu", None) is not None
needs_q4 = pytest.mark.skipif(not HAS_Q4, reason="the native int4 kernel (_bitlinear.q4_linear_cpu) "
                                                 "is not built")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
KS, NS, MS = (1, 3, 7, 129, 1000), (1, 3, 7, 129), (1, 3, 17)


def _linear(gen, K, N, bias=False, scale=0.05):
    lin = nn.Linear(K, N, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(rand(gen, N, K, scale=scale))
        if bias:
            lin.bias.copy_(rand(gen, N))
    return lin


def _groups(w, G):
    """float32 [N, Kg, G] zero padded."""
    N, K = w.shape
    Kg = -(-K // G)
    return F.pad(w.float(), (0, Kg * G - K)).reshape(N, Kg, G)


# ---------------------------------------------------------------------------- (a) the format
@pytest.mark.parametrize("G", [64, 128, 256])
def test_quantize_dequantize_properties(gen, G):
    for K in KS:
        for N in NS:
            w = rand(gen, N, K)
            if N > 2 and K > 2:
                w[1] = 0  # an all-zero row: scales 0, codes 0
                w[2, :: 2] = w[2, 0]  # ties of |w|: the first one decides
            q4, d = quantize_groups_int4(w, G)
            Kg = -(-K // G)
            assert q4.dtype == torch.uint8 and q4.shape == (N, Kg * G // 2) and q4.is_contiguous()
            assert d.dtype == torch.float32 and d.shape == (N, Kg)
            codes = ref.q4_unpack(q4).reshape(N, Kg * G)
            assert int(codes.min()) >= -8 and int(codes.max()) <= 7
            # padding k >= K: code 0, i.e. nibble 8
            assert not codes[:, K:].any()
            nib = torch.cat((q4 & 15, q4 >> 4), 1)
            assert int((nib == 8).sum()) >= N * (Kg * G - K)
            wg = _groups(w, G)
            m = wg.gather(2, wg.abs().argmax(2, keepdim=True))[..., 0]
            torch.testing.assert_close(d, torch.where(m == 0, 0.0, m / -8), rtol=0, atol=0)
            deq = dequantize_groups_int4(q4, d, K, G)
            assert deq.dtype == torch.float32 and deq.shape == (N, K)
            dg = _groups(deq, G)
            # the largest |w| of each group is exact (code -8)
            idx = wg.abs().argmax(2, keepdim=True)
            assert torch.equal(dg.gather(2, idx), wg.gather(2, idx))
            assert bool((codes.reshape(N, Kg, G).gather(2, idx)[m != 0] == -8).all())
            err = (dg - wg).abs()
            ad = d.abs()[..., None]
            ratio = wg / torch.where(d == 0, 1.0, d)[..., None]
            inner = ratio <= 7.5  # code 7 covers up to 7.5 |d| on the side opposite to m
            assert bool((err[inner.expand_as(err)] <= (ad / 2 * (1 + 1e-6)).expand_as(err)[
                inner.expand_as(err)]).all())
            assert bool((err <= ad * (1 + 1e-6)).all())
            if N > 2 and K > 2:
                assert not d[1].any() and not codes[1].any()


def test_quantize_rule_by_hand():
    """A group with +2 before -2: m = +2 (the first), d = -0.25, -2 -> code 8 clamped to 7
    (error |d|); the rest rounds half to even."""
    w = torch.zeros(1, 64)
    w[0, :6] = torch.tensor([2.0, -2.0, 0.125, 0.375, -0.125, 1.0])
    q4, d = quantize_groups_int4(w)
    assert d.tolist() == [[-0.25]]
    codes = ref.q4_unpack(q4)[0]
    assert codes[:6].tolist() == [-8, 7, 0, -2, 0, -4]  # 0.125/-0.25 = -0.5 -> -0 (even)
    assert q4[0, 0].item() == (-8 + 8) | ((0 + 8) << 4)  # byte 0: k = 0 low, k = 32 high
    w2 = torch.zeros(1, 64)
    w2[0, 33] = 1.0  # the high nibble of byte 1
    q4, d = quantize_groups_int4(w2)
    assert q4[0, 1].item() == 8 | (0 << 4) and d.item() == -0.125


def test_pack_unpack_every_byte():
    b = torch.arange(256, dtype=torch.uint8).reshape(4, 64)
    codes = ref.q4_unpack(b)
    assert codes.shape == (4, 128) and int(codes.min()) == -8 and int(codes.max()) == 7
    assert torch.equal(ref.q4_pack(codes), b)


def test_quantize_refuses_bad_input():
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_groups_int4(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_groups_int4(torch.tensor([[float("inf"), 1.0]]))
    for g in (0, 32, 100, 2048, -64, True, 64.0, None):
        with pytest.raises(ValueError, match="group_size"):
            quantize_groups_int4(torch.ones(2, 3), g)
    for bad in (torch.ones(3), torch.ones(2, 2, 2), torch.ones(2, 3, dtype=torch.int32), [[1.0]]):
        with pytest.raises(TypeError, match="2-D float"):
            quantize_groups_int4(bad)
    with pytest.raises(ValueError, match="no columns"):
        quantize_groups_int4(torch.ones(2, 0))
    with pytest.raises(ValueError, match="do not fit"):
        dequantize_groups_int4(torch.zeros(2, 32, dtype=torch.uint8), torch.zeros(2, 1), 65, 64)
    with pytest.raises(ValueError, match="group_size"):
        Int4Head(8, 8, group_size=96)


def test_parse_head():
    assert H.parse_head(None) == (None, 0) and H.parse_head("int8") == ("int8", 0)
    assert H.parse_head("int4") == ("int4", 64) and H.parse_head("int4:128") == ("int4", 128)
    assert H.parse_head("int4:1024") == ("int4", 1024)
    for bad in ("int4:0", "int4:96", "int4:2048", "int4:", "int4:064", "int4:x", "int2", "INT4",
                "int4:-64", 4):
        with pytest.raises(ValueError, match="int4:<G>"):
            H.parse_head(bad)


# ---------------------------------------------------------------------------- reference pieces
def _libm_fmaf():
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    f = ctypes.CDLL(name).fmaf
    f.restype = ctypes.c_float
    f.argtypes = [ctypes.c_float] * 3
    return f


def test_reference_fma_emulation_is_fmaf(gen):
    """reference._fma_f32 against the C library's fmaf, on values built to round near ties."""
    fmaf = _libm_fmaf()
    if fmaf is None:
        pytest.skip("no libm")
    n = 4000
    p = torch.randint(-(2 ** 23), 2 ** 23, (n,), generator=gen).to(torch.float64)
    s = (torch.randn(n, generator=gen) * 10.0 ** torch.randint(-30, 3, (n,), generator=gen)
         ).to(torch.float32)
    c = torch.randn(n, generator=gen).to(torch.float32) * (p.abs().float() * s.abs())
    c[::3] = -(p[::3] * s[::3].double()).to(torch.float32)  # near cancellation
    k = len(c[1::5])
    c[1::5] = torch.ldexp(torch.ones(k), torch.randint(-20, 20, (k,), generator=gen)).float()
    # double-rounding traps: 6700417 * 641 = 2^32 + 1, so p * s = 2^-24 + 2^-56 (and signs):
    # 1 + that rounds to the float32 midpoint 1 + 2^-24 in float64, then to 1.0 (even), where
    # fmaf gives 1 + 2^-23
    trap_p = torch.tensor([6700417.0, -6700417.0, 6700417.0, 6700417.0], dtype=torch.float64)
    trap_s = torch.tensor([641 * 2.0 ** -56, 641 * 2.0 ** -56, -641 * 2.0 ** -56, 641 * 2.0 ** -55])
    trap_c = torch.tensor([1.0, -1.0, -1.0, 2.0])
    p, s, c = torch.cat((p, trap_p)), torch.cat((s, trap_s)), torch.cat((c, trap_c))
    got = ref._fma_f32(p * s.double(), c)
    want = torch.tensor([fmaf(float(a), float(b), float(cc)) for a, b, cc in zip(p, s, c)],
                        dtype=torch.float32)
    assert torch.equal(got, want)
    # the plain float64 sum gets the traps wrong: the test can tell the difference
    plain = (p * s.double() + c.double()).to(torch.float32)
    assert not torch.equal(plain[-4:], want[-4:])


def test_reference_matches_float_math(gen):
    """q4_head_linear_ref = the quantized activations times the dequantized weights (float64),
    to float32 rounding."""
    for K, N, G in ((129, 7, 64), (1000, 3, 256), (7, 129, 128)):
        lin = _linear(gen, K, N, bias=True)
        h = Int4Head.from_linear(lin, G)
        x = rand(gen, 5, K)
        y = ref.q4_head_linear_ref(x, h.weight, h.scale, h.bias, G, K, ref.MIN_EPS)
        xq, sx, _ = ref.quantize_acts(x, ref.MIN_EPS, True)
        want = (xq[:, :K].double() @ h.dequantized_weight().double().t()) * sx.double()[:, None] \
            + h.bias.double()
        torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


# ---------------------------------------------------------------------------- (b) the kernel
def _head(gen, K, N, G, bias):
    h = Int4Head.from_linear(_linear(gen, K, N, bias=bias), G)
    if K > G and N > 1:
        with torch.no_grad():
            h.scale[0, 0] = 0  # an all-zero group's scale
    return h


@needs_q4
@pytest.mark.parametrize("G", [64, 128, 256])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_every_isa_equals_plain_c_and_reference(gen, dtype, G):
    isas = isa.available_cpu_isas()
    exact = total = 0
    worst = 0.0
    for K in KS:
        for N in NS:
            h = _head(gen, K, N, G, bias=bool((K + N) % 2))
            for M in MS:
                lead = (2, M) if M == 3 else (M,)
                x = rand(gen, *lead, K, dtype=dtype)
                with torch.no_grad(), isa.use_cpu_isa("ref"):
                    y_ref = h(x)
                assert y_ref.dtype == dtype and y_ref.shape == (*lead, N)
                for name in isas:
                    with torch.no_grad(), isa.use_cpu_isa(name):
                        y = h(x)
                    assert torch.equal(y, y_ref), (name, K, N, M, dtype, G)
                yr = ref.q4_head_linear_ref(x, h.weight, h.scale, h.bias, G, K, ref.MIN_EPS)
                total += 1
                exact += bool(torch.equal(yr, y_ref))
                d = (yr.float() - y_ref.float()).abs().max().item()
                mag = y_ref.float().abs().max().item() + 1e-30
                worst = max(worst, d / mag)
    print(f"\n{dtype} G={G}: reference equal bit for bit in {exact}/{total} cases; worst relative "
          f"difference {worst:.2e}")
    # the reference's fma emulation is exact (test_reference_fma_emulation_is_fmaf): equal bits
    assert exact == total and worst == 0


@needs_q4
def test_kernel_no_bias_big_k_and_non_contiguous_input(gen):
    h = _head(gen, 2560, 300, 64, bias=False)
    x = rand(gen, 2560, 4).t()  # non-contiguous
    with torch.no_grad():
        y = h(x)
    assert torch.equal(y, ref.q4_head_linear_ref(x, h.weight, h.scale, None, 64, 2560,
                                                 ref.MIN_EPS))
    with torch.no_grad():
        assert torch.equal(h(x.contiguous()), y)
        assert torch.equal(h(torch._neg_view(-x.contiguous())), y)  # a lazily negated view
        assert h(torch.empty(0, 2560)).shape == (0, 300)
        assert h(torch.empty(2, 0, 2560)).shape == (2, 0, 300)


@needs_q4
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_tiny_activations_use_the_smallest_eps(gen, dtype):
    """Per-token quantization is scale free down to the smallest eps (127 * FLT_MIN): x * 2^-100
    (amax ~1e-30) gives exactly the same codes and y * 2^-100; a larger eps (e.g. 1e-6) would
    zero them."""
    h = _head(gen, 300, 70, 128, bias=False)
    x = rand(gen, 4, 300, dtype=dtype)
    with torch.no_grad():
        y = h(x)
        y_small = h(x * 2.0 ** -100)
    assert y.abs().max() > 0 and torch.equal(y_small, y * 2.0 ** -100)
    assert torch.equal(y_small, ref.q4_head_linear_ref(x * 2.0 ** -100, h.weight, h.scale, None,
                                                       128, 300, ref.MIN_EPS))
    assert not torch.equal(y_small, ref.q4_head_linear_ref(x * 2.0 ** -100, h.weight, h.scale,
                                                           None, 128, 300, 1e-6))


@needs_q4
def test_threads_one_and_two_identical(gen):
    h = _head(gen, 1000, 3001, 128, bias=True)
    prev = torch.get_num_threads()
    try:
        for M in (1, 5):
            x = rand(gen, M, 1000)
            outs = []
            for t in (1, 2, 3):
                torch.set_num_threads(t)
                with torch.no_grad():
                    outs.append(h(x))
            assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("native", [True, False], ids=["native", "fallback"])
def test_nan_row_and_rows_independent(gen, native, monkeypatch):
    if native and not HAS_Q4:
        pytest.skip("the native int4 kernel is not built")
    if not native:
        monkeypatch.setattr(HK, "_q4_native", lambda: None)
    h = _head(gen, 129, 50, 64, bias=True)
    x = rand(gen, 4, 129)
    # the kernel: a row's output does not depend on the rest of the batch (bit for bit);
    # the fallback's float GEMM may round differently by batch size
    same = torch.equal if native else (lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-5))
    with torch.no_grad():
        y = h(x)
        for i in range(4):
            assert same(h(x[i:i + 1]), y[i:i + 1])
        xn = x.clone()
        xn[1, 5] = float("nan")
        bad = [1]
        if native:
            xn[2, 0] = float("inf")
            bad.append(2)
        yn = h(xn)
        for i in range(4):
            if i in bad:
                assert bool(yn[i].isnan().all()), i
            else:
                assert same(yn[i], y[i])


def test_fallback_is_dequantized_linear(gen, monkeypatch):
    """Without the kernel (or off the CPU): F.linear with the dequantized weights, in chunks of
    rows (the chunking shown by a small chunk size)."""
    monkeypatch.setattr(HK, "_q4_native", lambda: None)
    monkeypatch.setattr(HK, "_DEQUANT_ROWS", 16)
    for dtype in DTYPES:
        h = _head(gen, 129, 50, 128, bias=True)
        x = rand(gen, 3, 129, dtype=dtype)
        with torch.no_grad():
            y = h(x)
        want = F.linear(x.float(), h.dequantized_weight(), h.bias).to(dtype)
        assert y.dtype == dtype
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert h(torch.randn(2, 129, dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------------------- (e) (f) compile, grad
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_compile_fullgraph_equals_eager(gen, backend, dtype):
    h = Int4Head.from_linear(_linear(gen, 200, 77, bias=True), 128)
    x = rand(gen, 3, 200, dtype=dtype)
    torch._dynamo.reset()
    compiled = torch.compile(h, backend=backend, fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x), h(x))


def test_custom_op_opcheck(gen):
    h = Int4Head.from_linear(_linear(gen, 130, 9, bias=True), 64)
    for x in (rand(gen, 3, 130), rand(gen, 2, 2, 130, dtype=torch.bfloat16)):
        torch.library.opcheck(torch.ops.bitlinear.int4_head_linear.default,
                              (x.requires_grad_(), h.weight, h.scale, h.bias, 64, 130))
        torch.library.opcheck(torch.ops.bitlinear.int4_head_linear.default,
                              (x.detach(), h.weight, h.scale, None, 64, 130))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gradient_reaches_input(gen, dtype):
    h = Int4Head.from_linear(_linear(gen, 129, 40, bias=True), 64)
    x = rand(gen, 2, 3, 129, dtype=dtype).requires_grad_()
    y = h(x)
    with torch.no_grad():
        assert torch.equal(y.detach(), h(x.detach()))  # the op computes the same bits
    g = rand(gen, 2, 3, 40, dtype=dtype)
    y.backward(g)
    assert x.grad.dtype == dtype
    want = (g.float() @ h.dequantized_weight()).to(dtype)
    torch.testing.assert_close(x.grad, want, rtol=0, atol=0)
    assert h.weight.grad is None and h.scale.grad is None


# ---------------------------------------------------------------------------- (g) ties, state
class TiedLM(nn.Module):
    def __init__(self, V=300, D=130):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.proj = nn.Linear(D, D)
        self.lm_head = nn.Linear(D, V, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        return self.lm_head(torch.relu(self.proj(self.embed(ids))))


@pytest.mark.parametrize("head,G", [("int4", 64), ("int4:128", 128)])
def test_tied_embedding_shares_the_int4_table(gen, tmp_path, head, G):
    torch.manual_seed(0)
    model = TiedLM()
    w_float = model.embed.weight.detach().clone()
    deploy(convert(model, head=head))
    assert isinstance(model.embed, Int4Embedding) and isinstance(model.lm_head, Int4Head)
    assert model.lm_head.group_size == model.embed.group_size == G
    assert model.lm_head.tied and model.lm_head.weight is model.embed.weight
    assert model.lm_head.scale is model.embed.scale
    sd = model.state_dict()
    assert "lm_head.weight" not in sd and "embed.weight" in sd and "embed.scale" in sd
    ids = torch.randint(0, 300, (2, 7), generator=gen)
    with torch.no_grad():
        emb = model.embed(ids)
        deq = dequantize_groups_int4(model.embed.weight, model.embed.scale, 130, G)
        assert torch.equal(emb, deq[ids])
        assert (emb - w_float[ids]).abs().max() <= model.embed.scale.abs().max() * 1.0001
        y = model(ids)
    Kg = -(-130 // G)
    rep = size_report(model)
    assert rep["int4_head"] == 300 * Kg * G // 2 + 300 * Kg * 4  # one copy for both
    assert rep["int8_head"] == 0 and "int4_head" in rep["text"] and rep["head_packed"] == 0
    save_deployed(model, tmp_path / "m.safetensors")
    torch.manual_seed(1)
    fresh = deploy(convert(TiedLM(), head=head))
    load_deployed(fresh, tmp_path / "m.safetensors")
    assert fresh.lm_head.weight is fresh.embed.weight
    with torch.no_grad():
        assert torch.equal(fresh(ids), y)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh2 = deploy(convert(TiedLM(), head=head))
    fresh2.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh2(ids), y)
    # a model converted with another group size refuses the file, naming the tensor
    other = deploy(convert(TiedLM(), head="int4:256" if G != 256 else "int4"))
    with pytest.raises(ValueError, match="embed: '(weight|scale)' is .*expected torch"):
        load_deployed(other, tmp_path / "m.safetensors")


def test_untie_and_non_embedding_tie():
    torch.manual_seed(0)
    model = TiedLM()
    quantize_head(model, head="int4", tied="untie")
    assert type(model.embed) is nn.Embedding and isinstance(model.lm_head, Int4Head)
    assert not model.lm_head.tied and model.lm_head.weight.dtype == torch.uint8
    assert model.embed.weight.dtype == torch.float32

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.lm_head = nn.Linear(8, 8)
            self.lm_head.weight = self.a.weight

    with pytest.raises(ValueError, match="not nn.Embedding"):
        quantize_head(Odd(), head="int4")


def test_state_dict_round_trip_and_bad_loads(gen):
    lin = _linear(gen, 300, 50, bias=True)
    h = Int4Head.from_linear(lin, 128)
    sd = h.state_dict()
    assert sorted(sd) == ["bias", "scale", "weight"]
    assert sd["weight"].dtype == torch.uint8 and sd["weight"].shape == (50, 192)
    assert sd["scale"].shape == (50, 3) and sd["scale"].dtype == torch.float32
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = Int4Head(300, 50, bias=True, group_size=128)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = rand(gen, 3, 300)
    with torch.no_grad():
        assert torch.equal(fresh(x), h(x))
    with pytest.raises(ValueError, match="'weight' is torch.float32.*expected torch.uint8"):
        Int4Head(300, 50, bias=False).load_state_dict(lin.state_dict(), strict=False)
    with pytest.raises(ValueError, match=r"'weight' is torch.uint8 \(50, 192\).*\(50, 160\).*group_size=64"):
        Int4Head(300, 50, bias=True, group_size=64).load_state_dict(sd)  # another group size
    with pytest.raises(ValueError, match="'scale' is torch.float16"):
        Int4Head(300, 50, bias=True, group_size=128).load_state_dict(
            dict(sd, scale=sd["scale"].half()))
    with pytest.raises(ValueError, match="'bias' is torch.float32 \\(49,\\)"):
        Int4Head(300, 50, bias=True, group_size=128).load_state_dict(dict(sd, bias=sd["bias"][:49]))
    for bad in (float("nan"), float("inf"), -float("inf")):
        s2 = sd["scale"].clone()
        s2[7, 1] = bad
        with pytest.raises(ValueError, match="scale must be finite"):
            Int4Head(300, 50, bias=True, group_size=128).load_state_dict(dict(sd, scale=s2))
    s0 = sd["scale"].clone()
    s0[7] = 0  # zero scales are valid (all-zero groups)
    Int4Head(300, 50, bias=True, group_size=128).load_state_dict(dict(sd, scale=s0))
    emb = Int4Embedding(50, 300, group_size=128)
    with pytest.raises(ValueError, match="scale must be finite"):
        emb.load_state_dict({"weight": sd["weight"], "scale": sd["scale"] * float("nan")})


def test_dtype_cast_keeps_codes_and_float32_scales(gen):
    torch.manual_seed(0)
    model = deploy(convert(TiedLM(), head="int4"))
    model.lm_head.bias = torch.randn(300, generator=gen)
    model.to(torch.bfloat16)
    assert model.embed.weight.dtype == torch.uint8 and model.embed.scale.dtype == torch.float32
    assert model.lm_head.bias.dtype == torch.float32 and model.embed.dtype == torch.bfloat16
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).dtype == torch.bfloat16
    h = Int4Head.from_linear(_linear(gen, 64, 8), 64).half()
    assert h.weight.dtype == torch.uint8 and h.scale.dtype == torch.float32
    assert "int4 groups of 64" in repr(h) and "int4 groups of 64" in repr(model.embed)


# ---------------------------------------------------------------------------- (h) writes
def test_every_write_is_seen_by_the_next_call(gen):
    """No second copy: writes through .data, NumPy, in-place ops and the buffers' replacement take
    effect on the next call."""
    a, b = _linear(gen, 300, 40, bias=True), _linear(gen, 300, 40, bias=True)
    hb = Int4Head.from_linear(b, 128)
    x = rand(gen, 2, 300)
    with torch.no_grad():
        want_b = hb(x)
        h = Int4Head.from_linear(a, 128)
        y_a = h(x)
        assert not torch.equal(y_a, want_b)
        h.weight.data.copy_(hb.weight)
        h.scale.data.copy_(hb.scale)
        h.bias.data.copy_(hb.bias)
        assert torch.equal(h(x), want_b)
        h = Int4Head.from_linear(a, 128)
        h(x)
        h.weight.numpy()[...] = hb.weight.numpy()
        h.scale.numpy()[...] = hb.scale.numpy()
        h.bias.numpy()[...] = hb.bias.numpy()
        assert torch.equal(h(x), want_b)
        h.weight.numpy()[0, 0] ^= 0x11  # one byte: row 0 changes, the rest does not
        y = h(x)
        # row 0 as the reference computes it on the new byte (the two codes' changes can cancel
        # for some activations: then the row keeps its value)
        want0 = ref.q4_head_linear_ref(x, h.weight, h.scale, h.bias, 128, 300, ref.MIN_EPS)[:, 0]
        assert torch.equal(y[:, 0], want0) and torch.equal(y[:, 1:], want_b[:, 1:])
        h.weight.numpy()[0, 0] ^= 0x11
        h.weight.numpy()[0, 1] ^= 0x01  # one code, changed by one step: row 0 must change
        y = h(x)
        xq = ref.quantize_acts(x, ref.MIN_EPS, True)[0]  # k = 1: byte 1's low nibble
        assert not torch.equal(y[:, 0], want_b[:, 0]) or (xq[:, 1] == 0).all()
        h.weight.numpy()[0, 1] ^= 0x01
        h.weight.numpy()[0, 0] ^= 0x11
        y = h(x)
        h.scale.mul_(2)
        torch.testing.assert_close(h(x) - h.bias, 2 * (y - h.bias), rtol=1e-5, atol=1e-4)
        h.bias.zero_()
        torch.testing.assert_close(h(x), 2 * (y - hb.bias), rtol=1e-5, atol=1e-4)
        h.weight = hb.weight.clone()  # replaced buffers
        h.scale = hb.scale.clone()
        h.bias = hb.bias.clone()
        assert torch.equal(h(x), want_b)
        h.weight = hb.weight[:, :64]  # a wrong shape is refused, not read out of bounds
        with pytest.raises(ValueError, match="weight is torch.uint8"):
            h(x)
        h.weight = hb.weight.float()
        with pytest.raises(ValueError, match="expected torch.uint8"):
            h(x)
        h.weight = hb.weight.t().contiguous().t()  # non-contiguous: read correctly
        assert torch.equal(h(x), want_b)
        h.scale = hb.scale.double()
        with pytest.raises(ValueError, match="scale is torch.float64"):
            h(x)
        h.scale = hb.scale.clone()
        h.bias = hb.bias[:39]
        with pytest.raises(ValueError, match="bias is torch.float32 \\(39,\\)"):
            h(x)
        h.bias = hb.bias.half()
        with pytest.raises(ValueError, match="bias is torch.float16"):
            h(x)
        h.bias = None
        torch.testing.assert_close(h(x), want_b - hb.bias, rtol=1e-5, atol=1e-4)


def test_tied_writes_and_inference_mode(gen):
    torch.manual_seed(2)
    model = convert(TiedLM(), head="int4")
    ids = torch.tensor([[3, 4, 5]])
    h = torch.randn(1, 130, generator=gen)
    with torch.no_grad():
        y0 = model.lm_head(h)
        e0 = model.embed(ids)
        model.embed.weight.numpy()[4] = 0x88  # row 4: codes 0 through the shared table
        assert not model.lm_head(h)[0, 4].any() and torch.equal(model.lm_head(h)[0, :4], y0[0, :4])
        assert not model.embed(ids)[0, 1].any() and torch.equal(model.embed(ids)[0, 0], e0[0, 0])
    with torch.inference_mode():
        hi = Int4Head.from_linear(_linear(gen, 130, 30, bias=True), 64)
        x = rand(gen, 2, 130)
        hi(x)
        hb = Int4Head.from_linear(_linear(gen, 130, 30, bias=True), 64)
        hi.weight.copy_(hb.weight)
        hi.scale.copy_(hb.scale)
        hi.bias.copy_(hb.bias)
        assert torch.equal(hi(x), hb(x))
        out = model(ids)
        assert out.shape == (1, 3, 300) and not out.requires_grad


# ---------------------------------------------------------------------------- convert options
def test_convert_head_option_and_size_report(gen):
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("body", nn.Linear(32, 64))
    model.add_module("lm_head", nn.Linear(64, 500, bias=False))
    for bad in ("int4:96", "int4:0", "int4:2048", "int3"):
        with pytest.raises(ValueError, match="int4:<G>"):
            convert(copy.deepcopy(model), head=bad)
    assert type(model.lm_head) is nn.Linear  # untouched by the refused calls
    q = deploy(convert(copy.deepcopy(model), head="int4"))
    assert isinstance(q.lm_head, Int4Head) and q.lm_head.group_size == 64
    x = torch.randn(2, 32, generator=gen)
    with torch.no_grad():
        q(x)
    rep = size_report(q)
    assert rep["int4_head"] == 500 * 32 + 500 * 1 * 4 and rep["head_packed"] == 0
    assert rep["total"] == rep["resident"]
    assert convert(q, head="int4") is q and isinstance(q.lm_head, Int4Head)  # idempotent
    assert convert(q, head="int8") is q and isinstance(q.lm_head, Int4Head)  # already quantized
    q2 = convert(copy.deepcopy(model), head="int4:256")
    assert q2.lm_head.group_size == 256 and q2.lm_head.weight.shape == (500, 128)
    assert quantize_head(copy.deepcopy(model), head="int4:128") == ["lm_head"]


# ---------------------------------------------------------------------------- transformers
@needs_tf
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("head", ["int4", "int4:128"])
def test_logit_error_and_top1_against_float_head(gen, tie, head):
    """Random-weight Llama (vocab 2000, hidden 128), BitLinear body: the int4 head against the
    float head on the same final hidden states, and, tied, the whole model."""
    model = deploy(convert(head_llama(tie)))
    w = model.lm_head.weight.detach().clone()
    ids = torch.randint(3, 2000, (4, 64), generator=gen)
    with torch.no_grad():
        h = model.model(ids).last_hidden_state
        fl = h @ w.t()
        whole_ref = model(ids).logits
    convert(model, head=head)
    assert isinstance(model.lm_head, Int4Head)
    with torch.no_grad():
        out = model.lm_head(h)
        whole = model(ids).logits
        lin = nn.Linear(128, 2000, bias=False)
        lin.weight.copy_(w)
        out8 = Int8Head.from_linear(lin)(h)
    err = (out - fl).abs()
    rel = (err.max() / fl.abs().max()).item()
    top1 = (out.argmax(-1) == fl.argmax(-1)).float().mean().item()
    rel8 = ((out8 - fl).abs().max() / fl.abs().max()).item()
    top1_8 = (out8.argmax(-1) == fl.argmax(-1)).float().mean().item()
    whole_top1 = (whole.argmax(-1) == whole_ref.argmax(-1)).float().mean().item()
    print(f"\n{head} tie={tie}: head on the same hidden states: max |logit error| "
          f"{err.max().item():.4f}, mean {err.mean().item():.4f}, max |logit| "
          f"{fl.abs().max().item():.2f}, relative {rel:.4f}, top-1 agreement {top1:.4f} "
          f"(int8 head: relative {rel8:.4f}, top-1 {top1_8:.4f}); whole model top-1 "
          f"{whole_top1:.4f}")
    # over seeds 0-7 (the kernel; the float-activation fallback gives the same to 0.01):
    # relative 0.094-0.16, top-1 0.75-0.86 (int8: about 0.01 and 0.96-0.99); tied, the int4
    # input embedding moves the hidden states of this random model a lot: whole model 0.38-0.48
    assert rel < 0.25 and top1 > 0.6
    assert whole_top1 > (0.25 if tie else 0.6)
    assert rel > rel8  # coarser than int8 (the test tells the heads apart)
    assert err.mean().item() > 0  # a quantized head, not the float one


@needs_tf
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("dtype,head", [(torch.float32, "int4"), (torch.bfloat16, "int4:128"),
                                        (torch.float32, "int4:256")], ids=str)
def test_hf_save_pretrained_from_pretrained(tmp_path, gen, tie, dtype, head):
    import bitlinear.hf  # noqa: F401  (registers the quantizer)
    from transformers import AutoModelForCausalLM
    _, G = H.parse_head(head)
    model = deploy(convert(head_llama(tie, V=700).to(dtype), head=head))
    assert model.config.quantization_config.heads == {
        "lm_head": {"kind": "int4", "group_size": G, "tied": "model.embed_tokens" if tie else None,
                    "bias": False}}
    ids = torch.randint(3, 700, (1, 9), generator=gen)
    with torch.no_grad():
        ref_logits = model(ids).logits
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=dtype).eval()
    assert isinstance(loaded.lm_head, Int4Head) and loaded.lm_head.tied == tie
    assert loaded.lm_head.group_size == G and loaded.lm_head.scale.dtype == torch.float32
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert torch.equal(loaded.lm_head.scale, model.lm_head.scale)
    if tie:
        assert isinstance(loaded.model.embed_tokens, Int4Embedding)
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
        assert loaded.model.embed_tokens.group_size == G
    with torch.no_grad():
        if dtype == torch.float32:
            assert torch.equal(loaded(ids).logits, ref_logits)
        h = torch.randn(3, 128, generator=gen).to(dtype)
        assert torch.equal(loaded.lm_head(h), model.lm_head(h))
        assert torch.equal(loaded.model.embed_tokens(ids), model.model.embed_tokens(ids))


@needs_tf
def test_hf_load_refuses_a_non_finite_scale(tmp_path, gen):
    import bitlinear.hf  # noqa: F401
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM
    model = deploy(convert(head_llama(False, V=300), head="int4"))
    model.save_pretrained(tmp_path)
    f = next(tmp_path.glob("*.safetensors"))
    sd = load_file(str(f))
    sd["lm_head.scale"][3, 1] = float("nan")
    save_file(sd, str(f), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lm_head.*scale must be finite"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@needs_tf
@pytest.mark.parametrize("head", ["int8", "int4"])
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("fault", ["float weight", "wrong shape", "float16 scale",
                                   "missing scale", "missing weight"])
def test_hf_load_checks_head_tensors_before_loading(tmp_path, head, tie, fault):
    """transformers would cast a float weight into the int table, convert a float16 scale and
    re-initialise a missing one; the safetensors headers are checked first (bitlinear.hf)."""
    import bitlinear.hf  # noqa: F401
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM
    model = deploy(convert(head_llama(tie, V=300), head=head))
    model.save_pretrained(tmp_path)
    f = next(tmp_path.glob("*.safetensors"))
    sd = load_file(str(f))
    src = "model.embed_tokens" if tie else "lm_head"
    w, sc = f"{src}.weight", f"{src}.scale"
    assert w in sd and sc in sd
    if fault == "float weight":
        sd[w] = sd[w].float()
        err, match = TypeError, "weight' is F32 in the checkpoint"
    elif fault == "wrong shape":
        sd[w] = sd[w][:, :10].contiguous()
        err, match = ValueError, "weight' has shape"
    elif fault == "float16 scale":
        sd[sc] = sd[sc].half()
        err, match = TypeError, "scale' is F16 in the checkpoint"
    elif fault == "missing scale":
        del sd[sc]
        err, match = ValueError, "has no '.*scale'"
    else:
        del sd[w]
        err, match = ValueError, "has no '.*weight'"
    save_file(sd, str(f), metadata={"format": "pt"})
    with pytest.raises(err, match=f"head 'lm_head'.*{match}"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_hf_head_entries_and_rebuild_without_transformers():
    """The heads entries and the rebuild on plain modules (what the quantizer calls)."""
    torch.manual_seed(0)
    model = convert(TiedLM(), head="int4:128")
    entries = HF.hf_head_entries(model)
    assert entries == {"lm_head": {"kind": "int4", "group_size": 128, "tied": "embed",
                                   "bias": False}}
    sd = model.state_dict()
    with torch.device("meta"):
        fresh = TiedLM()
    HF.hf_rebuild_heads(fresh, entries)
    assert isinstance(fresh.embed, Int4Embedding) and fresh.lm_head.tied
    assert fresh.embed.group_size == 128 and fresh.lm_head.group_size == 128
    with pytest.raises(ValueError, match="was not in the checkpoint"):
        HF.hf_validate_heads(fresh, entries)
    fresh.load_state_dict(sd, strict=False, assign=True)
    HF.hf_validate_heads(fresh, entries)
    fresh.embed.scale[0, 0] = float("inf")
    with pytest.raises(ValueError, match="scale must be finite"):
        HF.hf_validate_heads(fresh, entries)
    with pytest.raises(ValueError, match="group_size"):
        HF.hf_rebuild_heads(fresh, {"lm_head": {"kind": "int4", "group_size": 100}})
    with pytest.raises(ValueError, match="unknown kind"):
        HF.hf_rebuild_heads(fresh, {"lm_head": {"kind": "int2"}})
    with pytest.raises(ValueError, match="not rebuilt as an Int4Head with group_size 64"):
        HF.hf_validate_heads(fresh, {"lm_head": {"kind": "int4", "group_size": 64}})
    # an int8 entry without group_size keeps working
    m8 = convert(TiedLM(), head="int8")
    assert HF.hf_head_entries(m8) == {"lm_head": {"kind": "int8", "tied": "embed", "bias": False}}


@needs_tf
def test_convert_bitnet_head_int4(tmp_path, gen):
    import bitlinear.hf  # noqa: F401
    from bitlinear.hf import convert_bitnet
    from transformers import AutoModelForCausalLM, BitNetConfig, BitNetForCausalLM
    cfg = BitNetConfig(vocab_size=500, hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = BitNetForCausalLM(cfg).eval()
    with pytest.raises(ValueError, match="int4:<G>"):
        convert_bitnet(copy.deepcopy(model), head="int4:100")
    m128 = convert_bitnet(copy.deepcopy(model), head="int4:128")
    assert m128.lm_head.group_size == 128
    convert_bitnet(model, head="int4")
    assert isinstance(model.lm_head, Int4Head) and model.lm_head.group_size == 64
    assert model.config.quantization_config.heads == {
        "lm_head": {"kind": "int4", "group_size": 64, "tied": None, "bias": False}}
    ids = torch.randint(3, 500, (1, 7), generator=gen)
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        ref_logits = model(ids).logits
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.lm_head, Int4Head) and loaded.lm_head.group_size == 64
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        assert torch.equal(loaded(ids).logits, ref_logits)


@needs_tf
@pytest.mark.parametrize("tie", [False, True])
def test_llama_int4_head_torch_compile_fullgraph(gen, tie):
    model = deploy(convert(head_llama(tie, V=500), head="int4"))
    ids = torch.randint(3, 500, (1, 9), generator=gen)
    with torch.no_grad():
        eager = model(ids, use_cache=False).logits
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        out = compiled(ids, use_cache=False).logits
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5 * eager.abs().max().item())


@pytest.mark.parametrize("cls", [Int8Head, Int4Head])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool])
def test_head_refuses_non_float_input(cls, dtype):
    # an integer input would otherwise reach the dequantizing path and come back truncated
    head = cls.from_linear(nn.Linear(70, 9))
    with pytest.raises(TypeError, match="float tensor"):
        head(torch.ones(2, 70, dtype=dtype))
