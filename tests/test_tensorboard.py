"""run.tensorboard: a tiny search writes its losses, lr, img/s, lambda per slot and the schedule figure as
TensorBoard events, read back with TensorBoard's own reader."""
from __future__ import annotations

import dataclasses
import json

import pytest

from hba_fast.config import load_config
from hba_fast.errors import ConfigError


def test_search_writes_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hba_fast.search import search

    cfg = load_config(None, ["data.num_train=64", "data.num_val=32", "data.num_test=32", "data.batch_size=16",
                             "model.name=wrn-16-2", "train.epochs=2", "train.steps_per_epoch=2", "train.log_every=1",
                             "run.progress=false", "run.tensorboard=true", f"run.out_dir={tmp_path}"])
    out = search(cfg)
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/train_loss", "train/hyper_val_loss", "train/lr", "train/images_per_s", "epoch/val_loss",
                "lambda/ShearX.0.prob", "lambda/Cutout.1.magnitude", "probability/Equalize.1", "magnitude/Rotate.0",
                "final/test_error"):
        assert tag in tags, tag
    assert len([t for t in tags if t.startswith("lambda/")]) == 54
    assert [e.step for e in events.Scalars("lambda/ShearX.0.prob")] == [0, 1]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if r.get("kind") == "train"]  # one row per log interval (log_every=1: every round)
    assert len(logged) >= 2 and len(events.Scalars("train/train_loss")) == len(logged)
    assert [e.step for e in events.Images("schedule")] == [0, 1]  # the figure after each epoch

    # Extended (resumed from the checkpoint after step 4): the new event file purges from step 5 on and writes
    # only the new schedule entry; the user's own figures stay open.
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    mine = plt.figure()
    search(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3)))
    assert plt.fignum_exists(mine.number)
    plt.close(mine)
    files = sorted((out / "tensorboard").glob("events.out.tfevents.*"), key=lambda f: int(f.name.split(".")[3]))
    assert len(files) == 2
    new = list(EventFileLoader(str(files[1])).Load())
    starts = [e.step for e in new if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [5]
    lam = [e.step for e in new if e.HasField("summary") and e.summary.value[0].tag == "lambda/ShearX.0.prob"]
    assert lam == [2]
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    assert [e.step for e in events.Scalars("lambda/ShearX.0.prob")] == [0, 1, 2]
    assert [e.step for e in events.Images("schedule")] == [0, 1, 2]
    steps = [e.step for e in events.Scalars("train/train_loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 6


def test_tensorboard_missing_package_is_a_clear_error(monkeypatch):
    import builtins

    from hba_fast.run.tensorboard import TensorBoardSink

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "torch.utils.tensorboard":
            raise ImportError("no tensorboard")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        TensorBoardSink("unused")
