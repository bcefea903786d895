"""Dataset readers and the reduced splits: `load_splits(data_cfg) -> Splits(train, val, test, ...)`.

Formats (`data_cfg.dataset`, `data_cfg.path`):
- `cifar10`: the python pickles, `cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`;
  `cifar100`: `cifar-100-python/{train,test,meta}` with the fine labels. `path` is the folder that holds
  the pickles or its parent.
- `svhn`: `train_32x32.mat` and `test_32x32.mat` (scipy.io.loadmat; X (32, 32, 3, N), y (N, 1), label 10
  means digit 0) in the folder `path`; object arrays (MATLAB cells, structs) are refused.
- `npz`: one `.npz` file with `train_images`, `train_labels`, `test_images`, `test_labels` and optionally
  `val_images`, `val_labels` and `label_names`. Images are uint8, (N, H, W, 3) "HWC" or (N, 3, H, W) "CHW"
  (told apart by where the 3 is; (N, H, W) grey is repeated to 3 channels); labels integers in [0, classes).
  When the file has a val split it is the hyper-step split (reduced to num_val by a seeded draw) and
  nothing is held out of train.
- `folder`: class folders of images, `path/train/<class>/*.jpg` and `path/val/<class>/...` or
  `path/test/<class>/...` (the test split; `val` is used when there is no `test`). Labels follow the sorted
  class folder names. These splits hold `files` (for DALI); `decode_files` decodes them with Pillow for the
  torch path (shorter side resized to image_size, centre crop), skipping-and-counting or stopping at
  undecodable files per `data_cfg.on_corrupt`.
- `shapes10`: generated (hba_fast.data.shapes10): num_val + num_train training images (num_val + 10,000 when
  num_train is None) and num_test test images (2,000 when None), at image_size.
`data_cfg.max_classes` (optional) keeps the first N classes (label < N), e.g. 120 ImageNet classes.

Reduced splits (paper 4.2, ARCHITECTURE "Datasets"): perm = randperm(N_train, seed=split_seed);
val = perm[:num_val]; train = perm[num_val:][:num_train]; each sorted. num_test caps the test split by a
seeded draw. mean / std are per channel in units of pixel / 255: the usual constants for CIFAR-10/100 and
SVHN, measured on the training split otherwise (folder datasets: on up to 256 decoded training files).

Nothing a reader reads runs code (hba_fast/safe_load.py): CIFAR pickles go through an unpickler that accepts only
what the real files hold, .npz files are read with allow_pickle=False and SVHN's .mat files without object arrays;
a file with anything else is refused with one line naming it. Every reader checks what it reads (a readable
file, the expected keys, shapes and dtypes, at least one image) and raises a DataError that names the file, what is
wrong and the fix; pixels are never cast silently (floats in [0, 1] would become black images).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import CorruptImageError, DataError
from ..safe_load import RefusedContent, load_cifar_pickle, object_arrays

log = logging.getLogger(__name__)

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SHAPES10_DEFAULT_TRAIN = 10_000  # training images made (beyond num_val) when num_train is None
SHAPES10_DEFAULT_TEST = 2_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MAX_DECODED_BYTES = 48 << 30  # the torch path decodes folder datasets in memory up to this size
_STATS_SAMPLE = 256  # training files decoded to measure mean / std of a folder dataset


@dataclass
class ImageSet:
    images: torch.Tensor | None  # (N, 3, H, W) uint8, or None for file lists not yet decoded
    labels: torch.Tensor  # (N,) int64
    files: list[str] | None = None  # image files (folder datasets), aligned with labels
    num_skipped: int = 0  # undecodable files dropped by `decode_files`

    def __len__(self) -> int:
        return int(self.labels.numel())

    def subset(self, idx: torch.Tensor) -> ImageSet:
        """The images at positions idx (int64 (K,))."""
        return ImageSet(None if self.images is None else self.images[idx], self.labels[idx],
                        None if self.files is None else [self.files[i] for i in idx.tolist()], self.num_skipped)


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int
    mean: tuple[float, float, float]  # per channel, pixel / 255
    std: tuple[float, float, float]
    class_names: list[str]


# ---- readers: each returns (train ImageSet, test ImageSet, val ImageSet | None, class names, stats | None) ----

def _need(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise DataError(f"{path} does not exist: expected {what}; {fix}")
    return path


def _find_inner(root: Path, inner: str, marker: str, dataset: str) -> Path:
    """Accept the folder holding the pickles (`marker` inside) or its parent (which holds `inner`)."""
    _need(root, f"the {dataset} folder", "set data.path to the folder that holds " + inner)
    for cand in (root, root / inner):
        if (cand / marker).exists():
            return cand
    raise DataError(f"{root} has no {dataset} pickles: expected {root / inner / marker} (or {root / marker}); "
                    f"set data.path to the folder holding {inner}/ (download the python version of {dataset})")


_REFETCH = "re-download the python version of the dataset (or rebuild it)"


def _unpickle(path: Path) -> dict:
    """A CIFAR pickle, read with the allow-list of hba_fast/safe_load.py: anything but the arrays, lists, numbers
    and strings the real files hold is refused unread."""
    try:
        with open(path, "rb") as f:
            d = load_cifar_pickle(f)
    except RefusedContent as e:
        raise DataError(f"{path} is refused: it holds {e}, which CIFAR pickles never hold (nothing of it was run); "
                        f"{_REFETCH}") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise DataError(f"{path} is not a readable CIFAR pickle ({type(e).__name__}: {e}); {_REFETCH}") from None
    if not isinstance(d, dict):
        raise DataError(f"{path} holds a {type(d).__name__}, not a CIFAR batch (a dict with 'data' and labels); "
                        f"{_REFETCH}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _names(raw) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in raw]


def _check_pixels(x: np.ndarray, what: str) -> np.ndarray:
    """x as uint8: uint8 already, or integers in [0, 255]; anything else (floats in [0, 1], int16 beyond 255, ...)
    is an error, never a silent cast that would turn images black."""
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) and (x.size == 0 or (int(x.min()) >= 0 and int(x.max()) <= 255)):
        return x.astype(np.uint8)
    raise DataError(f"{what} has dtype {x.dtype}, expected uint8 pixels in [0, 255]; convert it with "
                    f"np.clip(x, 0, 255).astype(np.uint8) (x * 255 first for images in [0, 1])")


def _check_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    """y as int64 (N,): integers (or (N, 1)), one per image."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{what} has shape {y.shape}, expected ({n},): one integer label per image")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise DataError(f"{what} has dtype {y.dtype}, expected integer class indices; convert it with "
                        f"y.astype(np.int64) if they are whole numbers")
    return y.astype(np.int64)


