"""Shared fixtures. Every test draws fresh random inputs: the seed changes per run and is printed
in the header and again at the end of the run (visible with -q), so a failure can be replayed with
BITLINEAR_TEST_SEED=<seed>."""
import os
import random
import zlib

import pytest
import torch

SEED = int(os.environ.get("BITLINEAR_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return f"bitlinear test seed: {SEED} (replay with BITLINEAR_TEST_SEED={SEED})"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The seed again at the end: -q hides the header, and a failure is replayed from it."""
    terminalreporter.write_line(f"bitlinear test seed: {SEED} "
                                f"(replay with BITLINEAR_TEST_SEED={SEED})")


@pytest.fixture
def gen(request):
    """A torch.Generator seeded from the run seed and the test's name."""
    g = torch.Generator()
    g.manual_seed((SEED + zlib.crc32(request.node.nodeid.encode())) % (2**63))
    return g


def rand(gen, *shape, dtype=torch.float32, scale=1.0):
    """Gaussian values with a few large outliers, never all zeros."""
    x = torch.randn(*shape, generator=gen) * scale
    if x.numel() > 4:
        idx = torch.randint(0, x.numel(), (max(1, x.numel() // 97),), generator=gen)
        x.view(-1)[idx] *= 8
    return x.to(dtype)


def op_output(layer, x):
    """A deployed layer's output through torch.ops.bitlinear.linear (never the eager fast path)."""
    return torch.ops.bitlinear.linear(x, layer.w_scale, layer.w_packed, layer.bias, layer.eps,
                                      layer.in_features, layer.spec.act_per_token)


def make_deployed(gen, K, N, quant_type="ai8pc_wpt", bias=True):
    """A deployed BitLinear(K, N) from random float weights (and bias)."""
    from bitlinear import BitLinear
    lin = torch.nn.Linear(K, N, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(rand(gen, N, K))
        if bias:
            lin.bias.copy_(rand(gen, N))
    return BitLinear.from_linear(lin, quant_type=quant_type).deploy()


def head_llama(tie, V=2000, seed=0):
    """A tiny random transformers Llama (hidden 128, 2 layers, vocab V, weights N(0, 0.2)) for the
    quantized-head tests (test_head.py, test_head_int4.py)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=V, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return model
