"""bitlinear.fuse_projections (issue 20, item 2): projections that share an input run as one native
call inside their parent's forward, bit for bit the separate layers' outputs, and every way a user
can break the sharing makes the members run alone instead of answering stale."""
import copy
import io
import threading

import numpy as np
import pytest
import torch
from torch import nn

import bitlinear
from bitlinear import _fast
from bitlinear import reference as ref

from conftest import make_deployed, rand

pytestmark = pytest.mark.skipif(_fast._linear_segments is None or not _fast.fast_path_enabled(),
                                reason="no native fused entry point")


class Attn(nn.Module):
    """q/k/v read one input; o reads their sum (any function of the three would do)."""

    def __init__(self, q, k, v, o, between=None):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = q, k, v, o
        self.between = between

    def forward(self, x):
        q = self.q_proj(x)
        if self.between is not None:
            self.between(self, x)
        k, v = self.k_proj(x), self.v_proj(x)
        return self.o_proj(torch.cat([q, k, v], dim=-1))


def make_attn(gen, K=200, ns=(64, 33, 129), bias=(True, False, True),
              quant=("ai8pc_wpt", "ai8pc_wpc", "ai8pc_wpt")):
    lay = [make_deployed(gen, K, n, q, bias=b) for n, b, q in zip(ns, bias, quant)]
    o = make_deployed(gen, sum(ns), 16)
    return Attn(*lay, o)


class Counter:
    def __init__(self, monkeypatch):
        self.fused = self.single = 0
        seg, one = _fast._linear_segments, _fast._linear_cpu

        def fused(*a):
            self.fused += 1
            return seg(*a)

        def single(*a):
            self.single += 1
            return one(*a)
        monkeypatch.setattr(_fast, "_linear_segments", fused)
        monkeypatch.setattr(_fast, "_linear_cpu", single)


def separate(attn, x):
    """The unfused outputs: each member alone through the op path."""
    bitlinear.set_fast_path(False)
    try:
        with torch.no_grad():
            return attn(x), [m(x) for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    finally:
        bitlinear.set_fast_path(True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 17)])
def test_fused_equals_separate_bit_for_bit(gen, monkeypatch, dtype, lead):
    attn = make_attn(gen)
    x = rand(gen, *lead, 200, dtype=dtype, scale=2.0)
    want, _ = separate(attn, x)
    assert bitlinear.fuse_projections(attn) == 1
    cnt = Counter(monkeypatch)
    with torch.no_grad():
        got = attn(x)
    assert torch.equal(got, want)
    assert (cnt.fused, cnt.single) == (1, 1)  # q/k/v in one call, then o_proj


@pytest.mark.parametrize("isa", bitlinear.available_cpu_isas())
def test_every_isa(gen, isa):
    attn = make_attn(gen, K=130, ns=(7, 1, 40))
    x = rand(gen, 5, 130)
    with bitlinear.use_cpu_isa(isa):
        want, _ = separate(attn, x)
        bitlinear.fuse_projections(attn)
        with torch.no_grad():
            assert torch.equal(attn(x), want)


def test_llama_model_and_checkpoints(gen, monkeypatch):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    model = transformers.LlamaForCausalLM(cfg).eval()
    bitlinear.convert(model)
    bitlinear.deploy(model)
    ids = torch.randint(0, 128, (1, 9), generator=gen)
    with torch.no_grad():
        want = model(ids).logits
    sd = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    before = bitlinear.size_report(model)
    assert bitlinear.fuse_projections(model) == 4  # per layer: q/k/v and gate/up
    assert bitlinear.fuse_projections(model) == 0  # idempotent
    cnt = Counter(monkeypatch)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, want)
    assert cnt.fused == 4 and cnt.single == 4  # o_proj and down_proj alone
    after = bitlinear.size_report(model)
    assert after["total"] == before["total"]  # one copy of the weights
    got = model.state_dict()
    for k, v in sd.items():  # checkpoints keep one packed tensor per layer
        assert torch.equal(got[k], v)
        assert got[k].untyped_storage().nbytes() == got[k].numel() * got[k].element_size()
    buf = io.BytesIO()
    torch.save(model, buf)  # the fusion is not pickled: the copy runs each layer alone
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    dup = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, want) and torch.equal(dup(ids).logits, want)
    model.load_state_dict(sd)  # loads into the views: still fused, same answer
    with torch.no_grad():
        assert torch.equal(model(ids).logits, want)


