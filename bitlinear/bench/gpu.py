"""The GPU suite: the deployed BitLinear op against cuBLAS bf16 F.linear, torch._int_mm (int8 GEMM
only, where the shape allows) and a device-to-device copy (the bandwidth ceiling), side by side in
one process.

    python -m bitlinear bench --device cuda [--quick] [--reps 30] [--out F]
    python -m bitlinear.bench.gpu [same options]          (the same)

Timing (timing.py): CUDA events, median of >= 30 runs after warm-up, in each of MODES. "graph"
replays a CUDA graph that holds several calls in a row (GPU time per call, no launch gaps);
"eager" times one call between events after a sync (what a Python caller sees, launch overhead
included). Weights are rotated (timing.Rotation) over enough copies to exceed twice the L2 cache
(50 MB on an H100), so every call streams its weights from DRAM. Copy GB/s counts bytes read +
written; weight GB/s counts the packed (or bf16) weight bytes read per call.

Implementations (IMPLS): bitlinear, bf16 (the baseline of every ratio), int_mm, and tuning variants
of the bitlinear path (environment overrides of its GEMM choice, listed below the table).
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .harness import Impl, Progress, Registry, add_fractions, add_speedups, common_meta, point
from .timing import Rotation, gpu_l2_bytes, time_cuda_eager, time_cuda_graph, time_fn

BASELINE = "bf16"
L2_FACTOR = 2  # rotated weight copies hold at least this many L2 caches

# (label, M, K, N)
SHAPES: List[Tuple[str, int, int, int]] = [
    ("decode 8192->28672", 1, 8192, 28672),
    ("decode 28672->8192", 1, 28672, 8192),
    ("decode 2560->6912", 1, 2560, 6912),
    ("prefill 8192x8192", 4096, 8192, 8192),
] + [(f"4096^2 M={m}", m, 4096, 4096) for m in (1, 4, 8, 16, 64, 256, 1024, 4096)]

# mode -> timer(step, weight copies, reps); "wall" is the host's wall clock per call (on a GPU:
# the launch cost, nothing synchronized), and lets the suite run on the CPU
MODES = {"graph": lambda step, n_rot, reps: time_cuda_graph(step, n_rot, reps),
         "eager": lambda step, n_rot, reps: time_cuda_eager(step, reps),
         "wall": lambda step, n_rot, reps: time_fn(step, reps)}
DEFAULT_MODES = ("graph", "eager")

# (case label, record field, want, what): the GPU's performance targets, checked on the bitlinear
# records of the first mode
TARGETS = [(lbl, key, want, what) for lbl in ("decode 8192->28672", "decode 28672->8192")
           for key, want, what in (("speedup_vs_bf16", 4.0, "speedup vs bf16"),
                                   ("frac_copy_bw", 0.6, "weight BW / copy BW"))] + [
    ("prefill 8192x8192", "speedup_vs_bf16", 1.2, "M=4096 speedup vs bf16")]


class Case:
    """The inputs of one shape: bf16 x, ternary weights quantized and packed, the same in bf16."""

    def __init__(self, label: str, M: int, K: int, N: int, device: str = "cuda"):
        from bitlinear import ops
        self.label, self.M, self.K, self.N = label, M, K, N
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(1234 + M + K + N)
        w = torch.randn(N, K, device=device, generator=self.gen) * 0.02
        self.x = torch.randn(M, K, device=device, generator=self.gen).to(torch.bfloat16)
        self.w_scale, self.w_packed = ops.quantize_weights(w, 1e-6, False)
        self.w_bf16 = w.to(torch.bfloat16)


IMPLS = Registry()


def _bitlinear_impl(c: Case, env: Optional[dict] = None) -> Impl:
    from bitlinear import ops
    return Impl(lambda w, x: ops.linear(x, c.w_scale, w, None, 1e-6, c.K, True), c.w_packed,
                c.w_packed.numel(), env=env or {})


IMPLS.register("bitlinear", integer=True)(_bitlinear_impl)


@IMPLS.register("bf16")
def _bf16(c: Case) -> Impl:
    return Impl(lambda w, x: F.linear(x, w), c.w_bf16, c.w_bf16.numel() * 2)


@IMPLS.register("int_mm", integer=True, requires=lambda: "" if hasattr(torch, "_int_mm") else
                "torch._int_mm not in this torch")
def _int_mm(c: Case) -> Optional[Impl]:
    """int8 x int8 GEMM alone (random int8 operands, no quantization), where _int_mm takes M."""
    if not (c.M > 16 and c.M % 8 == 0 and c.K % 8 == 0 and c.N % 8 == 0):
        return None
    dev = c.x.device
    xi = torch.randint(-127, 128, (c.M, c.K), dtype=torch.int8, device=dev, generator=c.gen)
    wi = torch.randint(-1, 2, (c.N, c.K), dtype=torch.int8, device=dev, generator=c.gen)
    return Impl(lambda w, _x: torch._int_mm(xi, w.t()), wi, wi.numel())


# Other GEMM paths of the bitlinear op, timed side by side to tune the defaults:
# name -> (environment, smallest M, largest M)
VARIANTS = {
    "bitlinear_mma_bn256": ({"BITLINEAR_CUDA_MMA_BN": "256"}, 9, None),  # MMA path's default start
    "bitlinear_mma_forced": ({"BITLINEAR_CUDA_MMA_MIN_M": "1"}, 2, 8),
    "bitlinear_gemv_forced": ({"BITLINEAR_CUDA_MMA_MIN_M": "1000000000"}, 9, 64),
}
for _name, (_env, _lo, _hi) in VARIANTS.items():
    IMPLS.register(_name, variant_of="bitlinear", integer=True)(
        lambda c, env=_env, lo=_lo, hi=_hi:
        _bitlinear_impl(c, env) if lo <= c.M and (hi is None or c.M <= hi) else None)


def copy_bandwidth(reps: int, nbytes: int = 1 << 30) -> dict:
    """Device-to-device copy of `nbytes`: the DRAM ceiling (GB/s counts read + write)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    t = time_cuda_graph(lambda: dst.copy_(src), 1, reps)["median_s"]
    del src, dst
    return {"copy_bytes": nbytes, "copy_seconds": t, "copy_gbs": 2 * nbytes / t / 1e9}


