"""GPU benchmark: the deployed BitLinear op against cuBLAS bf16 F.linear, torch._int_mm (int8 GEMM
only, where the shape allows) and a device-to-device copy (the bandwidth ceiling), side by side in
one process.

    python -m bitlinear.bench.gpu [--json out.json] [--reps 30] [--quick]

Timing: CUDA events, median of >= 30 runs after warm-up. "graph" times replay a CUDA graph that
holds several calls in a row (GPU time per call, no launch gaps); "eager" times one call between
events after a sync (what a Python caller sees, launch overhead included). Weights are rotated
over enough copies to exceed twice the L2 cache (50 MB on an H100), so every call streams its
weights from DRAM. Copy GB/s counts bytes read + written; weight GB/s counts the packed (or bf16)
weight bytes read per call.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

import torch
import torch.nn.functional as F

L2_BYTES = 50 * 2**20
MIN_CALLS_PER_GRAPH = 8

# (label, M, K, N)
SHAPES = [
    ("decode 8192->28672", 1, 8192, 28672),
    ("decode 28672->8192", 1, 28672, 8192),
    ("decode 2560->6912", 1, 2560, 6912),
    ("prefill 8192x8192", 4096, 8192, 8192),
] + [(f"4096^2 M={m}", m, 4096, 4096) for m in (1, 4, 8, 16, 64, 256, 1024, 4096)]


def n_rotations(bytes_per_copy: int, cap: int = 64) -> int:
    return max(1, min(cap, math.ceil(2 * L2_BYTES / max(bytes_per_copy, 1))))


def _events():
    return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)


def time_eager(call, reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call(0)
    samples = []
    for i in range(reps):
        torch.cuda.synchronize()
        a, b = _events()
        a.record()
        call(i)
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1e-3)
    return statistics.median(samples)


def time_graph(call, n_rot: int, reps: int, warmup: int = 3) -> float:
    """Median seconds per call over `reps` replays of a graph of `inner` consecutive calls."""
    inner = n_rot * max(1, math.ceil(MIN_CALLS_PER_GRAPH / n_rot))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up on a side stream, as torch.cuda.graphs asks
        for i in range(n_rot):
            call(i)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(inner):
            call(i)
    for _ in range(warmup):
        g.replay()
    samples = []
    for _ in range(reps):
        a, b = _events()
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1e-3 / inner)
    del g
    return statistics.median(samples)


def copy_bandwidth(reps: int, nbytes: int = 1 << 30) -> dict:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    t = time_graph(lambda i: dst.copy_(src), 1, reps)
    del src, dst
    return {"bytes": nbytes, "seconds": t, "GBps": 2 * nbytes / t / 1e9}


def variants(M: int) -> dict:
    """Other GEMM paths of the same op, timed side by side to tune the defaults."""
    v = {}
    if M >= 9:  # the MMA path's default start (csrc/cuda/api.cu)
        v["bitlinear_mma_bn256"] = {"BITLINEAR_CUDA_MMA_BN": "256"}
    if 2 <= M <= 8:
        v["bitlinear_mma_forced"] = {"BITLINEAR_CUDA_MMA_MIN_M": "1"}
    if 9 <= M <= 64:
        v["bitlinear_gemv_forced"] = {"BITLINEAR_CUDA_MMA_MIN_M": "1000000000"}
    return v


def _with_env(env: dict, fn):
    """fn with env set during each call (the kernels read it at launch, also under capture)."""
    def call(i):
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return fn(i)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return call


def bench_shape(label, M, K, N, reps, copy_gbps, modes=("graph", "eager")) -> dict:
    from bitlinear import ops
    from bitlinear import reference as ref

    gen = torch.Generator(device="cuda")
    gen.manual_seed(1234 + M + K + N)
    w = torch.randn(N, K, device="cuda", generator=gen) * 0.02
    x = torch.randn(M, K, device="cuda", generator=gen).to(torch.bfloat16)
    w_scale, w_packed = ops.quantize_weights(w, 1e-6, False)
    w_bf16 = w.to(torch.bfloat16)
    del w
    packed_bytes = w_packed.numel()
    bf16_bytes = w_bf16.numel() * 2
    r_ours, r_bf16 = n_rotations(packed_bytes), n_rotations(bf16_bytes)
    packs = [w_packed] + [w_packed.clone() for _ in range(r_ours - 1)]
    bf16s = [w_bf16] + [w_bf16.clone() for _ in range(r_bf16 - 1)]

    def ours(i):
        return ops.linear(x, w_scale, packs[i % r_ours], None, 1e-6, K, True)

    def cublas(i):
        return F.linear(x, bf16s[i % r_bf16])

    methods = {"bitlinear": (ours, r_ours, packed_bytes), "bf16_linear": (cublas, r_bf16, bf16_bytes)}
    for name, env in variants(M).items():
        methods[name] = (_with_env(env, ours), r_ours, packed_bytes)
    if M > 16 and M % 8 == 0 and K % 8 == 0 and N % 8 == 0:
        xi = torch.randint(-127, 128, (M, K), dtype=torch.int8, device="cuda", generator=gen)
        wi = torch.randint(-1, 2, (N, K), dtype=torch.int8, device="cuda", generator=gen)
        r_int = n_rotations(wi.numel())
        wis = [wi] + [wi.clone() for _ in range(r_int - 1)]

        def int_mm(i):
            return torch._int_mm(xi, wis[i % r_int].t())

        methods["int_mm"] = (int_mm, r_int, wi.numel())

    out = {"label": label, "M": M, "K": K, "N": N, "padded_K": ref.padded_k(K),
           "rotations": {k: v[1] for k, v in methods.items()}}
    for name, (fn, rot, wbytes) in methods.items():
        res = {}
        if "graph" in modes:
            res["graph_s"] = time_graph(fn, rot, reps)
        if "eager" in modes:
            res["eager_s"] = time_eager(fn, reps)
        t = res.get("graph_s", res.get("eager_s"))
        res["weight_GBps"] = wbytes / t / 1e9
        res["TOPS"] = 2.0 * M * N * K / t / 1e12
        out[name] = res
    t_ours = out["bitlinear"].get("graph_s", out["bitlinear"].get("eager_s"))
    t_bf16 = out["bf16_linear"].get("graph_s", out["bf16_linear"].get("eager_s"))
    out["speedup_vs_bf16"] = t_bf16 / t_ours
    out["weight_frac_of_copy"] = out["bitlinear"]["weight_GBps"] / copy_gbps
    del packs, bf16s, methods
    torch.cuda.empty_cache()
    return out


def format_table(results: dict) -> str:
    lines = []
    print = lines.append  # noqa: A001  (collects the lines below)
    print(f"GPU: {results['device']}  (torch {results['torch']}, copy {results['copy']['GBps']:.0f} GB/s "
          "read+write)\nTimes are per call from CUDA-graph replays (eager in parentheses), in us.")
    hdr = f"{'shape':<22}{'bitlinear':>18}{'bf16 F.linear':>18}{'int_mm':>18}{'x bf16':>8}{'wGB/s':>8}{'%copy':>7}"
    print(hdr)
    print("-" * len(hdr))
    for r in results["shapes"]:
        def cell(name, width):
            if name not in r:
                return f"{'-':>{width}}"
            g, e = r[name].get("graph_s"), r[name].get("eager_s")
            s = f"{g * 1e6:.1f}" if g is not None else ""
            if e is not None:
                s += f" ({e * 1e6:.1f})"
            return f" {s:>{width - 1}}"
        print(f"{r['label']:<22}{cell('bitlinear', 18)}{cell('bf16_linear', 18)}"
              f"{cell('int_mm', 18)}"
              f"{r['speedup_vs_bf16']:>7.2f}x{r['bitlinear']['weight_GBps']:>8.0f}"
              f"{100 * r['weight_frac_of_copy']:>6.0f}%")
    var_lines = []
    for r in results["shapes"]:
        base = r["bitlinear"].get("graph_s")
        for name in r:
            if name.startswith("bitlinear_") and isinstance(r[name], dict) and base:
                t = r[name]["graph_s"]
                var_lines.append(f"  {r['label']:<22}{name[10:]:<16}{t * 1e6:>10.1f} us  "
                                 f"({base / t:.2f}x the default path)")
    if var_lines:
        print("variants (graph times):")
        lines.extend(var_lines)
    for t in results["targets"]:
        print(f"target {t['name']}: {t['value']:.2f} (want >= {t['want']}) {'PASS' if t['ok'] else 'MISS'}")
    return "\n".join(lines)


def targets(shapes: list) -> list:
    by = {r["label"]: r for r in shapes}
    out = []
    for lbl in ("decode 8192->28672", "decode 28672->8192"):
        if lbl in by:
            r = by[lbl]
            out.append({"name": f"{lbl} speedup vs bf16", "value": r["speedup_vs_bf16"], "want": 4.0,
                        "ok": r["speedup_vs_bf16"] >= 4.0})
            out.append({"name": f"{lbl} weight BW / copy BW", "value": r["weight_frac_of_copy"],
                        "want": 0.6, "ok": r["weight_frac_of_copy"] >= 0.6})
    if "prefill 8192x8192" in by:
        r = by["prefill 8192x8192"]
        out.append({"name": "prefill 8192x8192 M=4096 speedup vs bf16", "value": r["speedup_vs_bf16"],
                    "want": 1.2, "ok": r["speedup_vs_bf16"] >= 1.2})
    return out


# ------------------------------------------------------------------ self-check (no pytest needed)
CHECK_PATHS = {"auto": {}, "simple": {"BITLINEAR_CUDA_SIMPLE": "1"},
               "gemv": {"BITLINEAR_CUDA_MMA_MIN_M": "1000000000"},
               "mma": {"BITLINEAR_CUDA_MMA_MIN_M": "1"},
               "mma256": {"BITLINEAR_CUDA_MMA_MIN_M": "1", "BITLINEAR_CUDA_MMA_BN": "256"}}
ENV_KEYS = ("BITLINEAR_CUDA_SIMPLE", "BITLINEAR_CUDA_MMA_MIN_M", "BITLINEAR_CUDA_MMA_BN")
CHECK_SHAPES = [(1, 1, 1), (1, 3, 7), (3, 129, 7), (7, 1000, 129), (16, 300, 70), (17, 129, 1000),
                (2, 8192, 64), (129, 1000, 33), (300, 256, 256)]
TINY_SHAPES = [(1, 1, 1), (3, 129, 7), (17, 200, 40), (2, 4096, 8)]


def _same(y_gpu, y_cpu) -> str:
    """'' if equal (float32 exactly, float16/bfloat16 within one ulp, NaN where NaN), else why."""
    y_gpu = y_gpu.cpu()
    if y_gpu.shape != y_cpu.shape or y_gpu.dtype != y_cpu.dtype:
        return f"shape/dtype {tuple(y_gpu.shape)} {y_gpu.dtype} vs {tuple(y_cpu.shape)} {y_cpu.dtype}"
    if y_gpu.is_floating_point():
        ng, nc = torch.isnan(y_gpu), torch.isnan(y_cpu)
        if not torch.equal(ng, nc):
            return f"NaN mask differs ({int(ng.sum())} vs {int(nc.sum())})"
        a, b = y_gpu[~ng].double(), y_cpu[~nc].double()
        tol = {torch.float32: 0.0, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[y_cpu.dtype]
        bad = (a - b).abs() > tol * b.abs() + (2.0**-24 if tol else 0.0)
        if bad.any():
            i = int(bad.nonzero()[0])
            return f"{int(bad.sum())}/{a.numel()} values differ, e.g. {a[i].item()} vs {b[i].item()}"
        return ""
    if not torch.equal(y_gpu, y_cpu):
        d = (y_gpu != y_cpu).nonzero()
        return f"{d.shape[0]} of {y_cpu.numel()} differ, first at {d[0].tolist()}"
    return ""


def selfcheck(path: str, tiny: bool = False) -> int:
    """GPU vs CPU on one GEMM path: packing, x_q, gemm_acc, linear (3 dtypes, 3 quant types)."""
    import copy

    from bitlinear import BitLinear, ops

    for k in ENV_KEYS:
        os.environ.pop(k, None)
    os.environ.update(CHECK_PATHS[path])
    g = torch.Generator().manual_seed(20261126)
    n_ok, fails = 0, []
    for M, K, N in TINY_SHAPES if tiny else CHECK_SHAPES:
        for qt in ("ai8pc_wpt", "ai8pt_wpt", "ai8pc_wpc"):
            case = f"M={M} K={K} N={N} {qt}"
            try:
                layer = BitLinear(K, N, bias=True, quant_type=qt)
                with torch.no_grad():
                    layer.weight.copy_(torch.randn(N, K, generator=g) * 0.05)
                    layer.bias.copy_(torch.randn(N, generator=g))
                gpu_layer = copy.deepcopy(layer).to("cuda").deploy()
                layer.deploy()
                checks = [("w_packed", gpu_layer.w_packed, layer.w_packed),
                          ("w_scale", gpu_layer.w_scale, layer.w_scale)]
                x = torch.randn(M, K, generator=g)
                x[0, 0] *= 50
                if M > 2:
                    x[M // 2, K // 2] = float("nan")
                xq, xs, xr = ops.quantize_acts(x, 1e-6, True)
                xq_g, xs_g, xr_g = ops.quantize_acts(x.cuda(), 1e-6, True)
                checks += [("x_q", xq_g, xq), ("x_scale", xs_g, xs), ("rowsum", xr_g, xr),
                           ("gemm_acc", ops.gemm_acc(xq.cuda(), layer.w_packed.cuda(), K),
                            ops.gemm_acc(xq, layer.w_packed, K))]
                with torch.no_grad():
                    for dt in (torch.float32, torch.float16, torch.bfloat16):
                        checks.append((f"linear {dt}", gpu_layer(x.to(dt).cuda()), layer(x.to(dt))))
                torch.cuda.synchronize()
                for what, a, b in checks:
                    why = _same(a, b)
                    if why:
                        fails.append(f"{case} {what}: {why}")
                    else:
                        n_ok += 1
            except Exception as e:  # a CUDA fault poisons the context: stop this path
                fails.append(f"{case}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                if "CUDA" in str(e) or "cuda" in str(e):
                    break
        else:
            continue
        break
    status = "PASS" if not fails else "FAIL"
    print(f"selfcheck path={path}: {status} ({n_ok} checks ok, {len(fails)} failed)")
    for f in fails[:12]:
        print(f"  {f}")
    return 0 if not fails else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None, help="output JSON (default: $OUT/gpu_bench.json or ./gpu_bench.json)")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="only the 4 headline shapes")
    p.add_argument("--check", choices=list(CHECK_PATHS), default=None,
                   help="instead of timing: compare GPU with CPU results on one GEMM path")
    p.add_argument("--tiny", action="store_true", help="with --check: a few small shapes only")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bitlinear.bench.gpu: no CUDA device", file=sys.stderr)
        return 2
    import bitlinear
    if not bitlinear.HAS_CUDA_KERNELS:
        print("bitlinear.bench.gpu: this build has no CUDA kernels", file=sys.stderr)
        return 2
    if args.check:
        return selfcheck(args.check, args.tiny)
    reps = max(30, args.reps)
    copy = copy_bandwidth(reps)
    shapes = SHAPES[:4] if args.quick else SHAPES
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "reps": reps, "copy": copy,
               "env": {k: v for k, v in os.environ.items() if k.startswith("BITLINEAR_")},
               "shapes": []}
    for label, M, K, N in shapes:
        try:
            r = bench_shape(label, M, K, N, reps, copy["GBps"])
        except Exception as e:  # keep the other shapes; the error goes in the JSON
            print(f"{label}: FAILED {type(e).__name__}: {e}", file=sys.stderr)
            continue
        results["shapes"].append(r)
        print(f"{label}: bitlinear {r['bitlinear'].get('graph_s', 0) * 1e6:.1f} us, "
              f"bf16 {r['bf16_linear'].get('graph_s', 0) * 1e6:.1f} us", flush=True)
    results["targets"] = targets(results["shapes"])
    path = args.json or os.path.join(os.environ.get("OUT") or ".", "gpu_bench.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    table = format_table(results)
    with open(os.path.splitext(path)[0] + "_table.txt", "w") as f:
        f.write(table + "\n")
    print("\n" + table)
    print(f"(JSON: {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
