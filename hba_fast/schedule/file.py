"""The learned augmentation schedule as a value (`Schedule`), and its files: schedule.json and json-flat.

A `Schedule` is the probabilities and magnitudes of the 30 slots of the search space at each epoch: probs, mags
(E, 30) float32 (magnitudes unsigned, in SPEC 3's units, 0 for ops without one), optionally the logits lam (E, 54)
they decode from, and the search space they belong to. Its constructor is the one validator: every reader and
writer (schedule.json, json-flat, PBA's files, `SchedulePolicy`, `ScheduleSampler`, the exports) goes through it.
`ranges="search"` holds every magnitude inside its op's range of the search space (Table 7), as a search writes
them (schedule.json is read so); `ranges="any"` accepts any finite magnitude >= 0 (a hand-made policy, PBA's levels,
which reach beyond Table 7: PBA's Cutout goes up to 18 of 32 px).

schedule.json (format "hba-fast-schedule/1"), written by `hba-fast search`:
    {"format", "ops": [15 op names], "epochs": [{"epoch": e, "lam": [54 logits],
      "slots": [{"slot": j, "op": name, "copy": j // 15, "prob": p, "magnitude": m or null}, ... 30]}, ...],
     "config": {resolved search config}, "environment": {versions, device, git sha}}
Each epoch's entry is the policy of that epoch: lambda averaged over the epoch's hyper steps, decoded. Its "epoch"
is the entry's 0-based index e, the policy of the run's epoch e + 1 (the 1-based "epoch N/E" of the progress bar,
log.txt and metrics.jsonl).

json-flat (format "hba-fast-flat/1", `hba-fast export --to json-flat`): per epoch a list of (op, prob, magnitude,
signed) any library can read, with the sampling rule and each op's range and unit.

PBA's schedule files are read too: `read_schedule("pba:FILE")` (hba_fast/schedule/pba.py: PBA's slot order, its
replay and its levels in our units), so PBA's published schedules are inputs wherever a schedule is taken.

A schedule of E_s entries used for E epochs is stretched linearly: epoch e takes entry min(E_s - 1, floor(e E_s / E +
1/2)) (`stretch_index`; `hba-fast train`, `SchedulePolicy`, `ScheduleSampler`); a PBA file read for E epochs
(`read_schedule("pba:FILE", epochs=E)`) by PBA's own replay instead, as PBA trains with it. Files are written
atomically; `read_schedule` checks every field and says what is wrong.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from ..augment.ops import OP_INDEX, OPS
from ..augment.space import NUM_OPS, NUM_SLOTS, SearchSpace
from ..errors import ScheduleError
from . import pba

FORMAT = "hba-fast-schedule/1"
FLAT_FORMAT = "hba-fast-flat/1"
RANGES = ("search", "any")
AGAIN = "give the schedule.json written by `hba-fast search` (in its run folder)"


def stretch_index(epoch: int, schedule_epochs: int, epochs: int) -> int:
    """The entry of a schedule of `schedule_epochs` entries used at `epoch` (0-based) of a run of `epochs`."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return min(schedule_epochs - 1, math.floor(epoch * schedule_epochs / epochs + 0.5))


