"""The CPU suite: deployed BitLinear against torch's own linear layers, side by side in one process,
over batch sizes M at BitNet-sized shapes and thread counts, plus training rows and host-time rows
(bench/train.py: TRAIN_IMPLS at TRAIN_SHAPES x TRAIN_MS, all cores; the host rows on 1 thread) and
a transformers Llama model case.
Entry point: `python profile/bench` (bench/cli.py); see docs/benchmarks.md.

Implementations (IMPLS, all without bias, like BitNet's projections; columns in this order):
  bitlinear     deployed BitLinear -> torch.ops.bitlinear.linear (int8 activations x ternary weights)
  f32           torch nn.Linear, float32 (the baseline every ratio refers to)
  bf16          torch nn.Linear, bfloat16 weights and input
  int8_dynamic  torch.ao.quantization.quantize_dynamic(nn.Linear, qint8) (fbgemm/onednn int8 GEMM,
                per-tensor weight scale, activations quantized per call)
  int_mm        per-token int8 activation quantization in torch ops + torch._int_mm with int8
                weights + float rescale (the plain "int8 GEMM in torch" recipe)
  fake_quant    BitLinear in training mode (the fake-quant forward, no grad)
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from . import train
from .harness import (Impl, Progress, Registry, add_fractions, add_speedups, check_targets,
                      common_meta, point)
from .decode import greedy
from .timing import last_level_cache_bytes, summarize, time_fn

SHAPES: Tuple[Tuple[int, int], ...] = ((4096, 4096), (2560, 6912), (6912, 2560))
MS: Tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
QUICK_SHAPES = ((256, 384), (384, 256))
QUICK_MS = (1, 8, 64)
BASELINE = "f32"
NEVER_SKIPPED = (BASELINE, "bitlinear")
# training rows (bench/train.py): default shapes and batch sizes, at all cores
TRAIN_IMPLS = ("train_f32", "train_bitlinear_f32", "train_bf16", "train_bitlinear_bf16")
TRAIN_SHAPES = ((4096, 4096),)
TRAIN_MS = (8, 512)
QUICK_TRAIN_SHAPES = ((256, 384),)
QUICK_TRAIN_MS = (8,)
# decode rows (run_decode_suite): deployed BitLinear alone at small M, weights hot and cold, on the
# default CPU path and forced AVX2 where that differs; the DRAM floor is the packed bytes over the
# measured read bandwidth (profile/hw.py)
DECODE_SHAPES = ((4096, 4096), (2560, 6912), (6912, 2560), (3200, 8640), (1000, 3001))
DECODE_MS = (1, 2, 4, 8, 16)
QUICK_DECODE_SHAPES = ((256, 384),)
QUICK_DECODE_MS = (1, 2)
# host-time rows: (calls per loop, loops), default and --quick
HOST_LOOPS = {False: (1000, 15), True: (100, 5)}
# (name, record match, field, op, want): the CPU's training targets
TARGETS = [(f"train K=N=4096 M={m} threads=2 fwd+bwd time / nn.Linear f32",
            {"K": 4096, "N": 4096, "M": m, "threads": 2, "impl": "train_bitlinear_f32",
             "pass": "fwd+bwd"}, "time_vs_linear", "<=", 1.5) for m in (8, 512)]

IMPLS = Registry()
REGISTRIES = (IMPLS, train.TRAIN)  # what --impls selects from


def _module(m: nn.Module, dtype=torch.float32, nbytes: Optional[int] = None, note: str = "") -> Impl:
    from bitlinear import model_size_bytes
    return Impl(lambda mod, x: mod(x), m.eval(), model_size_bytes(m) if nbytes is None else nbytes,
                dtype, note)


def _quantize_dynamic():
    qd = getattr(getattr(torch, "ao", None), "quantization", None)
    return getattr(qd, "quantize_dynamic", None) if qd is not None else None


@IMPLS.register("bitlinear", integer=True)
def _bitlinear(lin: nn.Linear) -> Impl:
    from bitlinear import BitLinear
    return _module(BitLinear.from_linear(lin).deploy(), note="packed 2-bit weights + f32 scale")


@IMPLS.register("f32")
def _f32(lin: nn.Linear) -> Impl:
    return _module(lin)


@IMPLS.register("bf16")
def _bf16(lin: nn.Linear) -> Impl:
    m = nn.Linear(lin.in_features, lin.out_features, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        m.weight.copy_(lin.weight)
    return _module(m, torch.bfloat16)


@IMPLS.register("int8_dynamic", integer=True, requires=lambda: "" if _quantize_dynamic() else
                "torch.ao.quantization.quantize_dynamic not in this torch")
def _int8_dynamic(lin: nn.Linear) -> Impl:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = _quantize_dynamic()(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
    # packed fbgemm weights are opaque; count int8 weights + one scale/zero point
    return _module(q, nbytes=lin.out_features * lin.in_features + 8,
                   note=f"engine {torch.backends.quantized.engine}, bytes estimated as N*K+8")


class _IntMM(nn.Module):
    """Per-token int8 activations x per-channel int8 weights through torch._int_mm."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        sw = (w.abs().amax(dim=1).clamp(min=1e-6) / 127.0).float()                     # [N]
        self.register_buffer("sw", sw)
        self.register_buffer("w_t", torch.round(w / sw[:, None]).clamp(-127, 127)
                             .to(torch.int8).t().contiguous())                          # [K, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sx = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-6) / 127.0
        xq = torch.round(x / sx).clamp(-128, 127).to(torch.int8)
        return torch._int_mm(xq, self.w_t).to(torch.float32) * (sx * self.sw)


