"""The run folder and its logs: resolved config, environment, metrics.jsonl, messages, progress bar; and what a
fresh start, a resume and a failed start do to them.

Only the main process (rank 0) writes files and prints; other ranks get the same object with output off. Every
file goes through `atomic.py` (whole files: temp, fsync, rename; logs: whole lines appended).

    config.yaml       the resolved config, written when the run starts afresh. A resume that changed what it may
                      change (train.epochs, run.*, session.RESUME_FREE) rewrites it, so it always agrees with the
                      outputs; the change is recorded in environment.json.
    environment.json  versions, device, git sha, CPU threads and command of the first start; each resume appends
                      {time, host, device, git sha, from_epoch, changed} to its "resumes" list. A resume never
                      rewrites what the first start recorded.
    metrics.jsonl     one JSON object per line, "kind" train | epoch | final. "epoch" is the 1-based number of the
                      epoch the row belongs to (the N of "epoch N/E" in the progress bar and log.txt); "step" is the
                      number of weight steps done; a kind=epoch row is written when epoch N ends. A checkpoint
                      records the file's length (`state_dict`) and a resume cuts the file back to it
                      (`load_state_dict`), so rows the killed run wrote after its checkpoint are not repeated; a
                      run started afresh replaces the rows of an earlier attempt that left no checkpoint.
    log.txt           every message, time-stamped; a resumed run appends to it.

Outputs of a finished run (schedule.json, schedule.png, model.pt, result.json) describe a run of the epochs it
had. When a run is extended (train.epochs raised and resumed), or started afresh over them, they are first moved
into `after-<E>-epochs/`: the folder never shows outputs of another run length beside its checkpoint.

A start that fails before training begins (bad data, no GPU, ...) removes the files it created, and the folder if
it made it: nothing is left behind that looks like a run. Training begins when the trainer opens the first epoch's
progress bar (`progress`); a run that stops after that (NaN loss, Ctrl-C in the first log interval) keeps its
config.yaml, environment.json and log.txt, with a line saying why it stopped. Messages that other modules log under
the `hba_fast` logger (images skipped as corrupt, the data pipeline chosen) go to `info` while a run is on
(`forward_logging`).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from . import atomic

RUN_FILES = ("config.yaml", "environment.json", "metrics.jsonl", "log.txt")  # what a start writes
OUTPUTS = ("schedule.json", "schedule.png", "model.pt", "result.json")  # what a finished run writes


ROOT = Path(__file__).resolve().parents[1]  # the checkout's top level, when hba_fast runs from one


def git_state() -> tuple[str | None, bool | None]:
    """(sha, dirty) of this project's checkout. Where hba_fast is not run from its own checkout (an installed copy,
    perhaps inside another repository; a copy of the tree without .git, as on a lent GPU machine), HBA_GIT_SHA
    names the commit and dirty is unknown (None)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode == 0 and Path(top.stdout.strip()).resolve() == ROOT:  # ours, not an enclosing repo
            sha = git("rev-parse", "HEAD").stdout.strip()
            if sha:
                status = git("status", "--porcelain")
                return sha, bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("HBA_GIT_SHA") or None, None


