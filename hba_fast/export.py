"""`hba-fast export SCHEDULE --to pba|albumentations|json-flat --out FILE`: a learned schedule for other tools.

    pba             PBA's schedule file (`pba_format.py`), replayed by PBA's own `--use_hp_policy --hp_policy FILE
                    --hp_policy_epochs E_s`; lossy (probability levels 0-10, magnitude levels 0-9): the largest
                    rounding error is reported
    albumentations  an `A.save` JSON of one epoch (`--epoch e`) or, without --epoch, a folder FILE with one
                    `epoch_XXX.json` per epoch (`albumentations_format.py`; needs albumentations installed)
    json-flat       {"format": "hba-fast-flat/1", "sampling": ..., "ops": {name: range, signed, unit},
                    "epochs": [{"epoch": e, "policy": [{"op", "prob", "magnitude", "signed"} x 30]}]}:
                    per epoch a list of (op, prob, magnitude) any library can read

`epochs` stretches the schedule to a training run's length first (as `hba-fast train` and `SchedulePolicy`).
Every file is written atomically (`atomic.py`: a temporary file, fsync, rename); a write that fails is one line
naming the file and the fix (`OutputError`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import atomic
from .errors import ConfigError, ScheduleError
from .hyperparams import stretch_index
from .ops import OP_INDEX, OPS
from .policy import NUM_OPS, NUM_SLOTS
from .schedule import FLAT_FORMAT, read_any_schedule

FORMATS = ("pba", "albumentations", "json-flat")
SAMPLING = ("PBA (Ho et al. 2019, Algorithm 1): per image draw K from {0: 0.2, 1: 0.3, 2: 0.5}; walk the 30 "
            "entries in a fresh random order; at each, while fewer than K ops were applied, apply its op with "
            "probability `prob` and magnitude `magnitude` (for `signed` ops, negated with probability 0.5)")
UNITS = {"ShearX": "shear factor", "ShearY": "shear factor", "TranslateX": "fraction of the width",
         "TranslateY": "fraction of the height", "Rotate": "degrees counter-clockwise",
         "Solarize": "invert pixels >= 256 - m", "Posterize": "clear round(m) low bits",
         "Contrast": "PIL ImageEnhance factor", "Color": "PIL ImageEnhance factor",
         "Brightness": "PIL ImageEnhance factor", "Sharpness": "PIL ImageEnhance factor",
         "Cutout": "square side as a fraction of the shorter side, fill (125, 122, 113)"}


@dataclass
class ExportReport:
    """What an export wrote and what it could not keep exactly (printed by the command)."""

    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def stretched(probs: np.ndarray, mags: np.ndarray, epochs: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The schedule's entries for each epoch of a run of `epochs` (None: as it is)."""
    if epochs is None:
        return probs, mags
    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    idx = [stretch_index(e, len(probs), epochs) for e in range(epochs)]
    return probs[idx], mags[idx]


# ---------------------------------------------------------------- json-flat

def to_json_flat(probs: np.ndarray, mags: np.ndarray) -> dict:
    ops = {op.name: {"range": [op.lo, op.hi] if op.has_magnitude else None, "signed": op.signed,
                     "unit": UNITS.get(op.name)} for op in OPS}
    epochs = []
    for e in range(len(probs)):
        policy = []
        for j in range(NUM_SLOTS):
            op = OPS[j % NUM_OPS]
            policy.append({"op": op.name, "prob": round(float(probs[e, j]), 6),
                           "magnitude": round(float(mags[e, j]), 6) if op.has_magnitude else None,
                           "signed": op.signed})
        epochs.append({"epoch": e, "policy": policy})
    return {"format": FLAT_FORMAT, "sampling": SAMPLING, "ops": ops, "epochs": epochs}


def read_json_flat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(probs (E, 30), mags (E, 30)) of a json-flat file; each epoch's policy in hba-fast's slot order."""
    doc = json.loads(Path(path).read_text())
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
    return np.array(probs, np.float32), np.array(mags, np.float32)


# ---------------------------------------------------------------- the command

def export_schedule(schedule: str | Path, fmt: str, out: str | Path, epochs: int | None = None,
                    epoch: int | None = None, image_size: int = 32) -> ExportReport:
    """Export `schedule` (a schedule.json, or a json-flat file) to `fmt` at `out` (module docstring)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    probs, mags = stretched(*read_any_schedule(schedule), epochs)
    if epoch is not None:
        if not 0 <= epoch < len(probs):
            raise ConfigError(f"--epoch {epoch} is outside the schedule's epochs 0..{len(probs) - 1}")
        probs, mags = probs[epoch:epoch + 1], mags[epoch:epoch + 1]
    out, report = Path(out), ExportReport()
    if fmt == "json-flat":
        atomic.write_json(out, to_json_flat(probs, mags), indent=1, other="--out")
        report.files.append(str(out))
    elif fmt == "pba":
        _export_pba(probs, mags, out, image_size, report)
    else:
        _export_albumentations(probs, mags, out, epoch, report)
    return report


def _export_pba(probs, mags, out: Path, image_size: int, report: ExportReport) -> None:
    from .pba_format import format_pba, to_pba

    exp = to_pba(probs, mags, image_size)
    atomic.write_text(out, format_pba(exp), other="--out")
    report.files.append(str(out))
    rel = {op.name: exp.max_mag_error[op.name] / (op.hi - op.lo) for op in OPS if op.has_magnitude}
    worst = max(rel, key=rel.get)
    op = OPS[OP_INDEX[worst]]
    report.notes.append(
        f"PBA's format is lossy: largest probability rounding error {exp.max_prob_error:.3f} (levels of 0.1); "
        f"largest magnitude error {exp.max_mag_error[worst]:.4g} on {worst} "
        f"({rel[worst]:.0%} of its range {op.lo:g}..{op.hi:g}); "
        + ", ".join(f"{k} {v:.3g}" for k, v in exp.max_mag_error.items() if v > 0))
    report.notes.append(f"replay it with PBA: python pba/train.py ... --use_hp_policy --hp_policy {out} "
                        f"--hp_policy_epochs {len(probs)} ({len(exp.lines)} policy change(s))")


def _export_albumentations(probs, mags, out: Path, epoch: int | None, report: ExportReport) -> None:
    try:
        import albumentations as A
    except ImportError:
        raise ConfigError("--to albumentations builds the pipeline with the albumentations package: "
                          "pip install albumentations") from None
    from .albumentations_format import APPROXIMATE, to_albumentations

    single = epoch is not None or len(probs) == 1
    dropped = 0.0
    for e in range(len(probs)):
        compose, lost = to_albumentations(probs[e], mags[e])
        dropped = max(dropped, lost)
        target = out if single else out / f"epoch_{e:03d}.json"
        atomic.write_json(target, A.to_dict(compose), indent=None, other="--out")
        report.files.append(str(target))
    report.notes.append("approximate ops: " + "; ".join(f"{k}: {v}" for k, v in APPROXIMATE.items()))
    if dropped > 0:
        report.notes.append(f"children below probability 1e-9 left out: at most {dropped:.2g} of the mass per epoch")
    if not single:
        report.notes.append(f"one file per epoch in {out}/: A.load(f'{out}/epoch_{{e:03d}}.json') at epoch e")
