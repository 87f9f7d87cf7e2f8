"""Measured CPU limits for the benchmark suite: int8 dot-product peak and memory read bandwidth.

The benchmark suite (`python profile/bench`, profile/bench/cpu.py) imports this file and records
frac_int8_peak / frac_read_bw against these limits (or reads a file written by `--json`:
`python profile/bench --hw limits.json`).

peak.c (next to this file) is compiled once per process with the system C compiler ($CC, else cc)
into a temporary directory and loaded with ctypes. No OpenMP: plain pthreads.

    python profile/hw.py [--threads 1 2] [--json limits.json]
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

_SRC = Path(__file__).with_name("peak.c")
_KINDS = {0: "avx2", 1: "avxvnni", 2: "avx512vnni", 3: "scalar"}


def c_compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler found (cc/gcc, or set CC)")
    return cc


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    tmp = tempfile.mkdtemp(prefix="bitlinear-peak-")
    atexit.register(shutil.rmtree, tmp, True)
    out = os.path.join(tmp, "peak.so")
    cmd = [c_compiler(), "-O3", "-fPIC", "-shared", "-pthread", str(_SRC), "-o", out]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:  # an older compiler without AVX-VNNI support: AVX2 and scalar only
        r = subprocess.run(cmd[:-3] + ["-DBL_NO_VNNI"] + cmd[-3:], capture_output=True, text=True,
                           check=False)
    if r.returncode != 0:
        raise RuntimeError(f"compiling peak.c failed ({' '.join(cmd)}):\n{r.stderr[-2000:]}")
    lib = ctypes.CDLL(out)
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


def limits(threads: int) -> dict:
    """What the bench suite records per thread count (a failed measurement is recorded, not raised):
    int8_peak_gops, int8_peak_isa, read_bw_gbs."""
    out = {}
    try:
        peak = cpu_int8_peak_gops(threads)
        out["int8_peak_gops"] = float(peak["gops"])
        out["int8_peak_isa"] = peak.get("isa")
    except Exception as e:  # measurement failure must not kill the suite
        out["int8_peak_error"] = f"{type(e).__name__}: {e}"
    try:
        out["read_bw_gbs"] = float(cpu_read_bandwidth_gbs(threads))
    except Exception as e:
        out["read_bw_error"] = f"{type(e).__name__}: {e}"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    ap.add_argument("--json", help="write {threads: limits} for `python profile/bench --hw`")
    a = ap.parse_args(argv)
    res = {}
    for t in a.threads:
        t0 = time.time()
        p = cpu_int8_peak_gops(t)
        res[str(t)] = {"int8_peak_gops": p["gops"], "int8_peak_isa": p["isa"],
                       "read_bw_gbs": cpu_read_bandwidth_gbs(t)}
        print(f"threads={t}: int8 peak {p['gops']:.1f} GOPS ({p['isa']}; "
              f"{p['gops_cpu_time']:.1f} from per-thread CPU time), "
              f"read bandwidth {res[str(t)]['read_bw_gbs']:.1f} GB/s  [{time.time() - t0:.1f} s]")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