def _cifar_set(batches: list[tuple[Path, dict]], label_key: str) -> ImageSet:
    datas, labels = [], []
    for path, b in batches:
        missing = sorted({"data", label_key} - set(b))
        if missing:
            raise DataError(f"{path} lacks {missing} (it has {sorted(map(str, b))[:8]}), so it is not a CIFAR python "
                            f"batch; {_REFETCH}")
        data = np.asarray(b["data"])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, 3072) (N images of 3 x 32 x 32 "
                            f"bytes); {_REFETCH}")
        if len(data) == 0:
            raise DataError(f"{path} holds no images ('data' has shape {data.shape}); {_REFETCH}")
        datas.append(_check_pixels(data, f"{path}: 'data'"))
        labels.append(_check_labels(np.asarray(b[label_key]), len(data), f"{path}: {label_key!r}"))
    data = np.concatenate(datas)
    return ImageSet(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(np.concatenate(labels)))


def _meta_names(file: Path, key: str, count: int) -> list[str]:
    """Class names from a CIFAR meta pickle; numbers when it is absent or has no such list."""
    if file.exists():
        raw = _unpickle(file).get(key)
        if raw is not None and len(raw) == count:
            return _names(raw)
        log.warning("%s has no %s list of %d names; classes are named by number", file, key, count)
    return [str(k) for k in range(count)]


