"""PBA's schedule files, checked against PBA's own rules written here from PBA's code, not with hba-fast's reader.

The reference below (`pba_parse_log`, `pba_replay`, `pba_policy`, `PBA_VALUE`) follows PBA's documented parse rules
(github.com/arcelien/pba, commit a9cc308): the op order of `pba/augmentation_transforms_hp.py` HP_TRANSFORMS;
`pba/utils.py` parse_log (chained PBT lines, leading lines before the last chain break dropped, segments) and
parse_log_schedule (each segment int(n * multiplier) epochs, padded with the last policy); `pba/data_utils.py`
parse_policy (pair i of each half = op i, probability level / 10); the level -> value rules of
`pba/augmentation_transforms.py` (int_parameter / float_parameter, PARAMETER_MAX = 10), in hba-fast's units.
- the writer (`hba-fast export --to pba`) read back by it: every (epoch, copy, op) probability within rounding, every
  magnitude at the nearest of PBA's levels; a schedule with one op at a time comes back as that op;
- the reader (`read_schedule("pba:FILE")`, `SchedulePolicy.from_pba`) on PBA's two published schedules
  (../shared/data/pba/, skipped where absent) and on made-up files: PBA's (op, probability, magnitude) at every
  epoch, also stretched by PBA's rule (it holds the last policy; hba-fast's own files stretch linearly);
- `pba:` as an input of export, plot and train; bad files give one clear line.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hba_fast.augment.ops import OP_INDEX, OPS
from hba_fast.augment.space import NUM_OPS, NUM_SLOTS, SearchSpace
from hba_fast.errors import ScheduleError
from hba_fast.schedule.export import export_schedule
from hba_fast.schedule.file import Schedule, read_schedule, write_schedule
from hba_fast.schedule.pba import MAG_LEVELS, PBA_OPS, level_value, to_pba
from hba_fast.schedule.policy import SchedulePolicy

PBA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pba"
PUBLISHED = [("rcifar10_16_wrn.txt", 200), ("rsvhn_16_wrn.txt", 160)]  # PBA's scripts: --hp_policy_epochs

# ---------------------------------------------------------------- PBA's rules, written from PBA's code

# pba/augmentation_transforms_hp.py, HP_TRANSFORMS, in PBA's order
HP_TRANSFORMS = ["Rotate", "TranslateX", "TranslateY", "Brightness", "Color", "Invert", "Sharpness", "Posterize",
                 "ShearX", "Solarize", "ShearY", "Equalize", "AutoContrast", "Cutout", "Contrast"]


def _int_parameter(level, maxval):
    return int(level * maxval / 10)


def _float_parameter(level, maxval):
    return float(level) * maxval / 10


# the value each of PBA's _*_impl applies at a level, in hba-fast's units (SPEC 3: pixels as a fraction of 32)
PBA_VALUE = {
    "Rotate": lambda L: _int_parameter(L, 30),
    "TranslateX": lambda L: _int_parameter(L, 10) / 32, "TranslateY": lambda L: _int_parameter(L, 10) / 32,
    "ShearX": lambda L: _float_parameter(L, 0.3), "ShearY": lambda L: _float_parameter(L, 0.3),
    "Solarize": lambda L: _int_parameter(L, 256),  # ImageOps.solarize(img, 256 - value)
    "Posterize": lambda L: 8 - (4 - _int_parameter(L, 4)),  # PBA keeps 4 - int(0.4 L) bits: clears the rest
    "Cutout": lambda L: _int_parameter(L, 20) / 32,
    **{n: (lambda L: _float_parameter(L, 1.8) + 0.1) for n in ("Brightness", "Color", "Contrast", "Sharpness")},
}


def pba_parse_log(path: Path, epochs: int) -> list[tuple[int, list[int]]]:
    """PBA's utils.parse_log: [(epochs, 60 ints)]."""
    rows = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            row = ast.literal_eval(line)
        rows.append([v["hp_policy"] if isinstance(v, dict) else v for v in row])
    cut = None
    for i in range(len(rows) - 1):
        if rows[i][0] != rows[i + 1][1]:
            cut = i
    if cut is not None:
        rows = rows[cut + 1:]
    policy = [(rows[0][3], rows[0][4])]
    for i in range(len(rows) - 1):
        policy.append((rows[i + 1][3] - rows[i][3], rows[i][5]))
    policy.append((epochs - rows[-1][3], rows[-1][5]))
    assert sum(n for n, _ in policy) == epochs
    return policy


