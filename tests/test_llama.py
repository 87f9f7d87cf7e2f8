"""A tiny random-init transformers Llama converted to BitLinear: deployed == training mode, bit for bit,
generate() works on the kernels, torch.compile of the deployed model matches eager. No download."""
import copy
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from bitlinear import BitLinear  # noqa: E402
from bitlinear.convert import bitlinear_modules, convert, deploy  # noqa: E402


def _config():
    return LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _model(gen, quant_type="ai8pc_wpt"):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    model = LlamaForCausalLM(_config()).eval()
    # larger than the 0.02 init so the quantization (and any mismatch) matters
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4)
    return convert(model, quant_type=quant_type)


# Training mode runs the deployed kernels on weights quantized at each step, so every layer, and
# the whole model, gives the same bits before and after deploy(): compared with torch.equal.


def _deploy_capturing(model, run):
    """Deploy `model`; return (training-mode copy, {layer name: (input, deployed output)} from run())."""
    fq_model = copy.deepcopy(model)
    deploy(model)
    captured, hooks = {}, []

    def hook(name):
        def fn(mod, inp, out):
            captured.setdefault(name, (inp[0], out))  # the first call; returns None
        return fn

    for name, m in bitlinear_modules(model):
        hooks.append(m.register_forward_hook(hook(name)))
    with torch.no_grad():
        result = run(model)
    for h in hooks:
        h.remove()
    return fq_model, captured, result


def _check_layers(fq_model, captured):
    layers = dict(bitlinear_modules(fq_model))
    assert set(captured) == set(layers)
    with torch.no_grad():
        for name, (x, y_dep) in captured.items():
            y_fq = layers[name](x)
            assert torch.equal(y_dep, y_fq), f"layer {name}"


def _check_end_to_end(dep, fq):
    """Training runs the deployed kernels, so the whole model is the same bits after deploy()."""
    assert torch.isfinite(dep).all()
    assert torch.equal(dep, fq)


@pytest.mark.parametrize("quant_type", ["ai8pc_wpt", "ai8pt_wpt", "ai8pc_wpc"])
def test_llama_deployed_equals_the_trained_model(gen, quant_type):
    model = _model(gen, quant_type)
    names = [n for n, _ in bitlinear_modules(model)]
    assert len(names) == 2 * 7 and not isinstance(model.lm_head, BitLinear)
    ids = torch.randint(3, 128, (2, 11), generator=gen)
    with torch.no_grad():
        fq = model(ids, use_cache=False).logits
    fq_model, captured, dep = _deploy_capturing(model, lambda m: m(ids, use_cache=False).logits)
    assert all(m.deployed for _, m in bitlinear_modules(model))
    _check_layers(fq_model, captured)
    _check_end_to_end(dep, fq)


def test_llama_generate_greedy_matches(gen):
    model = _model(gen)
    ids = torch.randint(3, 128, (2, 7), generator=gen)
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=10, min_new_tokens=10,
              do_sample=False)
    with torch.no_grad():
        fq_tokens = model.generate(ids, **kw)
        fq_logits = model(fq_tokens, use_cache=False).logits
    fq_model, captured, dep_tokens = _deploy_capturing(model, lambda m: m.generate(ids, **kw))
    _check_layers(fq_model, captured)  # the first (prefill) call of every layer
    with torch.no_grad():
        dep_logits = model(fq_tokens, use_cache=False).logits
    assert dep_tokens.shape == (2, 17)
    _check_end_to_end(dep_logits, fq_logits)
    assert torch.equal(dep_tokens, fq_tokens)


def test_llama_deployed_torch_compile(gen):
    model = deploy(_model(gen))
    ids = torch.randint(3, 128, (1, 9), generator=gen)
    with torch.no_grad():
        eager = model(ids, use_cache=False).logits
    torch._dynamo.reset()
    # aot_eager traces the whole model through dynamo + AOTAutograd (fake kernels of the custom
    # ops, no graph break); inductor code generation takes ~35 s here, so it runs on request.
    backend = "inductor" if os.environ.get("BITLINEAR_SLOW_TESTS") else "aot_eager"
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    with torch.no_grad():
        out = compiled(ids, use_cache=False).logits
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5 * eager.abs().max().item())