def _read_cifar10(path: Path):
    d = _find_inner(path, "cifar-10-batches-py", "data_batch_1", "CIFAR-10")
    train = [(f, _unpickle(f)) for f in (_need(d / f"data_batch_{k}", "a CIFAR-10 training batch",
                                               "re-download CIFAR-10") for k in range(1, 6))]
    test = [(d / "test_batch", _unpickle(_need(d / "test_batch", "the CIFAR-10 test batch", "re-download CIFAR-10")))]
    names = _meta_names(d / "batches.meta", "label_names", 10)
    return _cifar_set(train, "labels"), _cifar_set(test, "labels"), None, names, CIFAR10_STATS


def _read_cifar100(path: Path):
    d = _find_inner(path, "cifar-100-python", "train", "CIFAR-100")
    train = [(d / "train", _unpickle(d / "train"))]
    test = [(d / "test", _unpickle(_need(d / "test", "the CIFAR-100 test pickle", "re-download CIFAR-100")))]
    names = _meta_names(d / "meta", "fine_label_names", 100)
    return _cifar_set(train, "fine_labels"), _cifar_set(test, "fine_labels"), None, names, CIFAR100_STATS


def _read_svhn(path: Path):
    from scipy.io import loadmat

    root = path.parent if path.is_file() else path
    sets = []
    for name in ("train_32x32.mat", "test_32x32.mat"):
        f = _need(root / name, "the SVHN cropped-digits file " + name,
                  "set data.path to the folder holding train_32x32.mat and test_32x32.mat")
        try:
            m = loadmat(f)
        except Exception as e:  # noqa: BLE001 - scipy raises many types for damaged files
            raise DataError(f"{f} is not a readable SVHN .mat file ({type(e).__name__}: {e}); re-download it") from None
        objects = object_arrays({k: v for k, v in m.items() if not k.startswith("__")})
        if objects:  # MATLAB cells or structs: never part of SVHN's files
            raise DataError(f"{f} is refused: {objects[0]} is an array of objects (a MATLAB cell or struct), which "
                            f"SVHN's files never hold; re-download it")
        missing = sorted({"X", "y"} - set(m))
        if missing:
            raise DataError(f"{f} lacks {missing} (it has {sorted(k for k in m if not k.startswith('__'))}), so it is "
                            f"not SVHN's cropped-digits format ({name}); re-download it")
        x, y = np.asarray(m["X"]), np.asarray(m["y"])
        if x.ndim != 4 or x.shape[2] != 3:
            raise DataError(f"{f}: X has shape {x.shape}, expected (32, 32, 3, N); re-download it")
        if x.shape[3] == 0:
            raise DataError(f"{f} holds no images (X has shape {x.shape}); re-download it")
        x = _check_pixels(x, f"{f}: X")
        y = _check_labels(y, x.shape[3], f"{f}: y")
        y[y == 10] = 0
        sets.append(ImageSet(torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), torch.from_numpy(y)))
    return sets[0], sets[1], None, [str(k) for k in range(10)], SVHN_STATS


