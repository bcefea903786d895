"""A run's messages and metrics: log.txt and stdout, metrics.jsonl and any other metrics sink, the progress bar.

Only the main process (rank 0) writes and prints; other ranks get the same object with output off. Every file goes
through `atomic.py` (whole lines appended).

    log.txt           every message, time-stamped; a resumed run appends to it.
    metrics.jsonl     one JSON object per line, "kind" train | epoch | final. "epoch" is the 1-based number of the
                      epoch the row belongs to (the N of "epoch N/E" in the progress bar and log.txt); "step" is the
                      number of weight steps done; a kind=epoch row is written when epoch N ends. A checkpoint
                      records the file's length (`state_dict`) and a resume cuts the file back to it
                      (`load_state_dict`), so rows the killed run wrote after its checkpoint are not repeated; a
                      run started afresh replaces the rows of an earlier attempt that left no checkpoint
                      (`replace_rows`).

Metrics sinks: every row goes to metrics.jsonl and to each sink added with `add_sink` (TensorBoard,
hba_fast/run/tensorboard.py). A sink has `write(row)`, `schedule(entries)` (the search's schedule so far, one
entry per finished epoch), `resumed(step, epochs_done)` (the run continues from a checkpoint: drop what came after
it) and `close()`. The run folder (hba_fast/run/folder.py) closes the sinks when the run ends.

Messages that other modules log under the `hba_fast` logger (images skipped as corrupt, the data pipeline chosen) go
to `info` while a run is on (`forward_logging`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Protocol

from .. import atomic


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class MetricsSink(Protocol):
    """Where metric rows go besides metrics.jsonl (module docstring)."""

    def write(self, row: dict) -> None: ...

    def schedule(self, entries: list[dict]) -> None: ...

    def resumed(self, step: int | None, epochs_done: int) -> None: ...

    def close(self) -> None: ...


class _NoBar:
    def update(self, n=1): pass
    def set_postfix_str(self, s): pass
    def close(self): pass


class _Bar:
    """One epoch's tqdm bar whose postfix also gives the whole run's ETA: the steps left in this epoch and the
    `after` steps of the epochs still to come, at the rate measured in this epoch (hyper steps included)."""

    def __init__(self, bar, after: int):
        self.bar, self.after, self.t0, self.n = bar, after, time.perf_counter(), 0

    def update(self, n=1):
        self.n += n
        self.bar.update(n)

    def set_postfix_str(self, s):
        rate = self.n / max(time.perf_counter() - self.t0, 1e-9)
        left = (self.bar.total - self.n + self.after) / rate if rate > 0 else float("inf")
        self.bar.set_postfix_str(f"{s}, run ETA {duration(left)}" if left < float("inf") else s)

    def close(self):
        self.bar.close()


class _Forward(logging.Handler):
    """Log records of the package's modules -> RunLog.info (stdout with the [hba-fast] prefix, and log.txt)."""

    def __init__(self, log: RunLog):
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        self.log.info(prefix + record.getMessage())


