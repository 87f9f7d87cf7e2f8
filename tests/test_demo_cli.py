"""`python -m bitlinear demo --quick`: trains, deploys, and the deployed model answers like the
training-mode model (the same bits since training runs the deployed kernels)."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=180):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "bitlinear", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_demo_quick_json():
    p = _run("demo", "--quick", "--json", "--threads", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout)
    assert r["deployed_accuracy"] == r["fake_quant_accuracy"]
    assert r["prediction_agreement"] == 1.0
    assert r["logits_allclose"] is True
    assert r["fake_quant_accuracy"] > 0.8  # 3 epochs, width 128; the full demo reaches ~97%
    assert r["deployed_bytes"] < r["float_bytes"] / 8
    assert set(r["speed"]) == {"1", str(r["n_test"])}


def test_demo_in_process_check_detects_mismatch():
    from bitlinear import demo
    r = demo.run(quick=True, epochs=1, hidden=32, progress=False, reps=3)
    assert demo.check(r)
    assert "deployed" in demo.format_result(r)
    bad = dict(r, deployed_accuracy=r["fake_quant_accuracy"] - 0.01)
    assert not demo.check(bad)
    bad = dict(r, prediction_agreement=0.99)
    assert not demo.check(bad)
