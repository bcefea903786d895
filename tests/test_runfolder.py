"""The run folder over a run's life: extend but never cut back, resume records, outputs of a shorter run set
aside, no repeated metric rows, NaN messages that say what is kept and what to change, one epoch numbering,
`hba-fast train` beside a search, corrupt-image warnings, the command line's help and version. Tiny sizes, CPU."""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hba_fast import __version__
from hba_fast.cli import main
from hba_fast.config import OptimConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")
TINY = ["model.name=wrn-16-2", "data.num_train=64", "data.num_val=32", "data.num_test=32", "data.batch_size=16",
        "train.steps_per_epoch=2", "train.log_every=1", "run.progress=false"]


def _argv(command, out, *extra, config=None):
    items = TINY + [f"run.out_dir={out}", *extra]
    return [command, *([config] if config else []), *[x for item in items for x in ("--set", item)]]


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _poison_epoch(monkeypatch, epoch: int) -> None:
    """NaN images from `epoch` (0-based) on: the loss becomes NaN there."""
    from hba_fast.data.torch_pipeline import TorchPipeline

    augment = TorchPipeline.augment

    def poisoned(self, images, e, static=None):
        x, lam = augment(self, images, e, static)
        return (x * float("nan") if e >= epoch else x), lam

    monkeypatch.setattr(TorchPipeline, "augment", poisoned)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch demo search (tiny); tests that change it work on a copy (`_copy`)."""
    out = tmp_path_factory.mktemp("finished")
    assert main(_argv("search", out, "train.epochs=2")) == 0
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


# ------------------------------------------------------------------------------------------ extend, never cut back

def test_extend_sets_outputs_aside_and_keeps_the_first_start(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    first_env = json.loads((run / "environment.json").read_text())
    time.sleep(1.1)  # a resume at another second
    assert main(_argv("search", run, "train.epochs=3")) == 0
    aside = run / "after-2-epochs"
    assert len(json.loads((aside / "schedule.json").read_text())["epochs"]) == 2
    assert (aside / "model.pt").exists() and (aside / "schedule.png").exists()
    assert len(json.loads((run / "schedule.json").read_text())["epochs"]) == 3
    env = json.loads((run / "environment.json").read_text())
    assert env["time"] == first_env["time"]  # the first start is not rewritten
    assert len(env["resumes"]) == 1 and env["resumes"][0]["from_epoch"] == 2
    assert "train.epochs: 2 -> 3" in env["resumes"][0]["changed"]
    assert "epochs: 3" in (run / "config.yaml").read_text()  # agrees with schedule.json's config
    rows = _rows(run)
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2, 3]
    assert [r["kind"] for r in rows].count("final") == 1  # the 2-epoch run's final row went with its outputs
    assert "moved the outputs of the earlier 2-epoch run" in (run / "log.txt").read_text()


def test_epochs_cannot_be_cut_below_what_is_done(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    config, schedule = (run / "config.yaml").read_text(), (run / "schedule.json").read_text()
    assert main(_argv("search", run, "train.epochs=1")) == 2
    err = capsys.readouterr().err
    assert "has done 2 epochs, more than train.epochs=1" in err and "train.epochs=2 or more" in err
    assert (run / "config.yaml").read_text() == config  # config.yaml and schedule.json still agree
    assert (run / "schedule.json").read_text() == schedule


def test_rerun_of_a_finished_run_repeats_no_rows(finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = _rows(run)
    with open(run / "metrics.jsonl", "a") as f:  # a row a killed run wrote after its checkpoint
        f.write(json.dumps({"kind": "train", "epoch": 3, "step": 99}) + "\n")
    assert main(_argv("search", run, "train.epochs=2")) == 0
    after = _rows(run)
    assert [(r["kind"], r.get("epoch"), r.get("step")) for r in after] == \
        [(r["kind"], r.get("epoch"), r.get("step")) for r in before]


def test_outputs_are_ordinary_files(finished):
    """checkpoint.pt gets the same mode as every other output (0666 less the umask), not mkstemp's 0600."""
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in finished.iterdir() if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


# ------------------------------------------------------------------------------------------ NaN / Inf

