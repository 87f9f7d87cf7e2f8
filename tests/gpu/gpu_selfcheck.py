"""GPU self-check: every CUDA GEMM path against the CPU kernels, bit for bit, over a fixed grid
(packing, x_q, row sums, gemm_acc, linear in float32 / float16 / bfloat16 and linear_q, the three
quant types), and the CUDA training op (forward and backward) against the CPU.
A CUDA fault poisons the context, so profile/gpu_check.sh runs the verified paths in one process
(the CPU side is computed once per case for all of them) and each never-run path in its own.

    python tests/gpu/gpu_selfcheck.py PATH [PATH ...] [--tiny]
        PATH: auto, simple, gemv, fused, multirow, mma, mma256, wgmma (several: each case on
        each path in this process, e.g. under compute-sanitizer)
    python tests/gpu/gpu_selfcheck.py --train      the training op under auto (the defaults)
    python tests/gpu/gpu_selfcheck.py --list ...   the grid and its size, no GPU needed (the
                                                   CPU rehearsal of gpu_check.sh runs this)

Outputs must be identical (NaN where NaN); a float16/bfloat16 mismatch is still a failure, and
the message says whether it was within one unit in the last place. Paths are forced with
bitlinear.cuda's options (bl_cuda_set_option), not the environment; every path starts from the
default options (so "auto" checks exactly what a user gets).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bitlinear of this checkout

import torch  # noqa: E402

CHECK_PATHS = {"auto": {}, "simple": {"path": "simple"}, "gemv": {"path": "gemv"},
               "fused": {"path": "fused"}, "multirow": {"path": "multirow"},
               "mma": {"path": "mma"}, "mma256": {"path": "mma", "mma_bn": 256},
               "wgmma": {"path": "wgmma"}}
DEFAULTS = {"path": "auto", "fused_max_m": 0, "multirow_min_m": 0, "mma_min_m": 9, "mma_bn": 128}
# odd sizes: K tails inside a 128-block, N = 1, split-K (small N, large K), tile tails
ODD_SHAPES = [(1, 1, 1), (1, 3, 7), (3, 129, 7), (7, 1000, 129), (16, 300, 70), (17, 129, 1000),
              (2, 8192, 64), (70, 300, 77), (129, 1000, 33), (300, 256, 256)]
# the hidden-style shapes (K, N) x every M around a threshold or a tile edge (issue 19)
GRID_KN = [(1000, 3001), (3001, 1000), (3200, 8640), (8640, 3200), (4096, 11008), (11008, 4096)]
GRID_MS = [1, 2, 3, 4, 5, 16, 17, 64, 65, 512]
TINY_SHAPES = [(1, 1, 1), (3, 129, 7), (17, 200, 40), (2, 4096, 8), (40, 300, 70), (5, 1000, 33)]
QUANT_TYPES = ("ai8pc_wpt", "ai8pt_wpt", "ai8pc_wpc")  # (per token, per channel) below
QT_FLAGS = {"ai8pc_wpt": (True, False), "ai8pt_wpt": (False, False), "ai8pc_wpc": (True, True)}
# the training op: (M, K, N); forward exact, backward within the matmul's rounding
TRAIN_SHAPES = [(1, 7, 5), (9, 300, 129), (17, 1000, 3001), (64, 3200, 512), (512, 1024, 1000)]
TRAIN_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


DEVICE = "cuda"  # "cpu" in the rehearsal (--rehearse): the same logic, CPU against CPU


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def grid(tiny: bool = False):
    """(M, K, N) of the GEMM checks: the odd shapes, then the hidden-style grid."""
    if tiny:
        return list(TINY_SHAPES)
    return list(ODD_SHAPES) + [(m, k, n) for k, n in GRID_KN for m in GRID_MS]


def _same(y_gpu, y_cpu) -> str:
    """'' if identical (NaN where NaN), else why (and whether within one ulp)."""
    y_gpu = y_gpu.cpu()
    if y_gpu.shape != y_cpu.shape or y_gpu.dtype != y_cpu.dtype:
        return f"shape/dtype {tuple(y_gpu.shape)} {y_gpu.dtype} vs {tuple(y_cpu.shape)} {y_cpu.dtype}"
    if y_gpu.is_floating_point():
        ng, nc = torch.isnan(y_gpu), torch.isnan(y_cpu)
        if not torch.equal(ng, nc):
            return f"NaN mask differs ({int(ng.sum())} vs {int(nc.sum())})"
        a, b = y_gpu[~ng], y_cpu[~nc]
        if torch.equal(a, b):
            return ""
        bad = a != b
        a, b = a.double(), b.double()
        ulp = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[y_cpu.dtype]
        within = bool(((a - b).abs() <= ulp * b.abs() + 2.0**-24)[bad].all())
        i = int(bad.nonzero()[0])
        return (f"{int(bad.sum())}/{a.numel()} values differ ({'all within 1 ulp' if within else 'beyond 1 ulp'}),"
                f" e.g. {a[i].item()} vs {b[i].item()}")
    if not torch.equal(y_gpu, y_cpu):
        d = (y_gpu != y_cpu).nonzero()
        return f"{d.shape[0]} of {y_cpu.numel()} differ, first at {d[0].tolist()}"
    return ""


def _packed(g, N, K):
    """Random ternary weights, packed, with about 1% of the bytes OR-ed with the invalid code 3
    (read as +1 by every kernel; padding codes included)."""
    from bitlinear import reference as ref
    packed = ref.pack_ternary(torch.randint(-1, 2, (N, K), generator=g, dtype=torch.int8))
    hit = torch.rand(packed.shape, generator=g) < 0.01
    packed[hit] |= 0x03
    return packed


def _set_options(opts: dict):
    if DEVICE != "cuda":  # the rehearsal: a CPU build has no CUDA options
        return
    from bitlinear.cuda import set_cuda_option
    for name, value in {**DEFAULTS, **opts}.items():
        set_cuda_option(name, value)


def _packing_checks(g, tiny: bool):
    """weights.cu's packing through a deployed layer, as a user gets it: [(case, gpu, cpu)]."""
    import copy

    from bitlinear import BitLinear
    out = []
    for K, N in [(7, 3), (1000, 129), (3001, 64)] if not tiny else [(129, 7)]:
        for qt in QUANT_TYPES:
            layer = BitLinear(K, N, bias=True, quant_type=qt)
            with torch.no_grad():
                layer.weight.copy_(torch.randn(N, K, generator=g) * 0.05)
            gpu_layer = copy.deepcopy(layer).to(DEVICE).deploy()
            layer.deploy()
            out += [(f"K={K} N={N} {qt} w_packed", gpu_layer.w_packed, layer.w_packed),
                    (f"K={K} N={N} {qt} w_scale", gpu_layer.w_scale, layer.w_scale)]
    return out


