"""Graceful stop (hba_fast/run/stop.py): SIGTERM, SIGUSR1 (SLURM's --signal) and SIGINT in the middle of an epoch
finish the round, write a checkpoint of the position inside the epoch and exit with 128 + the signal's number after
one line; the same command then ends exactly (bit for bit) where an uninterrupted run ends, also with
train.checkpoint_every larger than the run, on both data backends, for `hba-fast train` and `compare`, and under
torchrun (every rank stops at the same round). A second signal during the stop exits at once and leaves the last
checkpoint as it was; a signal delivered twice at once (torchrun forwards what its workers got) is one request.

The signals are real (`os.kill` from inside the process at a chosen round, tests/fault_runner.py, or from this
process); the runs are tiny (WRN-16-2, 96 shapes10 images, 3 epochs of 5 steps; rounds of 2 weight + 1 hyper step,
so the epochs end inside a round).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hba_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().parent / "fault_runner.py"
TINY = ["model.name=wrn-16-2", "data.num_train=96", "data.num_val=48", "data.num_test=48", "data.batch_size=16",
        "train.epochs=3", "train.steps_per_epoch=5", "train.log_every=5", "train.checkpoint_every=10",
        "run.progress=false", "run.num_threads=1"]
# Rounds: epoch 1 = 2 + 2 + 1 weight steps (no hyper steps: hyper_warmup_epochs=1), epoch 2 = 1 + 2 + 2. A signal
# after round 5 stops before round 6: step 8, inside epoch 2, with loss sums since the last log line (step 5).
STOP_ROUND, STOP_STEP = 5, 8
VOLATILE = {"time", "images_per_s", "wall_s", "train_s"}  # metric fields that depend on the machine, not on the run
DALI = ["data.backend=dali", "data.num_threads=1"]


def _sets(items):
    return [x for item in items for x in ("--set", item)]


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    for key in ("HBA_FAULT", "HBA_SIGNAL", "HBA_SIGNAL_AGAIN"):
        if key not in extra:
            env.pop(key, None)
    return env


def _run(out: Path, extra: list[str] = (), command: str = "search", args: list[str] = (), **signals) -> tuple:
    argv = [sys.executable, str(RUNNER), command, *args, *_sets(TINY + list(extra) + [f"run.out_dir={out}"])]
    done = subprocess.run(argv, env=_env(**signals), cwd=ROOT, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout, done.stderr


def _metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def same_run(a: Path, b: Path, model: str = "model.pt") -> None:
    """Bit for bit: final weights (and lambda), the schedule, the metric rows (none repeated)."""
    ma, mb = (torch.load(d / model, weights_only=True) for d in (a, b))
    assert ma["state_dict"].keys() == mb["state_dict"].keys()
    for k, v in ma["state_dict"].items():
        assert torch.equal(mb["state_dict"][k], v), k
    if "lam" in ma:
        assert torch.equal(ma["lam"], mb["lam"])
        sa, sb = (json.loads((d / "schedule.json").read_text())["epochs"] for d in (a, b))
        assert sa == sb  # every epoch's lambda and decoded slots
    ra, rb = _metrics(a), _metrics(b)
    keys = [(r["kind"], r.get("epoch"), r.get("step")) for r in rb]
    assert len(keys) == len(set(keys)), f"repeated metric rows: {keys}"
    assert ra == rb


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, one per backend (checkpoint_every does not change what is trained)."""
    refs = {}

    def get(backend: str) -> Path:
        if backend not in refs:
            out = tmp_path_factory.mktemp(f"ref-{backend}")
            code, stdout, stderr = _run(out, DALI if backend == "dali" else [])
            assert code == 0, stdout[-2000:] + stderr[-2000:]
            refs[backend] = out
        return refs[backend]

    return get


