"""PBA's schedule files: write one from a schedule, read one (PBA's published schedules too) and replay it as PBA does.

Every fact below is from PBA's own code (github.com/arcelien/pba, commit a9cc308), which replays a file with
`python pba/train.py ... --use_hp_policy --hp_policy FILE.txt --hp_policy_epochs H [--epochs N]`:

- Order (`PBA_OPS`): `pba/augmentation_transforms_hp.py`, the list `HP_TRANSFORMS` (Rotate, TranslateX, ...,
  Contrast); `HP_TRANSFORM_NAMES` is its order. At older commits the same order came from Python 2's dict order,
  which commit 950397f ("Reorder augmentation dict to py2 order") wrote down; the published schedules have it.
- Policy: 60 integers, two halves of 15 (probability level, magnitude level) pairs; `data_utils.parse_policy`
  reads pair i of a half as (HP_TRANSFORM_NAMES[i], probability level / 10, magnitude level), and
  `DataSet.parse_policy` joins the two halves: 30 (op, probability, level). So pair i of half c is copy c of op
  PBA_OPS[i], i.e. our slot c * 15 + OP_INDEX[PBA_OPS[i]]: `PBA_SLOTS`, the one table the writer and the reader
  both read. PBA searches probability levels 0-10 and magnitude levels 0-9 (`search.py`'s explore); its
  `apply_policy` asserts 0 <= level <= 10.
- File (`utils.parse_log`): one line per PBT exploit step, `[target_trial, clone_trial, target_epochs,
  clone_epochs, old_config, new_config]` (read with json.loads, else ast.literal_eval; a config is the policy
  list, or a dict holding it under "hp_policy"). Up to the last line whose target is not the next line's clone,
  leading lines are dropped. The segments: `old_config` of the first line for its clone_epochs epochs, then
  `new_config` of line i for clone_epochs[i + 1] - clone_epochs[i] epochs, the last one for H - clone_epochs[-1].
- Replay (`utils.parse_log_schedule`, called by `data_utils.DataSet.parse_policy` with epochs=H and multiplier =
  float(num_epochs) / H): each segment lasts int(n * multiplier) epochs, and the list is padded with the last
  policy to int(H * multiplier) entries; training epoch e uses entry e (`helper_utils.run_epoch_training` ->
  `next_batch(curr_epoch)`). So with num_epochs = H the replay is the file itself; otherwise PBA stretches each
  segment and *holds the last policy* for what the truncation leaves over: a file with one segment per epoch
  (6 epochs) trained for 10 epochs uses entries 0,1,2,3,4,5,5,5,5,5. hba-fast stretches its own schedules
  linearly (file.stretch_index: 0,1,1,2,2,3,4,4,5,5). Where float rounding makes int(H * multiplier) one short
  (H = 200, num_epochs = 29, 57, ...; PBA would then fail at its last epoch), `replay` holds the last policy
  for that epoch too.
- H: PBA's flag `--hp_policy_epochs`, default 200 (`pba/setup.py`). The published `rcifar10_16_wrn.txt` was
  searched over 200 epochs and is replayed with 200; `rsvhn_16_wrn.txt` over 160 and is replayed with 160
  (`scripts/search.sh`, `scripts/table_3_rcifar10.sh`, `scripts/table_4_rsvhn.sh`): `PUBLISHED_EPOCHS`.
- Levels (`augmentation_transforms.py` float_parameter / int_parameter, PARAMETER_MAX = 10, 32x32 images), in our
  units by hba_fast/augment/levels.py, variant "reference" (PBA's own Posterize):
    ShearX/Y 0.3 L / 10            TranslateX/Y int(L) px          Rotate int(3 L) degrees
    Solarize int(25.6 L)           Posterize clears 4 + int(0.4 L) bits (PBA keeps 4 - int(0.4 L))
    Contrast/Color/Brightness/Sharpness 0.1 + 0.18 L                Cutout int(2 L) px square
  PBA's Cutout reaches 18 px of 32, beyond Table 7's range: a schedule read from PBA has ranges="any".

Writing (`to_pba`): each probability rounds to the nearest tenth and each magnitude to the level whose value is
nearest (values beyond PBA's range clip to its end); the largest errors are reported. One line per epoch at which
the quantised policy changes, trial i + 1 cloned from trial i, so that PBA's replay with num_epochs = H = the
schedule's epochs gives back the schedule's epochs one for one (`hba-fast export --to pba --epochs N` stretches
the schedule to N first, with hba-fast's rule, and says to pass `--epochs N --hp_policy_epochs N`).

Reading (`read_pba`, `hba_fast.schedule.file.read_schedule("pba:FILE")`): the file's segments, replayed for H
epochs (or, given `epochs`, PBA's replay for a run of that many), each policy as probs, mags (30,) in our slot
order: probability = level / 10, magnitude = the level's value in our units. `pba:FILE@H` names H; without it,
`PUBLISHED_EPOCHS` by the file's name, else PBA's default 200.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..augment import levels
from ..augment.ops import OP_INDEX, OPS
from ..augment.space import NUM_OPS, NUM_SLOTS
from ..errors import ScheduleError

# PBA's HP_TRANSFORMS (pba/augmentation_transforms_hp.py, arcelien/pba a9cc308), in its order
PBA_OPS = ("Rotate", "TranslateX", "TranslateY", "Brightness", "Color", "Invert", "Sharpness", "Posterize", "ShearX",
           "Solarize", "ShearY", "Equalize", "AutoContrast", "Cutout", "Contrast")
# pair q = c * 15 + i of a policy (its integers 2q, 2q + 1) is copy c of op PBA_OPS[i]: our slot PBA_SLOTS[q]
PBA_SLOTS = np.array([c * NUM_OPS + OP_INDEX[name] for c in range(2) for name in PBA_OPS])  # (30,)
POLICY_LEN = 2 * NUM_SLOTS  # 60 integers
PROB_LEVELS = 11  # probability levels 0..10 (p = level / 10)
MAG_LEVELS = 10  # PBA searches magnitude levels 0..9
MAX_LEVEL = 10  # PBA's apply_policy asserts 0 <= level <= PARAMETER_MAX
PBA_IMAGE_SIZE = 32  # PBA's transforms hard-code 32x32 images
PREFIX = "pba:"  # read_schedule("pba:FILE[@H]") reads a PBA file
DEFAULT_EPOCHS = 200  # PBA's --hp_policy_epochs default (pba/setup.py)
PUBLISHED_EPOCHS = {"rcifar10_16_wrn.txt": 200, "rsvhn_16_wrn.txt": 160}  # PBA's schedules/, their search epochs


def level_value(name: str, level: float, image_size: int = PBA_IMAGE_SIZE) -> float:
    """The magnitude, in hba-fast's units (SPEC 3), that PBA applies for op `name` at `level`: the reference code's
    rule with its own Posterize (hba_fast/augment/levels.py, variant "reference")."""
    return levels.level_value(name, level, image_size, variant="reference")


def _level_table(image_size: int, n: int = MAG_LEVELS) -> np.ndarray:
    """(15, n) value of each magnitude level of each op (in OPS order)."""
    return np.array([[level_value(op.name, lv, image_size) for lv in range(n)] for op in OPS])


# ---------------------------------------------------------------- writing

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
    policies = np.zeros((probs.shape[0], POLICY_LEN), np.int64)
    err_p, err_m = 0.0, {op.name: 0.0 for op in OPS}
    for q, j in enumerate(PBA_SLOTS):
        k = j % NUM_OPS
        p_level = np.clip(np.rint(probs[:, j] * 10), 0, 10).astype(np.int64)
        err_p = max(err_p, float(np.abs(probs[:, j] - p_level / 10).max()))
        policies[:, 2 * q] = p_level
        if OPS[k].has_magnitude:
            dist = np.abs(mags[:, j, None] - table[k][None, :])  # (E, 10)
            policies[:, 2 * q + 1] = dist.argmin(1)
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


# ---------------------------------------------------------------- reading, as PBA does

def split_spec(spec: str | Path) -> tuple[Path, int | None]:
    """'pba:FILE' or 'pba:FILE@H' (the PREFIX optional) -> (FILE, H or None)."""
    text = str(spec)
    text = text[len(PREFIX):] if text.startswith(PREFIX) else text
    m = re.fullmatch(r"(.*)@(\d+)", text)
    return (Path(m.group(1)), int(m.group(2))) if m else (Path(text), None)


def policy_epochs_of(path: Path) -> int:
    """The epochs H a PBA file covers when not given: PBA's own for its published files, else PBA's default."""
    return PUBLISHED_EPOCHS.get(Path(path).name, DEFAULT_EPOCHS)


def _config(value, where: str) -> list[int]:
    """A line's old or new config: the policy list, or a dict holding it under "hp_policy"; checked."""
    pol = value.get("hp_policy") if isinstance(value, dict) else value
    if (not isinstance(pol, list) or len(pol) != POLICY_LEN
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pol)):
        raise ScheduleError(f"{where}: a PBA policy is a list of {POLICY_LEN} integers (15 (probability level, "
                            f"magnitude level) pairs, twice), got {str(pol)[:80]}")
    if not all(0 <= v <= MAX_LEVEL for v in pol):
        raise ScheduleError(f"{where}: PBA's levels lie in 0..{MAX_LEVEL}, got {min(pol)}..{max(pol)}")
    return pol


