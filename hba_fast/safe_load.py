"""Nothing hba-fast reads runs code: the readers of the formats that could carry code (pickles), and their refusals.

A pickle is a program: its GLOBAL and REDUCE opcodes import and call anything (`os.system`), so a shared run folder
or dataset copy could run someone else's code in ours. Every pickle-based file is read with an allow-list:

    torch files (checkpoint.pt, model.pt, model.checkpoint weights)
        torch.load(weights_only=True): tensors, dicts, lists, tuples, numbers, strings, bytes, None (and torch's own
        state types). `torch_refusal(error)` turns its refusal into a short phrase naming what was refused, for the
        one-line error of the caller (CheckpointError, ConfigError).
    CIFAR-10 / CIFAR-100 python pickles (data_batch_*, test_batch, batches.meta, train, test, meta)
        `load_cifar_pickle(file)`: an Unpickler whose `find_class` knows only what the real files hold: numpy's
        ndarray, dtype and _reconstruct (under numpy 1's module name `numpy.core.multiarray` and numpy 2's
        `numpy._core.multiarray`: the original files were written by Python 2 with numpy 1, rebuilt copies by numpy
        2), and `_codecs.encode` with the latin-1 codec and `bytes()` without arguments, which is how Python 3 writes
        bytes (the keys b"data"; b"" for an empty array) at the protocols 0-2 the CIFAR files use. Everything else
        (any other global, a persistent id, an object array) is `RefusedContent`, naming what was refused; nothing
        is imported or called for it.
    .npz files: numpy with allow_pickle=False (object arrays refused by numpy); SVHN .mat files: scipy.io.loadmat,
        which builds no Python objects from the file but may return object arrays (MATLAB cells, structs): the
        reader refuses those (`object_arrays`).

Checked against the real CIFAR-10 batches (../shared/data/build_cifar10.py's output and the original files' opcodes:
GLOBAL numpy.core.multiarray _reconstruct, numpy ndarray, numpy dtype; REDUCE; BUILD).
"""
from __future__ import annotations

import codecs
import io
import pickle
import re

import numpy as np


class RefusedContent(pickle.UnpicklingError):
    """A file holds something a reader does not accept (it would have to build or call it)."""


def torch_refusal(error: Exception) -> str | None:
    """What torch.load(weights_only=True) refused to build ("a reference to posix.system"), when that was the error;
    None for any other failure (a damaged file: torch's safe unpickler also stops at opcodes it does not know)."""
    text = str(error)
    if "Weights only load failed" not in text:
        return None
    for pattern, what in ((r"GLOBAL ([\w.]+)", "a reference to {}"),
                          (r"reduce for unrecognized function (\S+)", "a call of {}"),
                          (r"Can only (?:build|create new object for) [^\n]*?but got (\S+)", "an object of {}")):
        match = re.search(pattern, text)
        if match:
            return what.format(match.group(1).rstrip(".").strip("<>'"))
    return None


def _reconstruct():
    """numpy's own array reconstructor (numpy._core.multiarray._reconstruct in numpy 2)."""
    return np.ndarray(0).__reduce__()[0]


def _plain_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise RefusedContent(f"an array of Python objects (dtype {dtype})")
    return dtype


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    if codecs.lookup(encoding).name != "iso8859-1":
        raise RefusedContent(f"_codecs.encode with the {encoding!r} codec")
    return text.encode("latin-1")


def _empty_bytes(*args) -> bytes:
    """bytes(): how Python 3 writes b"" at protocols 0-2 (an empty image array's data: GLOBAL __builtin__ bytes)."""
    if args:
        raise RefusedContent(f"bytes{args!r}")
    return b""


_CIFAR_GLOBALS = {
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct(),
    ("_codecs", "encode"): _latin1,
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedContent(f"a reference to {module}.{name}") from None

    def persistent_load(self, pid):
        raise RefusedContent("a persistent id")


def load_cifar_pickle(file) -> object:
    """A CIFAR python pickle (an open binary file or bytes) read with the allow-list of the module docstring; bytes
    stay bytes (encoding="bytes", as the Python 2 files need). RefusedContent for anything else."""
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    obj = _CifarUnpickler(file, encoding="bytes").load()
    found = object_arrays(obj)
    if found:
        raise RefusedContent(f"an array of Python objects ({found[0]})")
    return obj


def object_arrays(obj, where: str = "", depth: int = 0) -> list[str]:
    """Where `obj` (dicts, lists, tuples of arrays and plain values) holds numpy arrays of Python objects."""
    if depth > 8:
        return []
    if isinstance(obj, np.ndarray):
        return [where or "the array"] if obj.dtype.hasobject else []
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    found = []
    for key, value in items:
        name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
        found += object_arrays(value, f"{where}[{name!r}]", depth + 1)
        if found:
            break
    return found
