"""The benchmark scripts keep working: their --smoke mode runs every code path at tiny sizes on the CPU
(Triton interpreter, DALI CPU operators) and writes no numbers."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_kernels.py", "bench_pipeline.py", "bench_schedule_policy.py"])
def test_bench_smoke(script, tmp_path):
    if script in ("bench_pipeline.py", "bench_schedule_policy.py"):
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    results = sorted((ROOT / "bench" / "results").glob("*"))
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nothing written" in done.stdout
    assert sorted((ROOT / "bench" / "results").glob("*")) == results  # a smoke run records nothing
