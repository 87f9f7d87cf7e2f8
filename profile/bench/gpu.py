"""The GPU suite: the deployed BitLinear op against cuBLAS bf16 F.linear, torch._int_mm (int8 GEMM
only, where the shape allows) and a device-to-device copy (the bandwidth ceiling), side by side in
one process.

    python profile/bench --device cuda [--quick] [--reps 30] [--out F]
    python profile/bench gpu [same options]               (the same, plus cli.gpu_main's options)

Timing (timing.py): CUDA events, median of >= 30 runs after warm-up, in each of MODES. "graph"
replays a CUDA graph that holds several calls in a row (GPU time per call, no launch gaps);
"eager" times one call between events after a sync (what a Python caller sees, launch overhead
included). Weights are rotated (timing.Rotation) over enough copies to exceed twice the L2 cache
(50 MB on an H100), so every call streams its weights from DRAM. Copy GB/s counts bytes read +
written; weight GB/s counts the packed (or bf16) weight bytes read per call.

Implementations (IMPLS): bitlinear (the op), bf16 (F.linear: the baseline of every ratio), int_mm,
gemlite (its ternary A8W158_INT_dynamic layer, only where `import gemlite` works: never a
dependency), the module rows (bitlinear_module: a deployed BitLinear module, nn_linear_bf16: an
nn.Linear bf16 module; eager only, speedup_vs_nn_linear_bf16 on their records), and tuning variants
of the bitlinear path (bitlinear.cuda options forcing another GEMM path, listed below the table).

Then host-time rows (bench/train.py: per call of a 64x64 bf16 layer, synchronize only around each
loop of calls) and training rows (bench/train.py, TRAIN_IMPLS at TRAIN_CASES: nn.Linear, BitLinear
and, where `import torchao` works, torchao's bitnet_training, all bf16; CUDA events around one call
after a synchronize, TRAIN_MODE, since a train step is not graph-captured). With `args.save` (the
CLI's), the result file is rewritten after each section, so a run cut short keeps what it measured.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import train
from .harness import (Impl, Progress, Registry, add_fractions, add_speedups, check_targets,
                      common_meta, point)
from .timing import gpu_l2_bytes, time_cuda_eager, time_cuda_graph, time_fn

BASELINE = "bf16"
L2_FACTOR = 2  # rotated weight copies hold at least this many L2 caches

# (label, M, K, N)
SHAPES: List[Tuple[str, int, int, int]] = [
    ("decode 8192->28672", 1, 8192, 28672),
    ("decode 28672->8192", 1, 28672, 8192),
    ("decode 2560->6912", 1, 2560, 6912),
    ("prefill 8192x8192", 4096, 8192, 8192),
] + [(f"4096^2 M={m}", m, 4096, 4096) for m in (1, 4, 8, 16, 64, 256, 1024, 4096)] + [
    # hidden-style shapes (issue 11): decode, small batches, a prefill
    (f"{K}->{N} M={m}", m, K, N)
    for K, N in ((3200, 8640), (8640, 3200), (4096, 11008), (11008, 4096), (1000, 3001))
    for m in (1, 8, 64)] + [("4096->11008 M=16", 16, 4096, 11008),
                            ("4096->11008 M=2048", 2048, 4096, 11008)]
QUICK_SHAPES = SHAPES[:4] + [("3200->8640 M=1", 1, 3200, 8640), ("4096->11008 M=8", 8, 4096, 11008),
                             ("4096->11008 M=64", 64, 4096, 11008)]
# issue 19's timing table (profile/gpu_check.sh: BITLINEAR_BENCH_CASES=table): only its cases
TABLE_SHAPES = ([(f"{K}->{N} M=1", 1, K, N) for K, N in ((3200, 8640), (8640, 3200), (4096, 11008),
                                                         (11008, 4096))]
                + [("decode 8192->28672", 1, 8192, 28672), ("decode 28672->8192", 1, 28672, 8192)]
                + [(f"4096->11008 M={m}", m, 4096, 11008) for m in (8, 16, 64, 512, 4096)]
                + [("prefill 8192x8192", 4096, 8192, 8192)])
EAGER_ONLY = ("bitlinear_module", "nn_linear_bf16")  # module rows: what a user's eager call costs
MODULE_BASELINE = "nn_linear_bf16"

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

# training rows: (label, M, K, N), implementations, timing mode and targets (name, record match,
# field, op, want) on the time ratio to nn.Linear bf16 (fwd: F.linear)
TRAIN_CASES: List[Tuple[str, int, int, int]] = [("train 4096x4096x4096", 4096, 4096, 4096),
                                                ("train 8192x4096x11008", 8192, 4096, 11008)]
TRAIN_IMPLS = ("train_bf16", "train_bitlinear_bf16", "train_torchao_bf16")
TRAIN_MODE = "eager"
TRAIN_TARGETS = [(f"{lbl} {what}", {"label": lbl, "impl": "train_bitlinear_bf16", "pass": p},
                  "time_vs_linear", "<=", want) for lbl, *_ in TRAIN_CASES
                 for p, want, what in (("fwd", 0.8, "forward time / bf16 F.linear"),
                                       ("fwd+bwd", 1.2, "fwd+bwd time / nn.Linear bf16"))]
HOST_LOOPS = {False: (1000, 15), True: (200, 5)}  # (calls per loop, loops), default and --quick


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
REGISTRIES = (IMPLS, train.TRAIN)  # what --impls selects from


def _bitlinear_impl(c: Case, options: Optional[dict] = None) -> Impl:
    """The op; `options`: bitlinear.cuda options set around each call (read at launch, so also
    under graph capture), for the tuning variants."""
    from bitlinear import ops
    from bitlinear.cuda import use_cuda_options

    def call(w, x):
        return ops.linear(x, c.w_scale, w, None, 1e-6, c.K, True)

    def call_with(w, x):
        with use_cuda_options(**options):
            return call(w, x)
    # on the CPU (the suite's logic tested without a GPU) the options mean nothing: the op alone
    use = bool(options) and c.x.device.type == "cuda"
    return Impl(call_with if use else call, c.w_packed, c.w_packed.numel())


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


@IMPLS.register("bitlinear_module", integer=True)
def _bitlinear_module(c: Case) -> Impl:
    """A deployed BitLinear module called as a user calls it (eager; its own Python and host
    path included), bf16 in and out."""
    from bitlinear import BitLinear
    lin = torch.nn.Linear(c.K, c.N, bias=False, device=c.x.device, dtype=torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(c.w_bf16)
    mod = BitLinear.from_linear(lin).deploy()
    nbytes = sum(b.numel() * b.element_size() for b in mod.buffers())

    def call(m, x):
        with torch.no_grad():
            return m(x)
    return Impl(call, mod, nbytes)


@IMPLS.register("nn_linear_bf16")
def _nn_linear_bf16(c: Case) -> Impl:
    lin = torch.nn.Linear(c.K, c.N, bias=False, device=c.x.device, dtype=torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(c.w_bf16)

    def call(m, x):
        with torch.no_grad():
            return m(x)
    return Impl(call, lin, c.w_bf16.numel() * 2)


def _gemlite_missing() -> str:
    try:
        import gemlite  # noqa: F401
    except Exception as e:  # ImportError, or a broken Triton
        return f"gemlite not importable ({type(e).__name__}: {str(e)[:80]})"
    return ""


@IMPLS.register("gemlite", integer=True, requires=_gemlite_missing)
def _gemlite(c: Case) -> Optional[Impl]:
    """gemlite's BitNet layer (A8W158_INT_dynamic: int8 activations quantized per call, ternary
    weights), built from our ternary weights and scale. Optional: any failure leaves it out."""
    from bitlinear import ops

    w_ternary = ops.unpack_weights(c.w_packed, c.K).to(torch.bfloat16)
    scale = c.w_scale.to(torch.bfloat16).expand(c.N).reshape(c.N, 1).contiguous()

    def build(_w=None):
        from gemlite.helper import A8W158_INT_dynamic
        return A8W158_INT_dynamic(device=str(c.x.device), dtype=torch.bfloat16).from_weights(
            w_ternary, scale, None)
    try:
        layer = build()
    except Exception as e:
        print(f"gemlite: could not build the layer: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    return Impl(lambda m, x: m(x), layer, c.w_packed.numel(), clone=build,
                note="gemlite A8W158_INT_dynamic")


# Other GEMM paths of the bitlinear op, timed side by side to tune the defaults (the thresholds of
# docs/cuda.md are guesses until these rows are read): name -> (options, smallest M, largest M)
VARIANTS = {
    "bitlinear_mma_bn256": ({"path": "mma", "mma_bn": 256}, 9, None),
    "bitlinear_mma_forced": ({"path": "mma"}, 1, 8),        # auto's GEMV range (defaults)
    "bitlinear_gemv_forced": ({"path": "gemv"}, 9, 64),      # auto's MMA range, small M
    "bitlinear_multirow_forced": ({"path": "multirow"}, 1, 256),
    "bitlinear_fused_forced": ({"path": "fused"}, 1, 16),
    # auto with the never-run kernels at their suggested thresholds (docs/cuda.md): what a
    # promotion would give
    "bitlinear_suggested": ({"fused_max_m": 4, "multirow_min_m": 2, "mma_min_m": 65}, 1, 128),
}
if os.environ.get("BITLINEAR_BENCH_WGMMA") == "1":  # profile/gpu_check.sh: its self-check passed
    VARIANTS["bitlinear_wgmma_forced"] = ({"path": "wgmma"}, 65, None)
for _name, (_opts, _lo, _hi) in VARIANTS.items():
    IMPLS.register(_name, variant_of="bitlinear", integer=True)(
        lambda c, opts=_opts, lo=_lo, hi=_hi:
        _bitlinear_impl(c, opts) if lo <= c.M and (hi is None or c.M <= hi) else None)


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
            rots[id(impl.weights)] = impl.rotation(budget_bytes)
        rot = rots[id(impl.weights)]
        step = impl.step(rot, c.x)
        for mode in modes:
            if name in EAGER_ONLY and mode == "graph":
                continue
            rec = {"label": label, "K": K, "N": N, "M": M, "impl": name, "mode": mode,
                   "padded_K": ref.padded_k(K)}
            rec.update(point(MODES[mode](step, len(rot), reps), K, N, M, impl))
            add_fractions(rec, {"copy_gbs": copy_gbs}, IMPLS.entries[name].integer)
            rec["copies"] = len(rot)
            if IMPLS.entries[name].variant_of:
                rec["variant_of"] = IMPLS.entries[name].variant_of
            out.append(rec)
    return out


def _per_case(cases: Sequence[Tuple[str, int, int, int]], progress: bool, device: str, run_case,
              head) -> List[dict]:
    """run_case(label, M, K, N) -> records, for each case under a progress bar; a case that fails is
    reported and left out (the others still run); head(records) picks the records logged."""
    records: List[dict] = []
    with Progress(len(cases), progress) as bar:
        for label, M, K, N in cases:
            bar.at(label)
            try:
                recs = run_case(label, M, K, N)
            except Exception as e:  # keep the other shapes
                print(f"{label}: FAILED {type(e).__name__}: {e}", file=sys.stderr)
                continue
            finally:
                if device == "cuda":  # the case's weight copies are gone: give their memory back
                    torch.cuda.empty_cache()
            records += recs
            bar.log(f"{label}: " + ", ".join(
                " ".join(filter(None, (r["impl"], r.get("pass"), f"{r['median_ms'] * 1e3:.1f} us")))
                for r in head(recs) if "median_ms" in r))
            bar.done()
    return records


def run_suite(cases: Sequence[Tuple[str, int, int, int]], impls: Sequence[str], reps: int = 30,
              modes: Sequence[str] = DEFAULT_MODES, budget_bytes: Optional[int] = None,
              copy_gbs: Optional[float] = None, progress: bool = True,
              device: str = "cuda") -> List[dict]:
    records = _per_case(
        cases, progress, device,
        lambda label, M, K, N: bench_case(label, M, K, N, impls, reps, modes, budget_bytes,
                                          copy_gbs, device),
        lambda recs: [r for r in recs if r["mode"] == modes[0] and r["impl"] in ("bitlinear", BASELINE)])
    add_speedups(records, BASELINE, ("label", "M", "K", "N", "mode"))
    add_speedups(records, MODULE_BASELINE, ("label", "M", "K", "N", "mode"))
    return records


def run_train(cases: Sequence[Tuple[str, int, int, int]], impls: Sequence[str] = TRAIN_IMPLS,
              reps: int = 30, mode: str = TRAIN_MODE, budget_bytes: Optional[int] = None,
              progress: bool = True, device: str = "cuda") -> List[dict]:
    """The training rows (bench/train.py) at each case, timed in `mode`."""
    if budget_bytes is None:
        budget_bytes = L2_FACTOR * gpu_l2_bytes()

    def run_case(label, M, K, N):
        built, rots, why = train.build(impls, K, N, device, budget_bytes)
        return train.time_point(impls, built, rots, why, M, K, N, {"label": label, "mode": mode},
                                lambda step, n_rot: MODES[mode](step, n_rot, reps), device)
    records = _per_case(cases, progress, device, run_case,
                        lambda recs: [r for r in recs if r["pass"] == "fwd+bwd"])
    train.add_ratios(records, ("label", "mode"))
    return records


def run_host(device: str = "cuda", quick: bool = False) -> dict:
    """The host-time rows in bf16 (bench/train.py host_rows), synchronized around each loop."""
    calls, loops = HOST_LOOPS[quick]
    sync = torch.cuda.synchronize if device == "cuda" else None
    return {"records": train.host_rows(device, torch.bfloat16, calls, loops, sync=sync),
            "calls": calls, "loops": loops,
            "timing": f"host wall clock per call: median of {loops} loops of {calls} calls"
                      + (", torch.cuda.synchronize around each loop" if sync else "")}


# issue 11: module level, eager, M=1 (vs the nn.Linear bf16 module); small batches (graph)
MODULE_TARGETS = [(f"{K}->{N} M=1", 2.0) for K, N in ((4096, 11008), (11008, 4096), (3200, 8640))]
SMALL_BATCH_TARGETS = [("4096->11008 M=8", 2.5), ("4096->11008 M=64", 2.5)]


def targets(records: List[dict], mode: str) -> list:
    """The layer targets (TARGETS) on the bitlinear records of `mode`, then issue 11's: the module
    rows (eager) and the small batches (graph)."""
    specs = [(f"{label} {what}", {"label": label, "impl": "bitlinear", "mode": mode}, key, ">=",
              want) for label, key, want, what in TARGETS]
    specs += [(f"{label} eager module speedup vs nn.Linear bf16",
               {"label": label, "impl": "bitlinear_module", "mode": "eager"},
               f"speedup_vs_{MODULE_BASELINE}", ">=", want) for label, want in MODULE_TARGETS]
    specs += [(f"{label} graph speedup vs bf16", {"label": label, "impl": "bitlinear",
                                                  "mode": "graph"}, "speedup_vs_bf16", ">=", want)
              for label, want in SMALL_BATCH_TARGETS]
    return check_targets(records, specs)


# issue 19's table: (row, record match, field, op, want); "card" is meta["device"]
_PREFILL = ("4096->11008 M=512", "4096->11008 M=4096", "prefill 8192x8192")
ISSUE_TABLE = (
    [(f"M=1 eager module {K}->{N} vs nn.Linear bf16", {"label": f"{K}->{N} M=1",
      "impl": "bitlinear_module", "mode": "eager"}, f"speedup_vs_{MODULE_BASELINE}", ">=", 2.0)
     for K, N in ((3200, 8640), (8640, 3200), (4096, 11008), (11008, 4096))]
    + [(f"M=1 graph {lbl[7:]} weight BW / copy BW", {"label": lbl, "impl": "bitlinear",
        "mode": "graph"}, "frac_copy_bw", ">=", 0.8)
       for lbl in ("decode 8192->28672", "decode 28672->8192")]
    + [(f"M={m} graph 4096->11008 vs bf16", {"label": f"4096->11008 M={m}", "impl": "bitlinear",
        "mode": "graph"}, "speedup_vs_bf16", ">=", 2.5) for m in (8, 16, 64)]
    + [(f"graph {lbl} vs bf16", {"label": lbl, "impl": "bitlinear", "mode": "graph"},
        "speedup_vs_bf16", ">=", 1.3) for lbl in _PREFILL]
    + [(f"graph {lbl} vs torch._int_mm", {"label": lbl, "impl": "bitlinear", "mode": "graph"},
        "speedup_vs_int_mm", ">=", 1.0) for lbl in _PREFILL])
TABLE_TRAIN = [(f"{lbl} fwd+bwd / nn.Linear bf16", {"label": lbl, "impl": "train_bitlinear_bf16",
                "pass": "fwd+bwd"}, "time_vs_linear", "<=", 1.2) for lbl, *_ in TRAIN_CASES]
TABLE_HOST = [(f"host time per call, {case} / nn.Linear", {"case": case, "impl": "bitlinear"},
               "time_vs_linear", "<=", 1.0) for case in ("no_grad",)]


def issue_table(result: dict) -> dict:
    """Issue 19's timing table from a bench result: one row per target with the measured value,
    the target and ok (None where nothing was measured), the card, and the torchao rows where
    its wheel was there. `python profile/bench gpu --issue-table RESULT.json` writes it."""
    meta = result.get("meta", {})
    layer = result.get("results", [])
    tr = (result.get("train") or {}).get("records", [])
    host = (result.get("host") or {}).get("records", [])
    for r in layer:  # bitlinear against torch._int_mm at the same point
        if r.get("impl") == "bitlinear":
            mm = next((b for b in layer if b.get("impl") == "int_mm" and b.get("mode") == r["mode"]
                       and b.get("label") == r["label"]), None)
            if mm:
                r["speedup_vs_int_mm"] = mm["median_ms"] / r["median_ms"]
    rows, layer_specs = [], ISSUE_TABLE
    if meta.get("modes") == ["wall"]:  # the CPU rehearsal: its one mode stands for both
        layer_specs = [(n, {**m, "mode": "wall"}, k, op, w) for n, m, k, op, w in ISSUE_TABLE]
    for recs, specs in ((layer, layer_specs), (tr, TABLE_TRAIN), (host, TABLE_HOST)):
        got = {t["name"]: t for t in check_targets(recs, specs)}
        for name, _match, _key, op, want in specs:
            t = got.get(name)
            rows.append({"row": name, "op": op, "want": want,
                         "value": None if t is None else t["value"],
                         "ok": None if t is None else bool(t["ok"])})
    torchao = [{k: r.get(k) for k in ("label", "pass", "median_ms", "time_vs_linear")}
               for r in tr if r.get("impl") == "train_torchao_bf16"]
    return {"card": meta.get("device"), "rehearsal": meta.get("rehearsal"),
            "date": meta.get("date"), "torch": meta.get("torch"),
            "cuda_options": meta.get("cuda_options"), "rows": rows, "torchao_train": torchao,
            "measured": sum(r["value"] is not None for r in rows), "met": sum(bool(r["ok"]) for r in rows)}


# the rehearsal's command line (cli.py parses it)
REHEARSAL_ARGS = ["--device", "cuda", "--no-progress", "--impls",
                  "bitlinear,bf16,int_mm,bitlinear_module,nn_linear_bf16,train_bf16,train_bitlinear_bf16"]


def rehearse(args, out: str) -> int:
    """profile/gpu_check.sh's CPU rehearsal (GPU_CHECK_DRY_RUN=1): the table suite's flow on the
    CPU with the host clock, every table case scaled down (same labels), the result JSON written
    after each part as on a GPU. Its times say nothing about a GPU. `args`: REHEARSAL_ARGS parsed."""
    from . import harness
    args.save = lambda partial: harness.write(partial, out)
    global TABLE_SHAPES, TRAIN_CASES
    keep = TABLE_SHAPES, TRAIN_CASES
    TABLE_SHAPES = [(lbl, min(M, 24), 128, 64) for lbl, M, _K, _N in TABLE_SHAPES]
    TRAIN_CASES = [(lbl, 16, 128, 64) for lbl, *_ in TRAIN_CASES]
    os.environ["BITLINEAR_BENCH_CASES"] = "table"
    try:
        args.reps, args.quick = 3, True
        result = run(args, device="cpu")
    finally:
        TABLE_SHAPES, TRAIN_CASES = keep
    if isinstance(result, int):
        return result
    result["meta"]["rehearsal"] = "CPU rehearsal of profile/gpu_check.sh: not a GPU measurement"
    harness.write(result, out)
    return 0


def _cuda_options() -> dict:
    from bitlinear.cuda import cuda_options
    return cuda_options()


def cuda_missing() -> str:
    """'' if this process can run the CUDA kernels, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    import bitlinear
    return "" if bitlinear.HAS_CUDA_KERNELS else "this build has no CUDA kernels"