def bench_case(label: str, M: int, K: int, N: int, impls: Sequence[str], reps: int,
               modes: Sequence[str] = DEFAULT_MODES, budget_bytes: Optional[int] = None,
               copy_gbs: Optional[float] = None, device: str = "cuda") -> List[dict]:
    """One record per (implementation, mode) at one shape."""
    from bitlinear import reference as ref

    if budget_bytes is None:
        budget_bytes = L2_FACTOR * gpu_l2_bytes()
    c = Case(label, M, K, N, device)
    built = IMPLS.build(impls, c)
    rots = {}  # variants share the bitlinear weights' copies
    out = []
    for name, impl in built.items():
        if id(impl.weights) not in rots:
            rots[id(impl.weights)] = Rotation(impl.weights, impl.nbytes, budget_bytes)
        rot = rots[id(impl.weights)]
        step = impl.step(rot, c.x)
        for mode in modes:
            rec = {"label": label, "K": K, "N": N, "M": M, "impl": name, "mode": mode,
                   "padded_K": ref.padded_k(K)}
            rec.update(point(MODES[mode](step, len(rot), reps), K, N, M, impl))
            add_fractions(rec, {"copy_gbs": copy_gbs}, IMPLS.entries[name].integer)
            rec["copies"] = len(rot)
            if IMPLS.entries[name].variant_of:
                rec["variant_of"] = IMPLS.entries[name].variant_of
            out.append(rec)
    return out


