"""The benchmark scripts keep working: their --smoke mode runs every code path at tiny sizes on the CPU
(Triton interpreter, DALI CPU operators where DALI is installed) and writes no numbers unless told where (--out,
rows marked smoke); bench_pipeline.py also runs where DALI is absent (its DALI rows say they were skipped)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Runs the script with `import nvidia.dali` failing, as on a machine without DALI.
WITHOUT_DALI = ("import runpy, sys; sys.modules['nvidia.dali'] = None; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_kernels.py", "bench_pipeline.py", "bench_schedule_policy.py"])
def test_bench_smoke(script, tmp_path):
    if script == "bench_schedule_policy.py":
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    results = sorted((ROOT / "bench" / "results").glob("*"))
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nothing written" in done.stdout
    assert sorted((ROOT / "bench" / "results").glob("*")) == results  # a smoke run records nothing


@pytest.mark.slow
def test_bench_pipeline_without_dali_writes_to_out(tmp_path):
    out = tmp_path / "rows.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", WITHOUT_DALI, str(ROOT / "bench" / "bench_pipeline.py"), "--smoke",
                           "--workloads", "policy32", "imagenet", "model", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["smoke"] and r["dali"] is None for r in rows)
    skipped = [r for r in rows if "DALI is not installed" in r["scope"]]
    assert {r["workload"] for r in skipped} == {"policy32", "imagenet"}
    forms = {r["pipeline"]: r for r in rows if r["workload"] == "policy32" and r["pipeline"].startswith("torch (")}
    assert set(forms) == {"torch (static)", "torch (indexed)"} and all(r["images_per_s"] > 0 for r in forms.values())
    assert all(r["aten_ops"] > 50 for r in forms.values())
    shares = [r for r in rows if r.get("metric") == "policy_share"]
    assert {r["variant"] for r in shares} == {"static", "indexed"} and all(r["value"] > 0 for r in shares)


@pytest.mark.slow
def test_bench_round_smoke(tmp_path):
    """Every strategy and mode of the round benchmark, tiny, on the CPU: rows with the derived ratios."""
    out = tmp_path / "round.jsonl"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "HBA_GIT_SHA": "cafe"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_round.py"), "--smoke", "--data", "shapes10",
                           "--model", "wrn-40-2", "--batch", "128", "--strategies", "none,first_bn,conv+bn",
                           "--modes", "eager,graphs,compile", "--steps", "4", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["strategy"], r["mode"]) for r in rows] == [(s, m) for s in ("none", "first_bn", "conv+bn")
                                                          for m in ("eager", "graphs", "compile")]
    assert all(r["smoke"] and r["ms_per_round"] > 0 and r["train_images_per_s"] > 0 and r["git_sha"] for r in rows)
    assert all("search_over_plain" in r for r in rows if r["strategy"] != "none")
    assert all("speedup_vs_eager" in r for r in rows if r["mode"] != "eager")
    assert "search/plain" in done.stdout


@pytest.mark.slow
def test_fidelity_gpu_study_runs_end_to_end_in_smoke_mode(tmp_path):
    """docs/results/fidelity-gpu.sh --smoke: the GPU study's commands (3 searches -> 1 in smoke, the controls, every
    arm through compare, the table) run on shapes10 on the CPU; every step records its wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "docs" / "results" / "fidelity-gpu.sh"), "--smoke"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert steps == ["search-s0", "controls", "compare", "table"]
    runs = json.loads((tmp_path / "fidelity-gpu-runs.json").read_text())
    arms = {r["arm"] for r in runs["summary"]}
    assert {"baseline", "cutout", "autoaugment", "randaugment", "trivialaugment", "schedule-search-s0",
            "schedule-prior", "schedule-final", "schedule-shuffled"} <= arms
    assert all(0.0 <= r["train_error"] <= 1.0 for r in runs["runs"])


def test_schedule_text_prints_the_figure_4_numbers(tmp_path):
    """bench/schedule_text.py: each op's probability (both copies) and range position, at the chosen epochs."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "bench"))
    from schedule_text import schedule_markdown

    from hba_fast.schedule.file import Schedule, write_schedule

    probs = np.zeros((4, 30), np.float32)
    mags = np.zeros((4, 30), np.float32)
    mags[:, [10, 11, 12, 13, 25, 26, 27, 28]] = 1.0  # the enhance ops at their identity: position 0
    probs[3, 4], probs[3, 19], mags[3, 4], mags[3, 19] = 0.5, 0.25, 30.0, 15.0  # Rotate, both copies, epoch 4
    write_schedule(tmp_path / "schedule.json", Schedule(probs, mags, ranges="search"), {}, {})
    text = schedule_markdown(str(tmp_path / "schedule.json"), [1, 4, 9])  # 9 is past the end: left out
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["op"] == "| op | ep 1 | ep 4 |"
    # Rotate at epoch 4: probability 0.75; position (0.5 * 1 + 0.25 * 0.5) / 0.75 = 0.83
    assert rows["Rotate"] == "| Rotate | 0.00 / 0.00 | 0.75 / 0.83 |"
    assert rows["Equalize"] == "| Equalize | 0.00 | 0.00 |"  # no magnitude
    assert rows["Contrast"] == "| Contrast | 0.00 / 0.00 | 0.00 / 0.00 |"