def run(args, device: str = "cuda"):
    """The suite for `python profile/bench --device cuda` (and `python profile/bench gpu`,
    cli.gpu_main): the result dict, or an exit code.
    device "cpu": the same logic on the CPU, timed with the host clock ("wall"), a 1 MiB rotation
    budget and no copy bandwidth (the tests run it; its times say nothing about a GPU)."""
    cuda = device == "cuda"
    if cuda and cuda_missing():
        print(f"bench --device cuda: {cuda_missing()}", file=sys.stderr)
        return 2
    modes, train_mode = (DEFAULT_MODES, TRAIN_MODE) if cuda else (("wall",), "wall")
    l2 = gpu_l2_bytes() if cuda else 1 << 19
    reps = max(30, args.reps) if cuda else args.reps
    if os.environ.get("BITLINEAR_BENCH_CASES") == "table":  # issue 19's table (gpu_check.sh)
        cases, train_cases = TABLE_SHAPES, TRAIN_CASES
    elif args.shapes or args.ms:
        cases = [(f"{K}x{N} M={m}", m, K, N) for K, N in args.shapes or [(4096, 4096)]
                 for m in args.ms or [1]]
        train_cases = cases
    else:
        cases = QUICK_SHAPES if args.quick else SHAPES
        train_cases = TRAIN_CASES[:1] if args.quick else TRAIN_CASES
    impls = IMPLS.select(args.impls)
    train_impls = [] if args.no_train else train.TRAIN.select(args.impls, TRAIN_IMPLS)
    budget = 0 if args.warm_cache else L2_FACTOR * l2
    save = getattr(args, "save", None) or (lambda result: None)
    meta = common_meta("cuda", BASELINE)
    copy = {} if args.no_hw or not impls or not cuda else copy_bandwidth(reps)
    meta.update({
        "device": torch.cuda.get_device_name() if cuda else "cpu (host clock)",
        "cuda": torch.version.cuda, "quick": args.quick,
        "cases": [list(c) for c in cases], "modes": list(modes), "reps": reps,
        "impls": [n for n in impls if not IMPLS.entries[n].variant_of],
        "impls_unavailable": IMPLS.unavailable(),
        "hw": {"device": copy} if copy else {},
        "env": {k: v for k, v in os.environ.items() if k.startswith("BITLINEAR_")},
        "cuda_options": _cuda_options(),
        "timing": "CUDA events, median of reps after 3 warm-up runs; graph: per call in a replayed "
                  "CUDA graph, eager: one call after a synchronize",
        "cache": "warm (one weight copy)" if args.warm_cache else
                 f"cold: calls cycle through weight copies totalling >= {L2_FACTOR} x "
                 f"{l2 / 2**20:g} MiB L2",
    })
    result = {"meta": meta, "results": [], "targets": []}
    if impls:
        result["results"] = run_suite(cases, impls, reps, modes, budget, copy.get("copy_gbs"),
                                      not args.no_progress, device)
        result["targets"] = targets(result["results"], modes[0])
        save(result)
    if not args.no_host:
        result["host"] = run_host(device, args.quick)
        save(result)
    if train_impls:
        sec = result["train"] = {
            "impls": train_impls, "cases": [list(c) for c in train_cases], "records": [],
            "timing": (f"CUDA events, {train_mode}: one call after a synchronize" if cuda else
                       "host clock") + f", median of {reps}; grads set to None before each call"}
        layer_targets = result["targets"]
        # the optional baselines (torchao: its Triton GEMM autotunes on its first call per shape)
        # in a second pass, so that a run cut short during them keeps the others
        optional = [n for n in train_impls if train.TRAIN.entries[n].requires]
        for part in ([n for n in train_impls if n not in optional], optional):
            if part:
                sec["records"] += run_train(train_cases, part, reps, train_mode, budget,
                                            not args.no_progress, device)
                train.add_ratios(sec["records"], ("label", "mode"))
                result["targets"] = layer_targets + check_targets(sec["records"], TRAIN_TARGETS)
                save(result)
    return result
