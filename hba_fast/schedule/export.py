"""`hba-fast export SCHEDULE --to pba|albumentations|json-flat --out FILE`: a learned schedule for other tools.

    pba             PBA's schedule file (`pba.py`), replayed by PBA's own `--use_hp_policy --hp_policy FILE
                    --epochs E --hp_policy_epochs E` exactly, E the epochs written (the schedule's, or --epochs);
                    lossy (probability levels 0-10, magnitude levels 0-9): the largest rounding error is reported.
                    PBA run for another number of epochs stretches by its own rule (each policy segment
                    int(n epochs / E) epochs, the rest holding the last policy), not hba-fast's linear one: so
                    give --epochs the length of the PBA run
    albumentations  an `A.save` JSON of one epoch (`--epoch e`) or, without --epoch, a folder FILE with one
                    `epoch_XXX.json` per epoch (`albumentations.py`; needs albumentations installed)
    json-flat       {"format": "hba-fast-flat/1", "sampling": ..., "ops": {name: range, signed, unit},
                    "epochs": [{"epoch": e, "policy": [{"op", "prob", "magnitude", "signed"} x 30]}]}:
                    per epoch a list of (op, prob, magnitude) any library can read (`file.py`)

SCHEDULE is a schedule.json, a json-flat export or a PBA file (`pba:FILE`, PBA's published schedules too).
`epochs` stretches the schedule to a training run's length first, by the source's own rule (`file.read_schedule`:
hba-fast's files linearly, as `hba-fast train` and `SchedulePolicy`; a PBA file by PBA's replay).
Every file is written atomically (`atomic.py`: a temporary file, fsync, rename); a write that fails is one line
naming the file and the fix (`OutputError`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import atomic
from ..augment.ops import OP_INDEX, OPS
from ..errors import ConfigError
from .file import Schedule, read_schedule, to_json_flat

FORMATS = ("pba", "albumentations", "json-flat")


@dataclass
class ExportReport:
    """What an export wrote and what it could not keep exactly (printed by the command)."""

    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def export_schedule(source: str | Path, fmt: str, out: str | Path, epochs: int | None = None,
                    epoch: int | None = None, image_size: int = 32) -> ExportReport:
    """Export the schedule at `source` (a schedule.json, a json-flat file or 'pba:FILE') to `fmt` at `out` (module
    docstring)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    schedule = read_schedule(source, epochs)
    if epoch is not None:
        if not 0 <= epoch < schedule.epochs:
            raise ConfigError(f"--epoch {epoch} is outside the schedule's epochs 0..{schedule.epochs - 1}")
        schedule = schedule.select([epoch])
    out, report = Path(out), ExportReport()
    if fmt == "json-flat":
        atomic.write_json(out, to_json_flat(schedule), indent=1, other="--out")
        report.files.append(str(out))
    elif fmt == "pba":
        _export_pba(schedule, out, image_size, report)
    else:
        _export_albumentations(schedule, out, epoch, report)
    return report


def _export_pba(schedule: Schedule, out: Path, image_size: int, report: ExportReport) -> None:
    from .pba import format_pba, to_pba

    exp = to_pba(schedule.probs, schedule.mags, image_size)
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
    n = schedule.epochs
    report.notes.append(f"replay it with PBA exactly: python pba/train.py ... --use_hp_policy --hp_policy {out} "
                        f"--epochs {n} --hp_policy_epochs {n} ({n} epochs, {len(exp.lines)} line(s)); with another "
                        f"--epochs PBA stretches it by its own rule (each policy int(n x epochs / {n}) epochs, the "
                        f"rest of the run holding the last one), not linearly as hba-fast does: export with --epochs "
                        f"set to the PBA run's length instead")


def _export_albumentations(schedule: Schedule, out: Path, epoch: int | None, report: ExportReport) -> None:
    try:
        import albumentations as A
    except ImportError:
        raise ConfigError("--to albumentations builds the pipeline with the albumentations package: "
                          "pip install albumentations") from None
    from .albumentations import APPROXIMATE, to_albumentations

    single = epoch is not None or schedule.epochs == 1
    dropped = 0.0
    for e in range(schedule.epochs):
        compose, lost = to_albumentations(schedule.probs[e], schedule.mags[e])
        dropped = max(dropped, lost)
        target = out if single else out / f"epoch_{e:03d}.json"
        atomic.write_json(target, A.to_dict(compose), indent=None, other="--out")
        report.files.append(str(target))
    report.notes.append("approximate ops: " + "; ".join(f"{k}: {v}" for k, v in APPROXIMATE.items()))
    if dropped > 0:
        report.notes.append(f"children below probability 1e-9 left out: at most {dropped:.2g} of the mass per epoch")
    if not single:
        report.notes.append(f"one file per epoch in {out}/: A.load(f'{out}/epoch_{{e:03d}}.json') at epoch e")
