"""Decode attention on the CPU (csrc/cpu/attn.c, bitlinear/attention.py): the kernel against a
float64 softmax(q k^T * scale + mask) v on random inputs (fresh seed per run), strided views,
masks (additive, bool, per head, holes, fully masked rows as torch's SDPA), thread counts, error
statuses; then transformers' attention function: fallbacks, the custom op, and a tiny Llama
generating the same greedy tokens as with "sdpa", eagerly and compiled with a StaticCache."""
import math

import pytest
import torch
from torch.nn import functional as F

from bitlinear import _ext
from bitlinear import attention as A

NATIVE = getattr(_ext._native, "attn_decode_cpu", None)
needs_native = pytest.mark.skipif(NATIVE is None, reason="native attn_decode_cpu not built")

try:
    import transformers  # noqa: F401
    HAS_TF = True
except ImportError:
    HAS_TF = False
needs_tf = pytest.mark.skipif(not HAS_TF, reason="transformers is not installed")


def reference(q, k, v, mask, scale):
    """float64 softmax(q k^T * scale + mask) v per query head (GQA by head index), [B, 1, Hq, D];
    a head with every position masked gives zeros (torch's CPU SDPA)."""
    B, Hq, _, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    G = Hq // Hkv
    kk = k.double().repeat_interleave(G, dim=1)
    vv = v.double().repeat_interleave(G, dim=1)
    s = (q.double() @ kk.transpose(-1, -2)) * scale  # [B, Hq, 1, L]
    if mask is not None:
        m = mask.expand(B, Hq, 1, L)
        if m.dtype == torch.bool:
            s = s.masked_fill(~m, float("-inf"))
        else:
            s = s + m.double()
    dead = torch.isneginf(s).all(dim=-1, keepdim=True)
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return (p @ vv).transpose(1, 2)


def strided(gen, B, H, L, D, how):
    """[B, H, L, D] float32 with D contiguous and the other strides per `how`."""
    if how == "contiguous":
        return torch.randn(B, H, L, D, generator=gen)
    if how == "cache":  # a static cache's first L positions, with padding in each row
        return torch.randn(B, H, L + 9, D + 3, generator=gen)[:, :, :L, :D]
    if how == "permuted":  # [L, B, H, D] storage: position outermost
        return torch.randn(L, B, H, D, generator=gen).permute(1, 2, 0, 3)
    if how == "heads_outer":  # [H, B, L, D] storage
        return torch.randn(H, B, L, D, generator=gen).transpose(0, 1)
    raise ValueError(how)


def run_native(q, k, v, mask, scale, nt, out=None):
    """The raw binding on tensors (any strides, D contiguous); out [B, 1, Hq, D]."""
    B, Hq, _, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    if out is None:
        out = torch.full((B, 1, Hq, D), float("nan"))
    if mask is None:
        mp = (0, 0, 0, 0, 0)
    else:
        m = mask.expand(B, Hq, 1, L)
        mp = (m.data_ptr(), 2 if m.dtype == torch.bool else 1, m.stride(0), m.stride(1),
              m.stride(3))
    NATIVE(B, Hq, Hkv, L, D, q.data_ptr(), q.stride(0), q.stride(1),
           k.data_ptr(), k.stride(0), k.stride(1), k.stride(2),
           v.data_ptr(), v.stride(0), v.stride(1), v.stride(2),
           *mp, float(scale), out.data_ptr(), out.stride(0), out.stride(2), nt)
    return out


