"""`python -m bitlinear bench --quick` writes valid JSON with every implementation timed."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "bitlinear", "bench", "--quick", "--no-progress",
                        "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(out.read_text())
    meta, recs = r["meta"], r["results"]
    assert meta["quick"] is True and meta["machine"]
    expected = len(meta["shapes"]) * len(meta["ms"]) * len(meta["threads"]) * len(meta["impls"])
    assert len(recs) == expected
    timed = [x for x in recs if "median_ms" in x]
    assert {x["impl"] for x in timed} >= {"bitlinear", "f32", "bf16", "fake_quant"}
    for x in timed:
        assert x["median_ms"] > 0 and x["reps"] >= 5 and x["gops"] > 0
        assert x["static_bytes"] > 0 and x["speedup_vs_f32"] > 0 and x["copies"] >= 1
    for x in recs:
        if "median_ms" not in x and "skipped" not in x:
            assert x["error"] and x["impl"] in meta["impls_unavailable"]
    bl = [x for x in timed if x["impl"] == "bitlinear" and x["M"] == 1]
    f32 = [x for x in timed if x["impl"] == "f32" and x["M"] == 1]
    assert bl and all("weight_gbs" in x for x in bl)
    assert bl[0]["static_bytes"] * 10 < f32[0]["static_bytes"]  # 2-bit vs 32-bit weights
    if "transformers" in p.stdout or r["model"] and "results" in r["model"]:
        assert {m["model"] for m in r["model"]["results"]} == {"float", "deployed"}
    assert "speedup vs f32" in p.stdout


def test_bench_bad_arguments():
    from bitlinear.bench import cli
    assert cli.main(["--quick", "--impls", "nope", "--out", os.devnull]) == 2
