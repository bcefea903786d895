"""Fault injection: a search killed again and again (SIGKILL at chosen and at random moments, inside the
checkpoint and the schedule writes too) ends exactly like an uninterrupted run; a full disk stops a run with one
clear line and keeps the last checkpoint; bad configs, datasets (every reader: truncated, wrong keys, wrong shapes,
wrong dtypes, empty), schedules and checkpoints each give one line that names the problem and the fix.

The kills run in subprocesses (tests/fault_runner.py puts the fault into os.open / os.write / os.fsync /
os.replace, which hba_fast/atomic.py calls; the package runs unchanged). Everything else runs in this process.
Sizes are tiny (WRN-16-2, 96 shapes10 images, 3 epochs of 3 steps) so the module stays within the suite's budget.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_runner import make_faults

from hba_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().parent / "fault_runner.py"
DEMO = str(ROOT / "configs" / "demo.yaml")
TINY = ["model.name=wrn-16-2", "data.num_train=96", "data.num_val=48", "data.num_test=48", "data.batch_size=16",
        "train.epochs=3", "train.steps_per_epoch=3", "train.log_every=2", "run.progress=false"]
VOLATILE = {"time", "images_per_s", "wall_s"}  # metric fields that depend on the machine, not on the run


def _sets(items):
    return [x for item in items for x in ("--set", item)]


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def _one_clear_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hba-fast: error: "), err
    low = lines[0].lower()
    for needle in needles:
        assert needle.lower() in low, f"{needle!r} not in: {lines[0]}"


# ------------------------------------------------------------------------------------------ kills

def _spawn(out: Path, fault: str | None = None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("HBA_FAULT", None)
    if fault:
        env["HBA_FAULT"] = fault
    argv = [sys.executable, str(RUNNER), "search", *_sets(TINY + ["run.num_threads=1", f"run.out_dir={out}"])]
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(out: Path, fault: str | None = None, kill_after: float | None = None) -> tuple[int, str]:
    proc = _spawn(out, fault)
    try:
        text, _ = proc.communicate(timeout=kill_after if kill_after is not None else 600)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        text, _ = proc.communicate()
    return proc.returncode, text


def _metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def _same_run(a: Path, b: Path) -> None:
    """Same schedule, same final model, same metric rows (none repeated)."""
    ea, eb = (json.loads((d / "schedule.json").read_text())["epochs"] for d in (a, b))
    assert [e["epoch"] for e in eb] == [e["epoch"] for e in ea] == [0, 1, 2]
    torch.testing.assert_close(torch.tensor([e["lam"] for e in eb]), torch.tensor([e["lam"] for e in ea]),
                               rtol=0, atol=1e-6)
    ma, mb = (torch.load(d / "model.pt", weights_only=False)["state_dict"] for d in (a, b))
    assert ma.keys() == mb.keys()
    for k in ma:
        torch.testing.assert_close(mb[k], ma[k], rtol=0, atol=1e-6, msg=k)
    ra, rb = _metrics(a), _metrics(b)
    keys = [(r["kind"], r.get("epoch"), r.get("step")) for r in rb]
    assert len(keys) == len(set(keys)), f"repeated metric rows: {keys}"
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(y[k], (int, float)) and not isinstance(y[k], bool):
                assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-7), (k, x, y)
            else:
                assert x[k] == y[k], (k, x, y)


@pytest.mark.slow
def test_killed_many_times_ends_like_an_uninterrupted_run(tmp_path):
    """SIGKILL at start-up, mid-epoch, inside and right after checkpoint writes, inside and right after the
    schedule write, and at random moments; each time the same command again; the end equals a straight run."""
    ref = tmp_path / "ref"
    code, text = _run(ref)
    assert code == 0, text[-3000:]
    run = tmp_path / "killed"
    faults = ["append:log.txt:1",  # start-up: the first message
              "append:metrics.jsonl:1",  # mid-epoch 1, no checkpoint yet
              "write:checkpoint.pt:1",  # half of the first checkpoint written
              "replace:checkpoint.pt:1",  # right after the first checkpoint is in place
              "fsync:checkpoint.pt:1",  # the next checkpoint written, not yet synced
              "append:metrics.jsonl:3",  # mid-epoch, after a resume
              "write:schedule.json:1",  # half of schedule.json written
              "replace:schedule.json:1"]  # schedule.json in place, model.pt not yet
    rng = random.Random(11)
    kills = 0
    for fault in faults:
        code, text = _run(run, fault)
        assert code == -signal.SIGKILL, f"{fault}: the fault did not fire (exit {code})\n{text[-2000:]}"
        kills += 1
        assert not (run / "schedule.json").exists() or fault == "replace:schedule.json:1"
        if fault == "replace:schedule.json:1":  # now start again and kill at random moments
            for _ in range(2):
                code, text = _run(run, kill_after=rng.uniform(1.0, 6.0))
                kills += code == -signal.SIGKILL
    code, text = _run(run)
    assert code == 0, text[-3000:]
    assert kills >= len(faults)
    _same_run(ref, run)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"
    env = json.loads((run / "environment.json").read_text())
    assert env["resumes"] and all("from_epoch" in r for r in env["resumes"])


# ------------------------------------------------------------------------------------------ a full disk

@pytest.mark.parametrize("target, keeps", [
    ("checkpoint.pt:2", "checkpoint.pt keeps its previous content"),  # the second checkpoint cannot be written
    ("metrics.jsonl:3", None),
    ("schedule.json:1", None),
])
def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch, target, keeps):
    for attr, fn in make_faults(f"enospc:{target}").items():
        monkeypatch.setattr(os, attr, fn)
    code, err = _cli(capsys, "search", *_sets(TINY + [f"run.out_dir={tmp_path}"]))
    monkeypatch.undo()
    assert code == 2
    _one_clear_line(err, "No space left on device", "ENOSPC", "free space", "run.out_dir", target.split(":")[0])
    if keeps:
        assert keeps in err
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False) if (tmp_path / "checkpoint.pt").exists() \
        else None
    if target.startswith("checkpoint"):
        assert state is not None and state["epoch"] == 1  # the previous one survives
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]  # no torn row
    assert rows and all("kind" in r for r in rows)
    assert "stopped: OutputError" in (tmp_path / "log.txt").read_text()


def test_full_disk_outside_the_runs_own_writes_is_atomics_line(tmp_path, capsys, monkeypatch):
    """An ENOSPC/EROFS met outside atomic.py (a library's own write) reads as atomic.output_error's line."""
    import errno

    import hba_fast.schedule.export
    import hba_fast.search

    def full(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "events.out"))

    monkeypatch.setattr(hba_fast.search, "search", full)
    code, err = _cli(capsys, "search", *_sets(TINY + [f"run.out_dir={tmp_path / 'run'}"]))
    assert code == 2
    _one_clear_line(err, f"cannot write {tmp_path / 'run' / 'events.out'}", "No space left on device (ENOSPC)",
                    "free space on the disk holding", "set run.out_dir to", "the last checkpoint is kept")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(hba_fast.schedule.export, "export_schedule", read_only)
    code, err = _cli(capsys, "export", "s.json", "--to", "pba", "--out", str(tmp_path / "p.txt"))
    assert code == 2
    _one_clear_line(err, f"cannot write {tmp_path / 'p.txt'}", "(EROFS)", "set --out to a writable folder")
    assert "checkpoint" not in err


@pytest.mark.slow
def test_full_tmpfs_disk(tmp_path, capsys):
    """A real full disk: a tmpfs that holds one checkpoint but not the next one beside it (needs mount rights)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=9m", "tmpfs", str(mnt)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a tmpfs here (needs root); the patched-os.write test covers the same path")
    try:
        code, err = _cli(capsys, "search", *_sets(TINY + [f"run.out_dir={mnt / 'run'}"]))
        assert code == 2
        _one_clear_line(err, "No space left on device", "free space")
        assert torch.load(mnt / "run" / "checkpoint.pt", weights_only=False)["epoch"] >= 1
        assert not [p.name for p in (mnt / "run").iterdir() if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


# ------------------------------------------------------------------------------------------ bad configs

BAD_CONFIGS = [  # (config file text or None for the demo, --set overrides, [what the line must name])
    ("", [], ["is empty", "configs/demo.yaml"]),
    ("# only a comment\n", [], ["is empty", "without a config"]),
    ("- a\n- b\n", [], ["must be a mapping of sections"]),
    ("train: [1, 2]\n", [], ["section 'train' must be a mapping"]),
    ("train:\n  epochs: 3\n   lr: 1\n", [], ["not valid YAML"]),
    ("trian:\n  epochs: 3\n", [], ["unknown config section", "'train'"]),
    (None, ["train.epoch=3"], ["unknown config key", "'epochs'"]),
    (None, ["train.epochs=three"], ["train.epochs must be an integer"]),
    (None, ["train.epochs=0"], ["below its minimum 1"]),
    (None, ["optim.lr=-1"], ["below its minimum"]),
    (None, ["data.batch_size=null"], ["may not be null"]),
    (None, ["train.device=gpu"], ["did you mean 'cuda'"]),
    (None, ["train.amp=yes"], ["YAML reads on/off/yes/no", "auto, bf16, off"]),
    (None, ["train.amp=fp16"], ["train.amp='fp16' is not valid"]),
    (None, ["data.dataset=cifar10"], ["needs data.path", "--set data.path="]),
    (None, ["optim.schedule=step"], ["needs optim.milestones"]),
    (None, ["epochs=3"], ["section.field=value"]),
    (None, ["train.epochs=[1"], ["not valid YAML"]),
    (None, ["model.strategy=none"], ["a search needs hyper-layers", "hba-fast train"]),
    (None, ["run.num_threads=0"], ["below its minimum 1"]),
]


@pytest.mark.parametrize("text, sets, needles", BAD_CONFIGS, ids=[f"config{i}" for i in range(len(BAD_CONFIGS))])
def test_bad_config_is_one_clear_line(tmp_path, capsys, text, sets, needles):
    argv = ["search"]
    if text is not None:
        (tmp_path / "c.yaml").write_text(text)
        argv.append(str(tmp_path / "c.yaml"))
    code, err = _cli(capsys, *argv, *_sets(sets + [f"run.out_dir={tmp_path / 'run'}"]))
    assert code == 2
    _one_clear_line(err, *needles)
    assert not (tmp_path / "run").exists(), "a failed start left a run folder behind"


def test_config_that_is_a_folder_or_binary(tmp_path, capsys):
    code, err = _cli(capsys, "search", str(tmp_path))
    assert code == 2
    _one_clear_line(err, "is a folder", "configs/demo.yaml")
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe\x00\x81binary")
    code, err = _cli(capsys, "search", str(tmp_path / "c.yaml"))
    assert code == 2
    _one_clear_line(err, "c.yaml")


def test_a_run_stopped_in_its_first_log_interval_keeps_its_files(tmp_path, capsys, monkeypatch):
    """Ctrl-C before the first metrics row and checkpoint: training had begun, so the run's files stay."""
    from hba_fast.engine.trainer import Trainer

    def interrupted(self, n_weight, n_hyper):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run_round", interrupted)
    code, err = _cli(capsys, "search", *_sets(TINY + [f"run.out_dir={tmp_path / 'run'}"]))
    assert code == 130 and "interrupted" in err
    run = tmp_path / "run"
    assert (run / "config.yaml").exists() and (run / "environment.json").exists()
    assert not (run / "checkpoint.pt").exists() and not (run / "metrics.jsonl").exists()
    assert (run / "log.txt").read_text().splitlines()[-1].endswith(" interrupted")


# ------------------------------------------------------------------------------------------ bad datasets

def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar10(root: Path, fault: str | None) -> Path:
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        n = 20
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        if name == "data_batch_2":
            if fault == "wrong_keys":
                batch = {b"images": batch[b"data"], b"labels": batch[b"labels"]}
            elif fault == "wrong_shape":
                batch[b"data"] = batch[b"data"][:, :1024]
            elif fault == "wrong_dtype":
                batch[b"data"] = batch[b"data"].astype(np.float32) / 255
            elif fault == "empty":
                batch = {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}
            elif fault == "label_dtype":
                batch[b"labels"] = [f"c{k}" for k in batch[b"labels"]]
            elif fault == "label_count":
                batch[b"labels"] = batch[b"labels"][:-3]
            elif fault == "not_a_dict":
                batch = [batch[b"data"]]
        _pickle(d / name, batch)
    _pickle(d / "batches.meta", {b"label_names": [f"c{k}".encode() for k in range(10)]})
    if fault == "truncated":
        data = (d / "data_batch_2").read_bytes()
        (d / "data_batch_2").write_bytes(data[: len(data) // 2])
    if fault == "missing_file":
        (d / "test_batch").unlink()
    return root


def _cifar100(root: Path, fault: str | None) -> Path:
    rng = np.random.default_rng(0)
    d = root / "cifar-100-python"
    for name, n in (("train", 40), ("test", 10)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": rng.integers(0, 100, n)}
        if name == "train" and fault == "wrong_keys":
            del batch[b"fine_labels"]
        if name == "train" and fault == "empty":
            batch = {b"data": np.zeros((0, 3072), np.uint8), b"fine_labels": []}
        _pickle(d / name, batch)
    if fault == "truncated":
        (d / "test").write_bytes((d / "test").read_bytes()[:100])
    return root


def _svhn(root: Path, fault: str | None) -> Path:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", 40), ("test_32x32.mat", 10)):
        m = {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": rng.integers(1, 11, (n, 1))}
        if name.startswith("train"):
            if fault == "wrong_keys":
                m = {"images": m["X"], "y": m["y"]}
            elif fault == "wrong_shape":
                m["X"] = m["X"][:, :, 0]
            elif fault == "wrong_dtype":
                m["X"] = m["X"].astype(np.float64) / 255
            elif fault == "empty":
                m = {"X": np.zeros((32, 32, 3, 0), np.uint8), "y": np.zeros((0, 1), np.uint8)}
        savemat(root / name, m)
    if fault == "truncated":
        data = (root / "train_32x32.mat").read_bytes()
        (root / "train_32x32.mat").write_bytes(data[: len(data) // 3])
    return root


def _npz(root: Path, fault: str | None) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, 40), "test_images": rng.integers(0, 256, (10, 32, 32, 3),
                                                                                     dtype=np.uint8),
              "test_labels": rng.integers(0, 10, 10)}
    if fault == "wrong_keys":
        arrays["x_train"] = arrays.pop("train_images")
    elif fault == "wrong_shape":
        arrays["train_images"] = rng.integers(0, 256, (40, 32, 32, 4), dtype=np.uint8)
    elif fault == "wrong_dtype":
        arrays["train_images"] = arrays["train_images"].astype(np.float32) / 255
    elif fault == "label_dtype":
        arrays["train_labels"] = arrays["train_labels"] + 0.5
    elif fault == "empty":
        arrays["train_images"], arrays["train_labels"] = np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64)
    elif fault == "val_without_labels":
        arrays["val_images"] = arrays["test_images"]
    path = root / "data.npz"
    np.savez(path, **arrays)
    if fault == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    return path


def _folder(root: Path, fault: str | None) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3)):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for k in range(n):
                if fault == "empty":
                    continue
                img = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
                img.save(d / f"{k}.jpg", quality=90)
                if fault == "truncated":  # every file cut short: nothing left to train on
                    data = (d / f"{k}.jpg").read_bytes()
                    (d / f"{k}.jpg").write_bytes(data[: len(data) // 4])
    if fault == "wrong_keys":  # the wrong layout: no train/ folder
        shutil.rmtree(root / "train")
    if fault == "no_classes":
        shutil.rmtree(root / "train")
        (root / "train").mkdir()
    return root


BAD_DATA = [  # (dataset, fault, [what the line must name])
    ("cifar10", "truncated", ["data_batch_2", "not a readable CIFAR pickle", "re-download"]),
    ("cifar10", "wrong_keys", ["data_batch_2", "lacks ['data']", "re-download"]),
    ("cifar10", "wrong_shape", ["data_batch_2", "expected (N, 3072)"]),
    ("cifar10", "wrong_dtype", ["data_batch_2", "dtype float32", "astype(np.uint8)"]),
    ("cifar10", "empty", ["data_batch_2", "holds no images"]),
    ("cifar10", "label_dtype", ["data_batch_2", "expected integer class indices"]),
    ("cifar10", "label_count", ["data_batch_2", "expected (20,)"]),
    ("cifar10", "not_a_dict", ["data_batch_2", "holds a list"]),
    ("cifar10", "missing_file", ["test_batch", "does not exist", "re-download"]),
    ("cifar100", "truncated", ["cifar-100-python/test", "not a readable CIFAR pickle"]),
    ("cifar100", "wrong_keys", ["lacks ['fine_labels']"]),
    ("cifar100", "empty", ["holds no images"]),
    ("svhn", "truncated", ["train_32x32.mat", "not a readable SVHN", "re-download"]),
    ("svhn", "wrong_keys", ["train_32x32.mat", "lacks ['X']"]),
    ("svhn", "wrong_shape", ["train_32x32.mat", "expected (32, 32, 3, N)"]),
    ("svhn", "wrong_dtype", ["train_32x32.mat", "dtype float64", "astype(np.uint8)"]),
    ("svhn", "empty", ["train_32x32.mat", "holds no images"]),
    ("npz", "truncated", ["data.npz", "not a readable .npz", "np.savez"]),
    ("npz", "wrong_keys", ["lacks the arrays ['train_images']", "np.savez"]),
    ("npz", "wrong_shape", ["train_images", "expected (N, H, W, 3)"]),
    ("npz", "wrong_dtype", ["train_images", "dtype float32", "astype(np.uint8)"]),
    ("npz", "label_dtype", ["train_labels", "expected integer class indices"]),
    ("npz", "empty", ["train_images holds no images"]),
    ("npz", "val_without_labels", ["lacks the arrays ['val_labels']"]),
    ("folder", "truncated", ["none of the", "could be decoded"]),
    ("folder", "wrong_keys", ["train", "does not exist", "train/<class>/*.jpg"]),
    ("folder", "no_classes", ["has no class folders"]),
    ("folder", "empty", ["has class folders but no images"]),
]


@pytest.mark.parametrize("dataset, fault, needles", BAD_DATA, ids=[f"{d}-{f}" for d, f, _ in BAD_DATA])
def test_bad_dataset_is_one_clear_line(tmp_path, capsys, dataset, fault, needles):
    make = {"cifar10": _cifar10, "cifar100": _cifar100, "svhn": _svhn, "npz": _npz, "folder": _folder}[dataset]
    path = make(tmp_path / "data", fault)
    sets = TINY + [f"data.dataset={dataset}", f"data.path={path}", "data.num_val=8", "data.num_train=null",
                   "data.backend=torch", "data.recipe=none", f"run.out_dir={tmp_path / 'run'}"]
    code, err = _cli(capsys, "search", *_sets(sets))
    assert code == 2, err
    _one_clear_line(err, *needles)
    assert not (tmp_path / "run").exists(), "a run that failed on bad data left its folder behind"


# ------------------------------------------------------------------------------------------ bad schedules

def _good_schedule() -> dict:
    from hba_fast.augment.ops import OPS
    from hba_fast.augment.space import SearchSpace
    from hba_fast.engine.hyperparams import Hyperparams
    from hba_fast.schedule.file import FORMAT

    hyper = Hyperparams(SearchSpace(), 1.0, 0.1, "cpu")
    entries = [hyper.end_epoch(e) for e in range(2)]
    space = SearchSpace()
    epochs = [{"epoch": e["epoch"], "lam": e["lam"], "slots": [
        {"slot": j, "op": OPS[space.slot_ops[j]].name, "copy": space.slot_copies[j], "prob": p,
         "magnitude": m if OPS[space.slot_ops[j]].has_magnitude else None}
        for j, (p, m) in enumerate(zip(e["probs"], e["mags"]))]} for e in entries]
    return {"format": FORMAT, "ops": [op.name for op in OPS], "epochs": epochs}


def _bad_schedule(path: Path, fault: str) -> Path:
    doc = _good_schedule()
    slots = doc["epochs"][1]["slots"]
    if fault == "missing":
        return path.parent / "no-such.json"
    if fault == "folder":
        path.mkdir()
        return path
    text = None
    if fault == "empty":
        text = ""
    elif fault == "truncated":
        text = json.dumps(doc)[:500]
    elif fault == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
        return path
    elif fault == "list":
        doc = doc["epochs"]
    elif fault == "format":
        doc["format"] = "pba-schedule"
    elif fault == "no_epochs":
        doc["epochs"] = []
    elif fault == "29_slots":
        del slots[-1]
    elif fault == "prob":
        slots[3]["prob"] = 1.5
    elif fault == "nan":
        slots[4]["magnitude"] = float("nan")
    elif fault == "range":
        slots[4]["magnitude"] = 90.0  # Rotate: [0, 30]
    elif fault == "op":
        slots[4]["op"] = "Rotate90"
    elif fault == "ops_table":
        doc["ops"] = doc["ops"][::-1]
    elif fault == "slot_keys":
        slots[2] = {"p": 0.5}
    path.write_text(json.dumps(doc) if text is None else text)
    return path


BAD_SCHEDULES = [
    ("missing", ["not found", "hba-fast search"]),
    ("folder", ["not found", "schedule.json"]),
    ("empty", ["is empty", "run the search again"]),
    ("truncated", ["not valid JSON", "hba-fast search"]),
    ("binary", ["cannot read", "hba-fast search"]),
    ("list", ["not an hba-fast schedule"]),
    ("format", ["not an hba-fast schedule", "hba-fast-schedule/1"]),
    ("no_epochs", ["not an hba-fast schedule"]),
    ("29_slots", ["30 slots"]),
    ("prob", ["probabilities must lie in [0, 1]"]),
    ("nan", ["finite"]),
    ("range", ["Rotate", "magnitude 90", "[0, 30]"]),
    ("op", ["slot 4 must hold Rotate", "Rotate90"]),
    ("ops_table", ["another op table"]),
    ("slot_keys", ["malformed epoch entries", "'prob'"]),
]


@pytest.mark.parametrize("fault, needles", BAD_SCHEDULES, ids=[f for f, _ in BAD_SCHEDULES])
def test_bad_schedule_is_one_clear_line(tmp_path, capsys, fault, needles):
    path = _bad_schedule(tmp_path / "schedule.json", fault)
    code, err = _cli(capsys, "train", DEMO, "--schedule", str(path), *_sets([f"run.out_dir={tmp_path / 'run'}"]))
    assert code == 2
    _one_clear_line(err, *needles)
    assert not (tmp_path / "run").exists()


def test_good_schedule_and_its_folder_are_accepted(tmp_path):
    from hba_fast.schedule.file import read_schedule

    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(_good_schedule()))
    probs, mags = read_schedule(path).probs, read_schedule(path).mags
    assert probs.shape == mags.shape == (2, 30)
    assert np.array_equal(read_schedule(tmp_path).probs, probs)  # the search's run folder works too


# ------------------------------------------------------------------------------------------ bad checkpoints

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny search (1 epoch): a real checkpoint.pt and config.yaml to damage."""
    out = tmp_path_factory.mktemp("finished")
    assert main(["search", *_sets(TINY + ["train.epochs=1", f"run.out_dir={out}"])]) == 0
    return out


def _damage(folder: Path, fault: str) -> None:
    ckpt = folder / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False)
    if fault == "random_bytes":
        ckpt.write_bytes(os.urandom(4096))
    elif fault == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif fault == "empty":
        ckpt.write_bytes(b"")
    elif fault == "model_pt":
        shutil.copy(folder / "model.pt", ckpt)
    elif fault == "tensor":
        torch.save(torch.zeros(3), ckpt)
    elif fault == "old_format":
        torch.save({**state, "format": 1}, ckpt)
    elif fault == "other_model":  # another model's weights, and no config.yaml to tell by
        from hba_fast.models import build_model

        torch.save({**state, "model": build_model("wrn-40-2", 10, "first_bn").state_dict()}, ckpt)
        (folder / "config.yaml").unlink()
    elif fault == "two_processes":
        torch.save({**state, "ranks": state["ranks"] * 2}, ckpt)


BAD_CHECKPOINTS = [
    ("random_bytes", ["cannot resume from", "damaged or not a checkpoint", "Move it aside"]),
    ("truncated", ["cannot resume from", "damaged or not a checkpoint", "Move it aside"]),
    ("empty", ["cannot resume from", "Move it aside"]),
    ("model_pt", ["not an hba-fast checkpoint", "Move it aside"]),
    ("tensor", ["not an hba-fast checkpoint", "Move it aside"]),
    ("old_format", ["another version of hba-fast", "--set run.out_dir"]),
    ("other_model", ["does not fit this run", "Move it aside"]),
    ("two_processes", ["written by 2 process(es)", "--nproc_per_node=2"]),
]


@pytest.mark.parametrize("fault, needles", BAD_CHECKPOINTS, ids=[f for f, _ in BAD_CHECKPOINTS])
def test_bad_checkpoint_is_one_clear_line(finished_run, tmp_path, capsys, fault, needles):
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    _damage(folder, fault)
    before = sorted(p.name for p in folder.iterdir())
    code, err = _cli(capsys, "search", *_sets(TINY + ["train.epochs=1", f"run.out_dir={folder}"]))
    assert code == 2
    _one_clear_line(err, *needles)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written, nothing lost


def test_following_the_corrupt_checkpoint_advice_works(finished_run, tmp_path, capsys):
    """The advice is not circular: move the checkpoint aside as told, run the same command: a new run starts."""
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    _damage(folder, "truncated")
    argv = ["search", *_sets(TINY + ["train.epochs=1", f"run.out_dir={folder}"])]
    code, err = _cli(capsys, *argv)
    assert code == 2 and f"mv {folder / 'checkpoint.pt'} {folder / 'checkpoint.pt'}.bad" in err
    os.replace(folder / "checkpoint.pt", folder / "checkpoint.pt.bad")
    code, err = _cli(capsys, *argv)
    assert code == 0, err
    assert (folder / "after-1-epochs" / "schedule.json").exists() or (folder / "earlier-run").exists()
    assert (folder / "schedule.json").exists() and (folder / "checkpoint.pt.bad").exists()


def test_outputs_that_cannot_be_set_aside_are_one_clear_line(tmp_path):
    """A fresh start over a finished run's outputs whose earlier-run/ cannot be made: OutputError, nothing lost."""
    from hba_fast.errors import OutputError
    from hba_fast.run.folder import RunFolder
    from hba_fast.run.log import RunLog

    (tmp_path / "schedule.json").write_text("{}")
    (tmp_path / "earlier-run").write_text("a file where the folder would go")
    with pytest.raises(OutputError, match="cannot write .*earlier-run.*File exists.*run.out_dir"):
        RunFolder(RunLog(tmp_path, progress=False)).start_afresh({"train": {"epochs": 1}}, {})
    assert (tmp_path / "schedule.json").read_text() == "{}" and not (tmp_path / "config.yaml").exists()


def test_log_lines_are_fsynced_at_checkpoints_not_each(tmp_path, monkeypatch):
    """metrics.jsonl and log.txt lines are not fsynced one by one; a checkpoint's state_dict fsyncs both (so the
    length it records is on disk), and the final row is fsynced at once."""
    from hba_fast.run.log import RunLog

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    tmp_path = tmp_path.resolve()  # as /proc names the files
    log = RunLog(tmp_path, progress=False)
    for step in range(5):
        log.metrics({"kind": "train", "step": step})
        log.info(f"line {step}")
    assert not [f for f in synced if f.endswith((".jsonl", ".txt"))]
    state = log.state_dict()
    assert state["metrics_bytes"] == (tmp_path / "metrics.jsonl").stat().st_size
    assert {str(tmp_path / "metrics.jsonl"), str(tmp_path / "log.txt")} <= set(synced)
    synced.clear()
    log.metrics({"kind": "final", "test_error": 0.5})
    assert str(tmp_path / "metrics.jsonl") in synced


# ------------------------------------------------------------------------------------------ leftovers

def test_orphans_of_killed_writes_are_removed(finished_run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    for name in ("checkpoint.pt.ab3d_x9z.tmp", "schedule.json.hba0123abcd.tmp", "notes.tmp"):
        (folder / name).write_bytes(b"partial")
    code, err = _cli(capsys, "search", *_sets(TINY + ["train.epochs=1", f"run.out_dir={folder}"]))
    assert code == 0, err
    left = sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))
    assert left == ["notes.tmp"]  # only what our writes leave is ours to remove
    assert "removed 2 temporary file(s)" in (folder / "log.txt").read_text()
