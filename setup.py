"""Build of the bitlinear native extension `_bitlinear`.

The C11 kernel core (csrc/cpu/*.c) and the CUDA kernels (csrc/cuda/*.cu) are compiled here with
their own flags (cpp_extension would pass C++ flags such as -std=c++17 to every non-.cu source),
then linked with the thin C++ binding (csrc/binding/: one file per device, a shared frame, the
module stub) built against the LibTorch stable ABI and Python's limited API.

Environment switches:
  BITLINEAR_FORCE_CPU=1      build without CUDA even if nvcc and a CUDA torch are present
  TORCH_CUDA_ARCH_LIST       CUDA arches, e.g. "8.0;9.0+PTX" (default "8.0;8.6;8.9;9.0+PTX")
  DEBUG=1                    -O0 -g builds
  CC / NVCC                  compilers (default: cc, $CUDA_HOME/bin/nvcc)
"""
import os
import platform
import shutil
import subprocess
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"
TORCH_TARGET = "0x020a000000000000"  # stable ABI target: torch 2.10
DEBUG = os.environ.get("DEBUG", "0") not in ("", "0")


def _machine():
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def read_isa_flags(path=CSRC / "cpu" / "isa_flags.txt", arch=None):
    """(common flags, {file: extra flags} for this arch, files meant for other arches)."""
    arch = arch or _machine()
    common, per_file, foreign = [], {}, set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].split()
        if len(line) < 2:
            continue
        where, name, flags = line[0], line[1], line[2:]
        if name == "*":
            common = flags
        elif where in (arch, "any"):
            per_file[name] = flags
        else:
            foreign.add(name)
    return common, per_file, foreign


def c_sources():
    _, _, foreign = read_isa_flags()
    return sorted(p for p in (CSRC / "cpu").glob("*.c") if p.name not in foreign)


def binding_sources(use_cuda):
    """The torch-aware C++ files, relative to setup.py; ops_cuda.cpp only in CUDA builds."""
    return sorted(str(p.relative_to(ROOT)) for p in (CSRC / "binding").glob("*.cpp")
                  if use_cuda or p.name != "ops_cuda.cpp")