def pba_replay(path: Path, hp_policy_epochs: int, num_epochs: int) -> list[list[int]]:
    """PBA's DataSet.parse_policy -> utils.parse_log_schedule(path, hp_policy_epochs, num_epochs / hp_policy_epochs)."""
    multiplier = float(num_epochs) / hp_policy_epochs
    policy = pba_parse_log(path, hp_policy_epochs)
    schedule = [pol for n, pol in policy for _ in range(int(n * multiplier))]
    schedule += [policy[-1][1]] * (int(hp_policy_epochs * multiplier) - len(schedule))
    return schedule


def pba_policy(pol: list[int]) -> list[tuple[str, float, int]]:
    """PBA's data_utils.parse_policy on each half: 30 (name, probability, level)."""
    half = len(pol) // 2
    return [(name, part[2 * i] / 10.0, part[2 * i + 1]) for part in (pol[:half], pol[half:])
            for i, name in enumerate(HP_TRANSFORMS)]


def _slot(name: str, copy: int) -> int:
    """hba-fast's slot of copy `copy` of op `name`: slot j holds op j % 15, copy j // 15."""
    return copy * NUM_OPS + OP_INDEX[name]


def _arrays(policy: list[tuple[str, float, int]]) -> tuple[np.ndarray, np.ndarray]:
    """PBA's 30 (name, probability, level) as (probs, mags) (30,) in hba-fast's slots, magnitudes by PBA_VALUE."""
    probs, mags, seen = np.zeros(NUM_SLOTS), np.zeros(NUM_SLOTS), {}
    for name, p, level in policy:
        j = _slot(name, seen.get(name, 0))
        seen[name] = seen.get(name, 0) + 1
        probs[j], mags[j] = p, PBA_VALUE[name](level) if name in PBA_VALUE else 0.0
    return probs, mags


# ---------------------------------------------------------------- the writer, read back by PBA's rules

