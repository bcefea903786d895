"""PBA's schedule file: write one from an hba-fast schedule, read one back, and PBA's level -> value maps.

Target: PBA as published by its authors (github.com/arcelien/pba, master at commit 588f1b7), replayed with
`python pba/train.py ... --use_hp_policy --hp_policy FILE.txt --hp_policy_epochs E_s` (its `data_utils.DataSet.
parse_policy`, `utils.parse_log` / `parse_log_schedule`, `data_utils.parse_policy`,
`augmentation_transforms_hp.HP_TRANSFORM_NAMES`, the level maps of `augmentation_transforms.py`, 32x32 images).

The file: one Python literal per line, `[target_trial, clone_trial, target_epochs, clone_epochs, old_policy,
new_policy]` (trial names are strings; PBT's log of one exploit step). The policy is a list of 60 integers: two
copies of the 15 HP transforms in PBA's order (`PBA_OPS`), each copy 15 pairs (probability level 0-10 = p * 10,
magnitude level 0-9). PBA's reader chains the lines (line i's target is line i+1's clone) and replays
`old_policy` of the first line for epochs [0, clone_epochs_0), then `new_policy` of line i for
[clone_epochs_i, clone_epochs_{i+1}), the last one until E_s, stretching all of it by num_epochs / E_s. So we
write one line per epoch at which the quantised policy changes; trial i + 1 is cloned from trial i.

Level -> value (PBA's `float_parameter` / `int_parameter`, PARAMETER_MAX = 10; sizes in pixels of a 32x32 image):
    ShearX/Y 0.3 L / 10            TranslateX/Y int(L) px          Rotate int(3 L) degrees
    Solarize int(25.6 L)           Posterize clears 4 + int(0.4 L) bits (PBA keeps 4 - int(0.4 L))
    Contrast/Color/Brightness/Sharpness 0.1 + 0.18 L                Cutout int(2 L) px square
Our magnitudes are continuous on the ranges of SPEC 3 (TranslateX/Y and Cutout as fractions of the image
side), so the export rounds each to the nearest level value; values beyond PBA's range (translations above
9 px, Posterize below 4 bits, Cutout above 18 px, ...) clip. The largest error per op is reported.
AutoAugment's published policies were learned with the same code (hba_fast/augment/levels.py maps their levels, with
the corrected Posterize rule).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..augment import levels
from ..augment.ops import OP_INDEX, OPS
from ..augment.space import NUM_OPS, NUM_SLOTS
from ..errors import ScheduleError

# PBA's HP_TRANSFORM_NAMES (augmentation_transforms_hp.py: the insertion order of NAME_TO_TRANSFORM)
PBA_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
           "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout")
PROB_LEVELS = 11  # probability levels 0..10 (p = level / 10)
MAG_LEVELS = 10  # PBA searches magnitude levels 0..9
PBA_IMAGE_SIZE = 32  # PBA's transforms hard-code 32x32 images


def level_value(name: str, level: float, image_size: int = PBA_IMAGE_SIZE) -> float:
    """The magnitude, in hba-fast's units (SPEC 3), that PBA applies for op `name` at `level`: the reference code's
    rule with its own Posterize (hba_fast/augment/levels.py, variant "reference")."""
    return levels.level_value(name, level, image_size, variant="reference")


def _level_table(image_size: int) -> np.ndarray:
    """(15, MAG_LEVELS) value of each magnitude level of each op (in OPS order)."""
    return np.array([[level_value(op.name, lv, image_size) for lv in range(MAG_LEVELS)] for op in OPS])


@dataclass(frozen=True)
class PbaExport:
    """The quantised schedule and what the rounding cost."""

    lines: list[list]  # the file's lines as Python lists
    policies: np.ndarray  # (E, 60) int: the policy vector of each epoch of the schedule
    max_prob_error: float  # largest |p - level / 10|
    max_mag_error: dict[str, float]  # per op: largest |m - level value| in the op's units (0 for no magnitude)
    max_mag_error_rel: float  # the largest of those as a fraction of the op's range


def quantise(probs: np.ndarray, mags: np.ndarray, image_size: int = PBA_IMAGE_SIZE) -> PbaExport:
    """probs, mags (E, 30) -> PBA's 60-integer policy per epoch, with the rounding errors (no file lines yet)."""
    probs, mags = np.asarray(probs, np.float64), np.asarray(mags, np.float64)
    table = _level_table(image_size)  # (15, 10)
    policies = np.zeros((probs.shape[0], 2 * NUM_SLOTS), np.int64)
    err_p, err_m = 0.0, {op.name: 0.0 for op in OPS}
    for j in range(NUM_SLOTS):
        k, copy = j % NUM_OPS, j // NUM_OPS
        pos = copy * NUM_SLOTS + 2 * PBA_OPS.index(OPS[k].name)  # index of this slot's probability level
        p_level = np.clip(np.rint(probs[:, j] * 10), 0, 10).astype(np.int64)
        err_p = max(err_p, float(np.abs(probs[:, j] - p_level / 10).max()))
        policies[:, pos] = p_level
        if OPS[k].has_magnitude:
            dist = np.abs(mags[:, j, None] - table[k][None, :])  # (E, 10)
            m_level = dist.argmin(1)
            policies[:, pos + 1] = m_level
            err_m[OPS[k].name] = max(err_m[OPS[k].name], float(dist.min(1).max()))
    rel = max(err_m[op.name] / (op.hi - op.lo) for op in OPS if op.has_magnitude)
    return PbaExport([], policies, err_p, err_m, rel)


