"""bitlinear.RMSNorm / fuse_norms (issue 20): transformers' Llama-family RMSNorm as one native call
in eager CPU inference, bit for bit transformers' own module and reference.rms_norm, and every
case the native call cannot take answered by the reference formula instead."""
import copy
import io
import itertools
import pickle
import threading

import pytest
import torch
from torch import nn

import bitlinear
from bitlinear import norm as N
from bitlinear import reference as ref

from conftest import rand

pytestmark = pytest.mark.skipif(N._native is None, reason="no native rms_norm entry point")

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class Calls:
    """Counts the native calls."""

    def __init__(self, monkeypatch):
        self.n = 0
        real = N._native

        def counted(*a):
            self.n += 1
            return real(*a)
        monkeypatch.setattr(N, "_native", counted)


def norm_of(gen, K, wdt, eps):
    m = bitlinear.RMSNorm(K, eps=eps, dtype=wdt)
    with torch.no_grad():
        m.weight.copy_(rand(gen, K, scale=2.0))
    return m


@pytest.mark.parametrize("K", [1, 3, 7, 129, 1000, 2560])
@pytest.mark.parametrize("xdt,wdt", list(itertools.product(DTYPES, DTYPES)))
def test_native_is_the_reference_bit_for_bit(gen, monkeypatch, K, xdt, wdt):
    calls = Calls(monkeypatch)
    for M, eps in ((1, 1e-5), (3, 1e-6), (17, 0.25)):
        m = norm_of(gen, K, wdt, eps)
        x = (rand(gen, M, K) * torch.rand(M, 1, generator=gen) * 20).to(xdt)
        with torch.no_grad():
            y = m(x)
            want = ref.rms_norm(x, m.weight, eps)
        assert y.dtype == want.dtype == torch.promote_types(wdt, xdt)
        assert torch.equal(y, want), (M, eps, (y != want).sum())
    assert calls.n == 3


def test_shapes_threads_and_large_rows(gen, monkeypatch):
    """3-D and 4-D inputs, M = 0, and a batch large enough to split between threads."""
    calls = Calls(monkeypatch)
    m = norm_of(gen, 1000, torch.float32, 1e-6)
    with torch.no_grad():
        for shape in ((2, 3, 1000), (1, 2, 3, 1000), (0, 1000), (300, 1000)):
            x = rand(gen, *shape)
            y = m(x)
            assert y.shape == x.shape and torch.equal(y, ref.rms_norm(x, m.weight, 1e-6))
        prev = torch.get_num_threads()
        try:
            x = rand(gen, 300, 1000)
            outs = []
            for t in (1, 2, 3):
                torch.set_num_threads(t)
                outs.append(m(x))
        finally:
            torch.set_num_threads(prev)
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert calls.n == 3 + 3  # M = 0 makes no native call


def test_nonfinite_inputs_propagate_as_torch(gen):
    m = norm_of(gen, 129, torch.float32, 1e-5)
    x = rand(gen, 4, 129)
    x[1, 5] = float("nan")
    x[2, 7] = float("inf")
    x[3] = 0.0  # a zero row: r = 1/sqrt(eps), y = 0
    with torch.no_grad():
        y, want = m(x), ref.rms_norm(x, m.weight, 1e-5)
    assert torch.equal(torch.isnan(y), torch.isnan(want))
    fin = ~torch.isnan(want)
    assert torch.equal(y[fin], want[fin])
    assert torch.equal(y[0], want[0]) and torch.equal(y[3], torch.zeros(129))


def test_transformers_modules_bit_for_bit(gen):
    tf = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    classes = [LlamaRMSNorm]
    try:
        from transformers.models.bitnet.modeling_bitnet import BitNetRMSNorm
        classes.append(BitNetRMSNorm)
    except ImportError:
        pass
    for cls, (xdt, wdt) in itertools.product(classes, itertools.product(DTYPES, DTYPES)):
        K = int(torch.randint(1, 3000, (1,), generator=gen))
        hf = cls(K, eps=1e-5).to(wdt)
        with torch.no_grad():
            hf.weight.copy_(rand(gen, K))
        ours = bitlinear.RMSNorm.from_module(hf)
        assert ours.weight is hf.weight and ours.variance_epsilon == hf.variance_epsilon
        x = rand(gen, 2, 3, K, scale=5.0).to(xdt)
        with torch.no_grad():
            assert torch.equal(ours(x), hf(x)), (cls.__name__, K, xdt, wdt)
    assert tf is not None


