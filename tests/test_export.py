"""`hba-fast export`: each format read back by its consumer and compared with the schedule.

- json-flat: read back (and by SchedulePolicy.from_file): the same per-epoch (op, prob, magnitude);
- pba: tests/test_pba.py (read back by PBA's own rules, written there from PBA's code);
- albumentations (the real package): `A.load`, applied to real images; the OneOf weights are the exact law of
  PBA's draw; the outputs of one image follow that law, and the exact ops give Pillow's pixels.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hba_fast.augment.pba_draw import pba_law
from hba_fast.augment.pil import apply_pil_op
from hba_fast.augment.space import SearchSpace
from hba_fast.schedule.export import export_schedule
from hba_fast.schedule.file import Schedule, read_schedule, write_schedule
from hba_fast.schedule.policy import SchedulePolicy


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


def test_json_flat_round_trip(tmp_path):
    probs, mags = _write(tmp_path / "schedule.json")
    export_schedule(tmp_path / "schedule.json", "json-flat", tmp_path / "flat.json")
    flat = read_schedule(tmp_path / "flat.json")
    p, m = flat.probs, flat.mags
    assert np.abs(p - probs).max() < 1e-6 and np.abs(m - mags).max() < 1e-5
    doc = json.loads((tmp_path / "flat.json").read_text())
    first = doc["epochs"][0]["policy"][0]
    assert first["op"] == "ShearX" and first["signed"] is True and "K from {0: 0.2" in doc["sampling"]
    policy = SchedulePolicy.from_file(tmp_path / "flat.json", epochs=12)
    assert np.allclose(policy.entry(11)[0], probs[5])


def test_json_flat_stretched_and_one_epoch(tmp_path):
    probs, mags = _write(tmp_path / "schedule.json", epochs=3)
    export_schedule(tmp_path / "schedule.json", "json-flat", tmp_path / "flat.json", epochs=6)
    p = read_schedule(tmp_path / "flat.json").probs
    assert np.allclose(p, probs[[0, 1, 1, 2, 2, 2]], atol=1e-6)
    export_schedule(tmp_path / "schedule.json", "json-flat", tmp_path / "one.json", epoch=1)
    assert np.allclose(read_schedule(tmp_path / "one.json").probs, probs[1:2], atol=1e-6)


# ---------------------------------------------------------------- Albumentations (the real package)

def _children(compose):
    (one_of,) = compose.transforms
    return one_of.transforms


def test_albumentations_loads_and_applies(tmp_path, cifar_mini):
    A = pytest.importorskip("albumentations")
    probs, mags = _write(tmp_path / "schedule.json", epochs=3)
    report = export_schedule(tmp_path / "schedule.json", "albumentations", tmp_path / "albu.json", epoch=2)
    assert any("approximate ops" in n for n in report.notes)
    loaded = A.load(str(tmp_path / "albu.json"), data_format="json")
    law = pba_law(probs[2])
    weights = [t.p for t in _children(loaded)]
    assert abs(weights[0] - law.none) < 1e-9  # NoOp first
    assert abs(sum(weights) - 1.0) < 1e-6
    singles = [t.p for t in _children(loaded) if isinstance(t, A.Sequential) and len(t.transforms) == 1
               and not isinstance(t.transforms[0], A.RandomOrder)]
    assert abs(sum(singles) - law.single.sum()) < 1e-6
    for img in cifar_mini["train_images"][:16]:
        out = loaded(image=img)["image"]
        assert out.shape == img.shape and out.dtype == np.uint8
    # without --epoch: one file per epoch
    export_schedule(tmp_path / "schedule.json", "albumentations", tmp_path / "per_epoch")
    assert sorted(p.name for p in (tmp_path / "per_epoch").iterdir()) == [f"epoch_{e:03d}.json" for e in range(3)]


def test_albumentations_outputs_follow_the_law(tmp_path, cifar_mini):
    A = pytest.importorskip("albumentations")
    from test_schedule_policy import _chi_square_ok, _deterministic_schedule, _expected_outcomes

    # the ops Albumentations computes exactly as Pillow (see albumentations_format)
    probs, mags = _deterministic_schedule({"Invert": (0.5, 0.0), "Posterize": (0.6, 4.0),
                                           "Solarize": (0.4, 128.0)})
    doc_path = tmp_path / "flat.json"
    from hba_fast import atomic
    from hba_fast.schedule.file import to_json_flat

    atomic.write_json(doc_path, to_json_flat(Schedule(probs, mags, ranges="any")))
    export_schedule(doc_path, "albumentations", tmp_path / "albu.json")
    loaded = A.load(str(tmp_path / "albu.json"), data_format="json")
    img = cifar_mini["test_images"][7]
    expected = _expected_outcomes(img, probs[0], mags[0])  # through Pillow: the ops must be exact too
    outputs = [loaded(image=img.copy())["image"].tobytes() for _ in range(2000)]
    ok, why = _chi_square_ok(outputs, expected)
    assert ok, why


# The ops Albumentations runs with Pillow's arithmetic (up to rounding), at whole-pixel shifts for the translations
# (at fractional shifts the two round the sample position differently: up to one pixel).
_EXACT = {"TranslateX": 0.25, "TranslateY": -0.125, "Invert": 0.0, "AutoContrast": 0.0,
          "Solarize": 100.0, "Posterize": 3.0, "Brightness": 1.4, "Color": 0.6, "Contrast": 1.6, "Sharpness": 1.8,
          "Rotate": 12.0}


@pytest.mark.parametrize("name", sorted(_EXACT))
def test_albumentations_exact_ops_match_pillow(cifar_mini, name):
    A = pytest.importorskip("albumentations")
    from hba_fast.schedule.albumentations import _op

    m = _EXACT[name]
    transform = A.Compose([_op(A, name, m)])
    diffs = []
    for img in cifar_mini["val_images"][:16]:
        ref = np.asarray(apply_pil_op(Image.fromarray(img), name, m)).astype(np.int16)
        out = transform(image=img)["image"].astype(np.int16)
        inner = (slice(1, -1), slice(1, -1)) if name in ("Sharpness", "Rotate") else (slice(None), slice(None))
        diffs.append(np.abs(ref - out)[inner].mean())
    # geometric ops: a pixel-centre convention apart (a few border pixels); the rest: rounding of the last bit
    assert np.mean(diffs) < (3.0 if name in ("Rotate", "TranslateX", "TranslateY") else 1.0), (name, diffs)


def test_albumentations_posterize_to_zero_bits_is_black_without_a_warning(cifar_mini):
    """Posterize clearing all 8 bits (Pillow: a black image); A.Posterize(num_bits=0) warns of a uint8 overflow."""
    A = pytest.importorskip("albumentations")
    import warnings

    from hba_fast.schedule.albumentations import _op

    for img in cifar_mini["val_images"][:4]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = A.Compose([_op(A, "Posterize", 8.0)])(image=img)["image"]
        assert np.array_equal(out, np.asarray(apply_pil_op(Image.fromarray(img), "Posterize", 8.0)))
        assert not out.any()


def test_export_command_line(tmp_path):
    _write(tmp_path / "schedule.json", epochs=2)
    run = subprocess.run([sys.executable, "-m", "hba_fast.cli", "export", str(tmp_path / "schedule.json"), "--to",
                          "pba", "--out", str(tmp_path / "p.txt")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "largest magnitude error" in run.stdout and (tmp_path / "p.txt").is_file()
    bad = subprocess.run([sys.executable, "-m", "hba_fast.cli", "export", str(tmp_path / "missing.json"), "--to",
                          "pba", "--out", str(tmp_path / "q.txt")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr and not (tmp_path / "q.txt").exists()


def test_unwritable_out_is_one_clear_line(tmp_path, capsys, monkeypatch):
    """Writes go through atomic.py: an OSError is one line naming the file and --out, and no temp file stays."""
    import errno
    import os

    from hba_fast.cli import main

    _write(tmp_path / "schedule.json", epochs=2)
    (tmp_path / "afile").write_text("")
    assert main(["export", str(tmp_path / "schedule.json"), "--to", "pba", "--out",
                 str(tmp_path / "afile" / "p.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hba-fast: error: cannot write") and "p.txt" in err and "set --out to" in err
    real_write = os.write

    def enospc(fd, data):
        if os.fstat(fd).st_size == 0 and data:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", enospc)
    assert main(["export", str(tmp_path / "schedule.json"), "--to", "json-flat", "--out",
                 str(tmp_path / "flat.json")]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "No space left on device (ENOSPC)" in err and "free space" in err and "--out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "schedule.json"]  # no temp file left
