"""Nothing hba-fast reads runs code (hba_fast/safe_load.py). Each reader gets a file carrying a real payload (a pickled
`os.system` call that would create a marker file) and must refuse it with one line naming the file, the marker never
appearing: a run folder's checkpoint.pt, model.checkpoint weights (built-in and torchvision models), CIFAR-10 and
CIFAR-100 pickles, .npz arrays, SVHN .mat files, bench/train_test_gap.py's model.pt. Each payload is first shown to
be live (plain pickle runs it). The files hba-fast writes load with weights_only=True: checkpoints of a search (torch
and DALI backends), of `hba-fast train` with every --augment arm and a schedule, and of a comparison; real CIFAR-10
batches (both numpy module names) load through the allow-list."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hba_fast.cli import main
from hba_fast.config import load_config
from hba_fast.data.datasets import load_splits
from hba_fast.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.name=wrn-16-2", "data.num_train=64", "data.num_val=32", "data.num_test=32", "data.batch_size=16",
        "train.epochs=1", "train.steps_per_epoch=2", "run.progress=false", "run.num_threads=1"]


def _sets(items):
    return [x for item in items for x in ("--set", item)]


class Payload:
    """Unpickling this runs `touch <marker>` through os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "a payload ran"


def _live(data: bytes, marker: Path) -> None:
    """The payload is real: plain pickle runs it (then the marker is removed again)."""
    pickle.loads(data)
    assert marker.exists()
    marker.unlink()


def _one_line(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hba-fast: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------ torch files

@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    assert main(["search", *_sets(TINY + [f"run.out_dir={out}"])]) == 0
    return out


def test_checkpoint_with_a_payload_is_refused_unread(finished_search, tmp_path, marker, capsys):
    folder = tmp_path / "run"
    shutil.copytree(finished_search, folder)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    buf = io.BytesIO()
    torch.save({**state, "format": state["format"], "epoch": 0, "extra": Payload(marker)}, buf)
    (folder / "checkpoint.pt").write_bytes(buf.getvalue())
    torch.load(folder / "checkpoint.pt", weights_only=False)  # what the old reader did: the payload runs
    assert marker.exists()
    marker.unlink()
    before = sorted(p.name for p in folder.iterdir())
    code = main(["search", *_sets(TINY + ["train.epochs=2", f"run.out_dir={folder}"])])
    err = capsys.readouterr().err
    assert code == 2
    _one_line(err, str(folder / "checkpoint.pt"), "posix.system", "nothing in it ran")
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.parametrize("model", ["wrn-16-2", "torchvision:resnet18"])
def test_model_checkpoint_with_a_payload_is_refused(tmp_path, marker, model):
    if model.startswith("torchvision"):
        pytest.importorskip("torchvision")
    from hba_fast.models import build_model

    file = tmp_path / "weights.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(1)}, "note": Payload(marker)}, file)
    with pytest.raises(ConfigError, match="weights.pth holds a reference to posix.system") as e:
        build_model(model, 10, "first_bn", checkpoint=str(file))
    assert "\n" not in str(e.value)


def test_train_test_gap_refuses_a_payload(tmp_path, marker):
    run = tmp_path / "cmp" / "baseline" / "seed0"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"test_error": 0.5}))
    (run / "config.yaml").write_text("data: {dataset: shapes10, num_train: 8, num_val: 8, num_test: 8}\n")
    torch.save({"model": "wrn-16-2", "num_classes": 10, "state_dict": {}, "x": Payload(marker)}, run / "model.pt")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "train_test_gap.py"), str(tmp_path / "cmp")],
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(run / "model.pt") in lines[0] and "posix.system" in lines[0], done.stderr


# ------------------------------------------------------------------------------------------ datasets

def _cifar10(root: Path, batch_1) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, 20).tolist()}
        with open(d / name, "wb") as f:
            pickle.dump(batch_1 if name == "data_batch_1" and batch_1 is not None else batch, f, protocol=2)
    return root


def _data_cfg(dataset: str, path: Path):
    return load_config(None, [f"data.dataset={dataset}", f"data.path={path}", "data.num_val=8",
                              "data.num_train=null"]).data


@pytest.mark.parametrize("where", ["a value", "the whole file", "a label"])
def test_cifar10_pickle_with_a_payload_is_refused(tmp_path, marker, where):
    good = {b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 20}
    batch = {"a value": {**good, b"batch_label": Payload(marker)}, "the whole file": Payload(marker),
             "a label": {**good, b"labels": [Payload(marker)] * 20}}[where]
    _live(pickle.dumps(batch, protocol=2), marker)
    root = _cifar10(tmp_path / "c10", batch)
    with pytest.raises(DataError) as e:
        load_splits(_data_cfg("cifar10", root))
    assert str(root / "cifar-10-batches-py" / "data_batch_1") in str(e.value)
    assert "refused" in str(e.value) and "posix.system" in str(e.value) and "\n" not in str(e.value)


