"""Atomic checkpoints: write to a temporary file in the same folder, fsync, rename over the old one.

A run killed at any moment leaves either the previous checkpoint or the new one, never a torn file, so
`hba-fast search` started again on the same run folder continues from the last finished checkpoint.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .errors import CheckpointError  # noqa: F401 (re-exported where it used to live)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save `state` to `path` atomically (write, fsync, rename, fsync the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path, map_location=None) -> dict | None:
    """The state saved at `path`, or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a foreign or damaged file: say which and what to do
        raise CheckpointError(f"cannot read checkpoint {path}: {e}. Delete it to start the run afresh, or set "
                              f"run.resume=false") from None


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a small text file (result.json, compare.md, ...) atomically: temporary file, fsync, rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
