"""The int8 output head (bitlinear/head.py): convert(..., head="int8"), convert_bitnet(..., head=...),
tied embeddings, accuracy against the float head, serialization, torch.compile, size_report."""
import copy
import io

import pytest
import torch
from torch import nn

from bitlinear.convert import convert, deploy, load_deployed, save_deployed, size_report
from bitlinear.head import Int8Embedding, Int8Head, quantize_head, quantize_rows
from conftest import head_llama

try:
    import transformers  # noqa: F401
    HAS_TF = True
except ImportError:  # pragma: no cover
    HAS_TF = False
needs_tf = pytest.mark.skipif(not HAS_TF, reason="transformers is not installed")


def _linear(gen, K=256, N=1000, bias=False):
    lin = nn.Linear(K, N, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N, K, generator=gen) * 0.05)
        if bias:
            lin.bias.copy_(torch.randn(N, generator=gen))
    return lin


def _dequant(head):
    return head.weight.float() * head.scale[:, None]


def test_quantize_rows(gen):
    w = torch.randn(50, 33, generator=gen)
    w[3] = 0
    q, s = quantize_rows(w)
    assert q.dtype == torch.int8 and s.dtype == torch.float32 and q.shape == w.shape
    assert int(q.abs().max()) == 127 and s[3] == 1 and not q[3].any()
    err = (q.float() * s[:, None] - w).abs()
    assert bool((err <= s[:, None] / 2 * (1 + 1e-6)).all())
    with pytest.raises(ValueError, match="NaN"):
        quantize_rows(torch.tensor([[1.0, float("nan")]]))


@pytest.mark.parametrize("bias", [False, True])
def test_int8_head_matches_dequantized_weights(gen, bias):
    """Against the exact product with the dequantized weights: only the activations' 8-bit
    rounding differs (per token, range [-1, 1] after dividing by max|x|)."""
    lin = _linear(gen, bias=bias)
    head = Int8Head.from_linear(lin)
    x = torch.randn(5, 256, generator=gen)
    with torch.no_grad():
        y = head(x)
        ref = x @ _dequant(head).t() + (lin.bias if bias else 0)
    # |error| <= sum_k |w_k| * step/2 per output, step = 2 max|x| / 255 (127 with reduce_range)
    bound = _dequant(head).abs().sum(1)[None, :] * x.abs().amax(1, keepdim=True) * 2 / 127 / 2
    assert bool(((y - ref).abs() <= bound + 1e-5).all())
    assert y.dtype == torch.float32 and y.shape == (5, 1000)


def test_int8_head_rows_independent_dtypes_shapes(gen):
    head = Int8Head.from_linear(_linear(gen))
    x = torch.randn(2, 3, 256, generator=gen)
    with torch.no_grad():
        y = head(x)
        assert y.shape == (2, 3, 1000)
        for i in range(2):
            for j in range(3):  # a row's output does not depend on the rest of the batch
                assert torch.equal(head(x[i, j:j + 1]), y[i, j:j + 1])
        yb = head(x.bfloat16())
        assert yb.dtype == torch.bfloat16
        assert head(torch.empty(0, 256)).shape == (0, 1000)
        xn = x[0].clone()
        xn[1, 5] = float("nan")
        yn = head(xn)
        assert bool(yn[1].isnan().all()) and torch.equal(yn[0], y[0, 0]) and torch.equal(yn[2], y[0, 2])
    with pytest.raises(ValueError, match="features"):
        head(torch.randn(1, 255))


def test_int8_head_gradient_reaches_input(gen):
    head = Int8Head.from_linear(_linear(gen))
    x = torch.randn(2, 256, generator=gen, requires_grad=True)
    head(x).sum().backward()
    torch.testing.assert_close(x.grad, _dequant(head).sum(0).expand(2, -1))


def test_int8_head_state_dict_weights_only(gen, tmp_path):
    lin = _linear(gen, bias=True)
    head = Int8Head.from_linear(lin)
    sd = head.state_dict()
    assert sorted(sd) == ["bias", "scale", "weight"]
    assert sd["weight"].dtype == torch.int8 and sd["scale"].dtype == torch.float32
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = Int8Head(256, 1000, bias=True)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(3, 256, generator=gen)
    with torch.no_grad():
        assert torch.equal(fresh(x), head(x))
        # replacing the weights repacks (the in-memory fbgemm copy follows the buffers)
        fresh.weight.copy_(-fresh.weight)
        torch.testing.assert_close(fresh(x) - lin.bias, -(head(x) - lin.bias), rtol=0, atol=1e-5)


def test_dtype_cast_keeps_int8_and_float32_scales(gen):
    torch.manual_seed(0)
    model = deploy(convert(TiedLM(), head="int8"))
    model.lm_head.bias = torch.randn(300, generator=gen)
    model.to(torch.bfloat16)
    assert model.embed.weight.dtype == torch.int8 and model.embed.scale.dtype == torch.float32
    assert model.lm_head.bias.dtype == torch.float32 and model.embed.dtype == torch.bfloat16
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).dtype == torch.bfloat16