def _host(x):
    """A torch tensor as a numpy array; anything else as it is."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


@dataclass(frozen=True, eq=False)
class Schedule:
    """Per-epoch probabilities and magnitudes of the search space's 30 slots (module docstring)."""

    probs: np.ndarray  # float32 (E, 30) in [0, 1]
    mags: np.ndarray  # float32 (E, 30) unsigned magnitudes (ignored where the slot's op has none: 0 in files)
    lam: np.ndarray | None = None  # float32 (E, 54) the logits of a search's entries, where known
    space: str = "pba"  # the search space the slots belong to
    ranges: str = "any"  # what the magnitudes must lie in: "search" (Table 7) or "any" (finite, >= 0)
    source: str = "schedule"  # where it came from, for messages

    def __post_init__(self):
        """The one validator of a schedule: shapes, probabilities in [0, 1], magnitudes in range."""
        where, fix = self.source, f"; {AGAIN}" if self.source.endswith(".json") else ""
        try:
            probs, mags = (np.array(_host(x), dtype=np.float32, ndmin=2) for x in (self.probs, self.mags))
        except (TypeError, ValueError) as e:
            raise ScheduleError(f"{where}: probabilities and magnitudes must be numbers ({e}){fix}") from None
        if probs.ndim != 2 or probs.shape[1] != NUM_SLOTS or probs.shape != mags.shape or len(probs) < 1:
            raise ScheduleError(f"{where}: a schedule needs probs and mags of shape (epochs >= 1, {NUM_SLOTS}), got "
                                f"{probs.shape} and {mags.shape}{fix}")
        if not (np.isfinite(probs).all() and np.isfinite(mags).all() and (probs >= 0).all() and (probs <= 1).all()):
            raise ScheduleError(f"{where}: probabilities must lie in [0, 1] and magnitudes be finite numbers{fix}")
        if self.ranges not in RANGES:
            raise ValueError(f"ranges must be one of {RANGES}, got {self.ranges!r}")
        for j in range(NUM_SLOTS):
            op = OPS[j % NUM_OPS]
            if not op.has_magnitude:  # the value is ignored
                continue
            low, high = (op.lo, op.hi) if self.ranges == "search" else (0.0, math.inf)
            bad = (mags[:, j] < low - 1e-4) | (mags[:, j] > high + 1e-4)
            if bad.any():
                e = int(bad.nonzero()[0][0])
                raise ScheduleError(f"{where}: epoch entry {e}, slot {j} ({op.name}): magnitude {mags[e, j]:g} is "
                                    f"outside its range [{low:g}, {high:g}]{fix}")
        lam = None
        if self.lam is not None:
            lam = np.array(_host(self.lam), dtype=np.float32, ndmin=2)
            if lam.shape != (len(probs), SearchSpace.lam_dim):
                raise ScheduleError(f"{where}: lam must have shape ({len(probs)}, {SearchSpace.lam_dim}), got "
                                    f"{lam.shape}{fix}")
        for name, value in (("probs", probs), ("mags", mags), ("lam", lam)):
            object.__setattr__(self, name, value)

    @property
    def epochs(self) -> int:
        return len(self.probs)

    def stretched(self, epochs: int | None) -> Schedule:
        """The entries used at each epoch of a run of `epochs` epochs (None: as it is)."""
        if epochs is None:
            return self
        if epochs < 1:
            raise ScheduleError(f"a schedule is stretched to >= 1 epochs, got {epochs}")
        return self.select([stretch_index(e, self.epochs, epochs) for e in range(epochs)])

    def select(self, index: list[int]) -> Schedule:
        """The schedule of entries `index` (in that order)."""
        return Schedule(self.probs[index], self.mags[index], None if self.lam is None else self.lam[index],
                        self.space, self.ranges, self.source)

    @classmethod
    def from_entries(cls, entries: list[dict], source: str = "search") -> Schedule:
        """A search's per-epoch entries ({"epoch", "lam", "probs", "mags"}, `Hyperparams.schedule`)."""
        return cls(np.array([e["probs"] for e in entries]), np.array([e["mags"] for e in entries]),
                   np.array([e["lam"] for e in entries]) if all("lam" in e for e in entries) else None,
                   source=source)


# ---------------------------------------------------------------- schedule.json

def write_schedule(path: str | Path, schedule: Schedule, config: dict, environment: dict) -> None:
    """schedule.json (module docstring), written atomically: a kill leaves the old file or the new one."""
    space = SearchSpace()
    lam = schedule.lam
    if lam is None:  # a schedule made from values (a control, an import): its logits by the search space
        import torch

        lam = space.encode(torch.as_tensor(schedule.probs), torch.as_tensor(schedule.mags)).numpy()
    epochs = []
    for e in range(schedule.epochs):
        slots = []
        for j in range(NUM_SLOTS):
            op = OPS[space.slot_ops[j]]
            slots.append({"slot": j, "op": op.name, "copy": space.slot_copies[j],
                          "prob": round(float(schedule.probs[e, j]), 6),
                          "magnitude": round(float(schedule.mags[e, j]), 6) if op.has_magnitude else None})
        epochs.append({"epoch": e, "lam": [round(float(v), 6) for v in lam[e]], "slots": slots})
    doc = {"format": FORMAT, "ops": [op.name for op in OPS], "epochs": epochs, "config": config,
           "environment": environment}
    atomic.write_text(path, json.dumps(doc, indent=1) + "\n")


def _parse_schedule_json(path: Path, doc: dict) -> Schedule:
    if doc.get("ops", [op.name for op in OPS]) != [op.name for op in OPS]:
        raise ScheduleError(f"{path} was written for another op table ({doc.get('ops')}); {AGAIN} with this version")
    space = SearchSpace()
    try:
        slots = [e["slots"] for e in doc["epochs"]]
        for e, entry in enumerate(slots):
            if not isinstance(entry, list) or len(entry) != space.num_slots:
                raise ScheduleError(f"{path}: each epoch needs {space.num_slots} slots, epoch entry {e} has "
                                    f"{len(entry) if isinstance(entry, list) else type(entry).__name__}; {AGAIN}")
        probs = [[s["prob"] for s in e] for e in slots]
        mags = [[s["magnitude"] or 0.0 for s in e] for e in slots]
        names = [[s.get("op", OPS[space.slot_ops[j]].name) for j, s in enumerate(e)] for e in slots]
        lams = [e.get("lam") for e in doc["epochs"]]
    except ScheduleError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ScheduleError(f"{path}: malformed epoch entries ({type(e).__name__}: {e}); every epoch needs "
                            f"'slots', each with 'prob' and 'magnitude'") from None
    for j, k in enumerate(space.slot_ops):
        if any(row[j] != OPS[k].name for row in names):
            raise ScheduleError(f"{path}: slot {j} must hold {OPS[k].name} (slot j holds op j % 15), found "
                                f"{sorted({row[j] for row in names} - {OPS[k].name})}; {AGAIN}")
    lam = lams if all(isinstance(v, list) and len(v) == space.lam_dim for v in lams) else None
    return Schedule(probs, mags, lam, ranges="search", source=str(path))