def test_cifar100_pickle_with_a_payload_is_refused(tmp_path, marker):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for split in ("train", "test"):
        batch = {b"data": np.zeros((20, 3072), np.uint8), b"fine_labels": [1] * 20}
        if split == "test":
            batch[b"coarse_labels"] = Payload(marker)
        with open(d / split, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with pytest.raises(DataError, match="cifar-100-python/test is refused: it holds a reference to posix.system"):
        load_splits(_data_cfg("cifar100", tmp_path))


def test_object_arrays_in_a_cifar_pickle_are_refused(tmp_path):
    from hba_fast.safe_load import RefusedContent, load_cifar_pickle

    arr = np.array([b"x", 1], dtype=object)
    with pytest.raises(RefusedContent, match="array of Python objects"):
        load_cifar_pickle(pickle.dumps({b"data": arr}, protocol=2))


def test_real_cifar10_batches_load_through_the_allow_list():
    """The rebuilt batches (numpy 2's module name) and the original files' form (numpy 1's: the same pickle with
    numpy.core.multiarray) give the arrays plain pickle gives."""
    from hba_fast.safe_load import load_cifar_pickle

    folder = Path("/work/data/cifar10/cifar-10-batches-py")
    if not folder.exists():
        pytest.skip(f"{folder} (real CIFAR-10 batches) is not on this machine")
    raw = (folder / "data_batch_1").read_bytes()
    assert b"cnumpy._core.multiarray\n_reconstruct\n" in raw  # GLOBAL of a protocol-2 pickle
    want = pickle.loads(raw, encoding="bytes")
    for data in (raw, raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")):
        got = load_cifar_pickle(data)
        assert got.keys() == want.keys()
        np.testing.assert_array_equal(got[b"data"], want[b"data"])
        assert got[b"labels"] == want[b"labels"] and got[b"filenames"] == want[b"filenames"]
    meta = load_cifar_pickle((folder / "batches.meta").read_bytes())
    assert meta[b"label_names"][:2] == [b"airplane", b"automobile"]


def test_npz_with_a_payload_is_refused(tmp_path, marker):
    images = np.zeros((20, 32, 32, 3), np.uint8)
    labels = np.array([Payload(marker)] * 20, dtype=object)
    np.savez(tmp_path / "data.npz", train_images=images, train_labels=labels, test_images=images,
             test_labels=np.zeros(20, np.int64))
    np.load(tmp_path / "data.npz", allow_pickle=True)["train_labels"]  # what a pickle-allowing reader runs
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DataError, match="data.npz is not a readable .npz file") as e:
        load_splits(_data_cfg("npz", tmp_path / "data.npz"))
    assert "allow_pickle=False" in str(e.value)


@pytest.mark.parametrize("form", ["a pickle named .mat", "a cell array"])
def test_svhn_mat_with_a_payload_is_refused(tmp_path, marker, form):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        m = {"X": rng.integers(0, 256, (32, 32, 3, 10), dtype=np.uint8), "y": rng.integers(1, 11, (10, 1))}
        savemat(tmp_path / name, m)
    payload = pickle.dumps(Payload(marker))
    _live(payload, marker)
    if form == "a pickle named .mat":
        (tmp_path / "train_32x32.mat").write_bytes(payload)
        needle = "train_32x32.mat is not a readable SVHN .mat file"
    else:
        cell = np.empty((1, 2), dtype=object)
        cell[0, 0], cell[0, 1] = np.frombuffer(payload, np.uint8), "text"
        savemat(tmp_path / "train_32x32.mat", {**m, "extra": cell})
        needle = "train_32x32.mat is refused: ['extra'] is an array of objects"
    with pytest.raises(DataError, match=needle.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_splits(_data_cfg("svhn", tmp_path))


# ------------------------------------------------------------------------------------------ what hba-fast writes

def _loads_weights_only(path: Path) -> dict:
    state = torch.load(path, weights_only=True)
    assert isinstance(state, dict) and state["format"] == 2
    return state


@pytest.mark.slow
def test_every_checkpoint_hba_fast_writes_loads_with_weights_only(finished_search, tmp_path):
    _loads_weights_only(finished_search / "checkpoint.pt")
    torch.load(finished_search / "model.pt", weights_only=True)
    cfg = str(ROOT / "configs" / "demo.yaml")
    from hba_fast.augment.arms import AUGMENTS

    for arm in [*AUGMENTS, "randaugment:2,9"]:
        assert main(["train", cfg, "--augment", arm, *_sets(TINY + [f"run.out_dir={tmp_path / 'arms'}"])]) == 0
    assert main(["train", cfg, "--schedule", str(finished_search / "schedule.json"),
                 *_sets(TINY + [f"run.out_dir={tmp_path / 'arms'}"])]) == 0
    folders = sorted((tmp_path / "arms").iterdir())
    assert len(folders) == len(AUGMENTS) + 2
    for folder in folders:
        _loads_weights_only(folder / "checkpoint.pt")
        torch.load(folder / "model.pt", weights_only=True)
    assert main(["compare", cfg, "--arms", f"trivialaugment,schedule:{finished_search / 'schedule.json'}",
                 "--seeds", "1", *_sets(TINY + [f"run.out_dir={tmp_path / 'cmp'}"])]) == 0
    pairs = sorted((tmp_path / "cmp").glob("*/seed0/checkpoint.pt"))
    assert len(pairs) == 2 and all(_loads_weights_only(p) for p in pairs)


@pytest.mark.slow
def test_dali_checkpoints_load_with_weights_only(tmp_path):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    assert main(["search", *_sets(TINY + ["data.backend=dali", "data.num_threads=1",
                                          f"run.out_dir={tmp_path / 's'}"])]) == 0
    state = _loads_weights_only(tmp_path / "s" / "checkpoint.pt")
    pipe = state["ranks"][0]["pipeline"]
    assert isinstance(pipe["stream"], bytes) and all(isinstance(t, torch.Tensor) for p in pipe["pending"]
                                                     for t in p.values())
    assert main(["train", str(ROOT / "configs" / "demo.yaml"), "--augment", "autoaugment",
                 *_sets(TINY + ["data.backend=dali", "data.num_threads=1", f"run.out_dir={tmp_path / 't'}"])]) == 0
    _loads_weights_only(tmp_path / "t" / "train-autoaugment" / "checkpoint.pt")