def test_loading_a_float_head_into_an_int8_head_raises(gen):
    lin = _linear(gen)
    head = Int8Head(256, 1000, bias=False)
    with pytest.raises(ValueError, match="expected torch.int8"):
        head.load_state_dict(lin.state_dict(), strict=False)
    sd = Int8Head.from_linear(lin).state_dict()
    sd["scale"][3] = 0
    with pytest.raises(ValueError, match="finite and > 0"):
        head.load_state_dict(sd)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_int8_head_torch_compile(gen, backend):
    head = Int8Head.from_linear(_linear(gen, bias=True))
    x = torch.randn(1, 256, generator=gen)
    torch._dynamo.reset()
    compiled = torch.compile(head, backend=backend, fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x), head(x))


def test_convert_head_option_and_size_report(gen):
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("body", nn.Linear(32, 64))
    model.add_module("lm_head", nn.Linear(64, 500, bias=False))
    plain = convert(copy.deepcopy(model))
    assert type(plain.lm_head) is nn.Linear
    with pytest.raises(ValueError, match="head"):
        convert(copy.deepcopy(model), head="int2")
    q = deploy(convert(model, head="int8"))
    assert isinstance(q.lm_head, Int8Head)
    x = torch.randn(2, 32, generator=gen)
    with torch.no_grad():
        q(x)
    rep = size_report(q)
    assert rep["int8_head"] == 500 * 64 + 500 * 4
    assert rep["head_packed"] >= 500 * 64 and rep["resident"] >= rep["total"] + rep["head_packed"]
    assert "int8_head" in rep["text"]
    assert convert(q, head="int8") is q and isinstance(q.lm_head, Int8Head)  # idempotent


class TiedLM(nn.Module):
    def __init__(self, V=300, D=64):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.proj = nn.Linear(D, D)
        self.lm_head = nn.Linear(D, V, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        return self.lm_head(torch.relu(self.proj(self.embed(ids))))


def test_tied_embedding_shares_the_int8_table(gen, tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    w_float = model.embed.weight.detach().clone()
    deploy(convert(model, head="int8"))
    assert isinstance(model.embed, Int8Embedding) and isinstance(model.lm_head, Int8Head)
    assert model.lm_head.tied and model.lm_head.weight is model.embed.weight
    assert model.lm_head.scale is model.embed.scale
    sd = model.state_dict()
    assert "lm_head.weight" not in sd and "embed.weight" in sd
    ids = torch.randint(0, 300, (2, 7), generator=gen)
    with torch.no_grad():
        emb = model.embed(ids)
        torch.testing.assert_close(emb, (model.embed.weight.float() * model.embed.scale[:, None])[ids],
                                   rtol=0, atol=0)
        assert (emb - w_float[ids]).abs().max() <= model.embed.scale.max() / 2 * 1.0001
        y = model(ids)
    rep = size_report(model)
    assert rep["int8_head"] == 300 * 64 + 300 * 4  # one copy for the embedding and the head
    # save_deployed / load_deployed into a fresh model built the same way
    save_deployed(model, tmp_path / "m.safetensors")
    torch.manual_seed(1)
    fresh = deploy(convert(TiedLM(), head="int8"))
    load_deployed(fresh, tmp_path / "m.safetensors")
    assert fresh.lm_head.weight is fresh.embed.weight
    with torch.no_grad():
        assert torch.equal(fresh(ids), y)
    # torch.save / torch.load(weights_only=True) of the state_dict
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh2 = deploy(convert(TiedLM(), head="int8"))
    fresh2.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh2(ids), y)


def test_tied_untie_option_and_non_embedding_tie(gen):
    torch.manual_seed(0)
    model = TiedLM()
    quantize_head(model, tied="untie")
    assert type(model.embed) is nn.Embedding and isinstance(model.lm_head, Int8Head)
    assert not model.lm_head.tied

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.lm_head = nn.Linear(8, 8)
            self.lm_head.weight = self.a.weight

    with pytest.raises(ValueError, match="not nn.Embedding"):
        quantize_head(Odd())


@needs_tf
@pytest.mark.parametrize("tie", [False, True])
def test_logit_error_and_top1_against_float_head(gen, tie):
    """Random-weight Llama (vocab 2000), BitLinear body: the int8 head against the float head on the
    same final hidden states (the numbers docs/models.md quotes), and, tied, the whole model (the
    int8 input embedding changes the hidden states too)."""
    model = deploy(convert(head_llama(tie)))
    w = model.lm_head.weight.detach().clone()
    ids = torch.randint(3, 2000, (4, 64), generator=gen)
    with torch.no_grad():
        h = model.model(ids).last_hidden_state
        ref = h @ w.t()
        whole_ref = model(ids).logits
    convert(model, head="int8")
    with torch.no_grad():
        out = model.lm_head(h)
        whole = model(ids).logits
    err = (out - ref).abs()
    rel = (err.max() / ref.abs().max()).item()
    top1 = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
    whole_top1 = (whole.argmax(-1) == whole_ref.argmax(-1)).float().mean().item()
    print(f"\ntie={tie}: head on the same hidden states: max |logit error| {err.max().item():.4f}, "
          f"mean {err.mean().item():.4f}, max |logit| {ref.abs().max().item():.2f}, relative "
          f"{rel:.4f}, top-1 agreement {top1:.4f}; whole model top-1 agreement {whole_top1:.4f}")
    # over many seeds: relative 0.8-1.3%, top-1 0.957-0.992, tied whole model 0.918-0.961
    assert rel < 0.02 and top1 > 0.93
    assert whole_top1 > (0.85 if tie else 0.93)


@needs_tf
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hf_save_pretrained_from_pretrained(tmp_path, gen, tie, dtype):
    import bitlinear.hf  # noqa: F401  (registers the quantizer)
    from transformers import AutoModelForCausalLM
    model = deploy(convert(head_llama(tie).to(dtype), head="int8"))
    ids = torch.randint(3, 2000, (1, 9), generator=gen)
    with torch.no_grad():
        ref = model(ids).logits
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=dtype).eval()
    assert isinstance(loaded.lm_head, Int8Head) and loaded.lm_head.tied == tie
    assert loaded.lm_head.scale.dtype == torch.float32
    if tie:
        assert isinstance(loaded.model.embed_tokens, Int8Embedding)
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    with torch.no_grad():
        if dtype == torch.float32:
            assert torch.equal(loaded(ids).logits, ref)
        # bf16: .to(bfloat16) above also rounded the rotary inv_freq that from_pretrained
        # recomputes in float32; compare the head and the embedding on the same inputs
        h = torch.randn(3, 128, generator=gen).to(dtype)
        assert torch.equal(loaded.lm_head(h), model.lm_head(h))
        assert torch.equal(loaded.model.embed_tokens(ids), model.model.embed_tokens(ids))