def _write(path, epochs: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    space, entries = SearchSpace(), []
    for e in range(epochs):
        lam = torch.tensor(rng.normal(-1.5, 1.2, 54), dtype=torch.float32)
        p, m = space.decode(lam)
        entries.append({"epoch": e, "lam": lam.tolist(), "probs": p.tolist(), "mags": m.tolist()})
    write_schedule(path, Schedule.from_entries(entries), {}, {})
    probs = np.array([e["probs"] for e in entries], np.float32).round(6)
    mags = np.array([e["mags"] for e in entries], np.float32).round(6)
    return probs, mags


def _max_step(name: str) -> float:
    values = [PBA_VALUE[name](lv) for lv in range(MAG_LEVELS)]
    return max(np.diff(values)) if len(set(values)) > 1 else 0.0


@pytest.mark.parametrize("export_epochs, num_epochs", [(None, 6), (None, 12), (6, 6), (10, 10), (200, 200)])
def test_export_read_back_by_pbas_rules(tmp_path, export_epochs, num_epochs):
    """Every (epoch, copy, op): PBA's probability within the rounding the export reports (<= 0.05), its magnitude
    level the one whose value (PBA's rule) is nearest to ours. Exported for N epochs, PBA's replay with --epochs N
    --hp_policy_epochs N is the schedule stretched linearly (hba-fast's rule); a 6-epoch file run for 12 epochs is
    each entry twice (PBA's multiplier 2, exact)."""
    probs, mags = _write(tmp_path / "schedule.json", epochs=6, seed=num_epochs)
    report = export_schedule(tmp_path / "schedule.json", "pba", tmp_path / "pba.txt", epochs=export_epochs)
    written = export_epochs or 6
    assert "lossy" in report.notes[0] and f"--epochs {written} --hp_policy_epochs {written}" in report.notes[1]
    replay = pba_replay(tmp_path / "pba.txt", written, num_epochs)
    assert len(replay) == num_epochs
    exp = to_pba(probs, mags)
    for e, pol in enumerate(replay):
        policy = pba_policy(pol)
        assert [name for name, _, _ in policy] == HP_TRANSFORMS * 2
        src = min(5, int(e * 6 / written + 0.5)) if export_epochs else e * 6 // num_epochs  # the entry in use
        seen = {}
        for name, p, level in policy:
            j = _slot(name, seen.get(name, 0))
            seen[name] = seen.get(name, 0) + 1
            assert abs(p - probs[src, j]) <= exp.max_prob_error + 1e-6 <= 0.05 + 1e-6, (e, name, p, probs[src, j])
            if name not in PBA_VALUE:
                continue
            dist = [abs(PBA_VALUE[name](lv) - mags[src, j]) for lv in range(MAG_LEVELS)]
            assert dist[level] <= min(dist) + 1e-6, (e, name, level, mags[src, j])  # PBA's nearest level
            err = dist[level]
            assert err <= exp.max_mag_error[name] + 1e-6
            # inside PBA's value range the error is at most half a level step; outside it clips to the end
            lo, hi = PBA_VALUE[name](0), PBA_VALUE[name](MAG_LEVELS - 1)
            if lo <= mags[src, j] <= hi:
                assert err <= _max_step(name) / 2 + 1e-6, (name, mags[src, j], level)
            else:
                assert level in (0, MAG_LEVELS - 1)


def test_one_op_at_a_time_comes_back_as_that_op(tmp_path):
    """Epoch j holds only slot j, at probability 1 and a magnitude on one of PBA's levels: PBA's reader must name
    that op, in that copy, at a level of that value (the old slot order gave Rotate back as Brightness)."""
    probs, mags = np.zeros((NUM_SLOTS, NUM_SLOTS)), np.zeros((NUM_SLOTS, NUM_SLOTS))
    for j in range(NUM_SLOTS):
        probs[j, j] = 1.0
        op = OPS[j % NUM_OPS]
        mags[j, j] = PBA_VALUE[op.name](7) if op.has_magnitude else 0.0
    from hba_fast import atomic
    from hba_fast.schedule.file import to_json_flat

    atomic.write_json(tmp_path / "flat.json", to_json_flat(Schedule(probs, mags, ranges="any")))
    export_schedule(tmp_path / "flat.json", "pba", tmp_path / "pba.txt")
    replay = pba_replay(tmp_path / "pba.txt", NUM_SLOTS, NUM_SLOTS)
    for j, pol in enumerate(replay):
        on = [(i // NUM_OPS, name, p, PBA_VALUE[name](level) if name in PBA_VALUE else None)
              for i, (name, p, level) in enumerate(pba_policy(pol)) if p > 0]
        op = OPS[j % NUM_OPS]
        assert on == [(j // NUM_OPS, op.name, 1.0, mags[j, j] if op.has_magnitude else None)], (j, on)


def test_pba_ops_are_pbas_hp_transforms():
    assert list(PBA_OPS) == HP_TRANSFORMS
    assert sorted(PBA_OPS) == sorted(op.name for op in OPS) and len(OP_INDEX) == 15


def test_pba_level_values_follow_pbas_code():
    assert level_value("Rotate", 9) == 27.0 and level_value("Posterize", 9) == 7.0
    assert level_value("Solarize", 3) == 76.0 and abs(level_value("Brightness", 5) - 1.0) < 1e-12
    assert level_value("TranslateX", 4) == 4 / 32 and level_value("Cutout", 3) == 6 / 32
    for op in OPS:  # every level of every op, against the rules written above from PBA's code
        for lv in range(11):
            want = PBA_VALUE[op.name](lv) if op.has_magnitude else 0.0
            assert abs(level_value(op.name, lv) - want) < 1e-9, (op.name, lv)


# ---------------------------------------------------------------- the reader

def _lines(tmp_path, lines, name="s.txt") -> Path:
    path = tmp_path / name
    path.write_text("".join(repr(x) + "\n" for x in lines))
    return path


def test_reader_parses_pbas_shipped_layout(tmp_path):
    """Lines as in PBA's schedules/*.txt: chained trials, a leading line that does not chain (dropped), policy lists
    (and a dict config, PBA's newer form)."""
    a, b, c = ([i % 11] * 60 for i in (0, 3, 7))
    path = _lines(tmp_path, [["3", "2", 1, 1, a, a], ["9", "8", 11, 12, a, b], ["7", "9", 35, 34, b, {"hp_policy": c}]])
    schedule = read_schedule(f"pba:{path}@40")
    assert schedule.epochs == 40 and schedule.ranges == "any"
    want = [_arrays(pba_policy(pol)) for pol in pba_replay(path, 40, 40)]
    assert np.allclose(schedule.probs, [p for p, _ in want], atol=1e-6)
    assert np.allclose(schedule.mags, [m for _, m in want], atol=1e-5)
    rotate, equalize = _slot("Rotate", 0), _slot("Equalize", 1)
    assert schedule.probs[0, rotate] == 0.0 and schedule.probs[12, rotate] == pytest.approx(0.3)
    assert schedule.mags[12, rotate] == 9.0  # level 3: int(3 * 30 / 10) degrees
    assert schedule.probs[34, rotate] == pytest.approx(0.7) and schedule.probs[39, equalize] == pytest.approx(0.7)
    assert schedule.mags[34, _slot("Cutout", 1)] == pytest.approx(14 / 32)  # level 7: int(7 * 20 / 10) px


def test_pba_stretch_holds_the_last_policy(tmp_path):
    """6 -> 10 epochs: PBA's replay (each segment int(n * 10 / 6) epochs, then the last policy) gives entries
    0,1,2,3,4,5,5,5,5,5; hba-fast's own files stretch linearly (0,1,1,2,2,3,4,4,5,5)."""
    probs = np.zeros((6, NUM_SLOTS))
    probs[np.arange(6), np.arange(6)] = 1.0  # entry e: only slot e
    mags = np.zeros_like(probs)
    mags[:, :NUM_OPS] = [op.lo for op in OPS]
    path = _lines(tmp_path, to_pba(probs, mags).lines)
    read = read_schedule(f"pba:{path}@6", epochs=10)
    assert [int(np.argmax(p)) for p in read.probs] == [0, 1, 2, 3, 4, 5, 5, 5, 5, 5]
    assert [int(np.argmax(_arrays(pba_policy(p))[0])) for p in pba_replay(path, 6, 10)] == [0, 1, 2, 3, 4, 5, 5, 5, 5,
                                                                                             5]
    assert SchedulePolicy.from_pba(path, epochs=10, policy_epochs=6).entry_index(9) == 9  # already stretched
    assert [SchedulePolicy.from_arrays(probs, mags, epochs=10).entry_index(e) for e in range(10)] == [
        0, 1, 1, 2, 2, 3, 4, 4, 5, 5]


def _published(name: str) -> Path:
    path = PBA_DIR / name
    if not path.is_file():
        pytest.skip(f"PBA's published schedule {name} not found in {PBA_DIR}")
    return path


@pytest.mark.parametrize("name, epochs", PUBLISHED)
def test_published_schedules_read_as_pba_reads_them(name, epochs):
    """PBA's (op, probability, magnitude) at every one of the epochs the file covers, through read_schedule and
    SchedulePolicy.from_pba; its epochs (200, 160 for PBA's SVHN schedule) known by the file's name."""
    path = _published(name)
    want = [_arrays(pba_policy(pol)) for pol in pba_replay(path, epochs, epochs)]
    schedule = read_schedule(f"pba:{path}")
    assert schedule.epochs == epochs
    policy = SchedulePolicy.from_pba(path)
    for e, (p, m) in enumerate(want):
        assert np.allclose(schedule.probs[e], p, atol=1e-6) and np.allclose(schedule.mags[e], m, atol=1e-5), e
        got_p, got_m = policy.entry(e)
        assert np.allclose(got_p, p, atol=1e-6) and np.allclose(got_m, m, atol=1e-5), e
    assert schedule.probs.sum() > 100 and (schedule.probs[0] == 0).all()  # PBA's search starts from no augmentation


def test_published_cifar_schedule_by_hand():
    """Values read off rcifar10_16_wrn.txt by hand: epochs 0-11 hold the all-zero policy; from epoch 12 the first
    line's new policy [0, 3, 3, 7, 1, 9, 2, 0, ...]: Rotate p 0 (level 3), TranslateX p 0.3 at level 7 (7 px),
    TranslateY p 0.1 at level 9 (9 px), Brightness p 0.2 at level 0 (factor 0.1)."""
    path = _published("rcifar10_16_wrn.txt")
    policy = SchedulePolicy.from_pba(path, epochs=200)
    assert (policy.entry(11)[0] == 0).all()
    p, m = policy.entry(12)
    assert p[_slot("Rotate", 0)] == 0.0 and m[_slot("Rotate", 0)] == 9.0
    assert p[_slot("TranslateX", 0)] == pytest.approx(0.3) and m[_slot("TranslateX", 0)] == pytest.approx(7 / 32)
    assert p[_slot("TranslateY", 0)] == pytest.approx(0.1) and m[_slot("TranslateY", 0)] == pytest.approx(9 / 32)
    assert p[_slot("Brightness", 0)] == pytest.approx(0.2) and m[_slot("Brightness", 0)] == pytest.approx(0.1)


@pytest.mark.parametrize("num_epochs", [1, 3, 29, 50, 300])
def test_published_schedule_stretched_by_pbas_rule(num_epochs):
    """A run of N epochs gets PBA's replay with --epochs N --hp_policy_epochs 200 (N = 29: PBA's float arithmetic
    leaves it one short, the last policy is held)."""
    path = _published("rcifar10_16_wrn.txt")
    want = pba_replay(path, 200, num_epochs)
    want += want[-1:] * (num_epochs - len(want))
    read = read_schedule(f"pba:{path}", epochs=num_epochs)
    assert read.epochs == num_epochs
    for e, pol in enumerate(want):
        p, m = _arrays(pba_policy(pol))
        assert np.allclose(read.probs[e], p, atol=1e-6) and np.allclose(read.mags[e], m, atol=1e-5), e


def test_bad_pba_files_are_one_clear_line(tmp_path):
    good = [["1", "0", 2, 2, [0] * 60, [1] * 60]]
    with pytest.raises(ScheduleError, match="not found"):
        read_schedule(f"pba:{tmp_path / 'missing.txt'}")
    (tmp_path / "bad.txt").write_text("[1, 2,\n")
    with pytest.raises(ScheduleError, match=r"bad.txt:1: not a PBA schedule line"):
        read_schedule(f"pba:{tmp_path / 'bad.txt'}")
    with pytest.raises(ScheduleError, match="list of 60 integers"):
        read_schedule(f"pba:{_lines(tmp_path, [['1', '0', 2, 2, [0] * 59, [0] * 60]])}")
    with pytest.raises(ScheduleError, match="levels lie in 0..10"):
        read_schedule(f"pba:{_lines(tmp_path, [['1', '0', 2, 2, [0] * 59 + [11], [0] * 60]])}")
    with pytest.raises(ScheduleError, match="pba:FILE@EPOCHS"):
        read_schedule(f"pba:{_lines(tmp_path, good)}@1")
    assert read_schedule(f"pba:{_lines(tmp_path, good)}@3").epochs == 3


# ---------------------------------------------------------------- pba: as an input of the commands

def test_pba_file_as_input_of_export_and_plot(tmp_path):
    probs, mags = np.zeros((3, NUM_SLOTS)), np.zeros((3, NUM_SLOTS))
    probs[:, _slot("Cutout", 0)] = [0.2, 0.5, 0.9]
    mags[:, _slot("Cutout", 0)] = 18 / 32  # PBA's largest Cutout: beyond Table 7's range, accepted
    path = _lines(tmp_path, to_pba(probs, mags).lines, "mine.txt")
    export_schedule(f"pba:{path}@3", "json-flat", tmp_path / "flat.json")
    flat = read_schedule(tmp_path / "flat.json")
    assert np.allclose(flat.probs, probs, atol=1e-6) and np.allclose(flat.mags[:, _slot("Cutout", 0)], 18 / 32)
    run = subprocess.run([sys.executable, "-m", "hba_fast.cli", "plot", f"pba:{path}@3"], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "mine.png").stat().st_size > 5_000  # beside the file, named after it
    bad = subprocess.run([sys.executable, "-m", "hba_fast.cli", "export", f"pba:{tmp_path / 'none.txt'}", "--to",
                          "json-flat", "--out", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not found" in bad.stderr


def test_published_schedule_to_albumentations(tmp_path):
    A = pytest.importorskip("albumentations")
    path = _published("rcifar10_16_wrn.txt")
    export_schedule(f"pba:{path}", "albumentations", tmp_path / "albu.json", epoch=150)
    loaded = A.load(str(tmp_path / "albu.json"), data_format="json")
    img = np.zeros((32, 32, 3), np.uint8)
    assert loaded(image=img)["image"].shape == (32, 32, 3)
