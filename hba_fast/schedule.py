"""The learned augmentation schedule: schedule.json out, back in for `hba-fast train`, and the Figure-4 plot.

schedule.json (format "hba-fast-schedule/1"):
    {"format", "ops": [15 op names], "epochs": [{"epoch": e, "lam": [54 logits],
      "slots": [{"slot": j, "op": name, "copy": j // 15, "prob": p, "magnitude": m or null}, ... 30]}, ...],
     "config": {resolved search config}, "environment": {versions, device, git sha}}
Each epoch's entry is the policy of that epoch: lambda averaged over the epoch's hyper steps, decoded
(probabilities in [0, 1], magnitudes in the op's range, null for ops without one). Its "epoch" is the entry's
0-based index e, the policy of the run's epoch e + 1 (the 1-based "epoch N/E" of the progress bar, log.txt and
metrics.jsonl). The file is written atomically; `read_schedule` checks every field and says what is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import atomic
from .errors import ScheduleError
from .ops import OPS
from .policy import SearchSpace

FORMAT = "hba-fast-schedule/1"


def write_schedule(path: str | Path, entries: list[dict], config: dict, environment: dict) -> None:
    space, epochs = SearchSpace(), []
    for entry in entries:
        slots = []
        for j, (p, m) in enumerate(zip(entry["probs"], entry["mags"])):
            op = OPS[space.slot_ops[j]]
            slots.append({"slot": j, "op": op.name, "copy": space.slot_copies[j], "prob": round(float(p), 6),
                          "magnitude": round(float(m), 6) if op.has_magnitude else None})
        epochs.append({"epoch": entry["epoch"], "lam": [round(float(v), 6) for v in entry["lam"]], "slots": slots})
    doc = {"format": FORMAT, "ops": [op.name for op in OPS], "epochs": epochs, "config": config,
           "environment": environment}
    atomic.write_text(path, json.dumps(doc, indent=1) + "\n")  # a kill leaves the old file or the new one


def read_schedule(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(probs (E, 30), mags (E, 30)) of a schedule.json; magnitude 0 for ops without one."""
    path = Path(path)
    if path.is_dir() and (path / "schedule.json").is_file():  # the search's run folder
        path = path / "schedule.json"
    again = "give the schedule.json written by `hba-fast search` (in its run folder)"
    if not path.is_file():
        raise ScheduleError(f"schedule file {str(path)!r} not found; {again}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ScheduleError(f"cannot read {path} ({type(e).__name__}: {e}); {again}") from None
    if not text.strip():
        raise ScheduleError(f"{path} is empty; run the search again (it resumes from its checkpoint and rewrites "
                            f"schedule.json), or {again}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleError(f"{path} is not valid JSON ({e}); {again}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not doc.get("epochs"):
        raise ScheduleError(f"{path} is not an hba-fast schedule (expected format {FORMAT!r} with epochs); {again}")
    if doc.get("ops", [op.name for op in OPS]) != [op.name for op in OPS]:
        raise ScheduleError(f"{path} was written for another op table ({doc.get('ops')}); {again} with this version")
    space = SearchSpace()
    try:
        slots = [e["slots"] for e in doc["epochs"]]
        for e, entry in enumerate(slots):
            if not isinstance(entry, list) or len(entry) != space.num_slots:
                raise ScheduleError(f"{path}: each epoch needs {space.num_slots} slots, epoch entry {e} has "
                                    f"{len(entry) if isinstance(entry, list) else type(entry).__name__}; {again}")
        probs = np.array([[s["prob"] for s in e] for e in slots], dtype=np.float32)
        mags = np.array([[s["magnitude"] or 0.0 for s in e] for e in slots], dtype=np.float32)
        names = [[s.get("op", OPS[space.slot_ops[j]].name) for j, s in enumerate(e)] for e in slots]
    except ScheduleError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ScheduleError(f"{path}: malformed epoch entries ({type(e).__name__}: {e}); every epoch needs "
                            f"'slots', each with 'prob' and 'magnitude'") from None
    if not ((probs >= 0) & (probs <= 1)).all() or not np.isfinite(mags).all():
        raise ScheduleError(f"{path}: probabilities must lie in [0, 1] and magnitudes be finite numbers")
    for j, k in enumerate(space.slot_ops):
        op = OPS[k]
        if any(row[j] != op.name for row in names):
            raise ScheduleError(f"{path}: slot {j} must hold {op.name} (slot j holds op j % 15), found "
                                f"{sorted({row[j] for row in names} - {op.name})}; {again}")
        low, high = (op.lo, op.hi) if op.has_magnitude else (0.0, 0.0)
        bad = (mags[:, j] < min(low, high) - 1e-4) | (mags[:, j] > max(low, high) + 1e-4)
        if bad.any():
            e = int(bad.nonzero()[0][0])
            raise ScheduleError(f"{path}: epoch entry {e}, slot {j} ({op.name}): magnitude {mags[e, j]:g} is outside "
                                f"its range [{low:g}, {high:g}]; {again}")
    return probs, mags


FLAT_FORMAT = "hba-fast-flat/1"  # `hba-fast export --to json-flat` (hba_fast/export.py)


def read_any_schedule(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(probs (E, 30), mags (E, 30)) of a schedule.json or of its json-flat export (`hba-fast export`)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict) and doc.get("format") == FLAT_FORMAT:
        from .export import read_json_flat

        return read_json_flat(path)
    return read_schedule(path)


def plot_schedule(path: str | Path, entries: list[dict]) -> None:
    """Figure 4 of the paper (and per-op magnitudes), drawn by `schedule_plot.py`."""
    from .schedule_plot import plot_entries

    plot_entries(path, entries)
