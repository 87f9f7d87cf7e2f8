"""The benchmark suite of the checkout (profile/bench/): `python profile/bench --quick` writes valid
JSON with every implementation timed, training and host-time rows included; the GPU suite's logic
runs on the CPU with the host clock. And the installed package's small `python -m bitlinear bench`
runs outside the source tree."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.path.join(ROOT, "profile")
if PROFILE not in sys.path:
    sys.path.insert(0, PROFILE)  # the suite runs from the checkout: `import bench` is profile/bench/


def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, os.path.join(PROFILE, "bench"), "--quick", "--no-progress",
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
    hfb = r["hf_bitnet"]
    if "rows" in hfb:  # transformers + accelerate installed: the tiny BitNet decode row
        assert set(hfb["rows"]) == {"bitlinear (convert_bitnet)", "transformers (eager)"}
        assert all(x["step_ms"] > 0 for x in hfb["rows"].values()) and hfb["ratio"] > 0
        assert "Tiny transformers BitNet model" in p.stdout
    else:
        assert "not installed" in hfb["error"]
    assert "speedup vs f32" in p.stdout
    _check_train(r["train"], ("threads",))
    assert {x["impl"] for x in r["train"]["records"]} == {"train_f32", "train_bitlinear_f32",
                                                         "train_bf16", "train_bitlinear_bf16"}
    _check_host(r["host"]["records"])
    assert "Training step" in p.stdout and "Host time per call" in p.stdout


def _check_train(section, fields):
    """Every implementation of the section timed (or skipped, with why) in both passes, with its
    time ratio to nn.Linear of the same dtype at the same point."""
    from bench import train
    recs = section["records"]
    points = {(tuple(x[f] for f in fields), x["K"], x["N"], x["M"]) for x in recs}
    assert len(recs) == len(points) * len(section["impls"]) * len(train.PASSES)
    for x in recs:
        assert x["pass"] in train.PASSES and x["layer"] in ("linear", "bitlinear", "torchao")
        if "skipped" in x:
            assert x["impl"] == "train_torchao_bf16" and "torchao" in x["skipped"]
            continue
        assert x["median_ms"] > 0 and x["reps"] >= 3 and x["gops"] > 0 and x["copies"] >= 1
        assert x["time_vs_linear"] > 0
        if x["layer"] == "linear":
            assert x["time_vs_linear"] == 1.0
    fwd = {(x["impl"], x["M"]): x["gops"] * x["median_ms"] for x in recs if x["pass"] == "fwd"
           and "gops" in x}
    for x in recs:  # fwd+bwd counts 3 GEMMs
        if x["pass"] == "fwd+bwd" and "gops" in x:
            assert abs(x["gops"] * x["median_ms"] / fwd[x["impl"], x["M"]] - 3) < 1e-6


def _check_host(recs):
    from bench.train import HOST_CASES
    assert {(x["case"], x["impl"]) for x in recs} == {(c, i) for c in HOST_CASES
                                                      for i in ("linear", "bitlinear")}
    assert set(HOST_CASES) == {"train forward", "no_grad", "no_grad, op path"}
    for x in recs:
        assert x["median_ms"] > 0 and x["calls"] >= 1 and x["reps"] >= 3 and x["M"] == 1
        assert x["time_vs_linear"] > 0


def test_bench_impls_select_training_rows_only(tmp_path):
    """--impls naming training rows only runs just those (no layer sweep, no model case)."""
    from bench import cli
    out = tmp_path / "train.json"
    assert cli.main(["--quick", "--no-progress", "--no-model", "--no-host", "--impls",
                     "train_f32,train_bitlinear_f32", "--ms", "4", "--shapes", "128x64",
                     "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["results"] == [] and "host" not in r and r["meta"]["impls"] == []
    assert r["train"]["impls"] == ["train_f32", "train_bitlinear_f32"]
    assert {(x["K"], x["N"], x["M"]) for x in r["train"]["records"]} == {(128, 64, 4)}
    _check_train(r["train"], ("threads",))


def test_bench_bad_arguments():
    from bench import cli
    assert cli.main(["--quick", "--impls", "nope", "--out", os.devnull]) == 2


def test_render_old_result_json():
    """The committed result (written before the harness had a `suite` key) still renders."""
    from bench import report
    with open(os.path.join(ROOT, "profile", "results", "bench-cpu-avx2.json")) as f:
        r = json.load(f)
    md = report.render(r, markdown=True)
    assert "| M | bitlinear | f32 |" in md and "% of the int8 peak" in md and "Llama" in md
    txt = report.render(r)
    assert "K=4096, N=4096, threads=2" in txt and "|" not in txt.split("Cells:")[1]


def test_cpu_suite_records_hardware_fractions_when_given_limits():
    from bench import cpu
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
    from bench import gpu, harness, report
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


def test_gpu_suite_training_and_host_rows_on_cpu():
    """The GPU suite's training rows (nn.Linear, BitLinear and torchao bf16; torchao skipped
    where not installed) and host-time rows, on the CPU with the host clock, and their tables."""
    from bench import gpu, harness, report, train
    label = gpu.TRAIN_CASES[0][0]  # a target's case, at a small size
    recs = gpu.run_train([(label, 16, 128, 64)], gpu.TRAIN_IMPLS, reps=3, mode="wall",
                         budget_bytes=1 << 20, progress=False, device="cpu")
    section = {"impls": list(gpu.TRAIN_IMPLS), "records": recs, "timing": "host clock"}
    _check_train(section, ("label", "mode"))
    assert all(x["dtype"] == "bf16" for x in recs)
    assert any(x["copies"] > 1 for x in recs if "copies" in x)  # rotated past the 1 MiB budget
    if train.torchao_missing():
        assert {x["skipped"] for x in recs if x["impl"] == "train_torchao_bf16"} == \
            {train.torchao_missing()}
    host = gpu.run_host("cpu", quick=True)
    _check_host(host["records"])
    meta = dict(harness.common_meta("cuda", gpu.BASELINE), device="cpu", impls=[])
    tg = harness.check_targets(recs, gpu.TRAIN_TARGETS)
    assert [t["name"] for t in tg] == [f"{label} forward time / bf16 F.linear",
                                       f"{label} fwd+bwd time / nn.Linear bf16"]
    result = {"meta": meta, "results": [], "targets": tg, "host": host, "train": section}
    txt = report.render(result)
    assert "Training step" in txt and "Host time per call" in txt and "want <= 1.2" in txt
    assert "train_bitlinear_bf16" in txt and "no_grad" in txt
    md = report.render(result, markdown=True)
    assert "| label | pass | train_bf16 | train_bitlinear_bf16 | train_torchao_bf16 |" in md
    json.dumps(result)


def test_demo_does_not_import_the_benchmark():
    code = "import sys, bitlinear.demo; sys.exit('bitlinear.bench' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env).returncode == 0


def test_package_bench_quick_outside_the_checkout(tmp_path):
    """`python -m bitlinear bench --quick`, run where no profile/ is in reach: the sweep of every
    shape and M, both layers timed, and the records as JSON."""
    out = tmp_path / "small.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "bitlinear", "bench", "--quick", "--reps", "3",
                        "--json", str(out)], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    from bitlinear import bench as small
    r = json.loads(out.read_text())
    assert {(x["K"], x["N"], x["M"]) for x in r["records"]} == {
        (K, N, M) for K, N in small.QUICK_SHAPES for M in small.QUICK_MS}
    for x in r["records"]:
        assert x["linear_ms"] > 0 and x["bitlinear_ms"] > 0 and x["speedup"] > 0
        assert x["bitlinear_bytes"] * 10 < x["linear_bytes"]  # 2-bit vs 32-bit weights
    assert "nn.Linear" in p.stdout and "BitLinear" in p.stdout and "speedup" in p.stdout
    bad = subprocess.run([sys.executable, "-m", "bitlinear", "bench", "--ms", "0"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "integers >= 1" in bad.stderr


def test_gpu_run_on_cpu_saves_each_part():
    """gpu.run, the whole `bench --device cuda` flow, on the CPU with the host clock: layer, host and
    training sections, the result saved after each part, the table of every part."""
    from bench import cli, gpu, report
    args = cli.build_parser().parse_args(["--device", "cuda", "--shapes", "128x64", "--ms", "24",
                                          "--no-progress"])
    saved = []
    args.save = lambda r: saved.append(json.loads(json.dumps(r)))
    r = gpu.run(args, device="cpu")
    assert [sorted(k for k in ("results", "host", "train") if s.get(k)) for s in saved] == [
        ["results"], ["host", "results"], ["host", "results", "train"],
        ["host", "results", "train"]]  # the optional baselines (torchao) in a last part
    assert {x["impl"] for x in r["results"]} >= {"bitlinear", "bf16", "int_mm"}
    assert all(x["mode"] == "wall" for x in r["results"] + r["train"]["records"])
    _check_train(r["train"], ("label", "mode"))
    _check_host(r["host"]["records"])
    txt = report.render(r)
    assert "128x64 M=24" in txt and "Training step" in txt and "Host time per call" in txt