def to_pba(probs: np.ndarray, mags: np.ndarray, image_size: int = PBA_IMAGE_SIZE) -> PbaExport:
    """The schedule probs, mags (E, 30) as PBA's schedule file lines (module docstring)."""
    q = quantise(probs, mags, image_size)
    pol = [list(map(int, row)) for row in q.policies]
    changes = [e for e in range(1, len(pol)) if pol[e] != pol[e - 1]]
    if not changes:  # one policy throughout: a single line cloned at epoch 0
        lines = [["1", "0", 0, 0, pol[0], pol[0]]]
    else:
        lines, before = [], pol[0]
        for i, e in enumerate(changes):
            lines.append([str(i + 1), str(i), e, e, before, pol[e]])
            before = pol[e]
    return PbaExport(lines, q.policies, q.max_prob_error, q.max_mag_error, q.max_mag_error_rel)


def format_pba(export: PbaExport) -> str:
    """The text of the schedule file: one Python literal per line."""
    return "".join(repr(line) + "\n" for line in export.lines)


# ---------------------------------------------------------------- reading, as PBA does (written from its format)

def read_pba_schedule(path: str | Path, epochs: int, multiplier: float = 1.0) -> list[list[tuple[str, float, int]]]:
    """PBA's replay of a schedule file: per epoch (len = int(epochs * multiplier)) its 30 (op, prob, level).

    Mirrors PBA's `parse_log` (chain check, dropping leading lines that do not chain), `parse_log_schedule`
    (each segment repeated int(n * multiplier) times, padded with the last policy) and `parse_policy`."""
    rows = []
    for n, raw in enumerate(Path(path).read_text().splitlines()):
        if not raw.strip():
            continue
        try:
            row = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as e:
            raise ScheduleError(f"{path}:{n + 1}: not a PBA schedule line ({e})") from None
        for i in (4, 5):
            if isinstance(row[i], dict):
                row[i] = row[i]["hp_policy"]
        rows.append(row)
    if not rows:
        raise ScheduleError(f"{path} holds no PBA schedule lines")
    start = 0
    for i in range(len(rows) - 1):
        if rows[i][0] != rows[i + 1][1]:
            start = i + 1
    rows = rows[start:]
    segments = [(rows[0][3], rows[0][4])]
    for i in range(len(rows) - 1):
        segments.append((rows[i + 1][3] - rows[i][3], rows[i][5]))
    segments.append((epochs - rows[-1][3], rows[-1][5]))
    if sum(n for n, _ in segments) != epochs or any(n < 0 for n, _ in segments):
        raise ScheduleError(f"{path}: the clone epochs do not add up to {epochs} epochs")
    schedule = []
    for n, pol in segments:
        schedule.extend([pol] * int(n * multiplier))
    schedule.extend([segments[-1][1]] * (int(epochs * multiplier) - len(schedule)))
    return [_parse_policy(pol) for pol in schedule]


def _parse_policy(pol: list[int]) -> list[tuple[str, float, int]]:
    if len(pol) != 2 * NUM_SLOTS:
        raise ScheduleError(f"a PBA policy has {2 * NUM_SLOTS} integers, got {len(pol)}")
    out = []
    for half in (pol[:NUM_SLOTS], pol[NUM_SLOTS:]):
        out.extend((name, half[2 * i] / 10.0, half[2 * i + 1]) for i, name in enumerate(PBA_OPS))
    return out


def pba_to_arrays(policy: list[tuple[str, float, int]],
                  image_size: int = PBA_IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of PBA (30 (op, prob, level), PBA's order) as hba-fast's probs, mags (30,) in slot order."""
    probs, mags = np.zeros(NUM_SLOTS), np.zeros(NUM_SLOTS)
    seen = {name: 0 for name in PBA_OPS}
    for name, p, level in policy:
        j = OP_INDEX[name] + NUM_OPS * seen[name]
        seen[name] += 1
        probs[j] = p
        mags[j] = level_value(name, level, image_size) if OPS[OP_INDEX[name]].has_magnitude else 0.0
    return probs, mags
