"""Properties of the built extension: stable-ABI-only linkage, one OpenMP runtime, standalone
import, and the pure-PyTorch fallback when the extension is disabled."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import bitlinear

native = pytest.mark.skipif(not bitlinear.HAS_BITLINEAR, reason="native extension not built")


def _so_path():
    import _bitlinear
    return _bitlinear.__file__


def _run(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=e, timeout=300)


@native
@pytest.mark.skipif(shutil.which("nm") is None, reason="nm not installed")
def test_only_stable_torch_symbols_are_imported():
    """The binding must use the LibTorch stable C shim only, so one build serves several torch
    versions: no undefined c10::/at::/torch:: C++ symbols."""
    out = subprocess.run(["nm", "-D", "--undefined-only", "-C", _so_path()], capture_output=True,
                         text=True, check=True).stdout
    cxx = [l for l in out.splitlines() if any(s in l for s in ("c10::", "at::", "torch::", "caffe2::"))]
    assert not cxx, "non-stable torch symbols:\n" + "\n".join(cxx[:20])
    assert "aoti_torch" in out or "torch_" in out


@native
def test_one_openmp_runtime():
    r = _run("""
        import torch, bitlinear
        x = torch.randn(64, 512); l = bitlinear.BitLinear(512, 512).deploy()
        with torch.no_grad(): l(x)
        maps = open('/proc/self/maps').read()
        libs = sorted({l.split()[-1] for l in maps.splitlines() if 'gomp' in l or 'libomp' in l or 'iomp' in l})
        print(len(libs)); print(libs)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "1", r.stdout


@native
def test_import_native_module_standalone():
    r = _run("import _bitlinear; print(_bitlinear.format_version()); "
             "print(callable(_bitlinear.prepare_weights), callable(_bitlinear.bitlinear))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(bitlinear.FORMAT_VERSION), "True", "True"]


@native
def test_set_num_threads_one_runs_single_threaded():
    r = _run("""
        import torch, bitlinear, threading
        torch.set_num_threads(1)
        l = bitlinear.BitLinear(2048, 2048).deploy()
        x = torch.randn(64, 2048)
        import os
        before = len(os.listdir('/proc/self/task'))
        with torch.no_grad(): l(x)
        print(before, len(os.listdir('/proc/self/task')))
    """)
    assert r.returncode == 0, r.stderr
    before, after = map(int, r.stdout.split())
    assert after == before


def test_fallback_without_native_extension():
    r = _run("""
        import torch, bitlinear
        from bitlinear import reference as ref
        assert not bitlinear.HAS_BITLINEAR and bitlinear.cpu_isa() == 'pytorch-fallback'
        l = bitlinear.BitLinear(70, 9).eval()
        x = torch.randn(4, 70)
        with torch.no_grad():
            a = l(x); b = l.deploy()(x)
        print(((a - b).norm() / a.norm()).item())
    """, BITLINEAR_DISABLE_NATIVE="1")
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) < 1e-5


def test_cli_info():
    r = subprocess.run([sys.executable, "-m", "bitlinear", "info", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import json
    info = json.loads(r.stdout)
    for k in ("bitlinear", "torch", "cpu_path", "openmp_threads", "cuda_kernels_built"):
        assert k in info
    assert info["torch"] == torch.__version__
    assert info["native_extension"] == bitlinear.HAS_BITLINEAR
