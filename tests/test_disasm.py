"""The VNNI microkernels must run vpdpbusd in their hot loops (objdump check, no AVX-512 CPU
needed). Skipped where objdump or a C compiler is missing, or off x86-64."""
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "tools" / "check_vnni_disasm.py"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 only")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump not installed")
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_vnni_hot_loops_use_vpdpbusd():
    r = subprocess.run([sys.executable, str(SCRIPT), "-v"], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "vpdpbusd on zmm" in r.stdout and "{vex} vpdpbusd" in r.stdout