def _one_stop_line(stderr: str, name: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("hba-fast:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


CASES = [("TERM", "torch", 10), ("USR1", "torch", 1), ("INT", "dali", 10)]


@pytest.mark.slow
@pytest.mark.parametrize("sig, backend, every", CASES, ids=[f"SIG{s}-{b}-every{e}" for s, b, e in CASES])
def test_signal_mid_epoch_then_the_same_command_ends_like_an_uninterrupted_run(reference, tmp_path, sig, backend,
                                                                                 every):
    if backend == "dali":
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    extra = (DALI if backend == "dali" else []) + [f"train.checkpoint_every={every}"]
    run = tmp_path / "run"
    code, stdout, stderr = _run(run, extra, HBA_SIGNAL=f"{sig}:{STOP_ROUND}")
    signum = getattr(signal, "SIG" + sig)
    assert code == 128 + signum, stdout[-2000:] + stderr[-2000:]
    line = _one_stop_line(stderr, sig)
    assert f"stopped by SIG{sig} at step {STOP_STEP} (in epoch 2/3, 3 of its 5 steps done)" in line, line
    assert str(run / "checkpoint.pt") in line and "continue with the same command: hba-fast search --set" in line
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, STOP_STEP)
    assert state["meters"]["train_loss"][1] == STOP_STEP - 5  # the loss sums since the last log line travel along
    assert "stopped by SIG" in (run / "log.txt").read_text().splitlines()[-1]
    code, stdout, stderr = _run(run, extra)
    assert code == 0, stdout[-2000:] + stderr[-2000:]
    assert f"after 3 of its 5 steps (step {STOP_STEP})" in stdout
    same_run(reference(backend), run)


@pytest.mark.slow
def test_a_second_signal_during_the_stop_exits_at_once_and_keeps_the_last_checkpoint(reference, tmp_path):
    """SIGTERM after round 5, then SIGTERM again while the stop's checkpoint is half written: exit at once (143, one
    line); checkpoint.pt is still the one of epoch 1 (atomic write: the half file is a temp orphan); the same
    command removes the orphan and ends like the uninterrupted run."""
    run = tmp_path / "run"
    extra = ["train.checkpoint_every=1"]
    code, stdout, stderr = _run(run, extra, HBA_SIGNAL=f"TERM:{STOP_ROUND}", HBA_SIGNAL_AGAIN="TERM:checkpoint.pt")
    assert code == 128 + signal.SIGTERM, stdout[-2000:] + stderr[-2000:]
    line = _one_stop_line(stderr, "TERM")
    assert "SIGTERM during the stop after SIGTERM: exiting at once" in line and "stays intact" in line
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 5)  # the end of epoch 1, as it was
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")], "the interrupted write left no temp file"
    code, stdout, stderr = _run(run, extra)
    assert code == 0, stdout[-2000:] + stderr[-2000:]
    assert "removed 1 temporary file(s)" in stdout
    same_run(reference("torch"), run)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_signal_delivered_twice_at_once_is_one_request(tmp_path):
    """Inside the repeat window the second delivery is ignored (torchrun forwards Ctrl-C to workers that got it
    already); after it, a second signal exits at once with 128 + its number and one line."""
    script = textwrap.dedent("""
        import os, signal, sys, time
        from hba_fast.run.stop import REPEAT_WINDOW_S, SIGNALS
        with SIGNALS.installed():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            print("requested", SIGNALS.signum, flush=True)
            time.sleep(REPEAT_WINDOW_S + 0.2)
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(5)
            print("still running", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.splitlines() == [f"requested {int(signal.SIGTERM)}"], done.stdout + done.stderr
    assert done.returncode == 128 + signal.SIGUSR1
    assert "SIGUSR1 during the stop after SIGTERM: exiting at once" in done.stderr


def test_handlers_are_restored_and_the_request_cleared():
    from hba_fast.run.stop import SIGNALS

    before = signal.getsignal(signal.SIGTERM)
    with SIGNALS.installed():
        assert signal.getsignal(signal.SIGTERM) == SIGNALS._handle
        with SIGNALS.installed():  # nested (compare around its runs): one installation
            SIGNALS.request(signal.SIGUSR1)
        assert SIGNALS.signum == signal.SIGUSR1 and signal.getsignal(signal.SIGTERM) == SIGNALS._handle
    assert signal.getsignal(signal.SIGTERM) == before and SIGNALS.signum == 0


# ------------------------------------------------------------------------------ train, every arm, and compare

def _request_at(monkeypatch, k: int, signum=signal.SIGTERM) -> None:
    """A stop request after the k-th round of this process, as the handler records it."""
    from hba_fast.engine.trainer import Trainer
    from hba_fast.run.stop import SIGNALS

    run_round, count = Trainer.run_round, {"n": 0}

    def counted(self, n_weight, n_hyper):
        run_round(self, n_weight, n_hyper)
        count["n"] += 1
        if count["n"] == k:
            SIGNALS.request(signum)

    monkeypatch.setattr(Trainer, "run_round", counted)


@pytest.mark.slow
def test_train_stops_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    """`hba-fast train --augment autoaugment` (a sampler with its own generators) with checkpoint_every > epochs."""
    base = TINY + ["train.epochs=2"]
    assert main(["train", str(ROOT / "configs" / "demo.yaml"), "--augment", "autoaugment",
                 *_sets(base + [f"run.out_dir={tmp_path / 'ref'}"])]) == 0
    argv = ["train", str(ROOT / "configs" / "demo.yaml"), "--augment", "autoaugment",
            *_sets(base + [f"run.out_dir={tmp_path / 'run'}"])]
    with monkeypatch.context() as m:
        _request_at(m, 4)  # rounds of 2 weight steps: 2 + 2 + 1 in epoch 1, then 1 + 2 + 2
        assert main(argv) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped by SIGTERM at step 6 (in epoch 2/2, 1 of its 5 steps done)" in err
    assert "continue with the same command: hba-fast train" in err
    assert main(argv) == 0
    same_run(tmp_path / "ref" / "train-autoaugment", tmp_path / "run" / "train-autoaugment")
    result = json.loads((tmp_path / "run" / "train-autoaugment" / "result.json").read_text())
    assert result["test_error"] == json.loads((tmp_path / "ref" / "train-autoaugment" / "result.json").read_text())[
        "test_error"]


@pytest.mark.slow
def test_compare_stops_inside_a_pair_and_continues(tmp_path, monkeypatch, capsys):
    """A stop in the second pair: that pair keeps its checkpoint, the first stays finished, no other pair starts;
    the same command ends with the table of an uninterrupted comparison."""
    base = TINY + ["train.epochs=1"]
    cfg = str(ROOT / "configs" / "demo.yaml")

    def argv(out):
        return ["compare", cfg, "--arms", "baseline,cutout", "--seeds", "1", *_sets(base + [f"run.out_dir={out}"])]

    assert main(argv(tmp_path / "ref")) == 0
    with monkeypatch.context() as m:
        _request_at(m, 3 + 2)  # the first pair has 3 rounds: stop before the second pair's third round
        assert main(argv(tmp_path / "run")) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped by SIGTERM at step 4 (in epoch 1/1, 4 of its 5 steps done)" in err
    assert "continue with the same command: hba-fast compare" in err
    assert (tmp_path / "run" / "baseline" / "seed0" / "result.json").exists()
    assert not (tmp_path / "run" / "cutout" / "seed0" / "result.json").exists()
    assert torch.load(tmp_path / "run" / "cutout" / "seed0" / "checkpoint.pt", weights_only=True)["step"] == 4
    assert main(argv(tmp_path / "run")) == 0
    for arm in ("baseline", "cutout"):
        same_run(tmp_path / "ref" / arm / "seed0", tmp_path / "run" / arm / "seed0")
    table = [json.loads((d / "compare.json").read_text())["summary"] for d in (tmp_path / "ref", tmp_path / "run")]
    assert [r["test_errors"] for r in table[0]] == [r["test_errors"] for r in table[1]]


# ------------------------------------------------------------------------------ torchrun

@pytest.mark.slow
def test_torchrun_every_rank_stops_at_the_same_round(tmp_path):
    """SIGTERM to rank 1 only: both ranks stop before the same round (agreed through the gloo flag, one round after
    the signal), rank 0 writes the checkpoint with both ranks' positions; the same torchrun command ends bit for bit
    like an uninterrupted two-process run."""
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    sets = ["data.num_train=128", "data.batch_size=16", "train.steps_per_epoch=3", "train.epochs=2"]

    def launch(out: Path, **signals):
        cmd = [*launcher, "--standalone", "--nproc_per_node=2", str(RUNNER), "search",
               *_sets(TINY + sets + [f"run.out_dir={out}"])]
        return subprocess.run(cmd, env=_env(**signals), cwd=ROOT, capture_output=True, text=True, timeout=900)

    ref = launch(tmp_path / "ref")
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    # rounds: epoch 1 = 2 + 1, epoch 2 = 1 + 2; the signal after round 2 (step 3) on rank 1 is seen by the flag
    # all_reduce of the boundary before round 3, agreed at the boundary before round 4: step 4
    stopped = launch(tmp_path / "run", HBA_SIGNAL="TERM:2:1")
    assert stopped.returncode != 0
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("hba-fast: stopped by SIGTERM")]
    assert len(lines) == 1 and "at step 4 (in epoch 2/2, 1 of its 3 steps done)" in lines[0], stopped.stderr[-3000:]
    assert "continue with the same command: torchrun ... -m hba_fast.cli search" in lines[0]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and len(state["ranks"]) == 2
    again = launch(tmp_path / "run")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    same_run(tmp_path / "ref", tmp_path / "run")


def test_a_nan_after_a_mid_epoch_resume_names_where_the_checkpoint_stands():
    from hba_fast.config import OptimConfig
    from hba_fast.engine.nonfinite import nonfinite_message

    kw = dict(searched=True, amp=False, checkpoint=Path("c"), checkpoint_every=10, epochs=3)
    assert "Its last checkpoint (step 3 of epoch 2)" in nonfinite_message("x", OptimConfig(), saved_epoch=1,
                                                                         saved_inside=3, **kw)
    assert "Its last checkpoint (end of epoch 1)" in nonfinite_message("x", OptimConfig(), saved_epoch=1, **kw)
