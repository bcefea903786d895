"""Dataset readers (on files in the real formats), reduced splits, clear errors, and the shapes10 generator."""
from __future__ import annotations

import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from hba_fast.data import shapes10
from hba_fast.data.datasets import decode_files, load_splits, with_images
from hba_fast.errors import DataError


def make_cfg(**kw):
    base = {"dataset": "npz", "path": None, "image_size": 32, "num_train": None, "num_val": 0, "num_test": None,
            "split_seed": 0, "recipe": "auto", "backend": "torch", "batch_size": 8, "num_threads": 2,
            "on_corrupt": "skip", "device_resident": True, "cutout": True}
    return types.SimpleNamespace(**{**base, **kw})


# ---------------------------------------------------------------- CIFAR-10 (real pixels)

@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory):
    """All of CIFAR-10 in the pickle layout, rebuilt once per session by ../shared/data/build_cifar10.py."""
    script = SHARED_DATA / "build_cifar10.py"
    if not script.exists():
        pytest.skip(f"{script} not found (../shared/data is beside the checkout); cannot rebuild CIFAR-10")
    out = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True)
    return out


def test_cifar10_reader_full_layout_and_exact_pixels(cifar10_root, cifar_mini):
    s = load_splits(make_cfg(dataset="cifar10", path=str(cifar10_root), num_train=None, num_val=0))
    assert s.train.images.shape == (50000, 3, 32, 32) and s.train.images.dtype == torch.uint8
    assert s.test.images.shape == (10000, 3, 32, 32) and s.train.labels.dtype == torch.int64
    assert s.train.labels.bincount().tolist() == [5000] * 10 and s.test.labels.bincount().tolist() == [1000] * 10
    assert s.num_classes == 10 and s.class_names[:2] == ["airplane", "automobile"]
    assert s.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    # Images with exact pixels (exact_mask) must equal the real CIFAR-10 images of cifar10_mini.
    exact = np.load(cifar10_root / "cifar-10-batches-py" / "exact_mask.npz")["train"]
    idx = cifar_mini["train_indices"]
    keep = exact[idx]
    assert keep.sum() > 100
    ours = s.train.images[torch.from_numpy(idx[keep].astype(np.int64))].numpy()
    np.testing.assert_array_equal(ours, cifar_mini["train_images"][keep].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(s.train.labels[torch.from_numpy(idx.astype(np.int64))].numpy(),
                                  cifar_mini["train_labels"])


def test_cifar10_reduced_splits_paper_sizes(cifar10_root):
    inner = cifar10_root / "cifar-10-batches-py"  # the inner folder works as well as its parent
    s = load_splits(make_cfg(dataset="cifar10", path=str(inner), num_train=4000, num_val=10000, num_test=500))
    assert (len(s.train), len(s.val), len(s.test)) == (4000, 10000, 500)
    assert s.train.images.shape == (4000, 3, 32, 32)


# ---------------------------------------------------------------- CIFAR-100, SVHN, npz in their real formats

def test_cifar100_reader(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    data = {}
    for split, n in (("train", 30), ("test", 10)):
        data[split] = (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 100, n).tolist())
        with open(d / split, "wb") as f:
            pickle.dump({b"data": data[split][0], b"fine_labels": data[split][1],
                         b"coarse_labels": [0] * n}, f, protocol=2)
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{k}".encode() for k in range(100)]}, f, protocol=2)
    s = load_splits(make_cfg(dataset="cifar100", path=str(tmp_path)))
    assert s.num_classes == 100 and s.class_names[7] == "c7"
    np.testing.assert_array_equal(s.test.images.numpy(), data["test"][0].reshape(10, 3, 32, 32))
    assert s.test.labels.tolist() == data["test"][1]
    assert s.mean == pytest.approx((0.5071, 0.4865, 0.4409))


def test_svhn_reader(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    mats = {}
    for name, n in (("train_32x32.mat", 20), ("test_32x32.mat", 6)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)  # SVHN labels 1..10, 10 = digit 0
        y[0] = 10
        savemat(tmp_path / name, {"X": x, "y": y})
        mats[name] = (x, y)
    s = load_splits(make_cfg(dataset="svhn", path=str(tmp_path)))
    x, y = mats["test_32x32.mat"]
    np.testing.assert_array_equal(s.test.images[2].numpy(), x[:, :, :, 2].transpose(2, 0, 1))
    assert s.test.labels[0] == 0 and s.test.labels.tolist() == [int(v) % 10 for v in y[:, 0]]
    assert len(s.train) == 20 and s.num_classes == 10


def _indexed_images(n, offset=0, size=8):
    """HWC uint8 images whose first pixel encodes their index (so a split says which images it holds)."""
    x = np.random.default_rng(offset).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = (np.arange(n) + offset) % 256, (np.arange(n) + offset) // 256
    return x


def _ids(imageset) -> set[int]:
    im = imageset.images.numpy()
    return set((im[:, 0, 0, 0].astype(int) + 256 * im[:, 1, 0, 0].astype(int)).tolist())


def test_npz_hwc_chw_and_val_arrays(tmp_path):
    train, test = _indexed_images(50), _indexed_images(7, 1000)
    labels = np.arange(50) % 4
    np.savez(tmp_path / "hwc.npz", train_images=train, train_labels=labels, test_images=test,
             test_labels=np.arange(7) % 4)
    np.savez(tmp_path / "chw.npz", train_images=train.transpose(0, 3, 1, 2), train_labels=labels,
             test_images=test.transpose(0, 3, 1, 2), test_labels=np.arange(7) % 4,
             val_images=_indexed_images(9, 2000).transpose(0, 3, 1, 2), val_labels=np.arange(9) % 4)
    a = load_splits(make_cfg(path=str(tmp_path / "hwc.npz"), image_size=8, num_train=30, num_val=10))
    assert (len(a.train), len(a.val), len(a.test)) == (30, 10, 7) and a.num_classes == 4
    assert a.train.images.shape == (30, 3, 8, 8)
    assert _ids(a.train) | _ids(a.val) <= set(range(50)) and _ids(a.test) == set(range(1000, 1007))
    ref = a.train.images.numpy().astype(np.float64) / 255  # mean / std measured on the training split
    np.testing.assert_allclose(a.mean, ref.mean((0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(a.std, ref.std((0, 2, 3)), atol=1e-9)
    b = load_splits(make_cfg(path=str(tmp_path / "chw.npz"), image_size=8, num_train=None, num_val=5))
    assert len(b.train) == 50 and _ids(b.train) == set(range(50))  # the file's val split: nothing held out
    assert len(b.val) == 5 and _ids(b.val) <= set(range(2000, 2009))


def test_splits_deterministic_and_disjoint(tmp_path):
    np.savez(tmp_path / "d.npz", train_images=_indexed_images(300), train_labels=np.arange(300) % 10,
             test_images=_indexed_images(40, 500), test_labels=np.arange(40) % 10)
    cfg = make_cfg(path=str(tmp_path / "d.npz"), image_size=8, num_train=100, num_val=50, num_test=20)
    a, b = load_splits(cfg), load_splits(cfg)
    assert _ids(a.train) == _ids(b.train) and _ids(a.val) == _ids(b.val) and _ids(a.test) == _ids(b.test)
    assert len(_ids(a.train)) == 100 and len(_ids(a.val)) == 50 and not _ids(a.train) & _ids(a.val)
    assert len(_ids(a.test)) == 20 and _ids(a.test) <= set(range(500, 540))
    c = load_splits(make_cfg(path=str(tmp_path / "d.npz"), image_size=8, num_train=100, num_val=50, split_seed=1))
    assert _ids(c.val) != _ids(a.val)
    # The same seed holds out the same val set whatever num_train is (val first, then the first num_train).
    d = load_splits(make_cfg(path=str(tmp_path / "d.npz"), image_size=8, num_train=30, num_val=50))
    assert _ids(d.val) == _ids(a.val)


def test_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        load_splits(make_cfg(dataset="cifar10", path=str(tmp_path / "nope")))
    assert str(tmp_path / "nope") in str(e.value)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_splits(make_cfg(dataset="cifar10", path=str(tmp_path)))
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_splits(make_cfg(dataset="svhn", path=str(tmp_path)))
    with pytest.raises(DataError, match="train/<class>"):
        load_splits(make_cfg(dataset="folder", path=str(tmp_path)))
    np.savez(tmp_path / "small.npz", train_images=_indexed_images(20), train_labels=np.zeros(20, int),
             test_images=_indexed_images(5), test_labels=np.zeros(5, int))
    with pytest.raises(DataError, match=r"has 20 images.*num_val=10 \+ num_train=4000"):
        load_splits(make_cfg(path=str(tmp_path / "small.npz"), image_size=8, num_train=4000, num_val=10))
    with pytest.raises(DataError, match="image_size=8"):
        load_splits(make_cfg(path=str(tmp_path / "small.npz"), image_size=32))
    np.savez(tmp_path / "bad.npz", images=_indexed_images(3))
    with pytest.raises(DataError, match="train_labels"):
        load_splits(make_cfg(path=str(tmp_path / "bad.npz"), image_size=8))


# ---------------------------------------------------------------- class folders of JPEGs

def _write_tree(root, colours=((255, 0, 0), (0, 255, 0), (0, 0, 255)), per_class=3):
    from PIL import Image

    for split in ("train", "val"):
        for k, c in enumerate(colours):
            d = root / split / f"class_{k}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 30), c).save(d / f"{i}.jpg", quality=95)
    (root / "train" / "class_1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (root / "train" / "class_2" / "0.jpg").read_bytes()
    (root / "train" / "class_2" / "truncated.jpg").write_bytes(good[: len(good) // 2])


def test_folder_reader_and_corrupt_files(tmp_path, caplog, monkeypatch):
    _write_tree(tmp_path)
    cfg = make_cfg(dataset="folder", path=str(tmp_path), image_size=16, num_val=2)
    s = load_splits(cfg)
    assert s.class_names == ["class_0", "class_1", "class_2"] and s.num_classes == 3
    assert s.train.images is None and len(s.train) + len(s.val) == 11 and len(s.test) == 9
    assert all(f.endswith((".jpg",)) for f in s.train.files)
    full = with_images(s, 16, "skip")
    assert full.train.num_skipped + full.val.num_skipped == 2 and "skipped" in caplog.text
    assert len(full.train) + len(full.val) == 9
    assert full.train.images.shape[1:] == (3, 16, 16)
    # Decoded colours match the class (JPEG error aside), so labels stayed aligned with the kept files.
    colours = torch.tensor([(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    err = (full.train.images.float().mean((2, 3)) - colours[full.train.labels]).abs().max()
    assert err < 8
    two = load_splits(make_cfg(dataset="folder", path=str(tmp_path), image_size=16, max_classes=2))
    assert two.class_names == ["class_0", "class_1"] and len(two.test) == 6 and int(two.train.labels.max()) == 1
    bad = [f for f in s.train.files + s.val.files if "broken" in f or "truncated" in f]
    with pytest.raises(DataError, match="cannot decode image .*(broken|truncated).jpg"):
        decode_files(s.train if any(f in s.train.files for f in bad) else s.val, 16, "error")
    monkeypatch.setattr("hba_fast.data.datasets.MAX_DECODED_BYTES", 1000)
    with pytest.raises(DataError, match="data.backend=dali"):
        with_images(s, 16)


# ---------------------------------------------------------------- shapes10

def test_shapes10_deterministic_balanced_and_prefix_stable():
    a, la = shapes10.make_shapes10(100, 32, seed=0)
    b, lb = shapes10.make_shapes10(100, 32, seed=0)
    assert a.shape == (100, 3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b) and torch.equal(la, lb)
    assert la.bincount().tolist() == [10] * 10
    c, _ = shapes10.make_shapes10(40, 32, seed=1)
    assert not torch.equal(a[:40], c)
    t, _ = shapes10.make_shapes10(40, 32, seed=0, split="test")
    assert not torch.equal(a[:40], t)
    assert torch.equal(shapes10.make_shapes10(37, 32, seed=0)[0], a[:37])  # a prefix of a larger set
    wide, _ = shapes10.make_shapes10(3, (40, 24))
    assert wide.shape == (3, 3, 24, 40)
    assert a.float().std() > 30  # real content, not a constant


def test_shapes10_load_splits():
    s = load_splits(make_cfg(dataset="shapes10", num_train=60, num_val=20, num_test=30))
    assert (len(s.train), len(s.val), len(s.test)) == (60, 20, 30) and s.class_names == list(shapes10.CLASS_NAMES)
    ref = s.train.images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(s.mean, ref.mean((0, 2, 3)), atol=1e-9)


def test_shapes10_jpeg_tree_round_trip(tmp_path):
    shapes10.main([str(tmp_path), "--size", "40x30", "--per-class", "2", "--val-per-class", "1"])
    files = sorted(tmp_path.rglob("*.jpg"))
    assert len(files) == 30
    s = load_splits(make_cfg(dataset="folder", path=str(tmp_path), image_size=30, num_val=0))
    assert s.class_names == shapes10.class_dir_names() and len(s.train) == 20 and len(s.test) == 10
    decoded = decode_files(s.train, 30)
    assert decoded.labels.tolist() == [k for k in range(10) for _ in range(2)]
    mem, mem_labels = shapes10.make_shapes10(20, (40, 30))
    first = decoded.files.index(str(tmp_path / "train" / "3_cross" / "00003.jpg"))
    assert mem_labels[3] == 3
    # The tree's image (centre-cropped to 30x30 when decoded) equals the in-memory one up to JPEG error.
    diff = (decoded.images[first].float() - mem[3, :, :, 5:35].float()).abs().mean()
    assert diff < 8
