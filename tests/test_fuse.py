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

from conftest import make_deployed, op_output, rand

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


# ----------------------------------------------------------------- under torch.compile (issue 20)
def group_call(layers, x, stacked=None):
    """torch.ops.bitlinear.linear_group<n> on the layers' buffers (or on row views of `stacked`)."""
    n = len(layers)
    wps = stacked.split([m.w_packed.shape[0] for m in layers]) if stacked is not None else \
        [m.w_packed for m in layers]
    args = [a for m, wp in zip(layers, wps) for a in (m.w_scale, wp, m.bias)]
    m0 = layers[0]
    op = getattr(torch.ops.bitlinear, f"linear_group{n}")
    return op(x, *args, m0.eps, m0.in_features, m0.spec.act_per_token)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lead", [(1,), (7,), (2, 3), (0,)])
@pytest.mark.parametrize("layout", ["consecutive", "apart"])
def test_group_ops_equal_separate_calls(gen, n, dtype, lead, layout):
    """linear_group2 / 3: each output bit for bit torch.ops.bitlinear.linear's and the
    reference's, on consecutive rows of one tensor (one native call) or on separate tensors."""
    K = int(torch.randint(1, 300, (1,), generator=gen))
    ns = [int(v) for v in torch.randint(1, 140, (n,), generator=gen)]
    quant = ["ai8pc_wpt", "ai8pc_wpc", "ai8pt_wpc"][:n]
    quant = [quant[0]] + [q.replace("ai8pt", "ai8pc") if quant[0].startswith("ai8pc") else q
                          for q in quant[1:]]  # one activation scaling per group
    layers = [make_deployed(gen, K, N, q, bias=i != 1) for i, (N, q) in enumerate(zip(ns, quant))]
    x = rand(gen, *lead, K, dtype=dtype, scale=3.0)
    stacked = torch.cat([m.w_packed for m in layers]) if layout == "consecutive" else None
    got = group_call(layers, x, stacked)
    assert len(got) == n
    for m, y in zip(layers, got):
        want = op_output(m, x)
        assert y.dtype == dtype and y.shape == want.shape
        assert torch.equal(y, want)
        assert torch.equal(y, ref.linear(x, m.w_scale, m.w_packed, m.bias, m.eps, K,
                                         m.spec.act_per_token))


@pytest.mark.parametrize("isa", bitlinear.available_cpu_isas())
def test_group_ops_every_isa(gen, isa):
    layers = [make_deployed(gen, 129, N) for N in (7, 1, 40)]
    x = rand(gen, 3, 129)
    with bitlinear.use_cpu_isa(isa):
        got = group_call(layers, x, torch.cat([m.w_packed for m in layers]))
        for m, y in zip(layers, got):
            assert torch.equal(y, op_output(m, x))


def test_group_ops_refuse_bad_input(gen):
    a, b = make_deployed(gen, 64, 8), make_deployed(gen, 64, 8)
    x = rand(gen, 2, 64)
    with pytest.raises(Exception, match="in_features"):
        group_call([a, b], rand(gen, 2, 65))
    with pytest.raises(Exception, match="w_packed"):
        torch.ops.bitlinear.linear_group2(x, a.w_scale, a.w_packed, None, b.w_scale,
                                          b.w_packed[:, :-1], None, a.eps, 64, True)
    with pytest.raises(Exception, match="w_scale"):
        torch.ops.bitlinear.linear_group2(x, a.w_scale, a.w_packed, None,
                                          torch.ones(3), b.w_packed, None, a.eps, 64, True)


@pytest.fixture
def inductor_pass_slot():
    """Restore inductor's post-grad custom pass slot, which fuse_projections fills."""
    from torch._inductor import config
    old = config.post_grad_custom_post_pass
    config.post_grad_custom_post_pass = None
    torch._dynamo.reset()
    yield config
    config.post_grad_custom_post_pass = old
    torch._dynamo.reset()


