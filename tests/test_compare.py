"""`hba-fast compare` end to end on the built-in dataset with the tiny config (CI): every arm and seed runs, the
table, JSON and plot are written, finished pairs are kept on a rerun, a killed pair resumes, and a changed
config is refused with the fix."""
import json
import statistics
from pathlib import Path

import pytest
import torch

from hba_fast.augment.space import SearchSpace
from hba_fast.cli import main
from hba_fast.compare import parse_arms
from hba_fast.errors import ConfigError, ScheduleError
from hba_fast.schedule.file import Schedule, write_schedule

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "compare-tiny.yaml"
SMALLER = ["data.num_train=64", "data.num_test=32", "data.batch_size=16"]


def _schedule(path: Path) -> Path:
    space, entries = SearchSpace(), []
    for e in range(2):
        lam = torch.linspace(-3, 1, 54) + e
        probs, mags = space.decode(lam)
        entries.append({"epoch": e, "lam": lam.tolist(), "probs": probs.tolist(), "mags": mags.tolist()})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_schedule(path, Schedule.from_entries(entries), {}, {})
    return path


def test_parse_arms(tmp_path):
    sched = _schedule(tmp_path / "search-a" / "schedule.json")
    other = _schedule(tmp_path / "x" / "search-a" / "schedule.json")
    arms = parse_arms(f"baseline, randaugment:3,5,autoaugment:svhn,schedule:{sched},schedule:{other}")
    assert [a.name for a in arms] == ["baseline", "randaugment-3-5", "autoaugment-svhn", "schedule-search-a-1",
                                      "schedule-search-a-2"]
    assert arms[1].augment == "randaugment:3,5" and arms[3].schedule == str(sched)
    with pytest.raises(ConfigError, match="more than once"):
        parse_arms("cutout,cutout")
    with pytest.raises(ScheduleError, match="not found"):
        parse_arms(f"schedule:{tmp_path / 'missing.json'}")
    with pytest.raises(ConfigError, match="unknown augmentation"):
        parse_arms("baseline,mixup")


def _compare(out: Path, arms: str, seeds: int, *sets: str) -> int:
    args = ["compare", str(TINY), "--arms", arms, "--seeds", str(seeds)]
    for item in [*SMALLER, f"run.out_dir={out}", *sets]:
        args += ["--set", item]
    return main(args)


@pytest.mark.slow
def test_compare_end_to_end_resume_and_refusal(tmp_path, capsys):
    sched = _schedule(tmp_path / "demo" / "schedule.json")
    out = tmp_path / "cmp"
    arms = f"baseline,cutout,autoaugment,randaugment,trivialaugment,schedule:{sched}"
    assert _compare(out, arms, 2) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "compare.json").read_text())
    names = ["baseline", "cutout", "autoaugment", "randaugment", "trivialaugment", "schedule-demo"]
    assert [r["arm"] for r in doc["summary"]] == names and doc["seeds"] == 2
    for row in doc["summary"]:
        errors = []
        for k in range(2):
            result = json.loads((out / row["arm"] / f"seed{k}" / "result.json").read_text())
            assert result["seed"] == k and 0.0 <= result["test_error"] <= 1.0 and result["images_per_s"] > 0
            errors.append(result["test_error"])
        assert row["test_errors"] == errors
        assert row["test_error_mean"] == pytest.approx(statistics.fmean(errors))
        assert row["test_error_std"] == pytest.approx(statistics.stdev(errors))
    cfg = json.loads(json.dumps(doc["config"]))
    assert cfg["data"]["dataset"] == "shapes10"
    table = (out / "compare.md").read_text()
    assert "| arm | test error % (mean +- std)" in table and "| schedule-demo |" in table
    assert "| autoaugment |" in printed
    assert (out / "compare.png").stat().st_size > 5_000
    # the arms trained with what they say: baseline without Cutout, the rest with it
    assert (out / "baseline" / "seed0" / "config.yaml").read_text().count("cutout: false") == 1
    assert (out / "autoaugment" / "seed1" / "config.yaml").read_text().count("cutout: true") == 1

    # Rerun: finished pairs are read back untouched; a pair killed before its result resumes from its checkpoint.
    kept = out / "baseline" / "seed0" / "result.json"
    stamp = kept.stat().st_mtime_ns
    (out / "cutout" / "seed1" / "result.json").unlink()
    damaged = out / "randaugment" / "seed0" / "result.json"
    damaged.write_text('{"epochs": ')  # an unreadable result: the pair's run evaluates again and rewrites it
    assert _compare(out, arms, 2) == 0
    assert kept.stat().st_mtime_ns == stamp
    assert (out / "cutout" / "seed1" / "result.json").exists()
    assert "resumed from" in (out / "cutout" / "seed1" / "log.txt").read_text()
    assert 0.0 <= json.loads(damaged.read_text())["test_error"] <= 1.0
    log = (out / "log.txt").read_text()
    assert log.count("finished before") == 10

    # The same folder with other settings: refused, naming the difference and the fix.
    capsys.readouterr()
    assert _compare(out, "baseline", 1, "optim.lr=0.2") == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "run.out_dir" in err


