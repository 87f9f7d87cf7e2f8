"""Choosing the CPU kernel path (ref, avx2, avx512vnni, avxvnni, neon_dot) at run time."""
from __future__ import annotations

import contextlib

from . import _ext


def _names():
    n = _ext.native()
    return {n.cpu_isa_name(i): i for i in range(8) if n.cpu_isa_name(i) != "unknown"}


def cpu_isa() -> str:
    """The CPU kernel path in use ("pytorch-fallback" without the extension)."""
    if not _ext.HAS_BITLINEAR:
        return "pytorch-fallback"
    n = _ext.native()
    return n.cpu_isa_name(n.cpu_isa())


def available_cpu_isas() -> list[str]:
    """Paths this build contains and this CPU can run, slowest (the plain C reference) first."""
    if not _ext.HAS_BITLINEAR:
        return []
    n = _ext.native()
    return [name for name, i in _names().items() if n.cpu_isa_supported(i)]


def set_cpu_isa(name: str) -> None:
    """Force a CPU path (like the BITLINEAR_ISA environment variable). "ref" is the plain C."""
    names = _names()
    if name == "scalar":
        name = "ref"
    if name not in names:
        raise ValueError(f"unknown CPU path {name!r}; known: {', '.join(names)}")
    if name not in available_cpu_isas():
        raise ValueError(f"CPU path {name!r} is not available here; available: "
                         f"{', '.join(available_cpu_isas())}")
    _ext.native().cpu_isa_set(names[name])


@contextlib.contextmanager
def use_cpu_isa(name: str):
    """Context manager: run the block on CPU path `name`, then restore the previous one."""
    prev = cpu_isa()
    set_cpu_isa(name)
    try:
        yield
    finally:
        set_cpu_isa(prev)
