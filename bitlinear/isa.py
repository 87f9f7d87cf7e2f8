"""Choosing the CPU kernel path at run time. The names (ref, avx2, avx512vnni, avxvnni,
neon_dot, ...) come from the C core; "ref" is the plain C reference every fast path is tested
against. The initial choice is the fastest path this CPU supports, lowered by BITLINEAR_ISA."""
from __future__ import annotations

import contextlib

from . import _ext


def _index(name: str) -> int:
    names = _ext.CPU_ISA_NAMES
    if name == "scalar":
        name = "ref"
    if name not in names:
        raise ValueError(f"unknown CPU path {name!r}; known: {', '.join(names)}")
    return names.index(name)


def cpu_isa() -> str:
    """The CPU kernel path in use ("pytorch-fallback" without the extension)."""
    if not _ext.HAS_BITLINEAR:
        return "pytorch-fallback"
    return _ext.CPU_ISA_NAMES[_ext.native().cpu_isa()]


def compiled_cpu_isas() -> list[str]:
    """Paths this build contains, in index order."""
    n = _ext.native() if _ext.HAS_BITLINEAR else None
    return [name for i, name in enumerate(_ext.CPU_ISA_NAMES) if n.cpu_isa_compiled(i)]


def available_cpu_isas() -> list[str]:
    """Paths this build contains and this CPU can run, slowest (the plain C reference) first."""
    n = _ext.native() if _ext.HAS_BITLINEAR else None
    return [name for i, name in enumerate(_ext.CPU_ISA_NAMES) if n.cpu_isa_supported(i)]


def best_cpu_isa() -> str:
    """The fastest path this CPU supports (what runs unless BITLINEAR_ISA or set_cpu_isa lowers it)."""
    if not _ext.HAS_BITLINEAR:
        return "pytorch-fallback"
    return _ext.CPU_ISA_NAMES[_ext.native().cpu_isa_best()]


def set_cpu_isa(name: str) -> None:
    """Force a CPU path (like the BITLINEAR_ISA environment variable). "ref" is the plain C."""
    native = _ext.native()  # a clear error without the extension
    i = _index(name)
    if _ext.CPU_ISA_NAMES[i] not in available_cpu_isas():
        raise ValueError(f"CPU path {name!r} is not available here; available: "
                         f"{', '.join(available_cpu_isas())}")
    native.cpu_isa_set(i)


@contextlib.contextmanager
def use_cpu_isa(name: str):
    """Context manager: run the block on CPU path `name`, then restore the previous one."""
    prev = cpu_isa()
    set_cpu_isa(name)
    try:
        yield
    finally:
        set_cpu_isa(prev)
