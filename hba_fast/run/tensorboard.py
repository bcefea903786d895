"""TensorBoard for a run (`run.tensorboard: true`): a metrics sink of the run log (hba_fast/run/log.py).

Each metrics row becomes scalars:
    train/<key>   each number of a "train" row (train_loss, hyper_val_loss, lr, images_per_s) at its step
    epoch/<key>   each number of an "epoch" row (val_loss, val_error, images_per_s, lam_min/max/mean) at its step
    final/<key>   the final test numbers
and, when the run searches (the trainer hands the log the schedule at each epoch's end), each new epoch entry:
    lambda/<op>.<copy>.prob and lambda/<op>.<copy>.magnitude   the epoch's logits, per slot (54 scalars)
    probability/<op>.<copy>, magnitude/<op>.<copy>             the decoded values of the epoch's entry
    schedule                                                   the schedule figure so far (hba_fast/schedule/plot.py)
Events go to `<run folder>/tensorboard`; `tensorboard --logdir runs/` shows them. Only the main process writes.

A resumed run (`resumed`) opens its event file with `purge_step` one past the checkpoint's step, so TensorBoard drops
what the killed run wrote after the checkpoint (metrics.jsonl is cut back the same way), and writes only the schedule
entries of the epochs after the checkpoint's. The event file is opened at the first row.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..augment.space import SearchSpace
from ..errors import ConfigError
from ..schedule.plot import schedule_figure


class TensorBoardSink:
    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("run.tensorboard=true needs the tensorboard package: pip install tensorboard "
                              "(or set run.tensorboard=false)") from None
        self._open = lambda purge_step: SummaryWriter(str(log_dir), flush_secs=30, purge_step=purge_step)
        self._writer, self._purge_step = None, None
        self._entries_written = 0  # schedule entries (epochs) already in the event file
        space = SearchSpace()
        names = space.slot_names()  # 'ShearX.0', ...
        self._lam_tags = [f"lambda/{n}.prob" for n in names] + [f"lambda/{names[j]}.magnitude"
                                                               for j in space.mag_slots]
        self._slot_names = names
        self._has_mag = [j in space.mag_slots for j in range(space.num_slots)]

    @property
    def writer(self):
        if self._writer is None:  # at the first row, after any resume
            self._writer = self._open(self._purge_step)
        return self._writer

    def resumed(self, step: int | None, epochs_done: int) -> None:
        """The run continues from a checkpoint taken after weight step `step` (None: unknown) and epoch `epochs_done`:
        events of later steps are purged, the schedule entries the checkpoint holds are not written again."""
        if step is not None:
            self._purge_step = step + 1
        self._entries_written = epochs_done

    def write(self, row: dict) -> None:
        kind, step = row.get("kind", "metrics"), row.get("step", 0)
        for key, value in row.items():
            if key not in ("kind", "step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{kind}/{key}", value, step)
        if kind in ("epoch", "final"):
            self.writer.flush()

    def schedule(self, entries: list[dict]) -> None:
        """The schedule so far (entries {"epoch", "lam", "probs", "mags"}): the new ones as scalars, and the figure."""
        if entries and "values" in entries[0]:  # another space than PBA's (augment/spaces.py): its values by name
            for entry in entries[self._entries_written:]:
                for name, v in entry["values"].items():
                    self.writer.add_scalar(f"hyperparameter/{name}", float(v), entry["epoch"])
            self._entries_written = len(entries)
            return
        for entry in entries[self._entries_written:]:
            epoch = entry["epoch"]
            for tag, v in zip(self._lam_tags, entry["lam"]):
                self.writer.add_scalar(tag, float(v), epoch)
            for j, name in enumerate(self._slot_names):
                self.writer.add_scalar(f"probability/{name}", float(entry["probs"][j]), epoch)
                if self._has_mag[j]:
                    self.writer.add_scalar(f"magnitude/{name}", float(entry["mags"][j]), epoch)
        if len(entries) > self._entries_written:
            probs = np.array([e["probs"] for e in entries])
            mags = np.array([e["mags"] for e in entries])
            fig = schedule_figure(probs, mags, title=f"after epoch {entries[-1]['epoch'] + 1}")
            self.writer.add_figure("schedule", fig, entries[-1]["epoch"])  # closes the figure (and only it)
            self._entries_written = len(entries)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
