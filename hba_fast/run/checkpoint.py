"""Checkpoints: written atomically (`atomic.save_torch`: temp file, fsync, rename), read back with a clear error.

A run killed at any moment leaves either the previous checkpoint or the new one, never a torn file, so
`hba-fast search` started again on the same run folder continues from the last finished checkpoint. A full disk
stops the run with one line (`OutputError`) and leaves the previous checkpoint as it was.

Nothing in a checkpoint runs: it is read with `torch.load(weights_only=True)` (tensors, dicts, lists, tuples,
numbers, strings: all a checkpoint holds; the DALI pipeline's state is bytes, its pending draws tensors), so a file
carrying a pickle payload (an `os.system` call, any object's `__reduce__`) is refused with one line before any of it
runs. A checkpoint is a dict with at least "format" (the layout of `Trainer.state_dict()`) and "epoch"; anything else
at that path (a damaged file, a model.pt, another program's file) is a `CheckpointError` whose fix is to move it
aside, which lets the same command start the run afresh in that folder.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import atomic
from ..errors import CheckpointError
from ..safe_load import torch_refusal


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save `state` to `path` atomically (write, fsync, rename, fsync the folder)."""
    atomic.save_torch(path, state)


def unusable(path: Path, why: str) -> CheckpointError:
    """The error for a checkpoint this run cannot continue from: what is wrong and how to start afresh."""
    return CheckpointError(f"cannot resume from {path}: {why}. Move it aside (mv {path} {path}.bad) and run the same "
                           f"command to start this run afresh in {path.parent}, or start a new run with "
                           f"--set run.out_dir=...")


def load_checkpoint(path: str | Path, map_location=None) -> dict | None:
    """The state saved at `path`, or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a foreign or damaged file: say which and what to do
        refused = torch_refusal(e)
        if refused:
            raise unusable(path, f"it holds {refused}, which no hba-fast checkpoint holds: hba-fast loads tensors "
                                 f"and plain data only (torch.load weights_only=True), so nothing in it ran") from None
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise unusable(path, f"the file is damaged or not a checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict) or "format" not in state or "epoch" not in state:
        what = f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else type(state).__name__
        raise unusable(path, f"it is not an hba-fast checkpoint (it holds {what})")
    return state

