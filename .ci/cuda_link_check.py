#!/usr/bin/env python3
"""Full link of the CUDA build on a machine without a GPU (CI).

Installs the CUDA build of torch (default torch==2.14.1, cu130) into a side folder with
--no-deps (its libraries are linked, never imported), compiles the C core, every .cu file (for
sm_80, sm_90 and sm_90a unless TORCH_CUDA_ARCH_LIST says otherwise) and the binding with CUDA enabled,
using setup.py's own flags, links them into _bitlinear.so, and checks that every torch symbol the
binding imports is exported by that torch's libraries. Exit status 0 only if all of that worked.

Usage: python .ci/cuda_link_check.py [--torch-dir DIR] [--torch-spec torch==2.14.1]
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import setup as build  # noqa: E402  (setup.py's helpers; main() runs only as a script)


def run(cmd):
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.check_call([str(c) for c in cmd])


def symbols(path, defined):
    flag = "--defined-only" if defined else "--undefined-only"
    out = subprocess.run(["nm", "-D", flag, str(path)], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-dir", default=os.environ.get("BITLINEAR_CUDA_TORCH_DIR",
                                                           "/tmp/bitlinear-torch-cuda"))
    ap.add_argument("--torch-spec", default="torch==2.14.1")
    args = ap.parse_args()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0;9.0a")

    tdir = Path(args.torch_dir)
    tlib = tdir / "torch" / "lib"
    if not (tlib / "libtorch_cuda.so").exists():
        run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", tdir,
             args.torch_spec])
    tinc = [tdir / "torch" / "include", tdir / "torch" / "include" / "torch" / "csrc" / "api" / "include"]
    nvcc = build.find_nvcc()
    if nvcc is None:
        sys.exit("nvcc not found")
    cuda_home = build.cuda_home()
    if cuda_home is None:
        sys.exit("no CUDA toolkit with lib64/libcudart_static.a found (set CUDA_HOME)")
    import sysconfig
    pyinc = sysconfig.get_paths()["include"]

    out = Path(tempfile.mkdtemp(prefix="bitlinear-cuda-link-"))
    objs = []
    common, per_file, _ = build.read_isa_flags()
    for src in build.c_sources():
        obj = out / (src.stem + ".o")
        run([os.environ.get("CC", "cc"), *common, *per_file.get(src.name, []), "-c", src, "-o", obj])
        objs.append(obj)
    for src in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
        obj = out / (src.stem + ".cu.o")
        run([nvcc, "-std=c++17", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", "-O3",
             *build.cuda_arch_flags(), "-c", src, "-o", obj])
        objs.append(obj)
    binds = []
    for src in build.binding_sources(use_cuda=True):
        obj = out / (Path(src).stem + ".bind.o")
        run([os.environ.get("CXX", "g++"), "-std=c++20", "-O2", "-fPIC", "-fvisibility=hidden",
             "-DBITLINEAR_WITH_CUDA", "-DUSE_CUDA", f"-DTORCH_TARGET_VERSION={build.TORCH_TARGET}",
             "-DPy_LIMITED_API=0x030A0000", f"-I{ROOT / 'csrc'}", *[f"-I{p}" for p in tinc],
             f"-I{pyinc}", "-c", ROOT / src, "-o", obj])
        binds.append(obj)
    so = out / "_bitlinear.abi3.so"
    run([os.environ.get("CXX", "g++"), "-shared", *binds, *objs, f"-L{tlib}",
         f"-L{cuda_home / 'lib64'}", "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_cuda",
         "-lcudart_static", "-ldl", "-lrt", "-lpthread", "-lgomp", "-o", so])

    need = {s for s in symbols(so, False) if s.startswith(("aoti_torch", "torch_"))}
    have = set()
    for lib in ("libtorch_cpu.so", "libtorch_cuda.so", "libtorch.so", "libc10.so"):
        have |= symbols(tlib / lib, True)
    missing = sorted(need - have)
    print(f"{len(need)} torch symbols imported; {len(missing)} not exported by {args.torch_spec}")
    if missing:
        print("\n".join(missing))
        sys.exit(1)
    print(f"CUDA build linked against {args.torch_spec}: OK ({so})")


if __name__ == "__main__":
    main()
