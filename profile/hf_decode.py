"""Model-level decode speed: a tiny transformers BitNet model on transformers' own BitNet layers
against the same checkpoint converted with bitlinear.hf.convert_bitnet (our kernels). CPU.

    python profile/hf_decode.py --threads 2 [--steps 64] [--dtype bfloat16] [--json out.json]

The checkpoint (hidden 256, intermediate 512, 2 layers, 4 heads / 2 KV heads, vocab 512; or
--hidden/--inter/--layers) is made here: random weights ternarized and packed with transformers'
own pack_weights, loaded with transformers' own from_pretrained. Decode = one token per step
with the KV cache, after an 8-token prompt. Ours and transformers eager alternate, --repeats
decode runs each; reported: the median of the runs' median step times, and the 10th percentile of
all steps (p10, less sensitive to other jobs on a shared machine), as ms and tokens/s.

transformers' rows: "compiled" is its default (its unpack_weights / activation_quant are
torch.compile'd; the first steps compile, so they are warmed up first, not timed), "eager" is the
same code with torch.compiler.set_stance("force_eager").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
from torch import nn


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


@torch.no_grad()
def decode_steps(model, steps, warmup):
    prompt = torch.arange(3, 11).reshape(1, 8)
    out = model(prompt, use_cache=True)
    pkv = out.past_key_values
    tok = out.logits[:, -1:].argmax(-1)
    times, toks = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        out = model(tok, past_key_values=pkv, use_cache=True)
        tok = out.logits[:, -1:].argmax(-1)
        dt = time.perf_counter() - t0
        pkv = out.past_key_values
        toks.append(int(tok))
        if i >= warmup:
            times.append(dt)
    return times, toks


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="decode runs per implementation (median)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--inter", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--skip-compiled", action="store_true", help="no torch.compile'd transformers row")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import bitlinear
    from bitlinear.hf import convert_bitnet
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    dtype = getattr(torch, a.dtype)
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        make_checkpoint(d, a.hidden, a.inter, a.layers, dtype)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype).eval()

        ours = convert_bitnet(AutoModelForCausalLM.from_pretrained(d, dtype=dtype).eval())
        samples = {}

        def run(name, m, stance=None):
            if stance:
                with torch.compiler.set_stance(stance):
                    times, toks = decode_steps(m, a.steps, a.warmup)
            else:
                times, toks = decode_steps(m, a.steps, a.warmup)
            samples.setdefault(name, []).append(times)
            return toks

        # Ours and transformers eager alternate, so that a change of load on the shared machine
        # hits both; the compiled rows come last: once inductor has compiled CPU code in a process,
        # torch's own multithreaded ops there run slower (docs/hf.md).
        for _ in range(a.repeats):
            toks_ours = run("bitlinear (convert_bitnet)", ours)
            toks_hf = run("transformers (eager)", model, "force_eager")
        if not a.skip_compiled:
            t0 = time.perf_counter()
            decode_steps(model, 4, 4)  # compile (not timed)
            print(f"(transformers torch.compile warm-up {time.perf_counter() - t0:.0f} s)", flush=True)
            for _ in range(a.repeats):
                run("transformers (compiled)", model)
        for name, runs in samples.items():
            allt = sorted(t for r in runs for t in r)
            med = statistics.median(statistics.median(r) for r in runs)
            p10 = allt[len(allt) // 10]
            rows[name] = {"step_ms": med * 1e3, "p10_ms": p10 * 1e3, "min_ms": allt[0] * 1e3,
                          "tokens_per_s": 1.0 / med, "tokens_per_s_p10": 1.0 / p10,
                          "runs_median_ms": [statistics.median(r) * 1e3 for r in runs]}
            print(f"{name:<28} median {med * 1e3:8.3f} ms/token ({1 / med:7.1f} tokens/s)   "
                  f"p10 {p10 * 1e3:7.3f} ms ({1 / p10:7.1f} tokens/s)", flush=True)
    same = next((i for i, (x, y) in enumerate(zip(toks_hf, toks_ours)) if x != y), len(toks_hf))
    o = rows["bitlinear (convert_bitnet)"]
    base = rows.get("transformers (compiled)", rows["transformers (eager)"])
    eager = rows["transformers (eager)"]
    ratio = o["tokens_per_s"] / base["tokens_per_s"]
    ratio_e = o["tokens_per_s"] / eager["tokens_per_s"]
    ratio_p10 = o["tokens_per_s_p10"] / base["tokens_per_s_p10"]
    ratio_e_p10 = o["tokens_per_s_p10"] / eager["tokens_per_s_p10"]
    vs = "vs its default, compiled" if not a.skip_compiled else "vs eager, compiled row skipped"
    print(f"ours / transformers, median: {ratio:.2f}x ({vs}), {ratio_e:.2f}x (vs eager); "
          f"p10: {ratio_p10:.2f}x, {ratio_e_p10:.2f}x; greedy tokens identical for the first {same} of "
          f"{len(toks_hf)} steps" + (" (a random bf16 model drifts apart: docs/hf.md)" if same < len(toks_hf) else ""))
    info = {"cpu": platform.processor() or platform.machine(), "threads": a.threads,
            "torch": torch.__version__, "bitlinear": bitlinear.__version__,
            "isa": bitlinear.cpu_isa(), "dtype": a.dtype, "hidden": a.hidden, "inter": a.inter,
            "layers": a.layers, "steps": a.steps, "rows": rows, "ratio": ratio,
            "ratio_vs_eager": ratio_e, "ratio_p10": ratio_p10, "ratio_vs_eager_p10": ratio_e_p10,
            "identical_prefix": same, "decoded": len(toks_hf)}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except Exception:  # pragma: no cover
        pass
    if a.json:
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)
    return info


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
