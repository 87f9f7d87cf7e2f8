"""Model-level decode on the CPU: a random-weight model of BitNet-b1.58-2B's shape converted with
bitlinear (issue 20, item 5). Public bitlinear API only (convert, deploy, size_report).

    python profile/model_decode.py                      # Llama arch, vocab 32000 and 128256, 2 threads
    python profile/model_decode.py --arch llama bitnet --vocab 32000 --threads 1 2 --json out.json
    python profile/model_decode.py --tiny               # 2 small layers: correctness only (CI)

The model (hidden 2560, FFN 6912, 30 layers, 20 heads, 5 KV heads, float32 like the issue's
"float32 head" rows) is built from a transformers config on the meta device and materialized one
decoder layer at a time: random weights, then `bitlinear.convert` + `bitlinear.deploy` on that
layer, so no float copy of the whole body is ever held (peak ~ embedding + head in float32 + one
layer). transformers' LlamaForCausalLM, and BitNetForCausalLM (its sub-norms included) where
transformers has it; no download.

Per (arch, vocab, threads, head) row: greedy decode with the KV cache after an 8-token prompt,
`--steps` timed steps after `--warmup`:
  - tokens/s and ms/token (median step, no hooks; the least disturbed of `--repeats` runs);
  - ms/token split into BitLinear / head / rest: one more decode run with forward pre-hooks and
    hooks on every BitLinear and on the head, timing only the timed steps (means per step; the
    hooks cost a few µs per call, so its total is a little above the hook-free one; "rest" = its
    mean step time minus the BitLinear and head times); compiled rows (`--compile on`) take it
    from the torch profiler instead (the ops' inclusive CPU times), as hooks would break the graph;
  - bytes streamed per token: the BitLinear weights one M = 1 call reads (the decode layout where
    bitlinear.cpu_lut_used(1), else the packed 2-bit weights; scales and biases included), the
    head's weights (float, or int8 / int4 codes + scales), and the KV cache read; against the
    DRAM floor = bytes / read bandwidth, measured in the same process right before the row (torch
    sum over a 1 GiB float32 tensor, best of 5, at the row's thread count).
Compiled rows: `torch.compile(model.forward, dynamic=False)` with a StaticCache, the recipe
transformers documents for compiled decoding; the prompt runs eagerly, then every step replays the
one decode graph (compile time not counted). `--compile tuned` adds two settings outside
bitlinear (SDPA's GQA, no module guards, inductor's C++ wrapper; see compiled()).
Heads (`--heads`): "float" (the model's own nn.Linear), "int8" (`convert(model, head="int8")`) and
"int4" / "int4:<G>" (`convert(model, head="int4")`: 4-bit codes, a scale per group of 64 or G),
each made from the float head's weights, applied in place after the float rows. The quantized
rows also report how long the greedy tokens stay the float head's (a differing token makes the
sequences diverge from there), and, teacher-forced over one more decode run, the float head on
the quantized run's hidden states: max |logit error| (absolute and relative to the largest
|logit|) and top-1 agreement per step (not timed).

--tiny: a 2-layer model (hidden 64) at vocab 512: asserts that the decode loop on the deployed
model gives the greedy tokens of transformers' generate() on the training-mode (fake-quant) model
with the same float head (bit-exact kernels), and that the int8 and int4 heads run within a logit
error bound; exits 1 otherwise.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

import bitlinear
from bitlinear import BitLinear, convert, deploy, size_report
from bitlinear.head import Int8Head
try:
    from bitlinear.head import Int4Head
except ImportError:  # an older bitlinear
    Int4Head = None
from bench.decode import greedy  # profile/bench (this script's folder is on sys.path)

FULL = dict(hidden_size=2560, intermediate_size=6912, num_hidden_layers=30, num_attention_heads=20,
            num_key_value_heads=5)
TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)


def _config(arch: str, vocab: int, shape: dict):
    import transformers as tf
    kw = dict(vocab_size=vocab, max_position_embeddings=4096, tie_word_embeddings=False,
              bos_token_id=1, eos_token_id=2, pad_token_id=0, **shape)
    if arch == "llama":
        return tf.LlamaConfig(**kw), tf.LlamaForCausalLM
    if arch == "bitnet":
        if not hasattr(tf, "BitNetForCausalLM"):
            raise SystemExit("this transformers has no BitNetForCausalLM")
        return tf.BitNetConfig(**kw), tf.BitNetForCausalLM
    raise ValueError(arch)


@torch.no_grad()
def _init_(mod: nn.Module, gen: torch.Generator, std: float) -> None:
    for name, p in mod.named_parameters(recurse=False):
        if p.dim() >= 2:
            p.normal_(0.0, std, generator=gen)
        elif "norm" in type(mod).__name__.lower() or name == "weight":
            p.fill_(1.0)
        else:
            p.zero_()


@torch.no_grad()
def build(arch: str, vocab: int, shape: dict, seed: int = 0, deploy_layers: bool = True,
          std: float = 0.05) -> nn.Module:
    """The model on the CPU in float32, each decoder layer converted (and deployed) as it is made."""
    cfg, cls = _config(arch, vocab, shape)
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = cls(cfg)
    model.eval()
    base = model.model
    for layer in base.layers:
        layer.to_empty(device="cpu")
        for m in layer.modules():
            _init_(m, gen, std)
        convert(layer)
        if deploy_layers:
            deploy(layer, progress=False)
    for m in (base.embed_tokens, base.norm, model.lm_head):
        m.to_empty(device="cpu")
        _init_(m, gen, std)
    base.rotary_emb = type(base.rotary_emb)(config=cfg)  # its buffers are computed, not random
    convert(model)  # records the BitLinear layers in the config (save_pretrained); converts nothing
    return model


def _prompt(vocab: int) -> torch.Tensor:
    return (torch.arange(8) * 7 + 3).remainder(vocab).reshape(1, 8)


@torch.no_grad()
def decode(model, steps: int, warmup: int, vocab: int, on_step=None, step_fn=None):
    """Greedy decode with the KV cache after the 8-token prompt (bench/decode.py; with
    ``step_fn``, a compiled ``model.forward``, on a StaticCache); (step times, tokens)."""
    return greedy(model, _prompt(vocab), steps, warmup, on_step, step_fn)


_HEAD_MATMULS = ("aten::mm", "aten::addmm", "mkldnn::_linear_pointwise")  # a compiled float head
_HEAD_OPS = ("bitlinear::int8_head_linear", "bitlinear::int4_head_linear")
# a BitLinear call: alone, fused in eager (fuse_projections), grouped in a compiled graph
_BITLINEAR_OPS = ("bitlinear::linear", "bitlinear::linear_fused", "bitlinear::linear_group2",
                  "bitlinear::linear_group3")


def _profiled_split(model, step_fn, steps, vocab):
    """(mean step ms, BitLinear ms, head ms, BitLinear calls) per step of a compiled decode, from
    the torch profiler over the decode steps only (not the eager prompt): the BitLinear ops' and
    the head's inclusive CPU times (the quantized head's op, or the matmul whose output has the
    vocabulary's width)."""
    from torch.profiler import ProfilerActivity, profile
    prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
    started = []

    def start(timed):  # before each step; the prompt ran before the first, outside the profile
        if not started:
            prof.start()
            started.append(True)
    try:
        times, _ = decode(model, steps, 0, vocab, on_step=start, step_fn=step_fn)
    finally:
        if started:
            prof.stop()
    bl = head = 0.0
    calls = 0
    for e in prof.events():
        if e.name in _BITLINEAR_OPS:
            bl += e.cpu_time_total
            calls += 1
        elif e.name in _HEAD_OPS or (
                e.name in _HEAD_MATMULS and any(s and s[-1] == vocab for s in e.input_shapes)):
            head += e.cpu_time_total
    n = len(times)
    return sum(times) / n * 1e3, bl / n / 1e3, head / n / 1e3, calls / n