def make_mask(gen, kind, B, Hq, L):
    if kind == "none":
        return None
    if kind == "tail":  # a static cache: the first n positions valid, the rest -inf
        n = int(torch.randint(1, L + 1, (1,), generator=gen))
        m = torch.zeros(B, 1, 1, L)
        m[..., n:] = float("-inf")
        return m
    if kind == "bool_tail":
        n = int(torch.randint(1, L + 1, (1,), generator=gen))
        m = torch.zeros(B, 1, 1, L, dtype=torch.bool)
        m[..., :n] = True
        return m
    if kind == "holes":  # random -inf holes and finite biases, per batch; one position kept
        m = torch.randn(B, 1, 1, L, generator=gen)
        m[torch.rand(B, 1, 1, L, generator=gen) < 0.4] = float("-inf")
        m[..., 0] = 0.5
        return m
    if kind == "bool_holes_per_head":
        m = torch.rand(B, Hq, 1, L, generator=gen) < 0.6
        m[..., -1] = True
        return m
    if kind == "add_per_head":
        m = torch.randn(B, Hq, 1, L, generator=gen) * 3
        m[torch.rand(B, Hq, 1, L, generator=gen) < 0.3] = float("-inf")
        m[..., L // 2] = 0.0
        return m
    raise ValueError(kind)


HEADS = [(20, 5), (4, 4), (6, 2), (3, 1), (8, 1)]
LENGTHS = [1, 3, 7, 128, 129, 1000]
DIMS = [64, 128, 96, 80, 7]
MASKS = ["none", "tail", "bool_tail", "holes", "bool_holes_per_head", "add_per_head"]
LAYOUTS = ["contiguous", "cache", "permuted", "heads_outer"]


@needs_native
@pytest.mark.parametrize("B", [1, 2])
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("L", LENGTHS)
def test_kernel_matches_float64(gen, B, heads, L):
    Hq, Hkv = heads
    for i, D in enumerate(DIMS):
        layout = LAYOUTS[(i + L) % len(LAYOUTS)]
        kind = MASKS[(i + B + Hq + L) % len(MASKS)]
        q = strided(gen, B, Hq, 1, D, ["contiguous", "heads_outer"][i % 2])
        k = strided(gen, B, Hkv, L, D, layout)
        v = strided(gen, B, Hkv, L, D, LAYOUTS[(i + 1) % len(LAYOUTS)])
        mask = make_mask(gen, kind, B, Hq, L)
        scale = 1.0 / math.sqrt(D) * float(torch.empty(1).uniform_(0.5, 2.0, generator=gen))
        ref = reference(q, k, v, mask, scale)
        out1 = run_native(q, k, v, mask, scale, 1)
        out2 = run_native(q, k, v, mask, scale, 2)
        assert torch.equal(out1, out2), (D, layout, kind)
        err = (out1.double() - ref).abs().max().item()
        tol = 2e-6 * max(1.0, ref.abs().max().item()) * (1 + math.log2(L))
        assert err <= tol, (D, layout, kind, err)


@needs_native
@pytest.mark.parametrize("kind", MASKS)
def test_masks_through_public_api_match_sdpa(gen, kind):
    B, Hq, Hkv, L, D = 2, 20, 5, 128, 128
    q, k, v = (strided(gen, B, h, n, D, "contiguous") for h, n in ((Hq, 1), (Hkv, L), (Hkv, L)))
    mask = make_mask(gen, kind, B, Hq, L)
    out = A.attn_decode(q, k, v, mask)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert out.shape == (B, 1, Hq, D) and out.is_contiguous()
    torch.testing.assert_close(out, sdpa.transpose(1, 2), rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask, D ** -0.5), rtol=1e-5,
                               atol=2e-6)


@needs_native
@pytest.mark.parametrize("kind", ["float", "bool", "one_head", "one_batch"])
def test_fully_masked_rows_give_what_sdpa_gives(gen, kind):
    B, Hq, Hkv, L, D = 2, 6, 2, 9, 32
    q, k, v = (torch.randn(B, h, n, D, generator=gen) for h, n in ((Hq, 1), (Hkv, L), (Hkv, L)))
    if kind == "float":
        mask = torch.full((B, 1, 1, L), float("-inf"))
    elif kind == "bool":
        mask = torch.zeros(B, 1, 1, L, dtype=torch.bool)
    elif kind == "one_head":
        mask = torch.ones(B, Hq, 1, L, dtype=torch.bool)
        mask[1, 3] = False
    else:
        mask = torch.zeros(B, 1, 1, L)
        mask[0] = float("-inf")
    out = A.attn_decode(q, k, v, mask)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    sdpa = sdpa.transpose(1, 2)
    assert not out.isnan().any()
    torch.testing.assert_close(out, sdpa, rtol=1e-5, atol=2e-6)
    dead = (~mask if mask.dtype == torch.bool else torch.isneginf(mask)).expand(B, Hq, 1, L)
    dead = dead.all(-1).transpose(1, 2)  # [B, 1, Hq]
    assert dead.any() and (out[dead] == 0).all() and (sdpa[dead] == 0).all()


@needs_native
def test_masked_positions_are_not_read(gen):
    """NaN in the k / v rows of masked positions (every head) changes nothing."""
    B, Hq, Hkv, L, D = 1, 20, 5, 128, 128
    q, k, v = (torch.randn(B, h, n, D, generator=gen) for h, n in ((Hq, 1), (Hkv, L), (Hkv, L)))
    mask = torch.zeros(B, 1, 1, L)
    mask[..., 50:] = float("-inf")
    clean = A.attn_decode(q, k, v, mask)
    k[:, :, 50:] = float("nan")
    v[:, :, 50:] = float("nan")
    assert torch.equal(A.attn_decode(q, k, v, mask), clean)
    assert torch.equal(A.attn_decode(q, k, v, mask == 0), clean)