@IMPLS.register("int_mm", integer=True, requires=lambda: "" if hasattr(torch, "_int_mm") else
                "torch._int_mm not in this torch")
def _int_mm(lin: nn.Linear) -> Impl:
    return _module(_IntMM(lin.weight.detach()),
                   note="per-token int8 x per-channel int8 weights, torch ops + torch._int_mm")


@IMPLS.register("fake_quant")
def _fake_quant(lin: nn.Linear) -> Impl:
    from bitlinear import BitLinear
    return _module(BitLinear.from_linear(lin))  # not deployed: the training forward


def machine_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


# ------------------------------------------------------------------ hardware limits (optional)
def hw_probe():
    """profile/hw.py, next to this package (the int8 peak and read bandwidth probes)."""
    import hw
    return hw


def load_hw(path: str) -> Dict[int, dict]:
    """Limits per thread count from a JSON file: `python profile/hw.py --json F` or a bench result."""
    with open(path) as f:
        data = json.load(f)
    data = data.get("meta", {}).get("hw", data) if "meta" in data else data
    return {int(t): lim for t, lim in data.items()}


@contextmanager
def keep_threads():
    """Restores torch's thread count on exit (the suite sets it per point)."""
    prev = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def run_layer_suite(shapes: Sequence[Tuple[int, int]], ms: Sequence[int], threads: Sequence[int],
                    impls: Sequence[str], reps: int = 30, max_seconds: float = 2.0, min_reps: int = 5,
                    progress: bool = True, hw_limits: Optional[Dict[int, dict]] = None,
                    seed: int = 0, max_call_seconds: float = 3.0,
                    cold_bytes: Optional[int] = None) -> List[dict]:
    """Time every (shape, threads, M, impl); returns one record per point (harness.py's schema).

    cold_bytes: each implementation is replicated until its copies hold at least this many bytes,
    and calls cycle through the copies (timing.Rotation), so weights stream from memory as in a
    real model whose layers do not all fit in cache (default 4x the last-level cache; 0 = warm
    cache, one copy). A point of a baseline other than f32 / bitlinear whose predicted time per
    call (the fastest run at the last measured M, scaled linearly in M) exceeds max_call_seconds
    is skipped and recorded as such: some baselines (torch._int_mm on CPU) are orders of magnitude
    slower. hw_limits: {threads: {"int8_peak_gops", "read_bw_gbs"}} gives the frac_* fields."""
    hw_limits = hw_limits or {}
    unavailable = IMPLS.unavailable()
    records: List[dict] = []
    if cold_bytes is None:
        cold_bytes = 4 * last_level_cache_bytes()
    with keep_threads(), Progress(len(shapes) * len(threads) * len(ms) * len(impls), progress) as bar:
        for K, N in shapes:
            torch.manual_seed(seed)
            built = IMPLS.build(impls, nn.Linear(K, N, bias=False))
            rot = {name: impl.rotation(cold_bytes) for name, impl in built.items()}
            for t in threads:
                torch.set_num_threads(t)
                last: Dict[str, Tuple[int, float]] = {}
                for M in sorted(ms):
                    x = torch.randn(M, K, generator=torch.Generator().manual_seed(seed + M))
                    for name in impls:
                        bar.at(f"K={K} N={N} t={t} M={M} {name}")
                        records.append(_time_point(name, built.get(name), rot.get(name), x, K, N,
                                                   t, last, hw_limits.get(t, {}), unavailable,
                                                   reps, max_seconds, min_reps, max_call_seconds))
                        bar.done()
    add_speedups(records, BASELINE, ("K", "N", "threads", "M"))
    return records


