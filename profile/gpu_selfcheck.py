"""GPU self-check: every CUDA GEMM path against the CPU kernels (packing, x_q, gemm_acc, linear in
three dtypes and three quant types), exactly for float32, within one ulp for float16/bfloat16.
One path per process (profile/gpu_check.sh runs them all): a CUDA fault poisons the context.

    python profile/gpu_selfcheck.py PATH [PATH ...] [--tiny]
        PATH: auto, simple, gemv, fused, multirow, mma, mma256, wgmma (several: one after the other in
        this process, e.g. under compute-sanitizer)

Paths are forced with bitlinear.cuda's options (bl_cuda_set_option), not the environment.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

CHECK_PATHS = {"auto": {}, "simple": {"path": "simple"}, "gemv": {"path": "gemv"},
               "fused": {"path": "fused"}, "multirow": {"path": "multirow"},
               "mma": {"path": "mma"}, "mma256": {"path": "mma", "mma_bn": 256},
               "wgmma": {"path": "wgmma"}}
CHECK_SHAPES = [(1, 1, 1), (1, 3, 7), (3, 129, 7), (7, 1000, 129), (16, 300, 70), (17, 129, 1000),
                (2, 8192, 64), (33, 1000, 3001), (64, 3200, 129), (70, 300, 77), (129, 1000, 33),
                (300, 256, 256)]
TINY_SHAPES = [(1, 1, 1), (3, 129, 7), (17, 200, 40), (2, 4096, 8), (40, 300, 70)]


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
    from bitlinear.cuda import set_cuda_option

    for name, value in {"path": "auto", "mma_bn": 128, **CHECK_PATHS[path]}.items():
        set_cuda_option(name, value)
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", nargs="+", choices=list(CHECK_PATHS),
                   help="GEMM path(s) (bitlinear.cuda options)")
    p.add_argument("--tiny", action="store_true", help="a few small shapes only")
    args = p.parse_args(argv)
    from bitlinear.bench.gpu import cuda_missing
    if cuda_missing():
        print(f"gpu_selfcheck: {cuda_missing()}", file=sys.stderr)
        return 2
    rc = 0
    for path in args.path:
        rc |= selfcheck(path, args.tiny)
    return rc


if __name__ == "__main__":
    sys.exit(main())