def environment(device: torch.device | str | None = None) -> dict:
    """Where a run or a benchmark row was made: versions (python, torch, cuda, triton, dali, numpy, torchvision;
    None where not installed), device (None: cuda when a GPU is visible) and GPU name, CPU threads and cores, host,
    time, command, git sha and dirty flag (`git_state`). The one environment helper: runs and bench/ scripts use it."""
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": str(device), "hostname": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "command": " ".join(sys.argv)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    for key, name in (("triton", "triton"), ("dali", "nvidia.dali"), ("numpy", "numpy")):
        try:
            env[key] = importlib.import_module(name).__version__
        except ImportError:
            env[key] = None
    try:  # its version without importing it
        env["torchvision"] = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        env["torchvision"] = None
    env["git_sha"], env["git_dirty"] = git_state()
    return env


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


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
    tensorboard = None  # a TensorBoardWriter (hba_fast/tensorboard.py) when run.tensorboard is on

    def __init__(self, out_dir: str | Path, is_main: bool = True, progress: bool = True):
        self.dir = Path(out_dir)
        self.is_main, self._progress = is_main, progress
        self._pending: tuple[dict, dict, list[str]] | None = None  # config, env, changes of a resume to record
        self._replace_metrics = False  # a fresh start replaces an earlier attempt's rows at its first row
        self._rows = 0  # metric rows written by this process
        self._t_start: float | None = None  # when the first epoch began (for the run ETA)
        self._training = False  # training began (the first `progress`): a stop then keeps the run's files
        self._epochs_done_here = 0
        self.aside: Path | None = None  # where outputs of a shorter finished run were moved
        if is_main:
            self.dir.mkdir(parents=True, exist_ok=True)

    # ---- the run's start, resume and stop

    def write_run_info(self, config: dict, env: dict) -> None:
        """Start afresh: config.yaml and environment.json of this start; earlier outputs set aside; the metrics
        of an earlier attempt (that left no checkpoint) replaced at the first row."""
        if not self.is_main:
            return
        self.set_aside_outputs(None, _saved_epochs(self.dir))
        atomic.write_text(self.dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        atomic.write_json(self.dir / "environment.json", env)
        self._replace_metrics = atomic.size(self.dir / "metrics.jsonl") > 0

    def expect_resume(self, config: dict, env: dict, changed: list[str]) -> None:
        """A checkpoint will be resumed: what to record once it is (`resumed`)."""
        self._pending = (config, env, changed)

    def resumed(self, from_epoch: int, epochs: int) -> None:
        """The trainer continued the run from the end of epoch `from_epoch` (of `epochs`): record the resume in
        environment.json, update config.yaml if a setting it may change changed, set finished outputs aside when the
        run is extended."""
        if not self.is_main:
            return
        if from_epoch < epochs:
            self.set_aside_outputs(epochs, from_epoch)
        if self.tensorboard is not None:
            self.tensorboard.resumed(_last_step(self.dir / "metrics.jsonl"))
        if self._pending is None:  # used from Python (Run.local): nothing of a start to record
            return
        config, env, changed = self._pending
        self._pending = None
        cfg_file, env_file = self.dir / "config.yaml", self.dir / "environment.json"
        text = yaml.safe_dump(config, sort_keys=False)
        if not cfg_file.exists() or cfg_file.read_text() != text:
            atomic.write_text(cfg_file, text)
        try:
            first = json.loads(env_file.read_text())
            assert isinstance(first, dict)
        except (OSError, ValueError, AssertionError):  # missing or damaged: this start becomes the record
            first = {**env, "resumes": []}
        record = {k: env.get(k) for k in ("time", "hostname", "device", "gpu", "git_sha", "cpu_threads", "command")
                  if k in env}
        first.setdefault("resumes", []).append({**record, "from_epoch": from_epoch, "changed": changed})
        atomic.write_json(env_file, first)

    def stopped(self, error: BaseException, dir_existed: bool, existed: set[str]) -> None:
        """The run stopped on `error`. Before training began: remove what this start created. After: note it."""
        if not self.is_main:
            return
        if not (self._training or self._rows or (self.dir / "checkpoint.pt").exists()):
            for name in RUN_FILES:
                if name not in existed:
                    with contextlib.suppress(OSError):
                        (self.dir / name).unlink()
            if not dir_existed:
                with contextlib.suppress(OSError):
                    self.dir.rmdir()  # only when empty
            return
        what = "interrupted" if isinstance(error, KeyboardInterrupt) else \
            f"stopped: {type(error).__name__}: {' '.join(str(error).split())}"
        with contextlib.suppress(OSError):  # a full disk may be why it stopped
            atomic.append_line(self.dir / "log.txt", f"{time.strftime('%H:%M:%S')} {what}", sync=True)
            atomic.sync(self.dir / "metrics.jsonl")

    def close_tensorboard(self) -> None:
        """Close the TensorBoard writer, if any (start_run's `finally`: also when the run stops on an error)."""
        writer, self.tensorboard = self.tensorboard, None
        if writer is not None:
            with contextlib.suppress(OSError):  # on a full disk the run's own error is the one to report
                writer.close()

    def set_aside_outputs(self, epochs: int | None, done: int | None) -> Path | None:
        """Move a finished run's outputs (of `done` epochs) into after-<done>-epochs/ before this run (of `epochs`,
        None: afresh) writes its own."""
        present = [n for n in OUTPUTS if (self.dir / n).exists()]
        if not (self.is_main and present):
            return None
        label = f"after-{done}-epochs" if done else "earlier-run"
        dest, k = self.dir / label, 2
        while dest.exists() and any((dest / n).exists() for n in present):
            dest, k = self.dir / f"{label}-{k}", k + 1
        target = dest
        try:
            dest.mkdir(exist_ok=True)
            for name in present:
                target = dest / name
                os.replace(self.dir / name, target)
        except OSError as e:  # one line with the fix; what was not moved yet stays where it was
            raise atomic.output_error(target, e, kept=False) from e
        self.aside = dest
        why = f"this run goes on to {epochs} epochs" if epochs else "this run starts afresh"
        self.info(f"moved the outputs of the earlier {done or '?'}-epoch run ({', '.join(present)}) to {dest}: {why}")
        return dest

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

    def metrics(self, row: dict) -> None:
        if self.is_main:
            if self._replace_metrics:
                atomic.truncate(self.dir / "metrics.jsonl", 0)
                self._replace_metrics = False
            atomic.append_line(self.dir / "metrics.jsonl", json.dumps({"time": round(time.time(), 3), **row}),
                               sync=row.get("kind") == "final")  # the rest: fsynced at checkpoints
            self._rows += 1
            if self.tensorboard is not None:
                self.tensorboard.write(row)

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
        self._training = True
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


def _saved_epochs(folder: Path) -> int | None:
    """train.epochs of the run recorded in folder/config.yaml, if any."""
    try:
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        return int(saved["train"]["epochs"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None