def cuda_arch_flags():
    spec = os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;8.6;8.9;9.0+PTX")
    flags = []
    for a in spec.replace(",", ";").replace(" ", ";").split(";"):
        a = a.strip()
        if not a:
            continue
        ptx = a.endswith("+PTX")
        num = a.replace("+PTX", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


def find_nvcc():
    nvcc = os.environ.get("NVCC")
    if nvcc:
        return nvcc
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def cuda_home():
    """The CUDA toolkit folder (lib64/ holds cudart, static preferred); nvcc may be a wrapper."""
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = find_nvcc()
    if nvcc:
        cands.append(Path(nvcc).resolve().parent.parent)
    cands += ["/usr/local/cuda", *sorted(Path("/usr/local").glob("cuda-*"), reverse=True)]
    for lib in ("libcudart_static.a", "libcudart.so"):
        for c in cands:
            if c and (Path(c) / "lib64" / lib).exists():
                return Path(c)
    return None


def want_cuda(torch):
    if os.environ.get("BITLINEAR_FORCE_CPU", "0") not in ("", "0"):
        return False
    return torch.version.cuda is not None and find_nvcc() is not None


def _newer(src_deps, obj):
    return not obj.exists() or any(d.stat().st_mtime > obj.stat().st_mtime for d in src_deps)


def main():
    os.chdir(ROOT)
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, library_paths

    use_cuda = want_cuda(torch)
    headers = [*CSRC.glob("*.h"), *CSRC.glob("cpu/*.h"), *CSRC.glob("cuda/*.cuh")]
    torch_lib = library_paths()[0]

    class build_ext(BuildExtension):
        """Compiles the C and CUDA objects with their own flags, then the binding."""

        def build_extensions(self):
            objdir = Path(self.build_temp).resolve() / "bitlinear_objs"
            objdir.mkdir(parents=True, exist_ok=True)
            objs = self._compile_c(objdir)
            if use_cuda:
                objs += self._compile_cuda(objdir)
            for ext in self.extensions:
                ext.extra_objects = list(ext.extra_objects or []) + objs
                # relink when only a C/CUDA object changed (setuptools compares the binding's
                # sources and depends with the .so, never the extra objects)
                ext.depends = list(ext.depends or []) + [str(o) for o in objs]
            super().build_extensions()

        def _run(self, cmd):
            print(" ".join(cmd), flush=True)
            subprocess.check_call(cmd)

        def _compile_c(self, objdir):
            cc = os.environ.get("CC", "cc")
            common, per_file, _ = read_isa_flags()
            if DEBUG:
                common = [f for f in common if not f.startswith("-O")] + ["-O0", "-g"]
            jobs = []
            for src in c_sources():
                obj = objdir / (src.stem + ".o")
                cmd = [cc, *common, *per_file.get(src.name, []), "-c", str(src), "-o", str(obj)]
                jobs.append((cmd, _newer([src, *headers, CSRC / "cpu" / "isa_flags.txt"], obj), obj))
            return self._run_all(jobs)

        def _compile_cuda(self, objdir):
            nvcc = find_nvcc()
            flags = ["-std=c++17", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", "-lineinfo",
                     "-O0" if DEBUG else "-O3", *cuda_arch_flags()]
            jobs = []
            for src in sorted((CSRC / "cuda").glob("*.cu")):
                obj = objdir / (src.stem + ".cu.o")
                jobs.append(([nvcc, *flags, "-c", str(src), "-o", str(obj)],
                             _newer([src, *headers], obj), obj))
            return self._run_all(jobs)

        def _run_all(self, jobs):
            """Runs the (cmd, needed, obj) compile jobs that are needed, MAX_JOBS at a time."""
            from concurrent.futures import ThreadPoolExecutor

            todo = [cmd for cmd, needed, _ in jobs if needed]
            for tool in {cmd[0] for cmd in todo}:  # one clear line instead of a pool traceback
                if shutil.which(tool) is None:
                    raise SystemExit(f"bitlinear: compiler {tool!r} not found (set CC / NVCC, or "
                                     "install it; BITLINEAR_FORCE_CPU=1 skips CUDA)")
            workers = max(1, int(os.environ.get("MAX_JOBS", os.cpu_count() or 1)))
            with ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(self._run, cmd) for cmd in todo]
            for cmd, fut in zip(todo, futures):
                if fut.exception() is not None:
                    raise SystemExit(f"bitlinear: compiling {cmd[-3]} failed ({fut.exception()}); "
                                     "the compiler's output is above")
            return [str(obj) for _, _, obj in jobs]

    cxx_flags = [
        "-std=c++20", "-O0" if DEBUG else "-O2", "-fvisibility=hidden",
        f"-DTORCH_TARGET_VERSION={TORCH_TARGET}",
    ]
    if DEBUG:
        cxx_flags.append("-g")
    libraries, library_dirs = ["gomp"], []
    extra_link = [f"-Wl,-rpath,$ORIGIN/torch/lib", f"-Wl,-rpath,{torch_lib}"]
    if use_cuda:
        cxx_flags += ["-DBITLINEAR_WITH_CUDA", "-DUSE_CUDA"]
        home = cuda_home()
        if home is None:
            raise RuntimeError("bitlinear: nvcc found but no CUDA toolkit with lib64/libcudart; "
                               "set CUDA_HOME, or BITLINEAR_FORCE_CPU=1 to build without CUDA")
        library_dirs += [str(home / "lib64")]
        static = (home / "lib64" / "libcudart_static.a").exists()
        libraries += ["torch_cuda"] + (["cudart_static", "dl", "rt", "pthread"] if static else ["cudart"])

    print("=" * 60)
    print(f"bitlinear: building with {'CUDA' if use_cuda else 'CPU-only'} support "
          f"(torch {torch.__version__}, {len(c_sources())} C files"
          + (f", {len(list((CSRC / 'cuda').glob('*.cu')))} CUDA files)" if use_cuda else ")"))
    print("=" * 60)

    # setuptools wants sources relative to setup.py (pip runs it from this folder)
    ext = CppExtension(
        name="_bitlinear",
        sources=binding_sources(use_cuda),
        include_dirs=["csrc"],
        depends=["csrc/bitlinear.h", "csrc/binding/common.h"],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=extra_link,
        libraries=libraries,
        library_dirs=library_dirs,
        py_limited_api=True,
    )
    setup(
        ext_modules=[ext],
        cmdclass={"build_ext": build_ext.with_options(use_ninja=False)},
        options={"bdist_wheel": {"py_limited_api": "cp310"}},
    )


if __name__ == "__main__":
    main()