@needs_native
def test_threads_give_identical_bits(gen):
    for B, Hq, Hkv, L, D in ((1, 20, 5, 128, 128), (1, 8, 1, 300, 64), (3, 12, 4, 77, 96),
                             (2, 16, 2, 1000, 80)):
        q, k, v = (torch.randn(B, h, n, D, generator=gen) for h, n in ((Hq, 1), (Hkv, L),
                                                                      (Hkv, L)))
        mask = make_mask(gen, "add_per_head", B, Hq, L)
        outs = [run_native(q, k, v, mask, D ** -0.5, nt) for nt in (1, 2, 3, 64)]
        assert all(torch.equal(outs[0], o) for o in outs[1:])


@needs_native
def test_output_strides_are_honoured(gen):
    """out in [B, Hq, D] order (head stride D * ... ) and padded rows: only the rows are written."""
    B, Hq, Hkv, L, D = 2, 4, 2, 10, 16
    q, k, v = (torch.randn(B, h, n, D, generator=gen) for h, n in ((Hq, 1), (Hkv, L), (Hkv, L)))
    buf = torch.full((Hq, B, D + 5), -7.0)  # heads outer, padded rows
    out = buf.permute(1, 0, 2)[:, :, :D].unsqueeze(1)  # [B, 1, Hq, D] view
    run_native(q, k, v, None, 0.3, 2, out=out)
    torch.testing.assert_close(out.double(), reference(q, k, v, None, 0.3), rtol=1e-5,
                               atol=2e-6)
    assert (buf[:, :, D:] == -7.0).all()


@needs_native
def test_error_statuses(gen):
    q, k, v = torch.randn(1, 4, 1, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    out = torch.empty(1, 1, 4, 8)
    good = [1, 4, 2, 5, 8, q.data_ptr(), 32, 8, k.data_ptr(), 80, 40, 8, v.data_ptr(), 80, 40,
            8, 0, 0, 0, 0, 0, 0.35, out.data_ptr(), 32, 8, 1]
    NATIVE(*good)

    def bad(**changes):
        a = list(good)
        for i, val in changes.items():
            a[int(i[1:])] = val
        return a

    cases = [
        (bad(i5=0), "NULL"), (bad(i8=0), "NULL"), (bad(i12=0), "NULL"), (bad(i22=0), "NULL"),
        (bad(i17=1), "NULL"),  # a mask type without a mask
        (bad(i1=3), "invalid size"), (bad(i2=0), "invalid size"), (bad(i4=0), "invalid size"),
        (bad(i0=-1), "invalid size"), (bad(i3=-1), "invalid size"),
        (bad(i3=1 << 62), "invalid size"), (bad(i11=1 << 61, i3=9), "invalid size"),
        (bad(i21=float("inf")), "argument out of range"),
        (bad(i21=float("nan")), "argument out of range"),
        (bad(i7=-8), "leading dimension"), (bad(i11=-8), "leading dimension"),
        (bad(i24=0), "leading dimension"),  # out heads overlap
        (bad(i24=4), "leading dimension"),  # out rows overlap
        (bad(i16=k.data_ptr(), i17=1, i20=-1), "leading dimension"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            NATIVE(*args)
    with pytest.raises(ValueError, match="mask type"):
        NATIVE(*bad(i17=3))
    with pytest.raises(TypeError, match="26 arguments"):
        NATIVE(*good[:-1])
    # B = 0: nothing to do, nothing read
    NATIVE(*bad(i0=0, i5=0, i8=0, i12=0, i22=0))
    # L = 0: zeros, as torch's SDPA
    NATIVE(*bad(i3=0))
    assert (out == 0).all()


@needs_native
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "per_head"])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "head_dim_strided", "neg_view"])
def test_custom_op_cpu_kernel_equals_the_python_path(gen, mask_kind, layout):
    """torch.ops.bitlinear.attn_decode's C++ CPU kernel (what compiled graphs call): the same
    bits as attn_decode's eager path on the same operands, for any strides."""
    B, Hkv, G, L, D = (int(v) for v in torch.randint(1, 4, (1,), generator=gen).tolist() +
                       [2, 3, 37, 24])
    Hq = Hkv * G
    q = torch.randn(B, Hq, 1, D, generator=gen)
    k, v = torch.randn(B, Hkv, L, D, generator=gen), torch.randn(B, Hkv, L, D, generator=gen)
    mask = {"none": None,
            "bool": torch.rand(B, 1, 1, L, generator=gen) < 0.6,
            "float": torch.randn(B, 1, 1, L, generator=gen),
            "per_head": torch.rand(B, Hq, 1, L, generator=gen) < 0.6}[mask_kind]
    if layout == "strided":  # views into larger caches
        k = torch.randn(B, Hkv, L + 5, D, generator=gen)[:, :, 2:L + 2]
        v = torch.randn(B, Hkv + 1, L, D, generator=gen)[:, 1:]
    elif layout == "head_dim_strided":
        k = k.transpose(2, 3).contiguous().transpose(2, 3)
    want = A._run_kernel(NATIVE, q, k, v, mask, 0.3)
    got = torch.ops.bitlinear.attn_decode(torch._neg_view(-q) if layout == "neg_view" else q,
                                          k, v, mask, 0.3)
    assert got.shape == (B, 1, Hq, D)
    assert torch.equal(got, want)
    torch.testing.assert_close(got.double(), reference(q, k, v, mask, 0.3), rtol=1e-5, atol=1e-5)


