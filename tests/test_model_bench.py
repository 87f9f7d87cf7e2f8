"""profile/model_decode.py --tiny (issue 20, item 5, at CI size): a 2-layer model of the benchmark's
kind, built the way the full-size benchmark builds it; the deployed KV-cache decode gives the greedy
tokens of transformers' generate() on the training-mode model (float head), and the int8 head
runs. Correctness only, in a subprocess (a few seconds)."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_model_decode_tiny():
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "profile", "model_decode.py"), "--tiny",
                        "--arch", "llama", "bitnet"], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "tiny llama: deployed KV-cache decode == training-mode generate(): True" in out
    assert "tiny llama: int8 head:" in out and "FAILED" not in out
