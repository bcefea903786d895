"""The run folder's life: what a fresh start, a resume, an extension and a failed start do to its files.

    config.yaml       the resolved config, written when the run starts afresh. A resume that changed what it may
                      change (run.*, train.epochs and the fields marked free on resume in hba_fast/config.py)
                      rewrites it, so it always agrees with the outputs; the change is recorded in environment.json.
    environment.json  versions, device, git sha, CPU threads and command of the first start; each resume appends
                      {time, host, device, git sha, from_epoch, changed} to its "resumes" list. A resume never
                      rewrites what the first start recorded.
    metrics.jsonl, log.txt   the run log's (hba_fast/run/log.py)
    .hba-fast.lock    the OS lock of the process that runs in the folder (hba_fast/run/lock.py)

`check_run_folder` never lets a run overwrite an earlier one silently: it resumes it with the same settings, or asks
for another folder. Outputs of a finished run (schedule.json, schedule.png, model.pt, result.json) describe a run of
the epochs it had: when a run is extended (train.epochs raised and resumed), or started afresh over them, they are
first moved into `after-<E>-epochs/`, so the folder never shows outputs of another run length beside its checkpoint.

A start that fails before training begins (bad data, no GPU, ...) removes the files it created, and the folder if it
made it: nothing is left behind that looks like a run. Training begins when the trainer opens the first epoch's
progress bar; a run that stops after that (NaN loss, Ctrl-C in the first log interval) keeps its config.yaml,
environment.json and log.txt, with a line saying why it stopped.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import yaml

from .. import atomic
from ..errors import RunFolderError, StopRequested
from .lock import LOCK_NAME
from .log import RunLog

RUN_FILES = ("config.yaml", "environment.json", "metrics.jsonl", "log.txt", LOCK_NAME)  # what a start writes
OUTPUTS = ("schedule.json", "schedule.png", "model.pt", "result.json")  # what a finished run writes


def run_kind(config: dict) -> str:
    """"train" for the config of an `hba-fast train` run (it records what it evaluates), else "search"."""
    return "train" if "evaluate" in config else "search"


def check_run_folder(out_dir: Path, config: dict, resume: bool, free: set[tuple[str, str]]) -> list[str] | None:
    """Returns None when the folder holds no run (this one starts afresh), else the settings this resume changes.

    A resumed run may change only `run.*` and the fields in `free` (`Config.free_on_resume`: those marked free on
    resume, and for a `train` run also the fields only the search reads); anything else would continue a run with
    settings other than the ones its checkpoint was made with."""
    if not (out_dir / "checkpoint.pt").exists():
        return None
    kind = run_kind(config)
    if not resume:
        raise RunFolderError(f"{out_dir} already holds a run (checkpoint.pt) and run.resume=false: continue it by "
                             f"leaving out run.resume=false, or start a new run in another folder with "
                             f"--set run.out_dir=...")
    saved_file = out_dir / "config.yaml"
    if not saved_file.exists():
        return []
    try:
        saved = yaml.safe_load(saved_file.read_text()) or {}
        assert isinstance(saved, dict) and all(isinstance(v, dict) for v in saved.values())
    except (OSError, yaml.YAMLError, AssertionError):
        raise RunFolderError(f"{saved_file} is damaged, so this resume cannot be checked against the run's "
                             f"settings; restore it, or start a new run with --set run.out_dir=...") from None
    saved_kind = run_kind(saved)
    if saved_kind != kind:
        raise RunFolderError(f"{out_dir} holds a run of `hba-fast {saved_kind}`; `hba-fast {kind}` needs a folder "
                             f"of its own: --set run.out_dir=...")
    changes = {(section, key): f"{section}.{key}: {saved[section][key]!r} -> {value!r}"
               for section, fields in config.items() for key, value in fields.items()
               if section in saved and key in saved[section] and saved[section][key] != value}
    refused = [text for (section, key), text in changes.items() if section != "run" and (section, key) not in free]
    if refused:
        same = (f"continue it with its own settings (hba-fast search {saved_file})" if kind == "search" else
                f"continue it with the settings it was made with (see {saved_file})")
        raise RunFolderError(f"{out_dir} holds a run made with other settings ({'; '.join(refused)}); {same}, "
                             f"or start a new run with --set run.out_dir=...")
    return list(changes.values())


class RunFolder:
    """One run folder's start (afresh or as a resume), extension and stop; rank 0 writes, other ranks do nothing."""

    def __init__(self, log: RunLog):
        self.log, self.dir, self.is_main = log, log.dir, log.is_main
        self._pending: tuple[dict, dict, list[str]] | None = None  # config, env, changes of a resume to record
        self.aside: Path | None = None  # where outputs of a shorter finished run were moved

    def start_afresh(self, config: dict, env: dict) -> None:
        """config.yaml and environment.json of this start; earlier outputs set aside; the metrics of an earlier
        attempt (that left no checkpoint) replaced at the first row."""
        if not self.is_main:
            return
        self.set_aside_outputs(None, _saved_epochs(self.dir))
        atomic.write_text(self.dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        atomic.write_json(self.dir / "environment.json", env)
        self.log.replace_rows()

    def expect_resume(self, config: dict, env: dict, changed: list[str]) -> None:
        """A checkpoint will be resumed: what to record once it is (`resumed`)."""
        self._pending = (config, env, changed)

    def resumed(self, from_epoch: int, epochs: int) -> None:
        """The trainer continued the run from the end of epoch `from_epoch` (of `epochs`): record the resume in
        environment.json, update config.yaml if a setting it may change changed, set finished outputs aside when the
        run is extended; the log's sinks drop what came after the checkpoint."""
        if not self.is_main:
            return
        if from_epoch < epochs:
            self.set_aside_outputs(epochs, from_epoch)
        self.log.resumed(from_epoch)
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
        if not (self.log.training or self.log.rows or (self.dir / "checkpoint.pt").exists()):
            for name in RUN_FILES:
                if name not in existed:
                    with contextlib.suppress(OSError):
                        (self.dir / name).unlink()
            if not dir_existed:
                with contextlib.suppress(OSError):
                    self.dir.rmdir()  # only when empty
            return
        if isinstance(error, StopRequested):
            what = str(error)
        elif isinstance(error, KeyboardInterrupt):
            what = "interrupted"
        else:
            what = f"stopped: {type(error).__name__}: {' '.join(str(error).split())}"
        self.log.note(what)

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
        self.log.info(f"moved the outputs of the earlier {done or '?'}-epoch run ({', '.join(present)}) to {dest}: "
                      f"{why}")
        return dest


def _saved_epochs(folder: Path) -> int | None:
    """train.epochs of the run recorded in folder/config.yaml, if any."""
    try:
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        return int(saved["train"]["epochs"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None
