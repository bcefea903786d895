"""Soak (bench/soak.py): a search of 300 rounds on tiny data (WRN-10-2, 16x16 shapes10, batch 8, a checkpoint and an
evaluation every 15 rounds). Resident memory (VmRSS) may grow by at most SOAK_RSS_MIB = 10 MiB from round 100 to
round 300, and the open file descriptors not at all. Measured on the 2-core dev machine under load: 2.0 MiB growth
(samples within 782-785 MiB), 7 descriptors throughout; the same run holding on to 64 KiB a round grows by 16 MiB and
fails the bound (test_the_bound_catches_a_leak, at 256 KiB a round over 100 rounds)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from targets import SOAK_RSS_MIB  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _soak(tmp_path: Path, rounds: int, warmup: int, leak_kib: int = 0) -> dict:
    out = tmp_path / "soak.jsonl"
    script = textwrap.dedent(f"""
        import runpy, sys, torch
        from hba_fast.engine.trainer import Trainer
        kept, run_round = [], Trainer.run_round
        def leaky(self, n_weight, n_hyper):
            run_round(self, n_weight, n_hyper)
            if {leak_kib}:
                kept.append(torch.ones({leak_kib} * 256))  # float32: leak_kib KiB a round
        Trainer.run_round = leaky
        sys.argv = ["soak.py", "--rounds", "{rounds}", "--warmup", "{warmup}", "--out", {str(out)!r}]
        runpy.run_path({str(ROOT / "bench" / "soak.py")!r}, run_name="__main__")
    """)
    done = subprocess.run([sys.executable, "-c", script], env=ENV, cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = {r["metric"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"soak_rss_growth_mib", "soak_fd_growth"}  # no CUDA here: no allocator row
    return rows


@pytest.mark.slow
def test_memory_and_file_descriptors_stay_flat(tmp_path):
    rows = _soak(tmp_path, rounds=300, warmup=100)
    rss = rows["soak_rss_growth_mib"]
    assert rss["rounds"] == 300 and rss["epochs"] == 20
    assert rss["samples"]["round"][-1] == 300 and 100 in rss["samples"]["round"]
    assert rss["value"] <= SOAK_RSS_MIB, rss["samples"]
    assert rows["soak_fd_growth"]["value"] == 0, rss["samples"]["fds"]
    assert max(rss["samples"]["fds"][3:]) == min(rss["samples"]["fds"][3:])  # flat from round 100 (4th sample) on


@pytest.mark.slow
def test_the_bound_catches_a_leak(tmp_path):
    rows = _soak(tmp_path, rounds=150, warmup=50, leak_kib=256)  # 25 MiB kept over rounds 50-150
    assert rows["soak_rss_growth_mib"]["value"] > SOAK_RSS_MIB
