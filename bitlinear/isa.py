"""Choosing the CPU kernel path at run time. The names (ref, avx2, avx512vnni, avxvnni,
neon_dot, ...) come from the C core; "ref" is the plain C reference every fast path is tested
against. The initial choice is the fastest path this CPU supports, lowered by BITLINEAR_ISA."""
from __future__ import annotations

import contextlib

from . import _ext, _fast


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
    _fast.refresh_lut_policy()


@contextlib.contextmanager
def use_cpu_isa(name: str):
    """Context manager: run the block on CPU path `name`, then restore the previous one."""
    prev = cpu_isa()
    set_cpu_isa(name)
    try:
        yield
    finally:
        set_cpu_isa(prev)


# ---------------------------------------------------------------- decode layout (LUT)
_LUT_MODES = ("off", "auto", "force")  # bl_cpu_lut_mode, by value
_OPT_LUT, _OPT_LUT_MAX_M = 0, 1          # bl_cpu_option


def cpu_lut() -> str:
    """How deployed CPU layers use the table-lookup GEMV of small batches (docs/cpu.md):
    "off" (default: one resident copy of the weights, the packed 2 bits); "auto", an opt-in, where
    it was measured faster than the packed GEMV with the weights in cache (the AVX-512 path) for
    M <= cpu_lut_max_m(); "force" (every M, every path: for tests)."""
    return _LUT_MODES[_ext.native().cpu_option(_OPT_LUT)]


def set_cpu_lut(mode: str) -> None:
    """Set the decode-layout mode ("auto", "off" or "force"). Layers with the mode on keep a
    decode layout (1.78 bits per weight, in memory only) next to w_packed; with "off" none is
    built. Results are identical in every mode."""
    native = _ext.native()
    if mode not in _LUT_MODES:
        raise ValueError(f"unknown decode-layout mode {mode!r}; known: {', '.join(_LUT_MODES)}")
    native.cpu_option(_OPT_LUT, _LUT_MODES.index(mode))
    _fast.refresh_lut_policy()


def cpu_lut_max_m() -> int:
    """The largest M (rows of the input) that "auto" sends to the table-lookup GEMV."""
    return int(_ext.native().cpu_option(_OPT_LUT_MAX_M))


def set_cpu_lut_max_m(m: int) -> None:
    """Set the largest M of the table-lookup GEMV under "auto" (0..64; 0 turns it off)."""
    native = _ext.native()
    if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m <= 64:
        raise ValueError(f"cpu_lut_max_m must be an int in 0..64, got {m!r}")
    native.cpu_option(_OPT_LUT_MAX_M, m)
    _fast.refresh_lut_policy()


def cpu_lut_used(m: int = 1) -> bool:
    """Whether a deployed CPU call with m rows reads the decode layout (path, mode, max M)."""
    return bool(_ext.HAS_BITLINEAR and _ext.native().lut_status(int(m))[1])


@contextlib.contextmanager
def use_cpu_lut(mode: str, max_m: int | None = None):
    """Context manager: run the block with the given decode-layout mode (and max M), then restore."""
    prev, prev_m = cpu_lut(), cpu_lut_max_m()
    set_cpu_lut(mode)
    try:
        if max_m is not None:
            set_cpu_lut_max_m(max_m)
        yield
    finally:
        set_cpu_lut_max_m(prev_m)
        set_cpu_lut(prev)