def run_suite(cases: Sequence[Tuple[str, int, int, int]], impls: Sequence[str], reps: int = 30,
              modes: Sequence[str] = DEFAULT_MODES, budget_bytes: Optional[int] = None,
              copy_gbs: Optional[float] = None, progress: bool = True,
              device: str = "cuda") -> List[dict]:
    records: List[dict] = []
    with Progress(len(cases), progress) as bar:
        for label, M, K, N in cases:
            bar.at(label)
            try:
                recs = bench_case(label, M, K, N, impls, reps, modes, budget_bytes, copy_gbs, device)
            except Exception as e:  # keep the other shapes
                print(f"{label}: FAILED {type(e).__name__}: {e}", file=sys.stderr)
                continue
            finally:
                if device == "cuda":  # the case's weight copies are gone: give their memory back
                    torch.cuda.empty_cache()
            records += recs
            head = [r for r in recs if r["mode"] == modes[0] and r["impl"] in ("bitlinear", BASELINE)]
            bar.log(f"{label}: " + ", ".join(f"{r['impl']} {r['median_ms'] * 1e3:.1f} us" for r in head))
            bar.done()
    add_speedups(records, BASELINE, ("label", "M", "K", "N", "mode"))
    return records


def targets(records: List[dict], mode: str) -> list:
    out = []
    for label, key, want, what in TARGETS:
        r = next((r for r in records if (r["label"], r["impl"], r["mode"]) == (label, "bitlinear", mode)
                  and key in r), None)
        if r is not None:
            out.append({"name": f"{label} {what}", "value": r[key], "want": want, "ok": r[key] >= want})
    return out


def cuda_missing() -> str:
    """'' if this process can run the CUDA kernels, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    import bitlinear
    return "" if bitlinear.HAS_CUDA_KERNELS else "this build has no CUDA kernels"


def run(args):
    """The suite for `python -m bitlinear bench --device cuda`: the result dict, or an exit code."""
    if cuda_missing():
        print(f"bench --device cuda: {cuda_missing()}", file=sys.stderr)
        return 2
    reps = max(30, args.reps)
    if args.shapes or args.ms:
        cases = [(f"{K}x{N} M={m}", m, K, N) for K, N in args.shapes or [(4096, 4096)]
                 for m in args.ms or [1]]
    else:
        cases = SHAPES[:4] if args.quick else SHAPES
    impls = args.impls or IMPLS.names()
    meta = common_meta("cuda", BASELINE)
    copy = {} if args.no_hw else copy_bandwidth(reps)
    records = run_suite(cases, impls, reps, DEFAULT_MODES, 0 if args.warm_cache else None,
                        copy.get("copy_gbs"), not args.no_progress)
    meta.update({
        "device": torch.cuda.get_device_name(), "cuda": torch.version.cuda, "quick": args.quick,
        "cases": [list(c) for c in cases], "modes": list(DEFAULT_MODES), "reps": reps,
        "impls": [n for n in impls if not IMPLS.entries[n].variant_of],
        "impls_unavailable": IMPLS.unavailable(),
        "hw": {"device": copy} if copy else {},
        "env": {k: v for k, v in os.environ.items() if k.startswith("BITLINEAR_")},
        "timing": "CUDA events, median of reps after 3 warm-up runs; graph: per call in a replayed "
                  "CUDA graph, eager: one call after a synchronize",
        "cache": "warm (one weight copy)" if args.warm_cache else
                 f"cold: calls cycle through weight copies totalling >= {L2_FACTOR} x "
                 f"{gpu_l2_bytes() >> 20} MiB L2",
    })
    return {"meta": meta, "results": records, "targets": targets(records, DEFAULT_MODES[0])}


def main(argv=None) -> int:
    """`python -m bitlinear.bench.gpu [options]` is `python -m bitlinear bench --device cuda [options]`."""
    from .cli import main as bench_main
    return bench_main(["--device", "cuda", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