def _npz_images(arr: np.ndarray, key: str, file: Path) -> torch.Tensor:
    if arr.dtype != np.uint8:
        raise DataError(f"{file}: {key} has dtype {arr.dtype}, expected uint8 pixels; convert with "
                        f"np.clip(x, 0, 255).astype(np.uint8) (or x * 255 for images in [0, 1])")
    if arr.ndim >= 1 and len(arr) == 0:
        raise DataError(f"{file}: {key} holds no images (shape {arr.shape}); save the arrays with their images")
    if arr.ndim == 3:
        arr = np.repeat(arr[:, None], 3, axis=1)
    elif arr.ndim == 4 and arr.shape[-1] == 3:
        arr = arr.transpose(0, 3, 1, 2)
    elif not (arr.ndim == 4 and arr.shape[1] == 3):
        raise DataError(f"{file}: {key} has shape {arr.shape}, expected (N, H, W, 3), (N, 3, H, W) or (N, H, W)")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _read_npz(path: Path):
    _need(path, "an .npz file with train_images, train_labels, test_images, test_labels", "fix data.path")
    if path.is_dir():
        raise DataError(f"{path} is a folder; data.dataset=npz expects the .npz file itself as data.path")
    save = "save it with np.savez(file, train_images=..., train_labels=..., test_images=..., test_labels=...)"
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = {"train_images", "train_labels", "test_images", "test_labels"} - keys
            if "val_images" in keys or "val_labels" in keys:
                missing |= {"val_images", "val_labels"} - keys
            if missing:
                raise DataError(f"{path} lacks the arrays {sorted(missing)} (it has {sorted(keys)}); {save}")
            sets = {}
            for split in ("train", "test", "val"):
                if f"{split}_images" not in keys:
                    continue
                images = _npz_images(z[f"{split}_images"], f"{split}_images", path)
                labels = _check_labels(np.asarray(z[f"{split}_labels"]), len(images), f"{path}: {split}_labels")
                sets[split] = ImageSet(images, torch.from_numpy(labels))
            num_classes = int(max(int(s.labels.max()) for s in sets.values() if len(s)) + 1)
            names = _names(z["label_names"]) if "label_names" in keys else [str(k) for k in range(num_classes)]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated zip, object arrays, a damaged member: all unreadable
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e}); {save}") from None
    return sets["train"], sets["test"], sets.get("val"), names, None