def selfcheck(paths, tiny: bool = False) -> int:
    """GPU vs CPU over the grid on each of `paths` (the CPU side computed once per case); one
    PASS/FAIL line per path. A CUDA fault ends the process's checks (the context is lost): the
    paths not reached say so."""
    g = torch.Generator().manual_seed(20261126)
    bl = torch.ops.bitlinear  # the raw ops: the typed wrappers refuse code-3 bytes
    n_ok = {p: 0 for p in paths}
    fails = {p: [] for p in paths}
    t0, lost = time.time(), None
    try:
        _set_options(CHECK_PATHS[paths[0]])
        for what, a, b in _packing_checks(g, tiny):
            why = _same(a, b)
            (fails[paths[0]].append(f"{what}: {why}") if why else None)
            n_ok[paths[0]] += not why
    except Exception as e:
        lost = f"packing: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    weights = {}
    for i, (M, K, N) in enumerate(grid(tiny)):
        if lost:
            break
        qt = QUANT_TYPES[i % 3]
        per_token, per_channel = QT_FLAGS[qt]
        case = f"M={M} K={K} N={N} {qt}"
        if (K, N) not in weights:
            weights.clear()  # one weight set in memory at a time
            weights[(K, N)] = _packed(g, N, K)
        packed = weights[(K, N)]
        w_scale = torch.rand(N if per_channel else 1, generator=g) * 0.1 + 0.01
        bias = torch.randn(N, generator=g) if i % 2 == 0 else None
        x = torch.randn(M, K, generator=g)
        x[0, 0] *= 50
        if M > 2:
            x[M // 2, K // 2] = float("nan")
        xq, xs, xr = bl.quantize_acts(x, 1e-6, per_token)
        xds = {dt: x.to(dt) for dt in (torch.float32, torch.float16, torch.bfloat16)}
        want = {"x_q": xq, "x_scale": xs, "rowsum": xr, "gemm_acc": bl.gemm_acc(xq, packed, K),
                "linear_q bf16": bl.linear_q(xq, xs, xr, w_scale, packed, bias, K, torch.bfloat16)}
        for dt, xd in xds.items():
            want[f"linear {dt}"] = bl.linear(xd, w_scale, packed, bias, 1e-6, K, per_token)
        try:
            packed_g, ws_g = packed.to(DEVICE), w_scale.to(DEVICE)
            b_g = None if bias is None else bias.to(DEVICE)
            x_g = x.to(DEVICE)
        except Exception as e:
            lost = f"{case}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            break
        for path in paths:
            try:
                _set_options(CHECK_PATHS[path])
                got = dict(zip(("x_q", "x_scale", "rowsum"), bl.quantize_acts(x_g, 1e-6, per_token)))
                got["gemm_acc"] = bl.gemm_acc(xq.to(DEVICE), packed_g, K)
                got["linear_q bf16"] = bl.linear_q(xq.to(DEVICE), xs.to(DEVICE), xr.to(DEVICE), ws_g, packed_g,
                                                   b_g, K, torch.bfloat16)
                for dt, xd in xds.items():
                    got[f"linear {dt}"] = bl.linear(xd.to(DEVICE), ws_g, packed_g, b_g, 1e-6, K,
                                                    per_token)
                _sync()
                for what, b in want.items():
                    why = _same(got[what], b)
                    if why:
                        fails[path].append(f"{case} {what}: {why}")
                    else:
                        n_ok[path] += 1
            except Exception as e:  # a CUDA fault poisons the context: stop here
                fails[path].append(f"{case}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                if "CUDA" in str(e) or "cuda" in str(e):
                    lost = f"{path} {case}"
                    break
    rc = 0
    for path in paths:
        bad = fails[path] or (lost and not n_ok[path])
        rc |= bool(bad)
        print(f"selfcheck path={path}: {'FAIL' if bad else 'PASS'} ({n_ok[path]} checks ok, "
              f"{len(fails[path])} failed, {len(grid(tiny))} shapes, {time.time() - t0:.1f} s"
              + (f"; CUDA context lost at {lost}" if lost else "") + ")")
        for f in fails[path][:12]:
            print(f"  {f}")
    return rc


def train_check() -> int:
    """torch.ops.bitlinear.linear_train on CUDA under the default options (auto) against the CPU:
    forward outputs identical (y, x_q, scales, packed weights), then a BitLinear training step's
    gradients (x, weight, bias) within the matmul rounding of TRAIN_TOL."""
    from bitlinear import BitLinear
    from bitlinear import _info
    from bitlinear import reference as ref

    _set_options({})
    g = torch.Generator().manual_seed(20261127)
    n_ok, fails, t0 = 0, [], time.time()
    for i, (M, K, N) in enumerate(TRAIN_SHAPES):
        qt = QUANT_TYPES[i % 3]
        spec = ref.QUANT_TYPES[qt]
        kern = _info.cuda_auto_kernel(M, K, "gemm")
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            case = f"M={M} K={K} N={N} {qt} {dt} ({kern})"
            try:
                x = torch.randn(M, K, generator=g).to(dt)
                w = (torch.randn(N, K, generator=g) * 0.05).to(dt)
                b = torch.randn(N, generator=g).to(dt)
                args = (1e-6, spec.act_per_token, spec.weight_per_channel)
                got = torch.ops.bitlinear.linear_train(x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), *args)
                want = torch.ops.bitlinear.linear_train(x, w, b, *args)
                for what, a, c in zip(("y", "x_q", "x_scale", "w_scale", "w_packed"), got, want):
                    why = _same(a, c)
                    (fails.append(f"{case} forward {what}: {why}") if why else None)
                    n_ok += not why
                grads = []
                layer = BitLinear(K, N, quant_type=qt).to(dt)
                gy = torch.randn(M, N, generator=g).to(dt)
                for dev in ("cpu", DEVICE):
                    m = BitLinear(K, N, quant_type=qt).to(dt).to(dev)
                    m.load_state_dict(layer.state_dict())
                    xi = x.detach().to(dev).clone().requires_grad_()
                    m(xi).backward(gy.to(dev))
                    grads.append([t.cpu().double() for t in (xi.grad, m.weight.grad, m.bias.grad)])
                _sync()
                for what, a, c in zip(("grad x", "grad w", "grad b"), *grads):
                    err = ((a - c).norm() / c.norm().clamp_min(1e-30)).item()
                    if not err <= TRAIN_TOL[dt]:
                        fails.append(f"{case} backward {what}: relative error {err:.2e} > {TRAIN_TOL[dt]}")
                    else:
                        n_ok += 1
            except Exception as e:
                fails.append(f"{case}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                if "CUDA" in str(e) or "cuda" in str(e):
                    break
        else:
            continue
        break
    status = "PASS" if not fails else "FAIL"
    print(f"selfcheck train (auto): {status} ({n_ok} checks ok, {len(fails)} failed, "
          f"{time.time() - t0:.1f} s)")
    for f in fails[:12]:
        print(f"  {f}")
    return 0 if not fails else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", nargs="*", choices=list(CHECK_PATHS) + [[]],
                   help="GEMM path(s) (bitlinear.cuda options)")
    p.add_argument("--tiny", action="store_true", help="a few small shapes only")
    p.add_argument("--train", action="store_true", help="the training op under auto")
    p.add_argument("--list", action="store_true", help="print the grid, run nothing (no GPU)")
    p.add_argument("--rehearse", action="store_true",
                   help="no GPU: run the same logic with the CPU standing in for the GPU "
                        "(tiny shapes; proves the script, not the kernels)")
    global DEVICE, GRID_KN, GRID_MS, TRAIN_SHAPES
    args = p.parse_args(argv)
    if not args.path and not args.train:
        p.error("name at least one PATH, or --train")
    if args.list:
        shapes = grid(args.tiny)
        print(f"gpu_selfcheck: paths {' '.join(args.path) or '-'}; {len(shapes)} GEMM shapes "
              f"(K, N of the grid: {GRID_KN}; M: {GRID_MS}); train: {args.train} "
              f"({len(TRAIN_SHAPES)} shapes x 3 dtypes)")
        return 0
    if args.rehearse:
        DEVICE = "cpu"
        GRID_KN, GRID_MS = [(130, 33), (300, 7)], [1, 5, 17]
        TRAIN_SHAPES = [(1, 7, 5), (9, 130, 33)]
        print("gpu_selfcheck: REHEARSAL on the CPU (CPU against CPU): not a GPU check")
        rc = selfcheck(args.path, args.tiny) if args.path else 0
        return rc | (train_check() if args.train else 0)
    import bitlinear
    missing = ("no CUDA device" if not torch.cuda.is_available() else
               "" if bitlinear.HAS_CUDA_KERNELS else "this build has no CUDA kernels")
    if missing:
        print(f"gpu_selfcheck: {missing}", file=sys.stderr)
        return 2
    rc = selfcheck(args.path, args.tiny) if args.path else 0
    if args.train:
        rc |= train_check()
    return rc


if __name__ == "__main__":
    sys.exit(main())