@needs_tf
def test_convert_bitnet_head_option():
    from bitlinear.hf import convert_bitnet
    from transformers import BitNetConfig, BitNetForCausalLM
    cfg = BitNetConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    model = BitNetForCausalLM(cfg).eval()
    assert type(convert_bitnet(copy.deepcopy(model)).lm_head) is nn.Linear
    with pytest.raises(ValueError, match="head"):
        convert_bitnet(copy.deepcopy(model), head="fp8")
    convert_bitnet(model, head="int8")
    assert isinstance(model.lm_head, Int8Head)
    assert model.config.quantization_config.heads == {
        "lm_head": {"kind": "int8", "tied": None, "bias": False}}


@needs_tf
@pytest.mark.parametrize("tie", [False, True])
def test_llama_int8_head_torch_compile_fullgraph(gen, tie):
    model = deploy(convert(head_llama(tie, V=500), head="int8"))
    ids = torch.randint(3, 500, (1, 9), generator=gen)
    with torch.no_grad():
        eager = model(ids, use_cache=False).logits
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        out = compiled(ids, use_cache=False).logits
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5 * eager.abs().max().item())


def test_untracked_writes_need_refresh_and_inference_tensors_repack():
    # fbgemm's packed copy is a second copy (documented): tracked writes are seen, untracked
    # ones after refresh(); weights that are inference tensors are never served stale
    from bitlinear.head import Int8Head
    torch.manual_seed(1)
    a, b = nn.Linear(64, 48), nn.Linear(64, 48)
    hb = Int8Head.from_linear(b)
    x = torch.randn(2, 64)

    def fresh_with_b_weights():  # packed on its first call
        h = Int8Head.from_linear(a)
        with torch.no_grad():
            h.weight.copy_(hb.weight)
            h.scale.copy_(hb.scale)
        return h

    ha = Int8Head.from_linear(a)
    with torch.no_grad():
        ha(x)
        ha.weight.copy_(hb.weight)      # tracked (version counter)
        ha.scale.copy_(hb.scale)
        assert torch.equal(ha(x), fresh_with_b_weights()(x))
        ha.weight.numpy()[...] = Int8Head.from_linear(a).weight.numpy()  # untracked
        ha.scale.copy_(Int8Head.from_linear(a).scale)
        assert torch.equal(ha.refresh()(x), Int8Head.from_linear(a)(x))
    with torch.inference_mode():
        hi = Int8Head.from_linear(a)
        hi(x)
        hi.weight.copy_(hb.weight)
        hi.scale.copy_(hb.scale)
        assert torch.equal(hi(x), fresh_with_b_weights()(x))