@needs_native
def test_custom_op_cpu_kernel_refuses_what_it_does_not_take():
    q, k, v = torch.randn(1, 4, 1, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    op = torch.ops.bitlinear.attn_decode
    cases = [((q.half(), k, v, None), "float32"),
             ((q, k, v[:, :1], None), "shapes"),
             ((torch.randn(1, 3, 1, 8), k, v, None), "multiple of Hkv"),
             ((torch.randn(1, 4, 2, 8), k, v, None), "shapes"),
             ((q, k, v, torch.ones(1, 1, 1, 5, dtype=torch.int32)), "bool or float32"),
             ((q, k, v, torch.ones(1, 1, 1, 4, dtype=torch.bool)), "broadcast"),
             ((q[0], k, v, None), "4-D")]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            op(*args, 0.5)
    # attn_decode, compiled, falls back to SDPA where the kernel does not apply
    fn = torch.compile(lambda q, k, v: A.attn_decode(q, k, v, None, 0.5), fullgraph=True)
    torch.testing.assert_close(fn(q.double(), k.double(), v.double()),
                               reference(q, k, v, None, 0.5), rtol=1e-6, atol=1e-6)


@needs_native
def test_custom_op_opcheck_and_compile(gen):
    q, k, v = torch.randn(2, 6, 1, 32), torch.randn(2, 2, 20, 32), torch.randn(2, 2, 20, 32)
    mask = torch.rand(2, 1, 1, 20, generator=gen) < 0.7
    mask[..., 0] = True
    torch.library.opcheck(torch.ops.bitlinear.attn_decode, (q, k, v, mask, 0.2))
    torch.library.opcheck(torch.ops.bitlinear.attn_decode, (q, k, v, None, 0.2))
    fn = torch.compile(lambda q, k, v, m: A.attn_decode(q, k, v, m, 0.2), fullgraph=True,
                       backend="aot_eager")
    torch.testing.assert_close(fn(q, k, v, mask), reference(q, k, v, mask, 0.2).float(),
                               rtol=1e-5, atol=2e-6)


# ------------------------------------------------------------------ transformers interop
class _Mod(torch.nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


@needs_tf
@needs_native
def test_decode_attention_uses_kernel_or_falls_back(gen, monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    calls = []
    native = A._native()
    monkeypatch.setattr(A, "_native", lambda: (lambda *a: (calls.append(1), native(*a))[1]))
    mod = _Mod(3).eval()
    B, Hq, Hkv, L, D = 2, 6, 2, 11, 16
    k, v = torch.randn(B, Hkv, L, D, generator=gen), torch.randn(B, Hkv, L, D, generator=gen)
    mask = torch.ones(B, 1, 1, L, dtype=torch.bool)
    mask[0, ..., 7:] = False
    q = torch.randn(B, Hq, 1, D, generator=gen)
    out, w = A.decode_attention(mod, q, k, v, mask, scaling=0.25)
    ref, _ = sdpa_attention_forward(mod, q, k, v, mask, scaling=0.25)
    assert w is None and len(calls) == 1 and out.shape == ref.shape == (B, 1, Hq, D)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=2e-6)
    # default scaling: 1 / sqrt(D)
    out, _ = A.decode_attention(mod, q, k, v, None)
    torch.testing.assert_close(out, sdpa_attention_forward(mod, q, k, v, None)[0], rtol=1e-5,
                               atol=2e-6)
    assert len(calls) == 2
    # fallbacks: transformers' function, unchanged
    q2 = torch.randn(B, Hq, 3, D, generator=gen)
    cases = [
        dict(query=q2, attention_mask=None),                                  # 3 query tokens
        dict(query=q.double(), key=k.double(), value=v.double()),              # float64
        dict(query=q.clone().requires_grad_()),                               # autograd
        dict(value=torch.randn(B, Hkv, L, 8, generator=gen)),                 # value head_dim
        dict(sliding_window=4),
    ]
    for c in cases:
        args = dict(query=q, key=k, value=v, attention_mask=mask, scaling=0.25)
        args.update(c)
        out, _ = A.decode_attention(mod, **args)
        ref, _ = sdpa_attention_forward(mod, **args)
        assert torch.equal(out, ref)
    assert len(calls) == 2
    # dropout: only in training is it applied (then the fallback)
    out, _ = A.decode_attention(mod, q, k, v, mask, scaling=0.25, dropout=0.5)
    assert len(calls) == 3
    mod.train()
    torch.manual_seed(0)
    out, _ = A.decode_attention(mod, q, k, v, mask, scaling=0.25, dropout=0.5)
    torch.manual_seed(0)
    ref, _ = sdpa_attention_forward(mod, q, k, v, mask, scaling=0.25, dropout=0.5)
    assert len(calls) == 3 and torch.equal(out, ref)
    with pytest.raises(ValueError, match="softcap"):
        A.decode_attention(mod, q, k, v, mask, softcap=30.0)


@needs_tf
def test_register_is_idempotent_and_sets_sdpa_masks():
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    for _ in range(2):
        assert A.register() == "bitlinear_sdpa"
    assert AttentionInterface._global_mapping["bitlinear_sdpa"] is A.decode_attention
    assert (AttentionMaskInterface._global_mapping["bitlinear_sdpa"]
            is AttentionMaskInterface._global_mapping["sdpa"])
    assert ALL_MASK_ATTENTION_FUNCTIONS["bitlinear_sdpa"] is ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]


def _tiny_llama(seed):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=128, intermediate_size=256,
                      num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                      max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


@torch.no_grad()
def _greedy(model, prompt, steps, step_fn=None):
    """(tokens, logits of each step): eager with the model's own cache, or with `step_fn` (a
    compiled forward) on a StaticCache of 128 positions."""
    import inspect
    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    P = prompt.shape[1]
    if step_fn is None:
        out = model(prompt, use_cache=True)
    else:
        from transformers import StaticCache
        cache = StaticCache(config=model.config, max_cache_len=128)
        out = model(prompt, **{kw: cache}, cache_position=torch.arange(P),
                    use_cache=True)
    toks, logits = [], [out.logits[:, -1]]
    tok = out.logits[:, -1:].argmax(-1)
    for i in range(steps):
        toks.append(int(tok))
        if step_fn is None:
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            out = model(tok, **{kw: cache}, use_cache=True)
        else:
            out = step_fn(tok, **{kw: cache}, cache_position=torch.tensor([P + i]),
                          use_cache=True)
        logits.append(out.logits[:, -1])
        tok = out.logits[:, -1:].argmax(-1)
    return toks, torch.cat(logits)


@needs_tf
@needs_native
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_tiny_llama_same_tokens_as_sdpa(gen, monkeypatch, compiled):
    A.register()
    calls = []
    native = A._native()
    monkeypatch.setattr(A, "_native", lambda: (lambda *a: (calls.append(1), native(*a))[1]))
    model = _tiny_llama(int(torch.randint(0, 2**31, (1,), generator=gen)))
    prompt = torch.randint(0, 97, (1, 8), generator=gen)
    steps = 12
    results = {}
    for impl in ("sdpa", "bitlinear_sdpa"):
        model.set_attn_implementation(impl)
        step_fn = None
        if compiled:
            torch._dynamo.reset()
            step_fn = torch.compile(model.forward, fullgraph=True, dynamic=False)
        n0 = len(calls)
        from torch.profiler import profile
        with profile() as prof:  # compiled, the op's C++ kernel runs: counted in the trace
            results[impl] = _greedy(model, prompt, steps, step_fn)
        ops = sum(e.count for e in prof.key_averages() if e.key == "bitlinear::attn_decode")
        ran = len(calls) - n0 + (ops if compiled else 0)
        if impl == "bitlinear_sdpa":  # every decode step of every layer ran the kernel
            assert ran >= steps * model.config.num_hidden_layers
        else:
            assert ran == 0
    (ta, la), (tb, lb) = results["sdpa"], results["bitlinear_sdpa"]
    torch.testing.assert_close(lb, la, rtol=1e-4, atol=1e-4)
    assert ta == tb
    torch._dynamo.reset()