class _Split:
    """Forward hooks timing BitLinear calls and head calls, only while `active`."""

    def __init__(self, model):
        self.active, self.t = False, {"bitlinear": 0.0, "head": 0.0}
        self.calls, self.hooks, self._t0 = {"bitlinear": 0, "head": 0}, [], {}
        for m in model.modules():
            if isinstance(m, BitLinear):
                self._hook(m, "bitlinear")
        self._hook(model.lm_head, "head")

    def _hook(self, m, kind):
        def pre(mod, args):
            if self.active:
                self._t0[id(mod)] = time.perf_counter()

        def post(mod, args, out):
            if self.active:
                self.t[kind] += time.perf_counter() - self._t0.pop(id(mod))
                self.calls[kind] += 1
        self.hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]

    def set(self, active):
        self.active = active

    def remove(self):
        for h in self.hooks:
            h.remove()


def read_bw_gbs(threads: int, gib: float = 1.0) -> float:
    """Read bandwidth (GB/s): best of 5 torch sums over a fresh float32 tensor of `gib` GiB."""
    torch.set_num_threads(threads)
    x = torch.ones(int(gib * (1 << 30)) // 4)
    x.sum()
    best = min(_timed(lambda: x.sum()) for _ in range(5))
    n = x.numel() * 4
    del x
    return n / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def streamed_bytes(model, ctx_len: int) -> dict:
    """Bytes one decode step reads: BitLinear weights (+ scales, biases), head, KV cache."""
    rep = size_report(model)
    lut = bitlinear.cpu_lut_used(1) and rep.get("decode_layout", 0) > 0
    body = (rep["decode_layout"] if lut else rep["packed_weights"]) + rep["weight_scales"] \
        + rep["bitlinear_bias"]
    head = model.lm_head
    if not isinstance(head, nn.Linear):  # a quantized head: its codes, scales and bias
        hb = sum(t.numel() * t.element_size() for t in (head.weight, head.scale, head.bias)
                 if t is not None)
    else:
        hb = head.weight.numel() * head.weight.element_size()
    cfg = model.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * hd * ctx_len * 4
    return {"bitlinear": body, "head": hb, "kv_cache": kv, "total": body + hb + kv,
            "body_layout": "decode layout" if lut else "packed 2-bit"}


@torch.no_grad()
def head_agreement(model, w_float: torch.Tensor, steps: int, vocab: int) -> dict:
    """Teacher-forced: at each step of a quantized-head decode, the float head on the same hidden
    state. Max |logit error|, relative to the largest |logit|, and top-1 agreement."""
    stats = {"max_abs": 0.0, "max_logit": 0.0, "top1": 0, "n": 0}

    def hook(mod, args, out):
        h = args[0][:, -1:]
        ref = torch.nn.functional.linear(h.float(), w_float)
        got = out[:, -1:].float()
        stats["max_abs"] = max(stats["max_abs"], (got - ref).abs().max().item())
        stats["max_logit"] = max(stats["max_logit"], ref.abs().max().item())
        stats["top1"] += int(torch.equal(got.argmax(-1), ref.argmax(-1)))
        stats["n"] += 1
    hk = model.lm_head.register_forward_hook(hook)
    try:
        decode(model, steps, 0, vocab)  # eager: a hook on a compiled module would break its graph
    finally:
        hk.remove()
    return {"max_abs_logit_error": stats["max_abs"], "max_abs_logit": stats["max_logit"],
            "relative": stats["max_abs"] / stats["max_logit"],
            "top1_agreement": stats["top1"] / stats["n"], "steps": stats["n"]}


def set_lut(model, mode: str) -> None:
    """bitlinear.set_cpu_lut(mode), and every deployed layer's decode layout built or dropped."""
    bitlinear.set_cpu_lut(mode)
    for m in model.modules():
        if isinstance(m, bitlinear.BitLinear) and m.deployed:
            m.refresh_decode_layout()


def run_row(model, arch, vocab, threads, head, steps, warmup, repeats=2, ref_tokens=None,
            w_float=None, step_fn=None) -> dict:
    torch.set_num_threads(threads)
    bw = read_bw_gbs(threads)  # next to the row: the load of a shared machine changes
    if step_fn is not None:
        decode(model, 2, 2, vocab, step_fn=step_fn)  # compiles (once per thread count: a guard)
    runs = [decode(model, steps, warmup, vocab, step_fn=step_fn) for _ in range(repeats)]
    toks = runs[0][1]
    med = min(statistics.median(t) for t, _ in runs)  # the least disturbed run
    times = [x for t, _ in runs for x in t]
    if step_fn is None:
        split = _Split(model)
        try:
            htimes, _ = decode(model, steps, warmup, vocab, on_step=split.set)
        finally:
            split.remove()
        n = len(htimes)
        mean_h = sum(htimes) / n * 1e3
        bl_ms, head_ms = split.t["bitlinear"] / n * 1e3, split.t["head"] / n * 1e3
        calls = split.calls["bitlinear"] / n
    else:  # hooks would break the graph: the profiler's op times instead
        mean_h, bl_ms, head_ms, calls = _profiled_split(model, step_fn, steps, vocab)
    b = streamed_bytes(model, 8 + warmup + steps // 2)
    floor_ms = b["total"] / (bw * 1e9) * 1e3
    row = {"arch": arch, "vocab": vocab, "threads": threads, "head": head,
           "tokens_per_s": 1.0 / med, "ms_per_token": med * 1e3,
           "p10_ms": sorted(times)[len(times) // 10] * 1e3,
           "runs_median_ms": [statistics.median(t) * 1e3 for t, _ in runs],
           # the split: means over the hooked run's timed steps (its rest = its mean - the two)
           "hooked_ms_per_token": mean_h, "bitlinear_ms": bl_ms, "head_ms": head_ms,
           "rest_ms": mean_h - bl_ms - head_ms,
           "bitlinear_calls_per_token": calls,
           "bytes_per_token": b, "read_bw_gbs": bw, "floor_ms": floor_ms,
           "frac_of_floor": floor_ms / (med * 1e3),
           "bitlinear_gbs": b["bitlinear"] / (bl_ms * 1e-3) / 1e9 if bl_ms else None,
           "head_gbs": b["head"] / (head_ms * 1e-3) / 1e9 if head_ms else None,
           "tokens": toks, "loadavg": os.getloadavg()}
    if w_float is not None:
        row["vs_float_head"] = head_agreement(model, w_float, steps, vocab)
    if ref_tokens is not None:
        same = next((i for i, (x, y) in enumerate(zip(ref_tokens, toks)) if x != y), len(toks))
        row["agree_prefix_with_float_head"] = same
    return row


def render(row: dict) -> str:
    b = row["bytes_per_token"]
    s = (f"{row['arch']:<6} V={row['vocab']:<6} t={row['threads']} head={row['head']:<5} "
         f"{row['tokens_per_s']:6.1f} tok/s {row['ms_per_token']:7.1f} ms "
         f"(split {row['hooked_ms_per_token']:5.1f}: BitLinear {row['bitlinear_ms']:5.1f} | head "
         f"{row['head_ms']:5.1f} | rest {row['rest_ms']:5.1f})  {b['total'] / 1e6:5.0f} MB/token "
         f"({b['body_layout']}), "
         f"floor {row['floor_ms']:5.1f} ms @ {row['read_bw_gbs']:.1f} GB/s = "
         f"{100 * row['frac_of_floor']:4.0f}% of floor")
    if "agree_prefix_with_float_head" in row:
        s += f"; greedy = float head's for {row['agree_prefix_with_float_head']} tokens"
    if "vs_float_head" in row:
        v = row["vs_float_head"]
        s += (f"; vs float head on the same states: max |err| {v['max_abs_logit_error']:.3f} "
              f"({100 * v['relative']:.2f}% of max |logit|), top-1 {100 * v['top1_agreement']:.0f}%")
    return s


def tiny(archs) -> int:
    """Correctness only: deployed decode == generate() of the training-mode model, float head."""
    import transformers as tf
    ok = True
    for arch in archs:
        if arch == "bitnet" and not hasattr(tf, "BitNetForCausalLM"):
            continue
        vocab = 512
        fq = build(arch, vocab, TINY, seed=1, deploy_layers=False, std=0.2)
        model = deploy(copy.deepcopy(fq), progress=False)
        steps = 12
        ids = _prompt(vocab)
        with torch.no_grad():
            gen = fq.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps + 1,
                              min_new_tokens=steps + 1, do_sample=False)
        ref = gen[0, ids.shape[1]:].tolist()
        _, toks = decode(model, steps, 0, vocab)
        good = toks == ref
        ok &= good
        print(f"tiny {arch}: deployed KV-cache decode == training-mode generate(): {good}")
        fused = copy.deepcopy(model)
        n = bitlinear.fuse_projections(fused)
        _, toksf = decode(fused, steps, 0, vocab)
        with torch.no_grad():
            same_logits = torch.equal(fused(ids).logits, model(ids).logits)
        good = n > 0 and toksf == toks and same_logits
        ok &= good
        print(f"tiny {arch}: fuse_projections ({n} groups): same logits and tokens: {good}")
        # the --compile on recipe (aot_eager: dynamo's graph on the same kernels, no codegen):
        # the eager tokens, from one graph (a guard failing per step would recompile each time)
        from torch._dynamo.testing import CompileCounter
        torch._dynamo.reset()
        cnt = CompileCounter()
        step_fn = torch.compile(fused.forward, backend=cnt, dynamic=False)
        _, tokss = decode(fused, steps, 0, vocab)
        _, toksc = decode(fused, steps, 0, vocab, step_fn=step_fn)
        good = toksc == tokss and cnt.frame_count == 1
        ok &= good
        print(f"tiny {arch}: compiled decode step (StaticCache): eager tokens from "
              f"{cnt.frame_count} graph(s): {good}")
        with torch.no_grad():
            lf = model(ids).logits
        w_float = model.lm_head.weight.detach().float().clone()
        # int8: per-row scales; int4: groups of 64 (4 bits), a larger but bounded error
        for kind, cls, tol in (("int8", Int8Head, 0.05), ("int4", Int4Head, 0.15)):
            if cls is None:
                continue
            set_head(model, kind, w_float)
            with torch.no_grad():
                lq = model(ids).logits
            _, toksq = decode(model, steps, 0, vocab)
            err = (lq - lf).abs().max().item()
            top1 = (lq.argmax(-1) == lf.argmax(-1)).float().mean().item()
            fine = isinstance(model.lm_head, cls) and err < tol * lf.abs().max().item()
            ok &= fine
            same = next((i for i, (x, y) in enumerate(zip(ref, toksq)) if x != y), len(ref))
            print(f"tiny {arch}: {kind} head: max |logit error| {err:.4f} (max |logit| "
                  f"{lf.abs().max().item():.2f}), prompt top-1 agreement {top1:.3f}, greedy "
                  f"tokens = float head's for {same}/{len(ref)}: {'ok' if fine else 'FAILED'}")
    return 0 if ok else 1


def machine() -> dict:
    info = {"platform": platform.platform(), "torch": torch.__version__,
            "bitlinear": bitlinear.__version__, "isa": bitlinear.cpu_isa(),
            "lut_m1": bitlinear.cpu_lut_used(1)}
    try:
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in
                           subprocess.run(["lscpu"], capture_output=True, text=True).stdout
                           .splitlines() if l.startswith("Model name"))
    except Exception:  # lscpu missing
        info["cpu"] = platform.processor()
    info["loadavg"] = os.getloadavg()
    return info


def compiled(model, how: str):
    """The decode step for a --compile choice: None (eager), "on": torch.compile(model.forward,
    dynamic=False) (transformers' compiled-decode recipe, with the StaticCache of decode()),
    "tuned": the same plus two settings outside bitlinear, both measured on this model:
    TRANSFORMERS_SDPA_FORCE_GQA=1 (transformers' own switch: SDPA reads the 5 KV heads with
    enable_gqa instead of copying them to 20 heads over the whole static cache in every layer;
    same logits to float rounding) and dynamo's guard_filter_fn skip_guard_on_all_nn_modules_unsafe
    (no per-call guard on each of the model's hundreds of tensors; the graph is then stale if the
    model's modules are changed after compiling, so compile again after any change), and
    inductor's cpp_wrapper (the graph's ~600 calls per step made from C++ instead of Python:
    about 3% per token here, measured interleaved in one process; a longer compile)."""
    if how == "off":
        return None
    torch._dynamo.reset()  # a fresh graph for this model state
    if how == "on":
        return torch.compile(model.forward, dynamic=False)
    os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = "1"  # until the row ends (main)
    return torch.compile(model.forward, dynamic=False, options={
        "guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe,
        "cpp_wrapper": True})


def set_attn(model, attn: str) -> None:
    """attn "sdpa" (transformers' default here: left as it is) or "bitlinear":
    bitlinear.attention's decode kernel, registered with transformers (one query token on the
    CPU; SDPA otherwise)."""
    if attn == "bitlinear":
        from bitlinear import attention
        model.set_attn_implementation(attention.register())


def _head_kind(s: str) -> str:
    if s in ("float", "int8", "int4") or (s.startswith("int4:") and s[5:].isdigit()):
        return s
    raise argparse.ArgumentTypeError(f"unknown head {s!r}: float, int8, int4 or int4:<G>")


def set_head(model, kind: str, w_float: torch.Tensor) -> None:
    """Make the model's head `kind` ("int8", "int4", "int4:<G>") from the float head's weights
    (an earlier quantized head is replaced: convert quantizes only a float nn.Linear head)."""
    if not isinstance(model.lm_head, nn.Linear):
        lin = nn.Linear(w_float.shape[1], w_float.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w_float)
        model.lm_head = lin
    convert(model, head=kind)
    if hasattr(model.lm_head, "prepack"):
        model.lm_head.prepack()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="2 small layers, correctness only")
    ap.add_argument("--arch", nargs="+", default=["llama"], choices=["llama", "bitnet"])
    ap.add_argument("--vocab", nargs="+", type=int, default=[32000, 128256])
    ap.add_argument("--threads", nargs="+", type=int, default=[2])
    ap.add_argument("--heads", nargs="+", default=["float", "int8"], type=_head_kind,
                    help="float, int8, int4 (groups of 64) or int4:<G> (groups of G); the "
                         "quantized heads are made from the float head's weights, in this order")
    ap.add_argument("--cpu-lut", nargs="+", default=["off"], choices=["off", "auto"],
                    help="decode-layout modes to run each row in (\"auto\": the opt-in second "
                         "copy, the default before issue 18)")
    ap.add_argument("--fuse", nargs="+", default=["off"], choices=["off", "on"],
                    help="run the rows without, then with bitlinear.fuse_projections (q/k/v and "
                         "gate/up in one call each); \"on\" stays on for the rows after it")
    ap.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on", "tuned"],
                    help="\"on\": torch.compile(model.forward) with a StaticCache (transformers' "
                         "compiled-decode recipe); \"tuned\": also SDPA's GQA and no module "
                         "guards (see compiled()); the split comes from the torch profiler")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "bitlinear"],
                    help="attention: transformers' SDPA, or bitlinear's decode kernel "
                         "(bitlinear.attention.register(); SDPA where it does not apply)")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="untimed-hook decode runs per row (min)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.tiny:
        return tiny(a.arch)
    info = machine()
    print(json.dumps(info))
    rows = []
    for arch in a.arch:
        for vocab in a.vocab:
            t0 = time.time()
            model = build(arch, vocab, FULL)
            set_attn(model, a.attn)
            print(f"built {arch} V={vocab} in {time.time() - t0:.0f} s", flush=True)
            ref, w_float = {}, None
            for head in a.heads:
                if head != "float":
                    if w_float is None:
                        w_float = model.lm_head.weight.detach().float().clone()
                    set_head(model, head, w_float)
                for fuse in a.fuse:
                    if fuse == "on":
                        bitlinear.fuse_projections(model)
                    for lut in a.cpu_lut:
                        set_lut(model, lut)
                        for comp in a.compile:
                            step_fn = compiled(model, comp)
                            first = lut == a.cpu_lut[0] and fuse == a.fuse[0] \
                                and comp == a.compile[0]
                            for t in a.threads:
                                row = run_row(model, arch, vocab, t, head, a.steps, a.warmup,
                                              a.repeats, ref.get(t) if head != "float" else None,
                                              w_float if first and head != "float" else None,
                                              step_fn)
                                row["cpu_lut"], row["fuse"], row["compile"] = lut, fuse, comp
                                row["attn"] = a.attn
                                if head == "float" and first:
                                    ref[t] = row["tokens"]
                                rows.append(row)
                                print(render(row) + f"  [cpu_lut {lut}, fuse {fuse}, compile "
                                      f"{comp}, attn {a.attn}]", flush=True)
                            os.environ.pop("TRANSFORMERS_SDPA_FORCE_GQA", None)
                    set_lut(model, "off")
            del model
    info["rows"] = rows
    info["loadavg_end"] = os.getloadavg()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
