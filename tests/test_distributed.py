"""Several processes, started the way users start them: torchrun with the gloo backend on the CPU."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

TINY = ["data.num_train=128", "data.num_val=64", "data.num_test=64", "data.batch_size=16", "train.epochs=1",
        "train.steps_per_epoch=2", "run.progress=false"]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    torchrun = shutil.which("torchrun")
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--standalone", "--nproc_per_node=2", "-m", "hba_fast.cli", "search"]
    for item in TINY + [f"run.out_dir={tmp_path}"]:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "(2 process(es))" in done.stdout
    doc = json.loads((tmp_path / "schedule.json").read_text())
    assert len(doc["epochs"]) == 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "final" for r in rows) == 1  # only rank 0 writes
    ranks = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["ranks"]  # every rank's own randomness
    assert len(ranks) == 2
    assert not torch.equal(ranks[0]["pipeline"]["sampler"]["generator"], ranks[1]["pipeline"]["sampler"]["generator"])
