"""The greedy decode loop every model-level benchmark times: the suite's Llama case (cpu.py), the
tiny transformers BitNet case (hf.py) and the BitNet-2B-shaped model (profile/model_decode.py)."""
from __future__ import annotations

import inspect
import time

import torch


def cache_kw(model) -> str:
    """Name of the KV-cache argument: `cache` (transformers >= 5.x) or `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(out):
    return getattr(out, "cache", None) if hasattr(out, "cache") else out.past_key_values


@torch.no_grad()
def greedy(model, prompt: torch.Tensor, steps: int, warmup: int = 0, on_step=None,
           step_fn=None):
    """Greedy decode with the KV cache after ``prompt`` ([1, P] ids): (the step times of the
    ``steps`` timed steps after ``warmup`` untimed ones, every generated token). ``on_step(timed)``
    runs before each step. With ``step_fn`` (a compiled ``model.forward``): a StaticCache (its
    length rounded up to 128, so that runs of other lengths share one graph), the prompt run
    eagerly, every step through ``step_fn`` with its ``cache_position``."""
    kw = cache_kw(model)
    P = prompt.shape[1]
    if step_fn is None:
        out = model(prompt, use_cache=True)
        cache = cache_of(out)
    else:
        from transformers import StaticCache
        need = P + warmup + steps + 1
        cache = StaticCache(config=model.config, max_cache_len=-(-need // 128) * 128)
        out = model(prompt, **{kw: cache}, cache_position=torch.arange(P), use_cache=True)
    tok = out.logits[:, -1:].argmax(-1)
    toks, times = [int(tok)], []
    for i in range(warmup + steps):
        if on_step:
            on_step(i >= warmup)
        t0 = time.perf_counter()
        if step_fn is None:
            out = model(tok, **{kw: cache}, use_cache=True)
            cache = cache_of(out)
        else:
            out = step_fn(tok, **{kw: cache}, cache_position=torch.tensor([P + i]),
                          use_cache=True)
        tok = out.logits[:, -1:].argmax(-1)
        dt = time.perf_counter() - t0
        toks.append(int(tok))
        if i >= warmup:
            times.append(dt)
    return times, toks