def _list_folder(split_dir: Path, class_names: list[str] | None) -> tuple[list[str], list[int], list[str]]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{split_dir} has no class folders: expected {split_dir}/<class>/*.jpg")
    if class_names is not None and not set(classes) <= set(class_names):
        extra = sorted(set(classes) - set(class_names))
        raise DataError(f"{split_dir} has class folders that train/ lacks: {extra[:5]}; the class folders of "
                        f"the test split must be a subset of train/'s")
    names = class_names or classes
    index = {c: k for k, c in enumerate(names)}
    files, labels = [], []
    for c in classes:
        for f in sorted((split_dir / c).iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                files.append(str(f))
                labels.append(index[c])
    if not files:
        raise DataError(f"{split_dir} has class folders but no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files, labels, names


def _read_folder(path: Path):
    _need(path, "a folder with train/<class>/*.jpg and val/ or test/", "fix data.path")
    _need(path / "train", "the training images as train/<class>/*.jpg",
          "arrange the images as path/train/<class>/*.jpg and path/val/<class>/*.jpg")
    test_dir = path / "test" if (path / "test").is_dir() else path / "val"
    _need(test_dir, f"a test split as {path / 'val'}/<class>/*.jpg or {path / 'test'}/<class>/*.jpg",
          "add a val/ (or test/) folder with the same class folders as train/")
    train_files, train_labels, names = _list_folder(path / "train", None)
    test_files, test_labels, _ = _list_folder(test_dir, names)

    def mk(files, labels):
        return ImageSet(None, torch.tensor(labels, dtype=torch.int64), files)

    return mk(train_files, train_labels), mk(test_files, test_labels), None, names, None


READERS = {"cifar10": _read_cifar10, "cifar100": _read_cifar100, "svhn": _read_svhn, "npz": _read_npz,
           "folder": _read_folder}
DATASETS = ("shapes10", *READERS)  # every value data.dataset takes


# ---- decoding file lists (torch path, folder statistics) ----

def _decode(file: str, size: int) -> np.ndarray:
    """Decode an image with Pillow: RGB, shorter side resized to `size` (bilinear, antialiased), centre crop.
    Returns uint8 (3, size, size)."""
    from PIL import Image

    with Image.open(file) as im:
        im.draft("RGB", (size, size))  # JPEG: let the decoder downscale by a power of two first
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def decode_files(images: ImageSet, size: int, on_corrupt: str = "skip", num_threads: int = 4,
                 warn: bool = True) -> ImageSet:
    """Decode a file-list ImageSet to uint8 (N', 3, size, size) in memory; sets that hold images pass through.

    Undecodable files are skipped and counted (`num_skipped`; logged once unless `warn=False`) with
    on_corrupt='skip', or stop the run with a CorruptImageError naming the file with on_corrupt='error'.
    """
    if images.images is not None:
        return images
    if on_corrupt not in ("skip", "error"):
        raise DataError(f"data.on_corrupt must be 'skip' or 'error', got {on_corrupt!r}")
    assert images.files is not None

    def one(file):
        try:
            return _decode(file, size)
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for damaged files
            if on_corrupt == "error":
                raise CorruptImageError(f"cannot decode image {file} ({type(e).__name__}: {e}); delete or replace "
                                        f"the file, or set data.on_corrupt=skip to skip undecodable images") from None
            return None

    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        decoded = list(pool.map(one, images.files))
    keep = [i for i, d in enumerate(decoded) if d is not None]
    bad = [images.files[i] for i, d in enumerate(decoded) if d is None]
    if bad and warn:
        log.warning("skipped %d of %d images that cannot be decoded (data.on_corrupt=skip), e.g. %s; set "
                    "data.on_corrupt=error to stop at them instead", len(bad), len(decoded), ", ".join(bad[:3]))
    if not keep:
        raise DataError(f"none of the {len(decoded)} images could be decoded (e.g. {bad[:3]})")
    stacked = torch.from_numpy(np.stack([decoded[i] for i in keep]))
    return ImageSet(stacked, images.labels[torch.tensor(keep, dtype=torch.int64)], [images.files[i] for i in keep],
                    images.num_skipped + len(bad))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, 3, H, W) images, in pixel / 255 (float64 sums, in chunks)."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for chunk in images.split(1024):
        x = chunk.to(torch.float64)
        total += x.sum((0, 2, 3))
        total_sq += (x * x).sum((0, 2, 3))
    count = images.numel() / 3
    mean = total / count
    std = (total_sq / count - mean * mean).clamp(min=0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


# ---- splits ----

def _seeded_perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


def _reduce(train: ImageSet, val: ImageSet | None, cfg, dataset: str) -> tuple[ImageSet, ImageSet]:
    """Hold num_val out of train (or draw them from a given val split), then the first num_train of the rest."""
    num_train, num_val = cfg.num_train, cfg.num_val
    if val is not None:  # the file brings its own val split: draw num_val of it, hold nothing out of train
        if num_val > len(val):
            raise DataError(f"data.num_val={num_val} but the {dataset} val split has only {len(val)} images; "
                            f"set data.num_val <= {len(val)}")
        val = val.subset(_seeded_perm(len(val), cfg.split_seed)[:num_val].sort().values)
        held = 0
    else:
        held = num_val
    need = held + (num_train if num_train is not None else 1)
    if need > len(train):
        want = f"num_val={num_val} + num_train={num_train}" if num_train is not None else f"num_val={num_val}"
        raise DataError(f"the {dataset} training split has {len(train)} images, too few for data.{want} "
                        f"(held out for validation and training); lower data.num_val / data.num_train "
                        f"(e.g. --set data.num_train=null uses all that remain) or use a larger dataset")
    perm = _seeded_perm(len(train), cfg.split_seed)
    if val is None:
        val = train.subset(perm[:held].sort().values)
    rest = perm[held:] if num_train is None else perm[held:held + num_train]
    return train.subset(rest.sort().values), val


def load_splits(data_cfg) -> Splits:
    """Read `data_cfg.dataset` from `data_cfg.path` and derive the train / val / test splits (module docstring)."""
    dataset, size = data_cfg.dataset, data_cfg.image_size
    if dataset == "shapes10":
        from .shapes10 import CLASS_NAMES, make_shapes10

        n_train = data_cfg.num_val + (data_cfg.num_train if data_cfg.num_train is not None
                                      else SHAPES10_DEFAULT_TRAIN)
        train = ImageSet(*make_shapes10(n_train, size, seed=0, split="train"))
        test = ImageSet(*make_shapes10(data_cfg.num_test or SHAPES10_DEFAULT_TEST, size, seed=0, split="test"))
        val, names, stats = None, list(CLASS_NAMES), None
    else:
        if dataset not in READERS:
            raise DataError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
        if data_cfg.path is None:
            raise DataError(f"data.dataset={dataset!r} needs data.path (the dataset's folder or file)")
        train, test, val, names, stats = READERS[dataset](Path(data_cfg.path).expanduser())
        for name, split in (("train", train), ("test", test), ("val", val)):
            if split is not None and split.images is not None and tuple(split.images.shape[2:]) != (size, size):
                h, w = split.images.shape[2:]
                raise DataError(f"the {dataset} {name} images are {h}x{w} but data.image_size={size}; "
                                f"set data.image_size={h}" + ("" if h == w else " (square images are needed)"))
    max_classes = getattr(data_cfg, "max_classes", None)
    if max_classes is not None and max_classes < len(names):  # keep the first classes (e.g. 120 of ImageNet)
        names = names[:max_classes]
        train, test, val = (None if x is None else x.subset((x.labels < max_classes).nonzero().squeeze(1))
                            for x in (train, test, val))
    train, val = _reduce(train, val, data_cfg, dataset)
    if data_cfg.num_test is not None and data_cfg.num_test < len(test):
        test = test.subset(_seeded_perm(len(test), data_cfg.split_seed + 1)[:data_cfg.num_test].sort().values)
    num_classes = len(names)
    for name, split in (("train", train), ("val", val), ("test", test)):
        if len(split) and (int(split.labels.min()) < 0 or int(split.labels.max()) >= num_classes):
            raise DataError(f"{dataset} {name} labels span [{int(split.labels.min())}, {int(split.labels.max())}] "
                            f"but there are {num_classes} classes; labels must be 0..{num_classes - 1}")
    if stats is None:
        if train.images is not None:
            stats = channel_stats(train.images)
        else:  # folder: measure on a seeded sample of decoded training files
            idx = _seeded_perm(len(train), data_cfg.split_seed)[:_STATS_SAMPLE]
            sample = decode_files(train.subset(idx), min(size, 64), data_cfg.on_corrupt,  # quiet: the pipeline
                                  getattr(data_cfg, "num_threads", 4), warn=False)  # reports what it skips
            stats = channel_stats(sample.images)
    mean, std = stats
    return Splits(train, val, test, num_classes, tuple(mean), tuple(max(s, 1e-3) for s in std), names)


def with_images(splits: Splits, size: int, on_corrupt: str = "skip", num_threads: int = 4) -> Splits:
    """Splits whose file lists are decoded in memory (the torch pipeline's view of a folder dataset)."""
    files = sum(len(getattr(splits, k)) for k in ("train", "val", "test") if getattr(splits, k).images is None)
    need = files * 3 * size * size
    if need > MAX_DECODED_BYTES:
        raise DataError(f"decoding {files} images at {size}x{size} for the torch pipeline needs {need / 2**30:.0f} "
                        f"GiB of memory; use data.backend=dali (reads the JPEG files), or lower data.image_size / "
                        f"data.num_train / data.num_test")
    return replace(splits, **{k: decode_files(getattr(splits, k), size, on_corrupt, num_threads)
                              for k in ("train", "val", "test")})
