"""Training rows and host-time rows, shared by the CPU and the GPU suite (cpu.py, gpu.py).

Training (TRAIN, `--impls train_*`): one layer's train step, y = layer(x); y.backward(g), with x
requiring grad (so grad_input is computed too) and the grads set to None before each call (not
accumulated), timed per pass:
  fwd        the forward alone, as in training (grad enabled, tensors saved for backward)
  fwd+bwd    forward + backward
Implementations, no bias, each at its dtype (input, weights and gradient):
  train_<dt>               torch nn.Linear (the baseline of its dtype: time_vs_linear)
  train_bitlinear_<dt>     bitlinear.BitLinear in training mode (torch.ops.bitlinear.linear_train)
  train_torchao_bf16       nn.Linear under torchao's quantize_(m, bitnet_training()) (optional:
                           only where `import torchao` works; never a dependency of the package)
with <dt> f32 or bf16. Weights rotate over fresh copies as in the layer sweep (timing.Rotation).

Host time (host_rows): per call of a 64x64 layer (nn.Linear's default bias) at M = 1, weights hot,
many calls in a loop with a synchronize only around the loop (timing.time_calls): nn.Linear against
BitLinear's training-mode forward (grad enabled, weight requiring grad), and nn.Linear against the
deployed BitLinear under torch.no_grad(): through its eager fast path ("no_grad", what a plain eager
call takes) and with it off ("no_grad, op path": every call through torch.ops.bitlinear.linear).
"""
from __future__ import annotations

import copy
import functools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .harness import Impl, Registry, add_time_ratios, point, times
from .timing import Rotation, time_calls

BASELINE = "linear"                       # the `layer` every time_vs_linear refers to
PASSES = {"fwd": 2.0, "fwd+bwd": 6.0}     # pass -> ops per multiply-add of M N K
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
TRAIN = Registry()
KIND: Dict[str, Tuple[str, str]] = {}     # name -> (layer, dtype name): record fields


@functools.lru_cache(maxsize=None)
def torchao_missing() -> str:
    """'' if torchao's BitNet training is importable, else why not."""
    try:
        import torchao  # noqa: F401
    except ImportError:
        return "torchao not installed"
    try:
        from torchao.prototype.quantized_training import bitnet_training  # noqa: F401
    except Exception as e:
        return f"torchao without bitnet_training: {type(e).__name__}: {e}"
    return ""


def dtype_name(dtype) -> str:
    return next((k for k, v in DTYPES.items() if v == dtype), str(dtype).replace("torch.", ""))


def _linear(lin: nn.Linear, dtype) -> nn.Module:
    return copy.deepcopy(lin).to(dtype)


def _bitlinear(lin: nn.Linear, dtype) -> nn.Module:
    from bitlinear import BitLinear
    return BitLinear.from_linear(lin).to(dtype).train()


def _torchao(lin: nn.Linear, dtype) -> nn.Module:
    from torchao.prototype.quantized_training import bitnet_training
    try:
        from torchao import quantize_
    except ImportError:  # older torchao
        from torchao.quantization import quantize_
    m = nn.Sequential(_linear(lin, dtype))
    quantize_(m, bitnet_training())
    return m


def _register(layer: str, dt: str, make: Callable[[nn.Linear, torch.dtype], nn.Module],
              doc: str, **kw) -> None:
    name = "train_" + ("" if layer == BASELINE else layer + "_") + dt

    def build(lin: nn.Linear) -> Impl:
        m = make(lin, DTYPES[dt])
        # bytes by shape and dtype (torchao's weight is a wrapper subclass without a data pointer);
        # copies for the rotation are fresh builds from the float layer (no deepcopy of subclasses)
        return Impl(lambda mod, x: mod(x), m, sum(p.numel() * p.element_size() for p in m.parameters()),
                    DTYPES[dt], clone=lambda _m: make(lin, DTYPES[dt]))
    KIND[name] = (layer, dt)
    TRAIN.register(name, doc, **kw)(build)


for _dt in DTYPES:
    _register(BASELINE, _dt, _linear, f"nn.Linear {_dt}")
    _register("bitlinear", _dt, _bitlinear, f"BitLinear training mode, {_dt}")
_register("torchao", "bf16", _torchao, "torchao bitnet_training, bf16", requires=torchao_missing)