class RunLog:
    def __init__(self, out_dir: str | Path, is_main: bool = True, progress: bool = True):
        self.dir = Path(out_dir)
        self.is_main, self._progress = is_main, progress
        self.sinks: list[MetricsSink] = []
        self._replace_metrics = False  # a fresh start replaces an earlier attempt's rows at its first row
        self.rows = 0  # metric rows written by this process
        self.training = False  # training began (the first `progress`): a stop then keeps the run's files
        self._t_start: float | None = None  # when the first epoch began (for the run ETA)
        self._epochs_done_here = 0
        if is_main:
            self.dir.mkdir(parents=True, exist_ok=True)

    # ---- sinks

    def add_sink(self, sink: MetricsSink) -> None:
        if self.is_main:
            self.sinks.append(sink)

    def close_sinks(self) -> None:
        """Close every sink (the run folder's `finally`: also when the run stops on an error)."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            with contextlib.suppress(OSError):  # on a full disk the run's own error is the one to report
                sink.close()

    def resumed(self, epochs_done: int) -> None:
        """The run continues from a checkpoint after `epochs_done` epochs (metrics.jsonl is cut back to it): the
        sinks drop what the killed run wrote after it."""
        step = _last_step(self.dir / "metrics.jsonl")
        for sink in self.sinks:
            sink.resumed(step, epochs_done)

    def replace_rows(self) -> None:
        """A fresh start: the rows of an earlier attempt that left no checkpoint are replaced at the first row."""
        self._replace_metrics = self.is_main and atomic.size(self.dir / "metrics.jsonl") > 0

    # ---- what a checkpoint records

    def state_dict(self) -> dict:
        """The length of metrics.jsonl at the checkpoint (rank 0's; empty elsewhere). The logs are fsynced here:
        a checkpoint never records rows that a crash of the machine could take back."""
        if not self.is_main:
            return {}
        atomic.sync(self.dir / "metrics.jsonl")
        atomic.sync(self.dir / "log.txt")
        return {"metrics_bytes": 0 if self._replace_metrics else atomic.size(self.dir / "metrics.jsonl")}

    def load_state_dict(self, state: dict | None) -> None:
        """Cut metrics.jsonl back to the checkpoint's length: rows written after it will be written again."""
        if self.is_main and state and "metrics_bytes" in state:
            atomic.truncate(self.dir / "metrics.jsonl", int(state["metrics_bytes"]))
            self._replace_metrics = False

    # ---- messages, metrics, progress

    def info(self, message: str) -> None:
        if self.is_main:
            print(f"[hba-fast] {message}", flush=True)
            atomic.append_line(self.dir / "log.txt", f"{time.strftime('%H:%M:%S')} {message}")

    def note(self, message: str) -> None:
        """A line for log.txt only, fsynced (how a run stopped): never raises, a full disk may be why it stopped."""
        with contextlib.suppress(OSError):
            atomic.append_line(self.dir / "log.txt", f"{time.strftime('%H:%M:%S')} {message}", sync=True)
            atomic.sync(self.dir / "metrics.jsonl")

    def metrics(self, row: dict) -> None:
        if self.is_main:
            if self._replace_metrics:
                atomic.truncate(self.dir / "metrics.jsonl", 0)
                self._replace_metrics = False
            atomic.append_line(self.dir / "metrics.jsonl", json.dumps({"time": round(time.time(), 3), **row}),
                               sync=row.get("kind") == "final")  # the rest: fsynced at checkpoints
            self.rows += 1
            for sink in self.sinks:
                sink.write(row)

    def schedule(self, entries: list[dict]) -> None:
        """The search's schedule so far (one entry per finished epoch; empty for plain training), for the sinks."""
        if entries:
            for sink in self.sinks:
                sink.schedule(entries)

    def epoch(self, row: dict, epochs: int) -> None:
        """The row of a finished epoch (row["epoch"] 1-based): to metrics.jsonl, and one line to the log with the
        time this invocation has taken and the run's ETA."""
        self.metrics(row)
        self._epochs_done_here += 1
        spent = time.perf_counter() - (self._t_start or time.perf_counter())
        left = (epochs - row["epoch"]) * spent / self._epochs_done_here
        fields = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                          if k not in ("kind", "epoch"))
        eta = f", run ETA {duration(left)}" if row["epoch"] < epochs else ""
        self.info(f"epoch {row['epoch']}/{epochs}: {fields} ({duration(spent)} so far{eta})")

    def progress(self, total: int, desc: str, after: int = 0):
        """A progress bar of `total` steps; `after`: steps of the run still to come after it (for the run ETA).
        The trainer opens one as each epoch's training begins: from the first on, a stop keeps the run's files."""
        self.training = True
        if self._t_start is None:
            self._t_start = time.perf_counter()
        if not (self.is_main and self._progress):
            return _NoBar()
        from tqdm import tqdm

        return _Bar(tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stderr, dynamic_ncols=True),
                    after)

    @contextlib.contextmanager
    def forward_logging(self):
        """While on, records of the `hba_fast` loggers (INFO and up) are this log's messages, printed once."""
        logger = logging.getLogger("hba_fast")
        handler, saved = _Forward(self), (logger.level, logger.propagate)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]


def _last_step(metrics: Path) -> int | None:
    """The step of the last row of metrics.jsonl (a resume has cut it back to the checkpoint's rows), if any."""
    try:
        lines = metrics.read_bytes().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError, TypeError):
        return None