def test_members_called_alone_or_on_other_inputs(gen, monkeypatch):
    attn = make_attn(gen)
    bitlinear.fuse_projections(attn)
    cnt = Counter(monkeypatch)
    x = rand(gen, 2, 200)
    with torch.no_grad():
        for m in (attn.q_proj, attn.k_proj, attn.v_proj):  # outside the parent's forward
            assert torch.equal(m(x), ref.linear(x, m.w_scale, m.w_packed, m.bias, m.eps, 200,
                                                True))
    assert cnt.fused == 0
    # the parent feeding its members different inputs: correct, and fusing stops after a few
    attn.between = None

    def fwd(self, x):
        return self.q_proj(x), self.k_proj(x + 1), self.v_proj(x * 2)
    attn.forward = fwd.__get__(attn)
    for _ in range(5):
        with torch.no_grad():
            q, k, v = attn(x)
        assert torch.equal(k, separate_member(attn.k_proj, x + 1))
        assert torch.equal(v, separate_member(attn.v_proj, x * 2))
        assert torch.equal(q, separate_member(attn.q_proj, x))
    group = attn.q_proj.__dict__["_group"][0]
    assert not group.enabled


def separate_member(m, x):
    bitlinear.set_fast_path(False)
    try:
        with torch.no_grad():
            return m(x)
    finally:
        bitlinear.set_fast_path(True)


def _between_edits():
    def x_in_place(attn, x):
        x.mul_(-1.5)

    def k_weights_tracked(attn, x):
        attn.k_proj.w_packed.copy_(attn.k_proj.w_packed.flip(0))

    def k_scale_tracked(attn, x):
        attn.k_proj.w_scale.mul_(3)

    def k_replaced(attn, x):
        attn.k_proj.w_packed = attn.k_proj.w_packed.clone()

    def v_bias_replaced(attn, x):
        attn.v_proj.bias = attn.v_proj.bias + 1

    def k_features(attn, x):
        attn.k_proj.out_features += 1

    return [x_in_place, k_weights_tracked, k_scale_tracked, k_replaced, v_bias_replaced,
            k_features]


@pytest.mark.parametrize("edit", _between_edits(), ids=lambda f: f.__name__)
def test_changes_between_member_calls_are_seen(gen, edit):
    # inside the parent's forward, after q computed all three: k and v must answer for what they
    # are when they are called (the op path and the reference as the oracle)
    attn = make_attn(gen)
    bitlinear.fuse_projections(attn)
    seen = {}

    def between(self, x):
        edit(self, x)
        seen["x"] = x.clone()
        seen["k"], seen["v"] = (separate_outcome(self.k_proj, x), separate_outcome(self.v_proj, x))

    attn.between = between
    x = rand(gen, 3, 200)
    captured = {}

    def capture(name):
        def hook(mod, args, out):
            captured[name] = out
        return hook
    attn.k_proj.register_forward_hook(capture("k"))
    attn.v_proj.register_forward_hook(capture("v"))
    try:
        with torch.no_grad():
            attn(x)
    except Exception:  # noqa: BLE001 - an edit may make a member refuse (then the op refuses too)
        assert seen["k"][0] == "error" or seen["v"][0] == "error"
        return
    for name in ("k", "v"):
        kind, val = seen[name]
        assert kind == "ok" and torch.equal(captured[name], val), name


def separate_outcome(m, x):
    try:
        return "ok", separate_member(m, x)
    except Exception as e:  # noqa: BLE001
        return "error", type(e)


def test_threads_and_exceptions(gen):
    attn = make_attn(gen, K=256, ns=(128, 64, 64))
    xs = [rand(gen, 1, 256) for _ in range(4)]
    want = [separate(attn, x)[0] for x in xs]
    bitlinear.fuse_projections(attn)
    errors = []

    def worker(j):
        for _ in range(100):
            with torch.no_grad():
                if not torch.equal(attn(xs[j]), want[j]):
                    errors.append(j)

    ts = [threading.Thread(target=worker, args=(j,)) for j in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    # a forward that raises closes the window: the next member call alone is not fused
    attn.between = lambda self, x: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad():
        attn(xs[0])
    group = attn.q_proj.__dict__["_group"][0]
    assert getattr(group.local, "depth", 0) == 0 and getattr(group.local, "cache", None) is None


def test_untracked_weight_writes_outside_the_window(gen):
    # one copy: a NumPy write to a member's weights is read by the next forward
    attn = make_attn(gen)
    bitlinear.fuse_projections(attn)
    x = rand(gen, 2, 200)
    with torch.no_grad():
        attn(x)
    other = make_deployed(gen, 200, 33, "ai8pc_wpc", bias=False)
    np.copyto(attn.k_proj.w_packed.numpy(), other.w_packed.numpy())
    want, _ = separate(attn, x)
    with torch.no_grad():
        assert torch.equal(attn(x), want)


def test_compiled_fused_model_compiles_once(gen):
    """Under torch.compile the fusion windows stand aside (each member on the op): same bits as
    the unfused layers, one graph, and no guard on the window's thread-local state (that guard
    failed on every call before, recompiling until the limit)."""
    from torch._dynamo.testing import CompileCounter
    attn = make_attn(gen, K=129, ns=(7, 33, 3))
    x = rand(gen, 3, 129)
    want, _ = separate(attn, x)
    assert bitlinear.fuse_projections(attn) == 1
    torch._dynamo.reset()
    cnt = CompileCounter()
    compiled = torch.compile(attn, backend=cnt, fullgraph=True)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(compiled(x), want)
    assert cnt.frame_count == 1