def test_nonfinite_message_says_what_is_kept_and_what_to_change():
    from hba_fast.engine.nonfinite import nonfinite_message

    kw = dict(searched=True, checkpoint=Path("r/checkpoint.pt"), checkpoint_every=1)
    none = nonfinite_message("the loss became NaN/Inf by step 2", OptimConfig(), amp=False, saved_epoch=None, **kw)
    assert "No checkpoint was written yet (the first comes at the end of epoch 1)" in none and "is kept" not in none
    short = nonfinite_message("x", OptimConfig(), amp=False, saved_epoch=None, searched=True, checkpoint=Path("c"),
                              checkpoint_every=5, epochs=2)
    assert "the first comes at the end of epoch 2)" in short  # the last epoch is checkpointed too
    assert "train.amp=off" not in none  # amp is off already
    kept = nonfinite_message("x", OptimConfig(), amp=True, saved_epoch=3, **kw)
    assert "end of epoch 3" in kept and "start a new run (--set run.out_dir=...)" in kept and "train.amp=off" in kept
    wd = nonfinite_message("x", OptimConfig(weight_decay=0.5, momentum=0.99), amp=False, saved_epoch=1, **kw)
    assert "optim.weight_decay=0.5 (usually <= 0.01)" in wd and "optim.momentum=0.99" in wd
    assert "optim.lr" not in wd  # the lr is not blamed for what weight decay did
    first = nonfinite_message("x", OptimConfig(), amp=False, saved_epoch=None, first_step=True, **kw)
    assert "before any update" in first and "optim." not in first and "train.amp" not in first


def test_nan_at_the_first_step_blames_no_optimiser(tmp_path, capsys, monkeypatch):
    _poison_epoch(monkeypatch, 0)
    assert main(_argv("search", tmp_path, "train.epochs=2")) == 2
    err = capsys.readouterr().err
    assert "by step 1 (step 1 of epoch 1/2), before any update" in err and "is kept" not in err


def test_nan_in_an_extended_run_leaves_no_unmarked_outputs(finished, tmp_path, capsys, monkeypatch):
    run = _copy(finished, tmp_path)
    _poison_epoch(monkeypatch, 2)
    assert main(_argv("search", run, "train.epochs=3")) == 2
    err = capsys.readouterr().err
    assert "by step 5 (step 1 of epoch 3/3)" in err
    assert "last checkpoint (end of epoch 2) is kept" in err and "lower optim.lr (now 0.05" in err
    assert "train.amp=off" not in err  # autocast is off on the CPU
    assert f"outputs of the earlier, shorter run are in {run / 'after-2-epochs'}" in err
    assert not (run / "schedule.json").exists() and not (run / "model.pt").exists()
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 2


# ------------------------------------------------------------------------------------------ one epoch numbering

def test_epochs_are_numbered_from_one_everywhere(finished):
    tmp_path = finished
    rows = _rows(tmp_path)
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    assert [r["epoch"] for r in rows if r["kind"] == "train"] == [1, 2]  # log_every=1: one row per round of 2 steps
    log = (tmp_path / "log.txt").read_text()
    assert "epoch 1/2: step=2" in log and "epoch 2/2: step=4" in log and "epoch=0" not in log
    assert [e["epoch"] for e in json.loads((tmp_path / "schedule.json").read_text())["epochs"]] == [0, 1]  # index


# ------------------------------------------------------------------------------------------ hba-fast train

