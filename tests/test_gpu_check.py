"""profile/gpu_check.sh rehearsed on the CPU (GPU_CHECK_DRY_RUN=1), so that its logic has run
before it meets a device: step order, per-step caps inside one budget, skips, mocks of nvidia-smi,
the build, compute-sanitizer and CUDA, the Python steps on the CPU (tests/gpu/gpu_selfcheck.py
--rehearse, profile/bench gpu --rehearse), and the JSON it writes. Nothing here is a GPU result."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "profile" / "gpu_check.sh"
ORDER = ["env", "build", "selfcheck_verified", "selfcheck_fused", "selfcheck_multirow",
         "selfcheck_wgmma", "train", "memcheck", "memcheck_wgmma", "bench", "table", "pytest_cuda"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def _run(tmp_path, name, **env):
    out = tmp_path / name
    e = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "GPU_CHECK_DRY_RUN": "1", **env}
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=e, timeout=600)
    res = json.loads((out / "gpu_check.json").read_text())
    return r, res, out


def test_gpu_check_rehearsal_runs_every_step_in_order(tmp_path):
    """The whole script, Python steps for real on the CPU, mocks for the GPU tools."""
    r, res, out = _run(tmp_path, "full")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert [s["name"] for s in res["steps"]] == ORDER
    assert all(s["verdict"] == "ok" for s in res["steps"]), res["steps"]
    assert res["dry_run"] and res["arch"] == "9.0a" and res["budget_s"] == 420
    assert res["not_finished"] == [] and res["second_call_skip"] is None
    assert sum(s["cap"] for s in res["steps"] if s["name"] in ("build",)) <= 150
    # the Python steps ran their logic (CPU against CPU) and said it is a rehearsal
    log = (out / "selfcheck_verified.log").read_text()
    assert "REHEARSAL" in log and log.count("PASS") == 5
    assert "selfcheck train (auto): PASS" in (out / "train.log").read_text()
    assert "[dry run] mock of: compute-sanitizer" in (out / "memcheck.log").read_text()
    assert "[dry run] mock of: " in (out / "build.log").read_text()
    # the timing JSON and issue 19's table from it
    bench = json.loads((out / "gpu_bench.json").read_text())
    assert "rehearsal" in bench["meta"] and bench["results"] and bench["train"]["records"]
    table = json.loads((out / "gpu_table.json").read_text())
    assert table["rehearsal"] and len(table["rows"]) == 18
    assert {r["row"].split()[0] for r in table["rows"]} >= {"M=1", "M=8", "graph", "train", "host"}
    assert "SUMMARY" in r.stdout and "where" not in r.stderr
    assert "not a GPU result" in r.stdout


def test_gpu_check_budget_and_second_call(tmp_path):
    """A step that outlives the budget is cut (TIMEOUT), later ones are NOT_RUN; the JSON names
    them and the skip list for a second call, which then finishes with the rest skipped."""
    r, res, _ = _run(tmp_path, "first", GPU_CHECK_MOCK_ALL="1", GPU_CHECK_BUDGET_S="40",
                     GPU_CHECK_MOCK_SLEEP="selfcheck_fused=100")
    verdicts = {s["name"]: s["verdict"] for s in res["steps"]}
    assert [s["name"] for s in res["steps"]] == ORDER
    assert res["total_s"] <= 40 + 3
    cut = [n for n, v in verdicts.items() if v in ("TIMEOUT", "NOT_RUN")]
    assert cut and cut == res["not_finished"] and "pytest_cuda" in cut
    assert r.returncode != 0 or verdicts["selfcheck_fused"] == "NOT_RUN"
    if verdicts["selfcheck_verified"] == "ok":  # the machine was quick enough to get there
        assert verdicts["selfcheck_fused"] == "TIMEOUT"
        assert "selfcheck_verified" in res["second_call_skip"].split()
    assert "a second call: GPU_CHECK_SKIP=" in r.stdout
    skip = res["second_call_skip"]
    r2, res2, _ = _run(tmp_path, "second", GPU_CHECK_MOCK_ALL="1", GPU_CHECK_SKIP=skip,
                       GPU_CHECK_MOCK_FAIL="memcheck")
    v2 = {s["name"]: s["verdict"] for s in res2["steps"]}
    for name in skip.split():
        assert v2[name] == "SKIPPED"
    assert v2["memcheck"].startswith("FAIL") and r2.returncode == 1
    assert res2["not_finished"] == []
    assert all(v in ("ok", "SKIPPED") for n, v in v2.items() if n not in ("memcheck", "table")), v2
    assert v2["table"] == "NO_BENCH_JSON"  # the mocked bench writes no JSON


def test_gpu_check_other_arch_and_failed_build(tmp_path):
    """Not Hopper: no sm_90a, no wgmma steps. A failed build: nothing else runs, all recorded."""
    _, res, _ = _run(tmp_path, "ampere", GPU_CHECK_MOCK_ALL="1", GPU_CHECK_MOCK_ARCH="8.0")
    assert res["arch"] == "8.0"
    assert [s["name"] for s in res["steps"]] == [n for n in ORDER if "wgmma" not in n]
    r, res, out = _run(tmp_path, "nobuild", GPU_CHECK_MOCK_ALL="1", GPU_CHECK_MOCK_FAIL="build")
    assert r.returncode == 1 and "BUILD FAILED" in r.stdout
    v = {s["name"]: s["verdict"] for s in res["steps"]}
    assert v["build"] == "FAIL(1)" and v["bench"] == "NOT_RUN" and v["selfcheck_verified"] == "NOT_RUN"


def test_gpu_selfcheck_lists_the_grid():
    """The correctness grid holds the hidden-style shapes and Ms the issue names."""
    sys.path.insert(0, str(ROOT / "tests" / "gpu"))
    try:
        import gpu_selfcheck as g
    finally:
        sys.path.pop(0)
    shapes = g.grid()
    for d in (1000, 3001, 3200, 8640, 11008):
        assert any(d in (k, n) for _, k, n in shapes)
    assert {m for m, _, _ in shapes} >= {1, 2, 3, 4, 5, 16, 17, 64, 65, 512}
    assert g.DEFAULTS == __import__("bitlinear._info", fromlist=["x"]).CUDA_DEFAULT_OPTIONS
