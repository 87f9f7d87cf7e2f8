"""transformers' Llama-family RMSNorm as one native call in eager CPU inference (issue 20).

A decode step of a BitNet-2B-shaped model runs 121 RMSNorms (two per layer, two BitNet sub-norms
per layer, the final norm), each about seven small torch ops: about 20 µs apiece on the 2-core
Zen 4. ``RMSNorm`` computes the same bits with torch's variance (``x.float().pow(2).mean(-1)``,
two ops: its reduction order is torch's, so it stays torch's) and the rest in one native call
(``bl_rms_norm_apply``): about 14-18 µs (docs/models.md). ``fuse_projections`` swaps transformers'
norms for it (``fuse_norms``); the state_dict keys and the Parameter stay the same.

Everything else takes the reference formula (bitlinear/reference.py, ``rms_norm``): torch.compile
(inductor fuses the norm into one kernel itself), autograd, tensor subclasses and modes, non-CPU
or non-contiguous inputs, dtypes other than float32 / float16 / bfloat16.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from . import _ext, _fast
from . import reference as ref

__all__ = ["RMSNorm", "fuse_norms", "HF_RMSNORM_CLASSES"]

_DTYPE_CODES = _fast._DTYPE_CODES  # torch dtype -> bl_dtype
_DTYPES = {c: d for d, c in _DTYPE_CODES.items()}
# [x's code][weight's code] -> the code of torch.promote_types(weight, x): weight * x's dtype
_PROMOTED = [[_DTYPE_CODES[torch.promote_types(_DTYPES[w], _DTYPES[x])] for w in range(3)]
             for x in range(3)]
_native = getattr(_ext._native, "rms_norm_cpu", None) if _ext.HAS_BITLINEAR else None
_Tensor, _Parameter = torch.Tensor, nn.Parameter

# transformers' norms whose forward is reference.rms_norm ("module:qualname"); fuse_norms also
# checks each swap bit for bit on random rows, so a release that changes the formula is left alone
HF_RMSNORM_CLASSES = frozenset({
    "transformers.models.llama.modeling_llama:LlamaRMSNorm",
    "transformers.models.bitnet.modeling_bitnet:BitNetRMSNorm",
    "transformers.models.mistral.modeling_mistral:MistralRMSNorm",
    "transformers.models.qwen2.modeling_qwen2:Qwen2RMSNorm",
})


class RMSNorm(nn.Module):
    """``weight * (x * rsqrt(mean(x^2) + eps))`` as transformers' LlamaRMSNorm computes it, bit for
    bit (reference.rms_norm), with one native call in place of five torch ops where it can
    (eager, no autograd, contiguous CPU float input). ``variance_epsilon`` as transformers names
    it."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.variance_epsilon = eps

    @classmethod
    def from_module(cls, norm: nn.Module) -> "RMSNorm":
        """An RMSNorm sharing ``norm``'s weight Parameter and epsilon (nothing copied)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.weight = norm.weight
        new.variance_epsilon = norm.variance_epsilon
        return new

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _native_call(x, self.weight, self.variance_epsilon)
        return ref.rms_norm(x, self.weight, self.variance_epsilon) if y is None else y


def _native_call(x, w, eps) -> Optional[torch.Tensor]:
    """The native norm of x, or None where the reference formula must run."""
    if (_native is None or _fast._is_compiling() or not _fast.fast_path_enabled()
            or type(x) is not _Tensor or (type(w) is not _Parameter and type(w) is not _Tensor)
            or _fast._tracing() is not None or _fast._dispatch_modes() or _fast._function_modes()
            or _fast._functorch()):
        return None
    xc, wc = _DTYPE_CODES.get(x.dtype), _DTYPE_CODES.get(w.dtype)
    if xc is None or wc is None or type(eps) not in (float, int):
        return None
    shape = x.shape
    K = w.shape[0] if w.dim() == 1 else -1
    if (K < 1 or not shape or shape[-1] != K or not x.is_cpu or not w.is_cpu
            or not x.is_contiguous() or not w.is_contiguous() or x.is_neg() or w.is_neg()
            or (_fast._grad_enabled() and (x.requires_grad or w.requires_grad))
            or not (0.0 <= eps and math.isfinite(eps))):
        return None
    # torch's reduction, as transformers' (x.to(float32) is x itself for a float32 x)
    var = (x if xc == 0 else x.to(torch.float32)).pow(2).mean(-1, keepdim=True)
    yc = _PROMOTED[xc][wc]
    y = x.new_empty(shape) if yc == xc else x.new_empty(shape, dtype=_DTYPES[yc])
    M = x.numel() // K
    if M:
        args = (x.data_ptr(), xc, M, K, var.data_ptr(), float(eps), w.data_ptr(), wc,
                y.data_ptr(), yc, _fast._get_threads())
        if _fast._profiler._is_profiler_enabled:
            with _fast._record_function("bitlinear::rms_norm"):
                _native(*args)
        else:
            _native(*args)
    return y


def _class_key(m: nn.Module) -> str:
    t = type(m)
    return f"{t.__module__}:{t.__qualname__}"


def _swap_ok(old: nn.Module, new: RMSNorm) -> bool:
    """The two give the same bits on random rows of the weight's dtype (CPU, no autograd)."""
    w = old.weight
    g = torch.Generator().manual_seed(20)
    x = (torch.randn(3, w.shape[0], generator=g) * 3).to(w.dtype)
    with torch.no_grad():
        a, b = old(x), new(x)
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def fuse_norms(model: nn.Module) -> int:
    """Replace transformers' Llama-family RMSNorm modules of ``model`` (HF_RMSNORM_CLASSES, CPU
    weights) by ``RMSNorm``, in place, each sharing its Parameter: the same state_dict, the same
    bits. Returns how many were replaced. A norm whose output differs from ours on a random check
    (another formula) is left alone. Call it again after loading a model (from_pretrained builds
    transformers' modules)."""
    if _native is None:
        return 0  # an extension without the entry point: nothing to gain
    swapped = 0
    done = {}  # id(old) -> new: a norm shared by two parents stays shared
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is None or _class_key(child) not in HF_RMSNORM_CLASSES:
                continue
            if id(child) in done:
                setattr(parent, name, done[id(child)])
                continue
            w = getattr(child, "weight", None)
            eps = getattr(child, "variance_epsilon", None)
            if (not isinstance(w, torch.Tensor) or w.dim() != 1 or w.device.type != "cpu"
                    or type(eps) is not float):
                continue
            new = RMSNorm.from_module(child)
            new.train(child.training)
            if _swap_ok(child, new):
                done[id(child)] = new
                setattr(parent, name, new)
                swapped += 1
    return swapped
