"""Where a run or a benchmark row was made: versions, device, host, threads, command and the git sha.

`environment(device)` is the one environment helper: run folders (environment.json), compare.json and every bench/
script record it.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # the checkout's top level, when hba_fast runs from one


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