def native_calls(fn, *args):
    from torch.profiler import profile
    with profile() as p:
        fn(*args)
    return {e.key: e.count for e in p.key_averages() if e.key.startswith("bitlinear::")}


@pytest.mark.parametrize("cpp_wrapper", [False, True])
def test_compiled_fused_model_groups_its_calls(gen, inductor_pass_slot, cpp_wrapper):
    """After fuse_projections a compiled graph calls linear_group3 for q/k/v: same bits as the
    separate layers, and the weights of the fused group stream in one native call."""
    attn = make_attn(gen, K=129, ns=(7, 33, 3), bias=(True, False, False),
                     quant=("ai8pc_wpc", "ai8pc_wpt", "ai8pc_wpc"))
    x = rand(gen, 2, 129)
    want, _ = separate(attn, x)
    assert bitlinear.fuse_projections(attn) == 1
    assert inductor_pass_slot.post_grad_custom_post_pass is bitlinear.fuse.group_pass()
    compiled = torch.compile(attn, fullgraph=True, options={"cpp_wrapper": cpp_wrapper})
    with torch.no_grad():
        assert torch.equal(compiled(x), want)
        calls = native_calls(compiled, x)
    assert calls.get("bitlinear::linear_group3") == 1 and calls.get("bitlinear::linear") == 1
    # a member's weights replaced after compiling (not consecutive any more): one by one, and
    # still the right answer
    with torch.no_grad():
        attn.k_proj.w_packed = attn.k_proj.w_packed.clone()
        attn.k_proj.w_packed[0] ^= 0x55
        want2, _ = separate(attn, x)
        assert not torch.equal(want2, want)
        assert torch.equal(compiled(x), want2)


def test_an_occupied_pass_slot_is_left_alone(gen, inductor_pass_slot):
    def mine(graph):
        pass
    inductor_pass_slot.post_grad_custom_post_pass = mine
    bitlinear.fuse_projections(make_attn(gen))
    assert inductor_pass_slot.post_grad_custom_post_pass is mine


def _graph_of(n_calls, late=()):
    """An FX graph of n_calls bitlinear::linear calls on one CPU input; a call in `late` takes
    weights made after the first call."""
    g = torch.fx.Graph()
    x = g.placeholder("x")
    x.meta["val"] = torch.empty(1, 8)
    ws = [g.placeholder(f"ws{i}") for i in range(n_calls)]
    wps = [g.placeholder(f"wp{i}") for i in range(n_calls)]
    outs = []
    for i in range(n_calls):
        wp = wps[i]
        if i in late:
            wp = g.call_function(torch.ops.aten.clone.default, (wp,))
        outs.append(g.call_function(torch.ops.bitlinear.linear.default,
                                    (x, ws[i], wp, None, 1e-5, 8, True)))
    g.output(tuple(outs))
    return g


@pytest.mark.parametrize("n, sizes", [(1, []), (2, [2]), (3, [3]), (4, [2, 2]), (5, [3, 2]),
                                      (7, [3, 2, 2])])
def test_pass_groups_in_threes_and_pairs(n, sizes):
    from bitlinear.fuse import _group_linear_calls
    g = _graph_of(n)
    assert _group_linear_calls(g) == sum(sizes)
    g.lint()
    got = [(len(node.args) - 4) // 3 for node in g.nodes if str(node.target).startswith(
        "bitlinear.linear_group")]
    assert sorted(got, reverse=True) == sizes
    singles = [node for node in g.nodes if node.target is torch.ops.bitlinear.linear.default]
    assert len(singles) == n - sum(sizes)


def test_pass_leaves_late_weights_and_other_devices_alone():
    from bitlinear.fuse import _group_linear_calls
    g = _graph_of(3, late=(2,))  # the third call's weights come after the first call
    assert _group_linear_calls(g) == 2
    g.lint()
    g = _graph_of(3)
    next(iter(g.nodes)).meta["val"] = torch.empty(1, 8, device="meta")  # not a CPU input
    assert _group_linear_calls(g) == 0
