"""The benchmark suite: deployed BitLinear against torch's own linear layers, side by side in one
process, over batch sizes M at BitNet-sized shapes. Entry point: `python -m bitlinear bench`
(bitlinear/bench/cli.py); see docs/benchmarks.md.

Implementations (all without bias, like BitNet's projections):
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

import math
import platform
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .timing import time_fn

SHAPES: Tuple[Tuple[int, int], ...] = ((4096, 4096), (2560, 6912), (6912, 2560))
MS: Tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
IMPLS: Tuple[str, ...] = ("bitlinear", "f32", "bf16", "int8_dynamic", "int_mm", "fake_quant")
INTEGER_IMPLS = ("bitlinear", "int8_dynamic", "int_mm")
QUICK_SHAPES = ((256, 384), (384, 256))
QUICK_MS = (1, 8, 64)


class Impl:
    """One implementation of y = x @ W^T at a shape: a callable, its input dtype, static bytes.

    `copies` holds extra independent instances (same weights, separate memory); timing cycles
    through them so the weights come from DRAM, not from a cache warmed by the previous call."""

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                 static_bytes: int, note: str = ""):
        self.name, self.fn, self.dtype, self.static_bytes, self.note = name, fn, dtype, static_bytes, note
        self.copies: List[Callable[[torch.Tensor], torch.Tensor]] = [fn]

    def replicate(self, n: int) -> None:
        import copy
        while len(self.copies) < n:
            self.copies.append(copy.deepcopy(self.fn))

    def rotating_call(self, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        copies, state = self.copies, [0]

        def call():
            f = copies[state[0] % len(copies)]
            state[0] += 1
            return f(x)
        return call


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (sysfs); 32 MiB if unknown."""
    best = 0
    for idx in range(8):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{idx}/size") as f:
                txt = f.read().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(txt[-1:], 1)
        try:
            best = max(best, int(txt.rstrip("KMG")) * mult)
        except ValueError:
            pass
    return best or 32 << 20


def _module_bytes(m: nn.Module) -> int:
    from ..convert import model_size_bytes
    return model_size_bytes(m)


def _quantize_dynamic():
    qd = getattr(getattr(torch, "ao", None), "quantization", None)
    return getattr(qd, "quantize_dynamic", None) if qd is not None else None


def available_impls() -> Dict[str, str]:
    """name -> "" if usable in this torch, else the reason it is not."""
    out = {name: "" for name in IMPLS}
    if _quantize_dynamic() is None:
        out["int8_dynamic"] = "torch.ao.quantization.quantize_dynamic not in this torch"
    if not hasattr(torch, "_int_mm"):
        out["int_mm"] = "torch._int_mm not in this torch"
    return out