def _time_point(name, impl, rot, x, K, N, t, last, lim, unavailable, reps, max_seconds, min_reps,
                max_call_seconds) -> dict:
    M = x.shape[0]
    rec = {"K": K, "N": N, "M": M, "threads": t, "impl": name}
    predicted = (last[name][1] * M / last[name][0]) if name in last else 0.0
    if impl is None:
        rec["error"] = unavailable.get(name) or "not built"
    elif predicted > max_call_seconds and name not in NEVER_SKIPPED:
        rec["skipped"] = f"predicted {predicted:.1f} s per call > {max_call_seconds} s"
    else:
        with torch.inference_mode():
            tm = time_fn(impl.step(rot, x), reps=reps, warmup=3, max_seconds=max_seconds,
                         min_reps=min_reps)
        rec.update(point(tm, K, N, M, impl))
        if name == "bitlinear" and _lut_read(M):
            # this call streams the decode layout (bitlinear.cpu_lut), not the packed weights
            rec["weight_gbs"] = (_lut_bytes(rot.copies[0]) + impl.nbytes - N * ((K + 127) // 128)
                                 * 32) / tm["median_s"] / 1e9
            rec["decode_layout"] = True
        # the bandwidth fraction at M = 1 only, where decoding is bound by the weight stream
        add_fractions(rec, lim, IMPLS.entries[name].integer, bandwidth=M == 1)
        last[name] = (M, tm["min_s"])
        rec["copies"] = len(rot)
    return rec


# ------------------------------------------------------------------- decode (hot / cold / floor)
def decode_paths() -> List[str]:
    """The CPU paths the decode rows time: the one in use (with its table-lookup GEMV where
    "auto" reads the decode layout), the same path on the packed weights alone ("<path> packed")
    where it does, and avx2 where that is another path."""
    from bitlinear import isa
    cur = isa.cpu_isa()
    if cur == "pytorch-fallback":
        return []
    paths = [cur]
    if isa.cpu_lut() == "auto" and isa.cpu_lut_used(1):
        paths.append(cur + " packed")
    return paths + (["avx2"] if cur != "avx2" and "avx2" in isa.available_cpu_isas() else [])


def _decode_context(path: str):
    """(ISA name, context manager) of a decode_paths() entry: "<isa> packed" turns the decode
    layout off."""
    from bitlinear import isa
    name, _, variant = path.partition(" ")
    stack = contextlib.ExitStack()
    stack.enter_context(isa.use_cpu_isa(name))
    if variant == "packed":
        stack.enter_context(isa.use_cpu_lut("off"))
    return name, stack


def run_decode_suite(shapes: Sequence[Tuple[int, int]], ms: Sequence[int], threads: Sequence[int],
                     paths: Sequence[str], hw_limits: Optional[Dict[int, dict]] = None,
                     reps: int = 50, max_seconds: float = 1.0, cold_bytes: Optional[int] = None,
                     progress: bool = True, seed: int = 0) -> List[dict]:
    """Deployed BitLinear alone at small M: a record per (shape, path, threads, M, cache) with cache
    "hot" (one weight copy, called again and again) or "cold" (calls cycle through copies totalling
    cold_bytes, default 4x the last-level cache, so the weights stream from DRAM), and at M = 1
    floor_us = packed weight bytes / the read bandwidth profile/hw.py measured at that thread count
    (hw_limits; none without it) and cold_vs_floor."""
    from bitlinear import isa
    from bitlinear import BitLinear
    from .timing import Rotation

    hw_limits = hw_limits or {}
    if cold_bytes is None:
        cold_bytes = 4 * last_level_cache_bytes()
    records: List[dict] = []
    total = len(shapes) * len(paths) * len(threads) * len(ms) * 2
    with keep_threads(), Progress(total, progress) as bar:
        for K, N in shapes:
            torch.manual_seed(seed)
            layer = BitLinear.from_linear(nn.Linear(K, N, bias=False)).deploy().eval()
            wbytes = layer.w_packed.numel()
            rots = {"hot": Rotation(layer, wbytes, 0),
                    "cold": Rotation(layer, wbytes, cold_bytes, cap=4096)}
            for path in paths:
                _, ctx = _decode_context(path)
                with ctx:
                    for t in threads:
                        torch.set_num_threads(t)
                        bw = hw_limits.get(t, {}).get("read_bw_gbs")
                        for M in ms:
                            x = torch.randn(M, K, generator=torch.Generator().manual_seed(seed + M))
                            lut = isa.cpu_lut_used(M)
                            for cache, rot in rots.items():
                                bar.at(f"decode K={K} N={N} {path} t={t} M={M} {cache}")
                                call = rot.bind(lambda m: m(x))
                                with torch.inference_mode():
                                    for c in rot.copies:  # builds each copy's decode layout
                                        c(x)
                                # bytes a call streams: the decode layout where it reads it
                                nbytes = _lut_bytes(layer) if lut else wbytes
                                with torch.inference_mode():
                                    tm = time_fn(call, reps=max(reps, 3 * len(rot)), warmup=3,
                                                 max_seconds=max_seconds, min_reps=min(reps, 20))
                                rec = {"K": K, "N": N, "M": M, "threads": t, "path": path,
                                       "lut": lut, "cache": cache, "copies": len(rot),
                                       "weight_bytes": nbytes,
                                       "median_us": tm["median_s"] * 1e6,
                                       "min_us": tm["min_s"] * 1e6, "reps": tm["reps"],
                                       "us_per_token": tm["median_s"] * 1e6 / M,
                                       "weight_gbs": nbytes / tm["median_s"] / 1e9}
                                if bw and M == 1:
                                    rec["floor_us"] = nbytes / (bw * 1e9) * 1e6
                                    rec["read_bw_gbs"] = bw
                                    if cache == "cold":
                                        rec["cold_vs_floor"] = rec["median_us"] / rec["floor_us"]
                                records.append(rec)
                                bar.done()
    return records


def _lut_read(M: int) -> bool:
    from bitlinear import isa
    return isa.cpu_lut_used(M)


def _lut_bytes(layer) -> int:
    """Bytes of the decode layout a deployed layer holds (built by its first call that reads it)."""
    from bitlinear import size_report
    return int(size_report(layer)["decode_layout"])


def render_decode(section: dict) -> str:
    """The decode rows as a markdown table: a row per (shape, path, threads), the M = 1 hot and
    cold medians with the DRAM floor, then the median per token (cold) at each other M."""
    recs = section.get("records", [])
    if not recs:
        return ""
    ms = sorted({r["M"] for r in recs})
    others = [m for m in ms if m != 1]
    head = ["K x N", "path", "threads", "M=1 hot", "M=1 cold", "DRAM floor", "cold/floor"]
    head += [f"M={m} hot/cold (per token)" for m in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keyf = lambda r: (r["K"], r["N"], r["path"], r["threads"])
    groups: Dict[tuple, Dict[tuple, dict]] = {}
    for r in recs:
        groups.setdefault(keyf(r), {})[(r["M"], r["cache"])] = r
    us = lambda v: f"{v:.0f} us" if v >= 10 else f"{v:.1f} us"
    for (K, N, path, t), g in groups.items():
        hot, cold = g.get((1, "hot")), g.get((1, "cold"))
        row = [f"{K}x{N}", path, str(t), us(hot["median_us"]) if hot else "-",
               us(cold["median_us"]) if cold else "-"]
        floor = (cold or hot or {}).get("floor_us")
        row.append(us(floor) if floor else "n/a")
        row.append(f"{cold['cold_vs_floor']:.2f}x" if cold and "cold_vs_floor" in cold else "n/a")
        for m in others:
            h, c = g.get((m, "hot")), g.get((m, "cold"))
            row.append(" / ".join(us(r["us_per_token"]) if r else "-" for r in (h, c)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join([section.get("title", "Decode"), ""] + lines + ["", section.get("note", "")])


# ------------------------------------------------------------------- training and host time
def run_train_suite(shapes: Sequence[Tuple[int, int]], ms: Sequence[int], threads: Sequence[int],
                    impls: Sequence[str] = TRAIN_IMPLS, reps: int = 30, max_seconds: float = 2.0,
                    min_reps: int = 5, progress: bool = True,
                    cold_bytes: Optional[int] = None) -> List[dict]:
    """The training rows (bench/train.py): a record per (shape, threads, M, impl, pass), wall
    clock with the layer sweep's caps; weights rotate over cold_bytes (default 4x the LLC)."""
    if cold_bytes is None:
        cold_bytes = 4 * last_level_cache_bytes()

    def timer(step, _copies):
        return time_fn(step, reps=reps, warmup=3, max_seconds=max_seconds, min_reps=min_reps)
    records: List[dict] = []
    with keep_threads(), Progress(len(shapes) * len(threads) * len(ms), progress) as bar:
        for K, N in shapes:
            built, rots, why = train.build(impls, K, N, "cpu", cold_bytes)
            for t in threads:
                torch.set_num_threads(t)
                for M in sorted(ms):
                    bar.at(f"train K={K} N={N} t={t} M={M}")
                    records += train.time_point(impls, built, rots, why, M, K, N, {"threads": t},
                                                timer, "cpu")
                    bar.done()
    train.add_ratios(records, ("threads",))
    return records


def run_host(quick: bool = False) -> dict:
    """The host-time rows on 1 thread, float32 (bench/train.py host_rows)."""
    calls, loops = HOST_LOOPS[quick]
    with keep_threads():
        torch.set_num_threads(1)
        records = train.host_rows("cpu", torch.float32, calls, loops, {"threads": 1})
    return {"records": records, "calls": calls, "loops": loops,
            "timing": f"host wall clock per call: median of {loops} loops of {calls} calls, 1 thread"}


# ---------------------------------------------------------------- model level (transformers Llama)
def llama_config(quick: bool):
    from transformers import LlamaConfig
    if quick:
        return LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                           tie_word_embeddings=False)
    return LlamaConfig(vocab_size=4096, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                       num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=1024,
                       tie_word_embeddings=False)


def run_model_suite(quick: bool, threads: Sequence[int], prompt_len: Optional[int] = None,
                    decode_steps: Optional[int] = None, reps: int = 10, seed: int = 0) -> dict:
    """Prefill latency and per-token decode latency of a random-init Llama, float vs deployed."""
    import copy

    from transformers import LlamaForCausalLM

    from bitlinear import convert, deploy, model_size_bytes

    prompt_len = prompt_len or (16 if quick else 128)
    decode_steps = decode_steps or (4 if quick else 32)
    reps = 3 if quick else reps
    cfg = llama_config(quick)
    torch.manual_seed(seed)
    float_model = LlamaForCausalLM(cfg).eval()
    bit_model = deploy(convert(copy.deepcopy(float_model))).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(seed))
    out = {"config": {k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "intermediate_size",
                                                   "num_hidden_layers", "num_attention_heads")},
           "prompt_len": prompt_len, "decode_steps": decode_steps, "batch": 1,
           "bytes": {"float": model_size_bytes(float_model), "deployed": model_size_bytes(bit_model)},
           "results": []}
    with keep_threads():
        for t in threads:
            torch.set_num_threads(t)
            for name, model in (("float", float_model), ("deployed", bit_model)):
                out["results"].append(dict(threads=t, model=name,
                                           **_time_llama(model, ids, decode_steps, reps)))
    return out


@torch.inference_mode()
def _time_llama(model, ids, decode_steps: int, reps: int) -> dict:
    prefill = time_fn(lambda: model(ids, use_cache=False), reps=reps, warmup=1)
    step_times = []
    for _ in range(max(1, reps // 3)):  # each decode step depends on the last: timed one by one
        step_times += greedy(model, ids, decode_steps)[0]
    per_tok = summarize(step_times)["median_s"]
    return {"prefill_ms": prefill["median_s"] * 1e3, "prefill_reps": prefill["reps"],
            "prefill_tokens_per_s": ids.shape[1] / prefill["median_s"],
            "decode_ms_per_token": per_tok * 1e3, "decode_tokens_per_s": 1.0 / per_tok,
            "decode_samples": len(step_times)}


# ------------------------------------------------------------------ `python profile/bench`
def hardware(args, threads: Sequence[int]) -> Tuple[Dict[int, dict], dict]:
    """Limits per thread count, and what meta says about where they come from (or why none)."""
    if args.hw:
        return load_hw(args.hw), {"hw_source": args.hw}
    why = "--quick" if args.quick else "--no-hw" if args.no_hw else None
    if why:
        return {}, {"hw_note": f"hardware limits not measured ({why}): no frac_int8_peak / frac_read_bw"}
    probe = hw_probe()
    return {t: probe.limits(t) for t in threads}, {"hw_source": "measured by profile/hw.py"}


def run(args) -> dict:
    """The suite for `python profile/bench` (bench/cli.py): the result dict."""
    import bitlinear

    quick = args.quick
    shapes = args.shapes or list(QUICK_SHAPES if quick else SHAPES)
    ms = args.ms or list(QUICK_MS if quick else MS)
    cores = os.cpu_count() or 1
    threads = args.threads or ([cores] if quick else sorted({cores, 1}, reverse=True))
    impls = IMPLS.select(args.impls)
    train_impls = [] if args.no_train else train.TRAIN.select(args.impls, TRAIN_IMPLS)
    reps = 5 if quick else args.reps
    max_seconds = 0.5 if quick else args.max_seconds
    meta = common_meta("cpu", BASELINE)
    hw, hw_meta = hardware(args, threads) if impls else ({}, {})
    cold_bytes = 0 if args.warm_cache else 4 * last_level_cache_bytes()
    records = run_layer_suite(shapes, ms, threads, impls, reps=reps, max_seconds=max_seconds,
                              progress=not args.no_progress, hw_limits=hw,
                              max_call_seconds=args.max_call_seconds,
                              cold_bytes=cold_bytes) if impls else []
    result = {"meta": meta, "results": records}
    if "bitlinear" in impls and not getattr(args, "no_decode", False):
        d_shapes = args.shapes or list(QUICK_DECODE_SHAPES if quick else DECODE_SHAPES)
        d_ms = [m for m in (args.ms or []) if m <= 16] or list(QUICK_DECODE_MS if quick else DECODE_MS)
        d_threads = args.threads or [cores]
        paths = decode_paths()
        llc = last_level_cache_bytes()
        result["decode"] = {
            "shapes": [list(s) for s in d_shapes], "ms": d_ms, "threads": d_threads, "paths": paths,
            "title": f"Decode: deployed BitLinear alone, median per call; hot = one weight copy, "
                     f"cold = calls cycle through copies totalling >= 4 x {llc >> 20} MiB LLC",
            "note": "DRAM floor: weight bytes a call streams (the decode layout where the call reads "
                    "it, else the packed weights) / read bandwidth measured by profile/hw.py at "
                    "that thread count. Other M: median per token, hot / cold.",
            "records": run_decode_suite(d_shapes, d_ms, d_threads, paths, hw_limits=hw,
                                        reps=reps, max_seconds=max_seconds,
                                        progress=not args.no_progress)}
        print(render_decode(result["decode"]))
    if train_impls:
        t_shapes = args.shapes or list(QUICK_TRAIN_SHAPES if quick else TRAIN_SHAPES)
        t_ms = args.ms or list(QUICK_TRAIN_MS if quick else TRAIN_MS)
        t_threads = args.threads or [cores]
        result["train"] = {
            "impls": train_impls, "shapes": [list(s) for s in t_shapes], "ms": t_ms,
            "threads": t_threads,
            "timing": "wall clock, median of reps after 3 warm-up runs (capped as the layer sweep); "
                      "grads set to None before each call",
            "records": run_train_suite(t_shapes, t_ms, t_threads, train_impls, reps, max_seconds,
                                       progress=not args.no_progress, cold_bytes=cold_bytes)}
    if not args.no_host:
        result["host"] = run_host(quick)
    result["targets"] = check_targets(result.get("train", {}).get("records", []), TARGETS)
    model = None
    if not args.no_model:
        try:
            model = run_model_suite(quick, threads)
        except ImportError as e:
            model = {"error": f"transformers not installed: {e}"}
        # transformers' BitNet layers against convert_bitnet on a tiny BitNet model (bench/hf.py)
        try:
            from . import hf as hf_bench
            result["hf_bitnet"] = hf_bench.run(
                threads=max(threads), steps=8 if quick else 64, warmup=2 if quick else 8,
                repeats=1 if quick else 3, compiled=not quick, verbose=not args.no_progress)
        except ImportError as e:
            result["hf_bitnet"] = {"error": f"transformers or accelerate not installed: {e}"}
    meta.update({
        "machine": machine_name(), "cpu_path": bitlinear.cpu_isa(),
        "quantized_engine": torch.backends.quantized.engine,
        "impls_unavailable": IMPLS.unavailable(),
        "quick": quick, "impls": impls,  # the layer sweep's (none run: empty)
        "shapes": [list(s) for s in shapes] if impls else [], "ms": ms if impls else [],
        "threads": threads,
        "reps": reps, "max_seconds": args.max_seconds,
        "hw": {str(t): v for t, v in hw.items()}, **hw_meta,
        "timing": "wall clock, median of reps after 3 warm-up runs, torch.inference_mode",
        "cache": "warm (one weight copy)" if args.warm_cache else
                 f"cold: calls cycle through weight copies totalling >= 4 x "
                 f"{last_level_cache_bytes() >> 20} MiB last-level cache",
    })
    result["model"] = model
    return result
