"""The run folder and its logs: resolved config, environment, metrics.jsonl, messages, progress bar.

Only the main process (rank 0) writes files and prints; other ranks get the same object with output off.
Metric rows go to `metrics.jsonl` (one JSON object per line); messages go to stdout and `log.txt`.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml


def environment(device: torch.device) -> dict:
    """Versions, device and git sha: what a run needs to reproduce itself."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "hostname": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    for name in ("triton", "nvidia.dali", "numpy"):
        try:
            env[name] = __import__(name, fromlist=["__version__"]).__version__
        except ImportError:
            pass
    try:
        env["git_sha"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                        cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_sha"] = None
    return env


class _NoBar:
    def update(self, n=1): pass
    def set_postfix_str(self, s): pass
    def close(self): pass


class RunLog:
    tensorboard = None  # a TensorBoardWriter (hba_fast/tensorboard.py) when run.tensorboard is on

    def __init__(self, out_dir: str | Path, is_main: bool = True, progress: bool = True):
        self.dir = Path(out_dir)
        self.is_main, self._progress = is_main, progress
        if is_main:
            self.dir.mkdir(parents=True, exist_ok=True)

    def write_run_info(self, config: dict, env: dict) -> None:
        if self.is_main:
            (self.dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            (self.dir / "environment.json").write_text(json.dumps(env, indent=2) + "\n")

    def info(self, message: str) -> None:
        if self.is_main:
            print(f"[hba-fast] {message}", flush=True)
            with open(self.dir / "log.txt", "a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} {message}\n")

    def metrics(self, row: dict) -> None:
        if self.is_main:
            with open(self.dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"time": round(time.time(), 3), **row}) + "\n")
            if self.tensorboard is not None:
                self.tensorboard.write(row)

    def progress(self, total: int, desc: str):
        if not (self.is_main and self._progress):
            return _NoBar()
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stderr, dynamic_ncols=True)
