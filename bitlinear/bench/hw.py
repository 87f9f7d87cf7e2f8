"""Measured CPU limits for the benchmark suite: int8 dot-product peak and memory read bandwidth.

peak.c is compiled at first use with the system C compiler (`cc`, or $CC) into a cache directory
($BITLINEAR_CACHE, else ~/.cache/bitlinear) and loaded with ctypes. No OpenMP: plain pthreads.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path

_SRC = Path(__file__).with_name("peak.c")
_KINDS = {0: "avx2", 1: "avxvnni", 2: "avx512vnni", 3: "scalar"}


def _cache_dir() -> Path:
    d = os.environ.get("BITLINEAR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bitlinear")
    p = Path(d)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _compile(extra: list) -> Path:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler found (cc/gcc); needed to build the peak-measurement loop")
    src = _SRC.read_bytes()
    tag = hashlib.sha256(src + " ".join(extra).encode() + platform.machine().encode()).hexdigest()[:16]
    out = _cache_dir() / f"peak-{tag}.so"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = [cc, "-O3", "-fPIC", "-shared", "-pthread", *extra, str(_SRC), "-o", str(tmp_out)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"compiling peak.c failed ({' '.join(cmd)}):\n{r.stderr[-2000:]}")
        shutil.move(str(tmp_out), out)  # atomic within one filesystem, good enough across dirs
    return out


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    try:
        path = _compile([])
    except RuntimeError:  # an older compiler without AVX-VNNI support: AVX2 and scalar only
        path = _compile(["-DBL_NO_VNNI"])
    lib = ctypes.CDLL(str(path))
    lib.bl_peak_int8.restype = ctypes.c_double
    lib.bl_peak_int8.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long]
    lib.bl_peak_has_vnni.restype = ctypes.c_int
    lib.bl_peak_ops_per_step.restype = ctypes.c_int
    lib.bl_peak_ops_per_step.argtypes = [ctypes.c_int]
    lib.bl_read_bw.restype = ctypes.c_double
    lib.bl_read_bw.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    return lib


def _best_kind() -> int:
    if platform.machine() not in ("x86_64", "AMD64"):
        return 3
    f = _cpu_flags()
    if {"avx512_vnni", "avx512bw", "avx512f"} <= f:
        return 2
    if "avx_vnni" in f:
        return 1
    if "avx2" in f:
        return 0
    return 3


def cpu_int8_peak_gops(threads: int, seconds: float = 0.1, trials: int = 10
                       ) -> dict[str, float | str | int]:
    """Best of `trials` short runs of int8 dot-product throughput (GOPS, 2 ops per multiply-add)
    with `threads` threads: vpdpbusd where the CPU has VNNI, else vpmaddubsw+vpmaddwd+vpaddd
    (AVX2). Many short runs, so one where no other process took a core is likely."""
    threads = max(1, int(threads))
    lib, kind = _lib(), _best_kind()
    if kind in (1, 2) and not lib.bl_peak_has_vnni():
        kind = 0
    ops = lib.bl_peak_ops_per_step(kind) * 12  # per iteration of one thread
    iters = 1000
    while lib.bl_peak_int8(kind, 1, iters) < 0.02:  # calibrate on one thread
        iters *= 4
    iters = max(iters, int(iters * seconds / max(lib.bl_peak_int8(kind, 1, iters), 1e-6)))
    best, cpu_rate = float("inf"), 0.0
    rate = ctypes.c_double.in_dll(lib, "bl_peak_last_cpu_rate")
    for _ in range(max(1, trials)):
        best = min(best, lib.bl_peak_int8(kind, threads, iters))
        cpu_rate = max(cpu_rate, rate.value)
    # gops: wall clock, all threads together (what a kernel can get now); gops_cpu_time: per-thread
    # CPU time, summed (the cores' peak even while other processes share them)
    return {"gops": ops * iters * threads / best / 1e9, "gops_cpu_time": ops * cpu_rate / 1e9,
            "isa": _KINDS[kind], "threads": threads}


def cpu_read_bandwidth_gbs(threads: int, mib: int = 512) -> float:
    """Best-of-5 read bandwidth (GB/s, 1e9 bytes) summing a fresh buffer of `mib` MiB (>= 512)."""
    threads = max(1, int(threads))
    nbytes = max(512, int(mib)) << 20
    dt = _lib().bl_read_bw(nbytes, threads, 5)
    if dt <= 0:
        raise MemoryError(f"could not allocate {nbytes >> 20} MiB for the bandwidth test")
    return nbytes / dt / 1e9


if __name__ == "__main__":
    for t in sorted({1, os.cpu_count() or 1}):
        t0 = time.time()
        p = cpu_int8_peak_gops(t)
        print(f"threads={t}: int8 peak {p['gops']:.1f} GOPS ({p['isa']}; "
              f"{p['gops_cpu_time']:.1f} from per-thread CPU time), "
              f"read bandwidth {cpu_read_bandwidth_gbs(t):.1f} GB/s  [{time.time() - t0:.1f} s]")
