"""An end-to-end search fed by the DALI pipeline, on DALI's CPU operators."""
import json

import pytest
import torch

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install -e .[dali])")

from hba_fast.augment.space import SearchSpace
from hba_fast.config import load_config
from hba_fast.search import search


def test_search_step_fed_by_dali(tmp_path):
    cfg = load_config(None, ["data.backend=dali", "data.num_train=96", "data.num_val=64", "data.num_test=64",
                             "data.batch_size=16", "data.num_threads=2", "train.epochs=1", "train.steps_per_epoch=4",
                             "train.hyper_warmup_epochs=0",
                             "optim.hyper_lr=0.1", "run.progress=false", f"run.out_dir={tmp_path}"])
    out = search(cfg)
    assert "DaliPipeline" in (out / "log.txt").read_text()
    doc = json.loads((out / "schedule.json").read_text())
    lam = torch.tensor(doc["epochs"][0]["lam"])
    assert (lam - SearchSpace().init_lam()).abs().max() > 1e-3  # two hyper steps moved lambda
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in rows if r["kind"] == "epoch"][0]["images_per_s"] > 0
    assert 0.0 <= [r for r in rows if r["kind"] == "final"][0]["test_error"] <= 1.0
