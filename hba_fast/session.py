"""What every run does around its data flow: processes, run folder, device, seeds, model placement.

`start_run(cfg)` joins the process group (torchrun) or not, opens the run folder (refusing to overwrite an
earlier run unless it resumes it), picks the device, records config and environment, and seeds torch;
`place_model` moves a model to the device (channels_last on CUDA) and gives every rank rank 0's weights.
`hba-fast search` and `hba-fast train` both run inside it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from .distributed import Dist, broadcast_parameters, setup_distributed, teardown
from .errors import DeviceError, RunFolderError
from .runlog import RunLog, environment


@dataclass(frozen=True)
class Run:
    """One process's view of a run: its place among the processes, its run folder and log, its device."""

    dist: Dist
    log: RunLog
    device: torch.device
    env: dict  # versions, device, git sha

    @classmethod
    def local(cls, out_dir: str | Path, device: torch.device | str = "cpu", progress: bool = False) -> Run:
        """A single-process run writing into `out_dir`, for using the parts from Python (tests, notebooks)."""
        device = torch.device(device)
        return cls(Dist(), RunLog(out_dir, progress=progress), device, {"device": str(device)})


def pick_device(train_cfg, dist: Dist, log=print) -> torch.device:
    """train.device auto|cpu|cuda -> a torch.device; cuda without a GPU stops, or falls back to the CPU when
    train.allow_cpu_fallback is true."""
    want = train_cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        if not train_cfg.allow_cpu_fallback:
            raise DeviceError("train.device=cuda but no CUDA GPU is visible here; run on a GPU machine, or set "
                              "train.device=cpu (or train.allow_cpu_fallback=true)")
        log("train.device=cuda but no CUDA GPU is visible: falling back to the CPU (train.allow_cpu_fallback=true)")
        want = "cpu"
    if want == "cuda":
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def check_run_folder(out_dir: Path, config: dict, resume: bool) -> None:
    """Never overwrite an earlier run silently: resume it with the same settings, or ask for another folder.

    A resumed run may change only `run.*` and `train.epochs` (to extend it); anything else would continue a run
    with settings other than the ones its checkpoint was made with."""
    if not (out_dir / "checkpoint.pt").exists():
        return
    if not resume:
        raise RunFolderError(f"{out_dir} already holds a run (checkpoint.pt); choose another folder with "
                             f"--set run.out_dir=..., or resume it with run.resume=true")
    saved_file = out_dir / "config.yaml"
    if not saved_file.exists():
        return
    saved = yaml.safe_load(saved_file.read_text()) or {}
    changed = [f"{section}.{key}: {saved.get(section, {}).get(key)!r} -> {value!r}"
               for section, fields in config.items() if section != "run"
               for key, value in fields.items()
               if (section, key) != ("train", "epochs") and saved.get(section, {}).get(key, value) != value]
    if changed:
        raise RunFolderError(f"{out_dir} holds a run made with other settings ({'; '.join(changed)}); resume it "
                             f"with its own config ({saved_file}), or start a new run with --set run.out_dir=...")


def check_gpu_options(cfg, device: torch.device) -> None:
    """GPU-only options on a run without a GPU are an error that says so (SPEC section 8)."""
    from .kernels import interpreting

    if cfg.model.kernels == "triton" and device.type != "cuda" and not interpreting():
        raise DeviceError("model.kernels=triton needs a CUDA GPU (or TRITON_INTERPRET=1, which is slow); "
                          "set model.kernels=auto to use the fused kernels where a GPU is present")


@contextlib.contextmanager
def start_run(cfg, extra_info: dict | None = None) -> Iterator[Run]:
    dist = setup_distributed()
    log = RunLog(cfg.run.out_dir, is_main=dist.is_main, progress=cfg.run.progress)
    try:
        device = pick_device(cfg.train, dist, log.info)
        check_gpu_options(cfg, device)
        config = {**cfg.to_dict(), **(extra_info or {})}
        check_run_folder(log.dir, config, cfg.run.resume)
        env = environment(device)
        log.write_run_info(config, env)
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