def test_train_after_the_demo_search_has_its_own_folder_and_keeps_cutout_off(finished, tmp_path, capsys):
    tmp_path = _copy(finished, tmp_path)  # a search with the demo config (`hba-fast search` without one)
    sched = str(tmp_path / "schedule.json")
    assert main(["train", DEMO, "--schedule", sched] + _argv("x", tmp_path, "train.epochs=1")[1:]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "train-schedule"
    assert f"outputs in {folder}" in out and "Cutout off" in out
    assert json.loads((folder / "result.json").read_text())["epochs"] == 1
    assert "cutout: false" in (folder / "config.yaml").read_text()  # demo.yaml turns Cutout off; so does train
    assert (tmp_path / "schedule.json").exists() and (tmp_path / "model.pt").exists()  # the search is untouched
    assert main(["train", DEMO, "--augment", "cutout"] + _argv("x", tmp_path, "train.epochs=1")[1:]) == 0
    assert "Cutout on" in capsys.readouterr().out  # asked for by name
    assert "cutout: true" in (tmp_path / "train-cutout" / "config.yaml").read_text()


def test_train_in_a_search_folder_gets_advice_for_train(finished, tmp_path, capsys):
    from hba_fast.config import load_config
    from hba_fast.train import train

    tmp_path = _copy(finished, tmp_path)
    cfg = load_config(None, TINY + [f"run.out_dir={tmp_path}", "train.epochs=1"])
    from hba_fast.errors import RunFolderError

    with pytest.raises(RunFolderError, match=r"holds a run of `hba-fast search`; `hba-fast train` needs a folder"):
        train(cfg, schedule=str(tmp_path / "schedule.json"))


# ------------------------------------------------------------------------------------------ corrupt images

def _folder_with_corrupt(root: Path, bad: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("val", 8)):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(d / f"{k}.jpg")
    for k in range(bad):
        (root / "train" / "a" / f"{k}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_corrupt_images_are_reported_once_with_the_prefix_and_counted(tmp_path, capsys):
    data = _folder_with_corrupt(tmp_path / "data", bad=3)
    argv = _argv("search", tmp_path / "run", "train.epochs=1", "data.dataset=folder", f"data.path={data}",
                 "data.num_train=null", "data.num_val=16", "data.backend=torch", "data.on_corrupt=skip")
    assert main(argv) == 0
    captured = capsys.readouterr()
    warnings = [line for line in (captured.out + captured.err).splitlines() if "skipped" in line]
    assert warnings == ["[hba-fast] warning: skipped 3 of 64 images that cannot be decoded (data.on_corrupt=skip), "
                        f"e.g. {data / 'train' / 'a' / '0.jpg'}, {data / 'train' / 'a' / '1.jpg'}, "
                        f"{data / 'train' / 'a' / '2.jpg'}; set data.on_corrupt=error to stop at them instead"]
    assert warnings[0].removeprefix("[hba-fast] ") in (tmp_path / "run" / "log.txt").read_text()
    assert "(61 train / 16 val / 16 test images)" in captured.out  # 80 - 16 held out - 3 undecodable

    assert main(argv[:-2] + ["--set", "data.on_corrupt=error", "--set", f"run.out_dir={tmp_path / 'run2'}"]) == 2
    captured = capsys.readouterr()
    assert "cannot decode image" in captured.err and "on_corrupt=skip to skip" in captured.err
    assert "(data.on_corrupt=skip)" not in captured.out + captured.err  # nothing claims a setting not in use


# ------------------------------------------------------------------------------------------ the command line

def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"hba-fast {__version__}"
    for argv in (["--help"], ["search", "--help"], ["train", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "outputs:" in out and "run.out_dir" in out and "resume:" in out and "same command" in out


def test_threads_and_eta_are_shown(finished):
    from hba_fast.run.log import _Bar

    log = (finished / "log.txt").read_text()
    assert f"CPU: {torch.get_num_threads()} torch thread(s)" in log and "run ETA" in log

    class Fake:
        total, posts = 10, []

        def update(self, n): pass

        def set_postfix_str(self, s): self.posts.append(s)

    bar = _Bar(Fake(), after=20)
    bar.update(5)
    bar.set_postfix_str("100 img/s")
    assert Fake.posts[-1].startswith("100 img/s, run ETA ")


def test_bf16_on_a_cpu_without_it_says_so(monkeypatch):
    from hba_fast.config import load_config
    from hba_fast.run import session

    cfg = load_config(None, ["train.amp=bf16"])
    said = []
    monkeypatch.setattr(session, "cpu_has_bf16", lambda: False)
    session.check_gpu_options(cfg, torch.device("cpu"), said.append)
    assert len(said) == 1 and "much slower than float32" in said[0] and "train.amp=off" in said[0]
    said.clear()
    monkeypatch.setattr(session, "cpu_has_bf16", lambda: True)
    session.check_gpu_options(cfg, torch.device("cpu"), said.append)
    assert said == []


def test_environment_records_this_projects_commit_or_hba_git_sha(tmp_path, monkeypatch):
    """git_state: the sha and dirty flag of hba_fast's own checkout; an enclosing repository (an installed copy
    inside another repo) is not ours: then HBA_GIT_SHA names the commit, and dirty is unknown."""
    import shutil
    import subprocess

    from hba_fast.run import environment as runlog

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.setenv("HBA_GIT_SHA", "cafe")
    monkeypatch.setattr(runlog, "ROOT", tmp_path.resolve())
    assert runlog.git_state() == (head, False)
    (tmp_path / "a.txt").write_text("b")
    assert runlog.git_state() == (head, True)
    (tmp_path / "site").mkdir()
    monkeypatch.setattr(runlog, "ROOT", (tmp_path / "site").resolve())  # inside another repository
    assert runlog.git_state() == ("cafe", None)
    monkeypatch.delenv("HBA_GIT_SHA")
    env = runlog.environment("cpu")
    assert env["git_sha"] is None and env["git_dirty"] is None and env["device"] == "cpu"
    assert {"torch", "triton", "dali", "numpy", "torchvision", "cpu_threads", "cpus"} <= set(env)
