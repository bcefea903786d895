"""The benchmark scripts keep working: their --smoke mode runs every code path at tiny sizes on the CPU
(Triton interpreter, DALI CPU operators) and writes no numbers into bench/results (bench_round.py writes its rows,
marked smoke, to the --out file it is given)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_kernels.py", "bench_pipeline.py"])
def test_bench_smoke(script, tmp_path):
    if script == "bench_pipeline.py":
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    results = sorted((ROOT / "bench" / "results").glob("*"))
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nothing written" in done.stdout
    assert sorted((ROOT / "bench" / "results").glob("*")) == results  # a smoke run records nothing


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