def parse_pba(text: str, where: str, policy_epochs: int) -> list[tuple[int, list[int]]]:
    """A PBA file's segments [(epochs, 60 ints)], summing to `policy_epochs` (PBA's parse_log; module docstring)."""
    rows = []
    for n, raw in enumerate(text.splitlines()):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            try:
                row = ast.literal_eval(raw)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
                raise ScheduleError(f"{where}:{n + 1}: not a PBA schedule line ({type(e).__name__}: {e})") from None
        if not isinstance(row, (list, tuple)) or len(row) != 6 or not all(isinstance(v, int) for v in row[2:4]):
            raise ScheduleError(f"{where}:{n + 1}: a PBA schedule line is [target_trial, clone_trial, target_epochs, "
                                f"clone_epochs, old_policy, new_policy]; got {raw[:80]!r}")
        rows.append((row[0], row[1], row[3], _config(row[4], f"{where}:{n + 1}"), _config(row[5], f"{where}:{n + 1}")))
    if not rows:
        raise ScheduleError(f"{where} holds no PBA schedule lines")
    start = 0  # PBA drops the lines before the last break of the trial chain
    for i in range(len(rows) - 1):
        if rows[i][0] != rows[i + 1][1]:
            start = i + 1
    rows = rows[start:]
    clones = [r[2] for r in rows]
    if clones[0] < 0 or any(b < a for a, b in zip(clones, clones[1:])):
        raise ScheduleError(f"{where}: the clone epochs must not decrease (PBA asserts it), got {clones}")
    if clones[-1] > policy_epochs:
        raise ScheduleError(f"{where}: a policy is cloned at epoch {clones[-1]}, after the {policy_epochs} epochs the "
                            f"file is read for; give the epochs it was searched for as pba:FILE@EPOCHS")
    segments = [(clones[0], rows[0][3])]
    segments += [(clones[i + 1] - clones[i], rows[i][4]) for i in range(len(rows) - 1)]
    segments.append((policy_epochs - clones[-1], rows[-1][4]))
    return segments