@pytest.mark.slow
def test_compare_with_torchrun_two_processes(tmp_path):
    """Every pair runs on both ranks in turn; rank 0 alone writes each result and the table."""
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun")
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--standalone", "--nproc_per_node=2", "-m", "hba_fast.cli", "compare", str(TINY),
            "--arms", "baseline,randaugment", "--seeds", "1"]
    for item in [*SMALLER, f"run.out_dir={tmp_path}"]:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("(2 process(es))") == 2  # both pairs ran in the one process group
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert [r["arm"] for r in doc["summary"]] == ["baseline", "randaugment"]
    for arm in ("baseline", "randaugment"):
        rows = [json.loads(line) for line in (tmp_path / arm / "seed0" / "metrics.jsonl").read_text().splitlines()]
        assert sum(r["kind"] == "final" for r in rows) == 1


def _pba_file(path: Path) -> Path:
    """A PBA schedule file of 4 epochs (hba-fast's writer; PBA's order is checked in tests/test_pba.py)."""
    import numpy as np

    from hba_fast.schedule.pba import to_pba

    probs, mags = np.zeros((4, 30)), np.zeros((4, 30))
    probs[:, 6] = [0.0, 0.3, 0.6, 0.9]  # Invert
    path.write_text("".join(repr(line) + "\n" for line in to_pba(probs, mags).lines))
    return path


PUBLISHED = ROOT.parent / "shared" / "data" / "pba" / "rcifar10_16_wrn.txt"


@pytest.mark.slow
def test_compare_and_train_with_a_pba_arm(tmp_path, capsys, monkeypatch):
    """`pba:FILE` as a compare arm (as the long study runs it: --seeds N --only-seed K) and as `train --schedule`:
    the run replays PBA's file for its own epochs by PBA's rule (1 epoch of PBA's 200-epoch schedule: its last
    policy); the arm is named after the file."""
    import numpy as np

    import hba_fast.train as train_module
    from hba_fast.schedule.file import read_schedule

    mine = _pba_file(tmp_path / "mine.txt")
    published = PUBLISHED if PUBLISHED.is_file() else mine  # the study's arm where PBA's file is at hand
    arms = parse_arms(f"baseline,pba:{mine}@4,pba:{published}")
    assert [a.name for a in arms] == ["baseline", "pba-mine", f"pba-{published.stem}"]
    assert arms[1].schedule == f"pba:{mine}@4" and arms[1].augment is None
    with pytest.raises(ScheduleError, match="not found"):
        parse_arms(f"pba:{tmp_path / 'missing.txt'}")

    used = []

    class Recording(train_module.ScheduleSampler):
        def __init__(self, schedule, epochs):
            used.append((schedule, epochs))
            super().__init__(schedule, epochs)

    monkeypatch.setattr(train_module, "ScheduleSampler", Recording)
    out = tmp_path / "cmp"
    args = ["compare", str(TINY), "--arms", f"pba:{published}", "--seeds", "2", "--only-seed", "0"]
    for item in [*SMALLER, f"run.out_dir={out}"]:
        args += ["--set", item]
    assert main(args) == 0
    result = json.loads((out / f"pba-{published.stem}" / "seed0" / "result.json").read_text())
    assert result["epochs"] == 1 and 0.0 <= result["test_error"] <= 1.0
    assert f"schedule pba:{published}" in result["augmentation"]
    assert not (out / f"pba-{published.stem}" / "seed1").exists() and not (out / "compare.json").exists()
    (schedule, epochs), = used
    assert epochs == 1 and schedule.epochs == 1
    assert np.array_equal(schedule.probs[0], read_schedule(f"pba:{published}").probs[-1])  # PBA holds the last

    used.clear()
    train_args = ["train", str(TINY), "--schedule", f"pba:{mine}@4", "--set", f"run.out_dir={tmp_path / 'tr'}"]
    for item in SMALLER:
        train_args += ["--set", item]
    assert main(train_args) == 0
    assert json.loads((tmp_path / "tr" / "train-pba-mine" / "result.json").read_text())["epochs"] == 1
    (schedule, epochs), = used
    assert np.allclose(schedule.probs[0, 6], 0.9)  # 4 -> 1 epochs by PBA's rule: the last policy