def test_reference_formula_where_the_native_call_does_not_apply(gen, monkeypatch):
    calls = Calls(monkeypatch)
    m = norm_of(gen, 64, torch.float32, 1e-5)
    x = rand(gen, 4, 64)
    # autograd: gradients flow to the input and the weight, as transformers' module
    xg = x.clone().requires_grad_()
    y = m(xg)
    y.sum().backward()
    assert xg.grad is not None and m.weight.grad is not None
    assert torch.equal(y.detach(), ref.rms_norm(x, m.weight, 1e-5))
    with torch.no_grad():
        for bad in (rand(gen, 64, 4).t(),  # a transposed (non-contiguous) view
                    x.to(torch.float64),  # another dtype
                    torch.ones(1, 64).expand(4, 64)):  # a broadcast view
            want = ref.rms_norm(bad, m.weight, 1e-5)
            got = m(bad)
            assert got.dtype == want.dtype and torch.equal(got, want)
        n = calls.n
        bitlinear.set_fast_path(False)
        try:
            assert torch.equal(m(x), ref.rms_norm(x, m.weight, 1e-5))
        finally:
            bitlinear.set_fast_path(True)
        assert calls.n == n  # switched off: the reference
        with pytest.raises(RuntimeError):
            m(rand(gen, 4, 63))  # a wrong width: torch's own error


def test_weight_edits_are_seen(gen):
    """Nothing is cached: .data, in-place edits, a new Parameter, eps, all read per call."""
    m = norm_of(gen, 100, torch.float32, 1e-5)
    x = rand(gen, 2, 100)
    with torch.no_grad():
        m.weight.mul_(2)
        assert torch.equal(m(x), ref.rms_norm(x, m.weight, 1e-5))
        m.weight.data = rand(gen, 100)
        assert torch.equal(m(x), ref.rms_norm(x, m.weight, 1e-5))
        m.weight.detach().numpy()[3] = 7.0
        assert torch.equal(m(x), ref.rms_norm(x, m.weight, 1e-5))
        m.weight = nn.Parameter(rand(gen, 100).to(torch.bfloat16))
        m.variance_epsilon = 0.5
        assert torch.equal(m(x), ref.rms_norm(x, m.weight, 0.5))
    with torch.inference_mode():
        xi = rand(gen, 2, 100)
        assert torch.equal(m(xi), ref.rms_norm(xi, m.weight, 0.5))


def test_threads_call_it_at_once(gen):
    m = norm_of(gen, 777, torch.bfloat16, 1e-6)
    xs = [rand(gen, 3, 777).to(torch.bfloat16) for _ in range(8)]
    want = [ref.rms_norm(x, m.weight, 1e-6) for x in xs]
    errs = []

    def run(i):
        with torch.no_grad():
            for _ in range(50):
                if not torch.equal(m(xs[i]), want[i]):
                    errs.append(i)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs


def test_profiler_sees_the_call(gen):
    m = norm_of(gen, 64, torch.float32, 1e-5)
    x = rand(gen, 1, 64)
    from torch.profiler import profile
    with torch.no_grad(), profile() as p:
        m(x)
    assert any(e.name == "bitlinear::rms_norm" for e in p.events())


def test_native_refuses_bad_arguments():
    f = N._native
    x = torch.ones(2, 8)
    v = torch.ones(2)
    y = torch.empty(2, 8)
    with pytest.raises(RuntimeError, match="rms_norm"):
        f(x.data_ptr(), 0, 2, 0, v.data_ptr(), 1e-5, x.data_ptr(), 0, y.data_ptr(), 0, 1)  # K = 0
    with pytest.raises(RuntimeError, match="rms_norm"):
        f(x.data_ptr(), 0, 2, 8, v.data_ptr(), -1.0, x.data_ptr(), 0, y.data_ptr(), 0, 1)  # eps < 0
    with pytest.raises(RuntimeError, match="rms_norm"):
        f(0, 0, 2, 8, v.data_ptr(), 1e-5, x.data_ptr(), 0, y.data_ptr(), 0, 1)  # x NULL
    with pytest.raises(ValueError, match="dtype"):
        f(x.data_ptr(), 5, 2, 8, v.data_ptr(), 1e-5, x.data_ptr(), 0, y.data_ptr(), 0, 1)
    with pytest.raises(TypeError, match="rms_norm_cpu"):
        f(x.data_ptr())


