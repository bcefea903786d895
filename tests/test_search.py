"""End to end: `hba-fast search` on the generated dataset writes its outputs, moves lambda, resumes after a
kill exactly where it stopped, and `hba-fast train` evaluates the schedule. Small sizes, CPU."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hba_fast.augment.space import SearchSpace
from hba_fast.cli import main
from hba_fast.config import load_config
from hba_fast.models import build_model
from hba_fast.search import search

TINY = ["data.num_train=192", "data.num_val=96", "data.num_test=96", "data.batch_size=32", "train.log_every=2",
        "optim.hyper_lr=0.1", "run.progress=false"]


def _tiny(tmp_path, *extra):
    return load_config(None, TINY + [f"run.out_dir={tmp_path}", *extra])


def test_search_writes_outputs_and_moves_lambda(tmp_path):
    out = search(_tiny(tmp_path, "train.epochs=2"))
    doc = json.loads((out / "schedule.json").read_text())
    assert [e["epoch"] for e in doc["epochs"]] == [0, 1]
    slots = doc["epochs"][-1]["slots"]
    assert len(slots) == 30 and slots[0]["op"] == "ShearX" and slots[15]["copy"] == 1
    assert all(0.0 <= s["prob"] <= 1.0 for s in slots)
    assert slots[5]["magnitude"] is None and 0.0 <= slots[4]["magnitude"] <= 30.0  # AutoContrast, Rotate
    lam = torch.tensor(doc["epochs"][-1]["lam"])
    assert (lam - SearchSpace().init_lam()).abs().max() > 1e-3, "lambda did not move"
    assert (out / "schedule.png").stat().st_size > 10_000
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == 2 and all(r["images_per_s"] > 0 and r["val_loss"] > 0 for r in epochs)
    assert any(r["kind"] == "train" and r.get("hyper_val_loss") is not None for r in rows)  # after the warm-up
    final = [r for r in rows if r["kind"] == "final"][0]
    assert 0.0 <= final["test_error"] <= 1.0
    saved = torch.load(out / "model.pt", weights_only=False)
    plain = build_model(saved["model"], saved["num_classes"], "none")
    plain.load_state_dict(saved["state_dict"])  # theta(lambda*) loads into a plain model
    assert (out / "config.yaml").exists() and (out / "checkpoint.pt").exists()


def test_nonfinite_loss_stops_and_keeps_checkpoint(tmp_path, capsys, monkeypatch):
    """NaN images in epoch 2 make the loss NaN: the run stops naming the step; epoch 1's checkpoint stays."""
    from hba_fast.data.torch_pipeline import TorchPipeline

    augment = TorchPipeline.augment

    def poisoned(self, images, epoch, **kw):
        x, lam = augment(self, images, epoch, **kw)
        return (x * float("nan") if epoch == 1 else x), lam

    monkeypatch.setattr(TorchPipeline, "augment", poisoned)
    sets = TINY + [f"run.out_dir={tmp_path}", "train.epochs=2"]
    code = main(["search"] + [x for item in sets for x in ("--set", item)])
    err = capsys.readouterr().err
    assert code == 2 and "NaN/Inf by step 7 (step 1 of epoch 2/2)" in err, err  # 6 steps per epoch
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert not (tmp_path / "schedule.json").exists()


def _run_cli(out_dir, epochs):
    args = [sys.executable, "-m", "hba_fast.cli", "search"]
    for item in TINY + [f"run.out_dir={out_dir}", f"train.epochs={epochs}", "train.steps_per_epoch=3"]:
        args += ["--set", item]
    return args


@pytest.mark.slow
def test_kill_and_resume_continues_the_same_run(tmp_path):
    """SIGKILL the search after its first checkpoint; the rerun resumes and ends exactly where an
    uninterrupted run ends (same schedule, same lambda)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_run_cli(tmp_path / "ref", 3), env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(_run_cli(run, 3), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not (run / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "schedule.json").exists()

    again = subprocess.run(_run_cli(run, 3), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout
    a = json.loads((tmp_path / "ref" / "schedule.json").read_text())["epochs"]
    b = json.loads((run / "schedule.json").read_text())["epochs"]
    assert len(a) == len(b) == 3
    torch.testing.assert_close(torch.tensor(b[-1]["lam"]), torch.tensor(a[-1]["lam"]), rtol=0, atol=1e-5)


def test_train_with_schedule_and_baselines(tmp_path):
    out = search(_tiny(tmp_path / "search", "train.epochs=2", "train.steps_per_epoch=2"))
    from hba_fast.train import train

    base = TINY + ["train.epochs=3", "train.steps_per_epoch=2", "data.num_val=0"]
    res = train(load_config(None, base + [f"run.out_dir={tmp_path / 'sched'}"]), schedule=str(out / "schedule.json"))
    assert res["epochs"] == 3 and 0.0 <= res["test_error"] <= 1.0
    assert json.loads((tmp_path / "sched" / "result.json").read_text())["test_error"] == res["test_error"]
    for augment in ("baseline", "cutout"):
        res = train(load_config(None, base + [f"run.out_dir={tmp_path / augment}"]), augment=augment)
        assert 0.0 <= res["test_error"] <= 1.0


@pytest.mark.parametrize("argv, message", [
    (["search", "--set", "train.epoch=3"], "did you mean 'epochs'"),
    (["search", "--set", "data.dataset=cifar10", "--set", "data.path=/no/such/dir"], "/no/such/dir"),
    (["train", "CONFIG", "--schedule", "/no/such/schedule.json"], "schedule file"),
    (["search", "--set", "model.strategy=none"], "a search needs hyper-layers and hyper steps"),
    (["search", "--set", "train.t_val=0"], "a search needs hyper-layers and hyper steps"),
    pytest.param(["search", "--set", "model.kernels=triton"], "needs a CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the option is valid")),
])
def test_cli_errors_are_clear(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # as a user's shell has it
    argv = [str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml") if a == "CONFIG" else a for a in argv]
    code = main(argv + ["--set", f"run.out_dir={tmp_path}"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_resume_refuses_other_settings_but_may_extend(tmp_path, capsys):
    sets = TINY + [f"run.out_dir={tmp_path}", "train.epochs=1", "train.steps_per_epoch=2"]
    argv = ["search"] + [x for item in sets for x in ("--set", item)]
    assert main(argv) == 0
    assert main(argv + ["--set", "optim.lr=0.2"]) == 2
    assert "optim.lr: 0.05 -> 0.2" in capsys.readouterr().err
    assert main(argv + ["--set", "train.epochs=2"]) == 0  # extending the same run is allowed
    assert "resumed from" in (tmp_path / "log.txt").read_text()
    assert len(json.loads((tmp_path / "schedule.json").read_text())["epochs"]) == 2


def test_malformed_schedule_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"format": "hba-fast-schedule/1", "epochs": [{"slots": [{"p": 0.5}] * 30}]}))
    config = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    assert main(["train", config, "--schedule", str(path), "--set", f"run.out_dir={tmp_path / 'run'}"]) == 2
    assert "malformed epoch entries" in capsys.readouterr().err