def build(names: Sequence[str], K: int, N: int, device, budget_bytes: int, seed: int = 0):
    """The implementations among `names` for one (K, N) on `device`, their weight rotations and,
    for those not built, why: (built, rotations, why)."""
    torch.manual_seed(seed)
    lin = nn.Linear(K, N, bias=False, device=device)
    why = TRAIN.unavailable()
    built = TRAIN.build(names, lin, errors=why)
    return built, {n: impl.rotation(budget_bytes) for n, impl in built.items()}, why


def steps(impl: Impl, rot: Rotation, x: torch.Tensor) -> Dict[str, Callable[[], object]]:
    """pass -> a zero-argument call on the next weight copy (see PASSES)."""
    x = x.to(impl.dtype).requires_grad_()
    with torch.enable_grad():
        g = torch.randn_like(impl.call(rot.copies[0], x))

    def train_step(m):
        m.zero_grad(set_to_none=True)
        x.grad = None
        impl.call(m, x).backward(g)
    return {"fwd": rot.bind(lambda m: impl.call(m, x)), "fwd+bwd": rot.bind(train_step)}


def time_point(names: Sequence[str], built: Dict[str, Impl], rots: Dict[str, Rotation],
               why: Dict[str, str], M: int, K: int, N: int, fields: dict,
               timer: Callable[[Callable[[], object], int], dict], device) -> List[dict]:
    """A record per (implementation, pass) at one M; `timer(step, copies)` gives a timing.* dict;
    `fields` (threads, or label and mode) go into every record."""
    gen = torch.Generator(device=device).manual_seed(M + K + N)
    x = torch.randn(M, K, generator=gen, device=device)
    out = []
    for name in names:
        layer, dt = KIND[name]
        base = {**fields, "K": K, "N": N, "M": M, "impl": name, "layer": layer, "dtype": dt}
        impl, rot = built.get(name), rots.get(name)
        if impl is None:
            out += [{**base, "pass": p, "skipped": why.get(name, "not built")} for p in PASSES]
            continue
        try:
            with torch.enable_grad():
                recs = [{**base, "pass": p, **point(timer(step, len(rot)), K, N, M, impl, PASSES[p]),
                         "copies": len(rot)} for p, step in steps(impl, rot, x).items()]
        except Exception as e:  # recorded; the other implementations still run
            recs = [{**base, "pass": p, "error": f"{type(e).__name__}: {e}"} for p in PASSES]
        out += recs
        for m in rot.copies:
            m.zero_grad(set_to_none=True)
    return out


def add_ratios(records: List[dict], fields: Sequence[str]) -> None:
    """time_vs_linear: against nn.Linear of the same dtype and pass at the same point."""
    add_time_ratios(records, BASELINE, (*fields, "K", "N", "M", "dtype", "pass"), impl_key="layer")


# ----------------------------------------------------------------------------------- host time
HOST_SIZE = 64
HOST_CASES = ("train forward", "no_grad", "no_grad, op path")   # row labels of the host table


def host_rows(device, dtype, calls: int, loops: int, fields: Optional[dict] = None,
              sync: Optional[Callable[[], object]] = None) -> List[dict]:
    """Host time per call, nn.Linear against BitLinear (see the module doc)."""
    from bitlinear import BitLinear, fast_path_enabled, set_fast_path
    torch.manual_seed(0)
    lin = nn.Linear(HOST_SIZE, HOST_SIZE, device=device, dtype=dtype)
    layers = {("train forward", BASELINE): lin,
              ("train forward", "bitlinear"): BitLinear.from_linear(lin).train(),
              ("no_grad", BASELINE): lin,
              ("no_grad", "bitlinear"): BitLinear.from_linear(lin).deploy(),
              ("no_grad, op path", BASELINE): lin,
              ("no_grad, op path", "bitlinear"): BitLinear.from_linear(lin).deploy()}
    x = torch.randn(1, HOST_SIZE, device=device, dtype=dtype)
    out = []
    for (case, name), m in layers.items():
        # "op path": the deployed layer with its eager fast path off (bitlinear/_fast.py), every
        # call through torch.ops.bitlinear.linear as under torch.compile
        fast = fast_path_enabled()
        set_fast_path(fast and case != "no_grad, op path")
        try:
            with torch.set_grad_enabled(case == "train forward"):
                tm = time_calls(lambda m=m: m(x), calls, loops, sync)
        finally:
            set_fast_path(fast)
        out.append({**(fields or {}), "case": case, "impl": name, "K": HOST_SIZE, "N": HOST_SIZE,
                    "M": 1, "dtype": dtype_name(dtype), **times(tm)})
    add_time_ratios(out, BASELINE, (*(fields or {}), "case"))
    return out