# ---------------------------------------------------------------------------- fuse_norms
def tiny(arch):
    tf = pytest.importorskip("transformers")
    if arch == "bitnet" and not hasattr(tf, "BitNetForCausalLM"):
        pytest.skip("this transformers has no BitNet")
    kw = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=300, max_position_embeddings=64)
    torch.manual_seed(3)
    if arch == "bitnet":
        return tf.BitNetForCausalLM(tf.BitNetConfig(**kw)).eval()
    return tf.LlamaForCausalLM(tf.LlamaConfig(**kw)).eval()


@pytest.mark.parametrize("arch", ["llama", "bitnet"])
def test_fuse_norms_on_a_model_same_logits_same_state_dict(arch, monkeypatch):
    model = tiny(arch)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "variance_epsilon"):
                m.weight.copy_(torch.rand(m.weight.shape) + 0.5)
    bitlinear.convert(model)
    bitlinear.deploy(model)
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(1))
    keys = list(model.state_dict())
    with torch.no_grad():
        want = model(ids).logits
    n_norms = sum(hasattr(m, "variance_epsilon") for m in model.modules())
    assert bitlinear.fuse_projections(model) > 0
    norms = [m for m in model.modules() if isinstance(m, bitlinear.RMSNorm)]
    assert len(norms) == n_norms == (2 * 4 + 1 if arch == "bitnet" else 2 * 2 + 1)
    assert list(model.state_dict()) == keys
    calls = Calls(monkeypatch)
    with torch.no_grad():
        got = model(ids).logits
    assert calls.n == n_norms and torch.equal(got, want)
    assert bitlinear.fuse_norms(model) == 0  # already ours
    # save / load: the same keys and tensors
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    model.load_state_dict(torch.load(buf))
    # pickled and deep-copied: plain modules
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.no_grad():
            assert torch.equal(other(ids).logits, want)


def test_fuse_norms_keeps_sharing_and_skips_what_it_cannot_check(gen):
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    shared = LlamaRMSNorm(32)
    model = nn.Sequential(nn.Sequential(shared), nn.Sequential(shared),
                          LlamaRMSNorm(32).to("meta"), nn.LayerNorm(32))
    assert bitlinear.fuse_norms(model) == 1
    assert model[0][0] is model[1][0] and isinstance(model[0][0], bitlinear.RMSNorm)
    assert type(model[2]) is LlamaRMSNorm and type(model[3]) is nn.LayerNorm

    class Other(LlamaRMSNorm):  # not a known class: a subclass may compute anything
        pass
    m2 = nn.Sequential(Other(32))
    assert bitlinear.fuse_norms(m2) == 0


def test_fuse_norms_leaves_a_norm_that_computes_otherwise(monkeypatch):
    pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama
    model = nn.Sequential(modeling_llama.LlamaRMSNorm(48))

    def other(self, x):  # a release whose formula differs (e.g. Gemma's 1 + weight)
        return ref.rms_norm(x, self.weight + 1, self.variance_epsilon)
    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", other)
    assert bitlinear.fuse_norms(model) == 0
    assert type(model[0]) is modeling_llama.LlamaRMSNorm


def test_compiled_model_keeps_its_bits():
    """Under torch.compile RMSNorm traces the reference formula: the graph transformers' norm
    gives, so a compiled model gives the same logits with and without fuse_norms."""
    model = tiny("llama")
    ids = torch.randint(0, 300, (1, 5), generator=torch.Generator().manual_seed(2))

    def fa(i):
        return model(i).logits

    def fb(i):
        return model(i).logits
    with torch.no_grad():
        a = torch.compile(fa, backend="inductor")(ids)
        assert bitlinear.fuse_norms(model) == 5
        b = torch.compile(fb, backend="inductor")(ids)
    assert torch.equal(a, b)
