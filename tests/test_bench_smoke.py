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


def test_render_old_result_json():
    """The committed result (written before the harness had a `suite` key) still renders."""
    from bitlinear.bench import report
    with open(os.path.join(ROOT, "profile", "results", "bench-cpu-avx2.json")) as f:
        r = json.load(f)
    md = report.render(r, markdown=True)
    assert "| M | bitlinear | f32 |" in md and "% of the int8 peak" in md and "Llama" in md
    txt = report.render(r)
    assert "K=4096, N=4096, threads=2" in txt and "|" not in txt.split("Cells:")[1]


def test_cpu_suite_records_hardware_fractions_when_given_limits():
    from bitlinear.bench import cpu
    recs = cpu.run_layer_suite([(256, 128)], [1, 4], [1], ["bitlinear", "f32"], reps=3,
                               progress=False, cold_bytes=0,
                               hw_limits={1: {"int8_peak_gops": 100.0, "read_bw_gbs": 10.0}})
    bl = {r["M"]: r for r in recs if r["impl"] == "bitlinear"}
    assert "frac_read_bw" in bl[1] and "frac_read_bw" not in bl[4]
    assert all("frac_int8_peak" in r for r in bl.values())
    assert not any("frac_int8_peak" in r for r in recs if r["impl"] == "f32")
    assert all(r["copies"] == 1 for r in recs)


def test_gpu_suite_logic_on_cpu():
    """The GPU suite's registry, rotation, records, speedups, targets and table, timed with the host
    clock on the CPU (no GPU here): the same record schema as the CPU suite."""
    from bitlinear.bench import gpu, harness, report
    cases = [("decode 8192->28672", 1, 256, 384), ("prefill 8192x8192", 24, 128, 64)]
    recs = gpu.run_suite(cases, gpu.IMPLS.names(), reps=3, modes=("wall",), budget_bytes=1 << 20,
                         copy_gbs=10.0, progress=False, device="cpu")
    names = {(r["label"], r["impl"]) for r in recs}
    assert ("decode 8192->28672", "int_mm") not in names  # M too small for torch._int_mm
    assert ("prefill 8192x8192", "int_mm") in names
    assert ("prefill 8192x8192", "bitlinear_mma_bn256") in names
    for r in recs:
        assert r["median_ms"] > 0 and r["speedup_vs_bf16"] > 0 and r["copies"] >= 1
        assert {"K", "N", "M", "impl", "gops", "weight_gbs", "static_bytes", "frac_copy_bw"} <= set(r)
    ours = [r for r in recs if r["impl"] == "bitlinear"]
    assert ours[0]["copies"] > 1  # rotated past the (1 MiB) budget
    meta = dict(harness.common_meta("cuda", gpu.BASELINE), device="cpu", impls=["bitlinear", "bf16",
                "int_mm"], hw={"device": {"copy_gbs": 10.0}})
    result = {"meta": meta, "results": recs, "targets": gpu.targets(recs, "wall")}
    assert len(result["targets"]) == 3
    txt = report.render(result)
    assert "host wall clock per call" in txt and "bitlinear_mma_bn256" in txt and "target " in txt
    json.dumps(result)


def test_demo_does_not_import_the_benchmark():
    code = "import sys, bitlinear.demo; sys.exit('bitlinear.bench' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env).returncode == 0
