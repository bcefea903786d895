"""TensorBoard for a run (`run.tensorboard: true`): what metrics.jsonl holds, lambda per slot, the schedule figure.

`RunLog.metrics(row)` hands every metrics row to the writer (its one hook); the writer turns it into scalars:
    train/<key>   each number of a "train" row (train_loss, hyper_val_loss, lr, images_per_s) at its step
    epoch/<key>   each number of an "epoch" row (val_loss, val_error, images_per_s, lam_min/max/mean) at its step
    final/<key>   the final test numbers
and, when the run searches (search.py passes the schedule), at each epoch's end:
    lambda/<op>.<copy>.prob and lambda/<op>.<copy>.magnitude   the epoch's logits, per slot (54 scalars)
    probability/<op>.<copy>, magnitude/<op>.<copy>             the decoded values of the epoch's entry
    schedule                                                   the schedule figure so far (schedule_plot.py)
Events go to `<run folder>/tensorboard`; `tensorboard --logdir runs/` shows them. Only the main process writes.

A resumed run (`resumed`, called by RunLog.resumed) opens its event file with `purge_step` one past the checkpoint's
step, so TensorBoard drops what the killed run wrote after the checkpoint (metrics.jsonl is cut back the same way),
and writes only the schedule entries that come after the checkpoint's. The event file is opened at the first row.
`start_run` closes the writer when the run ends, on an error too (RunLog.close_tensorboard).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .ops import OPS
from .policy import SearchSpace


class TensorBoardWriter:
    def __init__(self, log_dir: str | Path, schedule: Callable[[], list[dict]] | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("run.tensorboard=true needs the tensorboard package: pip install tensorboard "
                              "(or set run.tensorboard=false)") from None
        self._open = lambda purge_step: SummaryWriter(str(log_dir), flush_secs=30, purge_step=purge_step)
        self._writer, self._purge_step = None, None
        self.schedule, self._entries_written = schedule, 0
        space = SearchSpace()
        names = space.slot_names()  # 'ShearX.0', ...
        self._lam_tags = [f"lambda/{n}.prob" for n in names] + [f"lambda/{names[j]}.magnitude"
                                                               for j in space.mag_slots]
        self._slot_names = names
        self._has_mag = [OPS[k].has_magnitude for k in space.slot_ops]

    @property
    def writer(self):
        if self._writer is None:  # at the first row, after any resume
            self._writer = self._open(self._purge_step)
        return self._writer

    def resumed(self, step: int | None) -> None:
        """The run continues from a checkpoint taken after weight step `step` (None: unknown): events of later steps
        are purged, and the schedule entries the checkpoint holds are not written again."""
        if step is not None:
            self._purge_step = step + 1
        if self.schedule is not None:
            self._entries_written = len(self.schedule())

    def write(self, row: dict) -> None:
        """One metrics row (the hook in RunLog.metrics)."""
        kind, step = row.get("kind", "metrics"), row.get("step", 0)
        for key, value in row.items():
            if key not in ("kind", "step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{kind}/{key}", value, step)
        if kind == "epoch" and self.schedule is not None:
            self._write_schedule()
        if kind in ("epoch", "final"):
            self.writer.flush()

    def _write_schedule(self) -> None:
        entries = self.schedule()
        for entry in entries[self._entries_written:]:
            epoch = entry["epoch"]
            for tag, v in zip(self._lam_tags, entry["lam"]):
                self.writer.add_scalar(tag, float(v), epoch)
            for j, name in enumerate(self._slot_names):
                self.writer.add_scalar(f"probability/{name}", float(entry["probs"][j]), epoch)
                if self._has_mag[j]:
                    self.writer.add_scalar(f"magnitude/{name}", float(entry["mags"][j]), epoch)
        if len(entries) > self._entries_written:
            from .schedule_plot import schedule_figure

            probs = np.array([e["probs"] for e in entries])
            mags = np.array([e["mags"] for e in entries])
            fig = schedule_figure(probs, mags, title=f"after epoch {entries[-1]['epoch'] + 1}")
            self.writer.add_figure("schedule", fig, entries[-1]["epoch"])  # closes the figure (and only it)
            self._entries_written = len(entries)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def attach_tensorboard(run, cfg, schedule: Callable[[], list[dict]] | None = None) -> TensorBoardWriter | None:
    """With run.tensorboard on, give the run's log a writer (main process only); returns it (or None)."""
    if not getattr(cfg.run, "tensorboard", False) or not run.dist.is_main:
        return None
    writer = TensorBoardWriter(run.log.dir / "tensorboard", schedule)
    run.log.tensorboard = writer
    run.log.info(f"TensorBoard events in {run.log.dir / 'tensorboard'} (tensorboard --logdir {run.log.dir.parent})")
    return writer
