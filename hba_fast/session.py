"""What every run does around its data flow: processes, run folder, device, seeds, model placement.

`start_run(cfg)` joins the process group (torchrun) or not, opens the run folder (refusing to overwrite an
earlier run unless it resumes it), picks the device, records config and environment, and seeds torch;
`place_model` moves a model to the device (channels_last on CUDA) and gives every rank rank 0's weights.
`hba-fast search` and `hba-fast train` both run inside it.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .distributed import DeviceError, Dist, broadcast_parameters, pick_device, setup_distributed, teardown
from .runlog import RunLog, environment


class RunFolderError(RuntimeError):
    """The run folder holds an earlier run that this one would overwrite."""


@dataclass(frozen=True)
class Run:
    dist: Dist
    log: RunLog
    device: torch.device
    env: dict  # versions, device, git sha


def check_run_folder(out_dir: Path, resume: bool) -> None:
    """Never overwrite an earlier run silently: resume it, or ask for another folder."""
    if not resume and (out_dir / "checkpoint.pt").exists():
        raise RunFolderError(f"{out_dir} already holds a run (checkpoint.pt); choose another folder with "
                             f"--set run.out_dir=..., or resume it with run.resume=true")


def check_gpu_options(cfg, device: torch.device) -> None:
    """GPU-only options on a run without a GPU are an error that says so (SPEC section 8)."""
    if cfg.model.kernels == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise DeviceError("model.kernels=triton needs a CUDA GPU (or TRITON_INTERPRET=1, which is slow); "
                          "set model.kernels=auto to use the fused kernels where a GPU is present")


@contextlib.contextmanager
def start_run(cfg, extra_info: dict | None = None) -> Iterator[Run]:
    dist = setup_distributed()
    log = RunLog(cfg.run.out_dir, is_main=dist.is_main, progress=cfg.run.progress)
    try:
        device = pick_device(cfg.train, dist, log.info)
        check_gpu_options(cfg, device)
        check_run_folder(log.dir, cfg.run.resume)
        env = environment(device)
        log.write_run_info({**cfg.to_dict(), **(extra_info or {})}, env)
        torch.manual_seed(cfg.train.seed)
        yield Run(dist, log, device, env)
    finally:
        teardown(dist)


def place_model(model: nn.Module, run: Run, channels_last: bool) -> tuple[nn.Module, bool]:
    """Model on the run's device (channels_last on CUDA when asked), identical on every rank."""
    channels_last = channels_last and run.device.type == "cuda"
    model = model.to(run.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    broadcast_parameters(model, run.dist)
    return model, channels_last