# ---------------------------------------------------------------- json-flat

SAMPLING = ("PBA (Ho et al. 2019, Algorithm 1): per image draw K from {0: 0.2, 1: 0.3, 2: 0.5}; walk the 30 "
            "entries in a fresh random order; at each, while fewer than K ops were applied, apply its op with "
            "probability `prob` and magnitude `magnitude` (for `signed` ops, negated with probability 0.5)")


def to_json_flat(schedule: Schedule) -> dict:
    """The json-flat document of a schedule (module docstring)."""
    ops = {op.name: {"range": [op.lo, op.hi] if op.has_magnitude else None, "signed": op.signed, "unit": op.unit}
           for op in OPS}
    epochs = []
    for e in range(schedule.epochs):
        policy = []
        for j in range(NUM_SLOTS):
            op = OPS[j % NUM_OPS]
            policy.append({"op": op.name, "prob": round(float(schedule.probs[e, j]), 6),
                           "magnitude": round(float(schedule.mags[e, j]), 6) if op.has_magnitude else None,
                           "signed": op.signed})
        epochs.append({"epoch": e, "policy": policy})
    return {"format": FLAT_FORMAT, "sampling": SAMPLING, "ops": ops, "epochs": epochs}


def _parse_json_flat(path: Path, doc: dict) -> Schedule:
    """Each epoch's policy in hba-fast's slot order (the k-th entry of an op is its copy k)."""
    try:
        probs, mags = [], []
        for entry in doc["epochs"]:
            policy = entry["policy"]
            if len(policy) != NUM_SLOTS:
                raise ValueError(f"each epoch needs {NUM_SLOTS} entries, found {len(policy)}")
            p, m = np.zeros(NUM_SLOTS), np.zeros(NUM_SLOTS)
            seen = dict.fromkeys(OP_INDEX, 0)
            for item in policy:
                j = OP_INDEX[item["op"]] + NUM_OPS * seen[item["op"]]
                seen[item["op"]] += 1
                p[j], m[j] = item["prob"], item["magnitude"] or 0.0
            probs.append(p)
            mags.append(m)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ScheduleError(f"{path}: malformed json-flat schedule ({type(e).__name__}: {e})") from None
    return Schedule(probs, mags, ranges="any", source=str(path))


# ---------------------------------------------------------------- reading any of them

def read_schedule(path: str | Path, epochs: int | None = None) -> Schedule:
    """The schedule in a schedule.json (or the search's run folder holding one), a json-flat export, or a PBA file
    given as 'pba:FILE' (or 'pba:FILE@H', H the epochs it covers; `pba.read_pba`).

    With `epochs`: the entry of each epoch of a training run of that many epochs, stretched by the rule of the file's
    own program: hba-fast's files linearly (`stretch_index`), a PBA file by PBA's own replay (`pba.replay`: each
    policy segment int(n epochs / H) epochs, the rest holding the last policy), as PBA would train with it."""
    if epochs is not None and epochs < 1:
        raise ScheduleError(f"a schedule is read for a run of >= 1 epochs, got {epochs}")
    if str(path).startswith(pba.PREFIX):
        probs, mags, covers = pba.read_pba(path, epochs)
        return Schedule(probs, mags, ranges="any", source=f"{path} (PBA, {covers} epochs)")
    return _read_own(Path(path)).stretched(epochs)


def _read_own(path: Path) -> Schedule:
    """schedule.json (or the run folder holding one) or json-flat."""
    if path.is_dir() and (path / "schedule.json").is_file():  # the search's run folder
        path = path / "schedule.json"
    if not path.is_file():
        raise ScheduleError(f"schedule file {str(path)!r} not found; {AGAIN}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ScheduleError(f"cannot read {path} ({type(e).__name__}: {e}); {AGAIN}") from None
    if not text.strip():
        raise ScheduleError(f"{path} is empty; run the search again (it resumes from its checkpoint and rewrites "
                            f"schedule.json), or {AGAIN}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleError(f"{path} is not valid JSON ({e}); {AGAIN}") from None
    if isinstance(doc, dict) and doc.get("format") == FLAT_FORMAT:
        return _parse_json_flat(path, doc)
    if isinstance(doc, dict) and doc.get("format") == "hba-fast-trajectory/1":  # schedule/trajectory.py
        raise ScheduleError(f"{path} holds the hyperparameters of a search in space {doc.get('space')!r}, not an "
                            f"augmentation schedule: it cannot be trained with; `hba-fast plot` draws it")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not doc.get("epochs"):
        raise ScheduleError(f"{path} is not an hba-fast schedule (expected format {FORMAT!r} with epochs); {AGAIN}")
    return _parse_schedule_json(path, doc)