def make_impls(K: int, N: int, names: Sequence[str], seed: int = 0) -> Dict[str, Impl]:
    """Build each implementation from one random float weight (nn.Linear init)."""
    import warnings

    from ..nn import BitLinear

    torch.manual_seed(seed)
    lin = nn.Linear(K, N, bias=False)
    impls: Dict[str, Impl] = {}
    for name in names:
        if name == "bitlinear":
            layer = BitLinear.from_linear(lin).deploy().eval()
            impls[name] = Impl(name, layer, torch.float32, _module_bytes(layer),
                               "packed 2-bit weights + f32 scale")
        elif name == "f32":
            impls[name] = Impl(name, lin.eval(), torch.float32, _module_bytes(lin))
        elif name == "bf16":
            m = nn.Linear(K, N, bias=False).to(torch.bfloat16)
            with torch.no_grad():
                m.weight.copy_(lin.weight)
            impls[name] = Impl(name, m.eval(), torch.bfloat16, _module_bytes(m))
        elif name == "int8_dynamic":
            qd = _quantize_dynamic()
            if qd is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = qd(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
            # packed fbgemm weights are opaque; count int8 weights + one scale/zero point
            impls[name] = Impl(name, q.eval(), torch.float32, N * K + 8,
                               f"engine {torch.backends.quantized.engine}, bytes estimated as N*K+8")
        elif name == "int_mm":
            if not hasattr(torch, "_int_mm"):
                continue
            impls[name] = _int_mm_impl(lin.weight.detach())
        elif name == "fake_quant":
            layer = BitLinear.from_linear(lin).eval()  # not deployed: training forward
            impls[name] = Impl(name, layer, torch.float32, _module_bytes(layer))
        else:
            raise ValueError(f"unknown implementation {name!r}; known: {', '.join(IMPLS)}")
    return impls


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


def _int_mm_impl(w: torch.Tensor) -> Impl:
    m = _IntMM(w)
    return Impl("int_mm", m, torch.float32, _module_bytes(m),
                "per-token int8 x per-channel int8 weights, torch ops + torch._int_mm")


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
    import os
    return f"{name}, {os.cpu_count()} cores"


def hardware_limits(threads: int) -> dict:
    """int8 peak and read bandwidth from bitlinear.bench.hw (helper module; optional)."""
    try:
        from . import hw
    except ImportError as e:
        return {"error": f"bitlinear.bench.hw unavailable: {e}"}
    out = {}
    try:
        peak = hw.cpu_int8_peak_gops(threads)
        out["int8_peak_gops"] = float(peak["gops"])
        out["int8_peak_isa"] = peak.get("isa")
    except Exception as e:  # measurement failure must not kill the suite
        out["int8_peak_error"] = f"{type(e).__name__}: {e}"
    try:
        out["read_bw_gbs"] = float(hw.cpu_read_bandwidth_gbs(threads))
    except Exception as e:
        out["read_bw_error"] = f"{type(e).__name__}: {e}"
    return out


def run_layer_suite(shapes: Sequence[Tuple[int, int]], ms: Sequence[int], threads: Sequence[int],
                    impls: Sequence[str], reps: int = 30, max_seconds: float = 2.0, min_reps: int = 5,
                    progress: bool = True, hw_limits: Optional[Dict[int, dict]] = None,
                    seed: int = 0, max_call_seconds: float = 3.0,
                    cold_bytes: Optional[int] = None) -> List[dict]:
    """Time every (shape, threads, M, impl); returns one record per point.

    cold_bytes: each implementation is replicated until its copies hold at least this many bytes,
    and calls cycle through the copies, so weights stream from memory as in a real model whose
    layers do not all fit in cache (default 4x the last-level cache; 0 = warm cache, one copy).
    A point of a baseline other than f32 / bitlinear whose predicted time per call (the fastest
    run at the last measured M, scaled linearly in M) exceeds max_call_seconds is skipped and
    recorded as such: some baselines (torch._int_mm on CPU) are orders of magnitude slower."""
    bar = None
    total = len(shapes) * len(threads) * len(ms) * len(impls)
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, desc="bench", unit="pt")
        except ImportError:
            bar = None
    hw_limits = hw_limits or {}
    records: List[dict] = []
    prev_threads = torch.get_num_threads()
    try:
        if cold_bytes is None:
            cold_bytes = 4 * last_level_cache_bytes()
        for K, N in shapes:
            built = make_impls(K, N, impls, seed=seed)
            for impl in built.values():
                impl.replicate(min(64, max(1, -(-cold_bytes // max(1, impl.static_bytes)))))
            for t in threads:
                torch.set_num_threads(t)
                lim = hw_limits.get(t, {})
                last: Dict[str, Tuple[int, float]] = {}
                for M in sorted(ms):
                    gen = torch.Generator().manual_seed(seed + M)
                    x32 = torch.randn(M, K, generator=gen)
                    base = None
                    for name in impls:
                        if bar is not None:
                            bar.set_postfix_str(f"K={K} N={N} t={t} M={M} {name}")
                        rec = {"K": K, "N": N, "M": M, "threads": t, "impl": name}
                        impl = built.get(name)
                        predicted = (last[name][1] * M / last[name][0]) if name in last else 0.0
                        if impl is None:
                            rec["error"] = available_impls().get(name) or "not built"
                        elif predicted > max_call_seconds and name not in ("f32", "bitlinear"):
                            rec["skipped"] = (f"predicted {predicted:.1f} s per call > "
                                              f"{max_call_seconds} s")
                        else:
                            x = x32.to(impl.dtype)
                            with torch.inference_mode():
                                tm = time_fn(impl.rotating_call(x), reps=reps, warmup=3,
                                             max_seconds=max_seconds, min_reps=min_reps)
                            rec.update(_derived(tm, K, N, M, impl, lim))
                            last[name] = (M, tm["min_s"])
                            rec["copies"] = len(impl.copies)
                            if name == "f32":
                                base = rec["median_ms"]
                        records.append(rec)
                        if bar is not None:
                            bar.update(1)
                    if base is not None:
                        for r in records[-len(impls):]:
                            if "median_ms" in r:
                                r["speedup_vs_f32"] = base / r["median_ms"]
    finally:
        torch.set_num_threads(prev_threads)
        if bar is not None:
            bar.close()
    return records


def _derived(tm: dict, K: int, N: int, M: int, impl: Impl, lim: dict) -> dict:
    s = tm["median_s"]
    rec = {"median_ms": s * 1e3, "min_ms": tm["min_s"] * 1e3, "p90_ms": tm["p90_s"] * 1e3,
           "reps": tm["reps"], "tokens_per_s": M / s, "gops": 2.0 * M * N * K / s / 1e9,
           "static_bytes": impl.static_bytes}
    if impl.note:
        rec["note"] = impl.note
    if impl.name in INTEGER_IMPLS and lim.get("int8_peak_gops"):
        rec["frac_int8_peak"] = rec["gops"] / lim["int8_peak_gops"]
    if M == 1:
        rec["weight_gbs"] = impl.static_bytes / s / 1e9
        if lim.get("read_bw_gbs"):
            rec["frac_read_bw"] = rec["weight_gbs"] / lim["read_bw_gbs"]
    return rec


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

    from ..convert import convert, deploy, model_size_bytes

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
    prev = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            for name, model in (("float", float_model), ("deployed", bit_model)):
                out["results"].append(dict(threads=t, model=name,
                                           **_time_llama(model, ids, decode_steps, reps)))
    finally:
        torch.set_num_threads(prev)
    return out


def _cache_kw(model) -> str:
    """Name of the KV-cache argument: `cache` (transformers >= 5.x) or `past_key_values`."""
    import inspect
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    return getattr(out, "cache", None) if hasattr(out, "cache") else out.past_key_values


@torch.inference_mode()
def _time_llama(model, ids, decode_steps: int, reps: int) -> dict:
    kw = _cache_kw(model)
    prefill = time_fn(lambda: model(ids, use_cache=False), reps=reps, warmup=1)
    step_times = []
    for _ in range(max(1, reps // 3)):
        o = model(ids, use_cache=True)
        cache, tok = _cache_of(o), o.logits[:, -1:].argmax(-1)
        for _ in range(decode_steps):
            t0 = time.perf_counter()
            o = model(tok, use_cache=True, **{kw: cache})
            step_times.append(time.perf_counter() - t0)
            cache, tok = _cache_of(o), o.logits[:, -1:].argmax(-1)
    step_times.sort()
    per_tok = step_times[len(step_times) // 2]
    return {"prefill_ms": prefill["median_s"] * 1e3, "prefill_reps": prefill["reps"],
            "prefill_tokens_per_s": ids.shape[1] / prefill["median_s"],
            "decode_ms_per_token": per_tok * 1e3, "decode_tokens_per_s": 1.0 / per_tok,
            "decode_samples": len(step_times)}


def geomean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")
