"""`hba-fast plot`: the schedule figure from any schedule file, and the tables it draws."""
from __future__ import annotations

import numpy as np
from PIL import Image

from hba_fast.augment.ops import OP_INDEX
from hba_fast.augment.space import NUM_OPS, NUM_SLOTS
from hba_fast.cli import main
from hba_fast.schedule.plot import op_tables


def test_op_tables():
    probs = np.zeros((2, NUM_SLOTS))
    mags = np.zeros((2, NUM_SLOTS))
    r, b = OP_INDEX["Rotate"], OP_INDEX["Brightness"]
    probs[1, r], probs[1, r + NUM_OPS] = 0.2, 0.6  # copies weighted by probability
    mags[1, r], mags[1, r + NUM_OPS] = 30.0, 0.0
    for name in ("Contrast", "Color", "Brightness", "Sharpness"):  # 0.1 is strong (distance from identity 1.0)
        mags[:, OP_INDEX[name]] = mags[:, OP_INDEX[name] + NUM_OPS] = 0.1
    total, op_prob, strength = op_tables(probs, mags)
    assert np.isclose(op_prob[1, r], 0.8) and np.isclose(strength[1, r], 0.25)
    assert np.isclose(strength[0, b], 1.0) and np.isnan(strength[0, OP_INDEX["Invert"]])
    assert np.isclose(total[1], 1.0)  # Rotate copy 0 at its maximum, everything else at its low end


def test_plot_command_writes_a_png(tmp_path, capsys):
    from test_export import _write

    _write(tmp_path / "schedule.json", epochs=4)
    assert main(["plot", str(tmp_path / "schedule.json"), "--out", str(tmp_path / "fig.png")]) == 0
    img = Image.open(tmp_path / "fig.png")
    assert img.size[0] > 1200 and img.size[1] > 500
    assert main(["plot", str(tmp_path / "schedule.json")]) == 0  # default: beside the schedule
    assert (tmp_path / "schedule.png").is_file()
    assert main(["plot", str(tmp_path / "nope.json")]) == 2
    assert "not found" in capsys.readouterr().err