def replay(segments: list[tuple[int, list[int]]], policy_epochs: int, epochs: int | None = None) -> list[list[int]]:
    """The policy of each epoch of a PBA run of `epochs` (default: policy_epochs) epochs (PBA's parse_log_schedule
    with multiplier epochs / policy_epochs; module docstring)."""
    epochs = policy_epochs if epochs is None else epochs
    if epochs < 1:
        raise ScheduleError(f"a PBA schedule is replayed for >= 1 epochs, got {epochs}")
    multiplier = float(epochs) / policy_epochs  # PBA's arithmetic, float rounding included
    out = [pol for n, pol in segments for _ in range(int(n * multiplier))]
    out += [segments[-1][1]] * (int(policy_epochs * multiplier) - len(out))
    return out + [out[-1]] * (epochs - len(out))  # float rounding one short: PBA would fail; hold the last policy


def policy_arrays(policy: list[int], image_size: int = PBA_IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One 60-integer PBA policy as probs, mags (30,) in our slot order (probability level / 10, the magnitude
    level's value in our units; 0 for the ops without a magnitude)."""
    pol = np.asarray(policy, np.int64).reshape(NUM_SLOTS, 2)  # (30, 2): pair q
    table = _level_table(image_size, MAX_LEVEL + 1)  # (15, 11)
    probs, mags = np.zeros(NUM_SLOTS), np.zeros(NUM_SLOTS)
    probs[PBA_SLOTS] = pol[:, 0] / 10.0
    mags[PBA_SLOTS] = table[PBA_SLOTS % NUM_OPS, pol[:, 1]]
    return probs, mags


def read_pba(spec: str | Path, epochs: int | None = None, policy_epochs: int | None = None,
             image_size: int = PBA_IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray, int]:
    """A PBA file ('pba:FILE', 'pba:FILE@H' or a path) as probs, mags (E, 30) and H: E = H entries, or PBA's replay
    for a run of `epochs` epochs (module docstring)."""
    path, named = split_spec(spec)
    policy_epochs = policy_epochs or named or policy_epochs_of(path)
    if policy_epochs < 1:
        raise ScheduleError(f"{spec}: a PBA schedule covers >= 1 epochs, got {policy_epochs}")
    if not path.is_file():
        raise ScheduleError(f"PBA schedule file {str(path)!r} not found; give pba:PATH to one of PBA's schedule files "
                            f"(schedules/*.txt of github.com/arcelien/pba, or `hba-fast export --to pba`)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ScheduleError(f"cannot read {path} ({type(e).__name__}: {e})") from None
    policies = replay(parse_pba(text, str(path), policy_epochs), policy_epochs, epochs)
    arrays = [policy_arrays(pol, image_size) for pol in policies]
    return np.stack([p for p, _ in arrays]), np.stack([m for _, m in arrays]), policy_epochs
