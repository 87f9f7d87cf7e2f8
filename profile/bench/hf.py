"""Model-level decode speed: a tiny transformers BitNet model on transformers' own BitNet layers
against the same checkpoint converted with bitlinear.hf.convert_bitnet (our kernels), CPU. The
suite's "hf_bitnet" row (bench/cpu.py) and profile/hf_decode.py both call run().

The checkpoint (hidden 256, intermediate 512, 2 layers, 4 heads / 2 KV heads, vocab 512 by
default) is made here: random weights ternarized and packed with transformers' own pack_weights,
loaded with transformers' own from_pretrained. Decode = one token per step with the KV cache, after
an 8-token prompt. Ours and transformers eager alternate, `repeats` decode runs each; reported: the
median of the runs' median step times, and the 10th percentile of all steps (p10, less sensitive to
other jobs on a shared machine), as ms and tokens/s. transformers' rows: "compiled" is its default
(its unpack_weights / activation_quant are torch.compile'd; the first steps compile, so they are
warmed up first, not timed), "eager" the same code under torch.compiler.set_stance("force_eager").
The compiled rows run last: once inductor has compiled CPU code in a process, torch's own
multithreaded ops there run slower (docs/hf.md).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time

import torch
from torch import nn

from .decode import greedy

OURS, EAGER, COMPILED = "bitlinear (convert_bitnet)", "transformers (eager)", "transformers (compiled)"


def make_checkpoint(d, hidden, inter, layers, dtype):
    from safetensors.torch import save_file
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations.bitnet import pack_weights

    torch.manual_seed(0)
    cfg = BitNetConfig(vocab_size=512, hidden_size=hidden, intermediate_size=inter,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, bos_token_id=1, eos_token_id=2)
    model = BitNetForCausalLM(cfg).to(dtype)
    model.save_pretrained(d)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and name.startswith("model.layers."):
            w = mod.weight.float()
            s = 1.0 / w.abs().mean().clamp(min=1e-5)
            sd[name + ".weight"] = pack_weights((w * s).round().clamp(-1, 1))
            sd[name + ".weight_scale"] = s.reshape(1).to(dtype)
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(d, "model.safetensors"),
              metadata={"format": "pt"})
    c = json.load(open(os.path.join(d, "config.json")))
    c["quantization_config"] = {"quant_method": "bitnet", "linear_class": "bitlinear",
                                "quantization_mode": "offline"}
    json.dump(c, open(os.path.join(d, "config.json"), "w"))


def decode_steps(model, steps, warmup):
    return greedy(model, torch.arange(3, 11).reshape(1, 8), steps, warmup)


def run(threads: int = 2, steps: int = 64, warmup: int = 8, repeats: int = 3,
        dtype: str = "bfloat16", hidden: int = 256, inter: int = 512, layers: int = 2,
        compiled: bool = True, verbose: bool = True) -> dict:
    """Time the three rows; returns the JSON-able record (rows, ratios, machine)."""
    import bitlinear
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from bitlinear.hf import convert_bitnet
    hf_logging.set_verbosity_error()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    tdtype = getattr(torch, dtype)
    rows = {}
    try:
        with tempfile.TemporaryDirectory() as d:
            make_checkpoint(d, hidden, inter, layers, tdtype)
            model = AutoModelForCausalLM.from_pretrained(d, dtype=tdtype).eval()
            ours = convert_bitnet(AutoModelForCausalLM.from_pretrained(d, dtype=tdtype).eval())
            samples = {}

            def timed(name, m, stance=None):
                if stance:
                    with torch.compiler.set_stance(stance):
                        times, toks = decode_steps(m, steps, warmup)
                else:
                    times, toks = decode_steps(m, steps, warmup)
                samples.setdefault(name, []).append(times)
                return toks

            for _ in range(repeats):  # alternating: a change of load hits both
                toks_ours = timed(OURS, ours)
                toks_hf = timed(EAGER, model, "force_eager")
            if compiled:
                t0 = time.perf_counter()
                decode_steps(model, 4, 4)  # compile (not timed)
                if verbose:
                    print(f"(transformers torch.compile warm-up {time.perf_counter() - t0:.0f} s)",
                          flush=True)
                for _ in range(repeats):
                    timed(COMPILED, model)
            for name, runs in samples.items():
                allt = sorted(t for r in runs for t in r)
                med = statistics.median(statistics.median(r) for r in runs)
                p10 = allt[len(allt) // 10]
                rows[name] = {"step_ms": med * 1e3, "p10_ms": p10 * 1e3, "min_ms": allt[0] * 1e3,
                              "tokens_per_s": 1.0 / med, "tokens_per_s_p10": 1.0 / p10,
                              "runs_median_ms": [statistics.median(r) * 1e3 for r in runs]}
    finally:
        torch.set_num_threads(old_threads)
    same = next((i for i, (x, y) in enumerate(zip(toks_hf, toks_ours)) if x != y), len(toks_hf))
    o, eager = rows[OURS], rows[EAGER]
    base = rows.get(COMPILED, eager)
    info = {"cpu": platform.processor() or platform.machine(), "threads": threads,
            "torch": torch.__version__, "bitlinear": bitlinear.__version__,
            "isa": bitlinear.cpu_isa(), "dtype": dtype, "hidden": hidden, "inter": inter,
            "layers": layers, "steps": steps, "repeats": repeats, "rows": rows,
            "ratio": o["tokens_per_s"] / base["tokens_per_s"],
            "ratio_vs_eager": o["tokens_per_s"] / eager["tokens_per_s"],
            "ratio_p10": o["tokens_per_s_p10"] / base["tokens_per_s_p10"],
            "ratio_vs_eager_p10": o["tokens_per_s_p10"] / eager["tokens_per_s_p10"],
            "ratio_against": COMPILED if COMPILED in rows else EAGER,
            "identical_prefix": same, "decoded": len(toks_hf)}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except Exception:  # pragma: no cover
        pass
    return info


def render(info: dict) -> str:
    """The rows and ratios as text lines."""
    lines = [f"Tiny transformers BitNet model (hidden {info['hidden']}, intermediate {info['inter']}, "
             f"{info['layers']} layers, {info['dtype']}), decode with the KV cache, "
             f"{info['threads']} thread(s):"]
    for name, r in info["rows"].items():
        lines.append(f"  {name:<28} median {r['step_ms']:8.3f} ms/token ({r['tokens_per_s']:7.1f} "
                     f"tokens/s)   p10 {r['p10_ms']:7.3f} ms ({r['tokens_per_s_p10']:7.1f} tokens/s)")
    vs = "its default, compiled" if info["ratio_against"] == COMPILED else "eager; compiled skipped"
    lines.append(f"  ours / transformers: {info['ratio']:.2f}x (vs {vs}), {info['ratio_vs_eager']:.2f}x "
                 f"(vs eager); p10: {info['ratio_p10']:.2f}x, {info['ratio_vs_eager_p10']:.2f}x; "
                 f"greedy tokens identical for the first {info['identical_prefix']} of "
                 f"{info['decoded']} steps"
                 + (" (a random bf16 model drifts apart: docs/hf.md)"
                    if info["identical_prefix"] < info["decoded"] else ""))
    return "\n".join(lines)
