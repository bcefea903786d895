"""What every run does around its data flow: processes, run folder, device, seeds, model placement.

`start_run(cfg)` joins the process group (torchrun) or not, locks the run folder (one process per folder: a second
one stops before touching anything, hba_fast/run/lock.py), handles the stop signals while the run lasts
(hba_fast/run/stop.py), opens the run folder (refusing to overwrite an
earlier run unless it resumes it; removing temporary files of killed writes), picks the device and the CPU
threads, records config and environment (folder.py: afresh, or as a resume), adds the metrics sinks the config
asks for (TensorBoard), and seeds torch; a start that fails before training begins removes what it wrote;
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

from .. import atomic
from ..errors import DeviceError
from .distributed import Dist, broadcast_parameters, setup_distributed, teardown
from .environment import environment
from .folder import RUN_FILES, RunFolder, check_run_folder, run_kind
from .lock import LOCK_NAME, hold_run_folder
from .log import RunLog
from .stop import SIGNALS


@dataclass(frozen=True)
class Run:
    """One process's view of a run: its place among the processes, its run folder and log, its device."""

    dist: Dist
    folder: RunFolder
    device: torch.device
    env: dict  # versions, device, git sha

    @property
    def log(self) -> RunLog:
        return self.folder.log

    @classmethod
    def local(cls, out_dir: str | Path, device: torch.device | str = "cpu", progress: bool = False) -> Run:
        """A single-process run writing into `out_dir`, for using the parts from Python (tests, notebooks)."""
        device = torch.device(device)
        return cls(Dist(), RunFolder(RunLog(out_dir, progress=progress)), device, {"device": str(device)})


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


def check_gpu_options(cfg, device: torch.device, log=print) -> None:
    """GPU-only options on a run without a GPU are an error that says so (SPEC section 8); options that run
    slowly on this machine get a line that says why."""
    from ..kernels import interpreting

    if cfg.model.kernels == "triton" and device.type != "cuda" and not interpreting():
        raise DeviceError("model.kernels=triton needs a CUDA GPU (or TRITON_INTERPRET=1, which is slow); "
                          "set model.kernels=auto to use the fused kernels where a GPU is present")
    if cfg.train.amp == "bf16" and device.type == "cpu":
        native = cpu_has_bf16()
        if native is False:
            log("train.amp=bf16 on a CPU without bfloat16 instructions (no avx512_bf16 / amx_bf16): autocast "
                "emulates bf16, which is much slower than float32 here; set train.amp=off (or auto: bf16 on CUDA only)")
        elif native is None:
            log("train.amp=bf16 on the CPU is fast only where the CPU has bfloat16 instructions; if steps are slow, "
                "set train.amp=off")


def cpu_has_bf16() -> bool | None:
    """Whether the CPU has bfloat16 instructions (x86 avx512_bf16 / amx_bf16, Arm bf16); None when unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[-1].split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def set_cpu_threads(want: int | None, device: torch.device, log=print) -> int:
    """torch's CPU threads: `run.num_threads`, or (None) torch's own choice (which follows OMP_NUM_THREADS) capped at
    the cores this process may use. Logged, with a note when other processes keep those cores busy: then every
    step waits for threads that get only part of a core, and a run is slower than on an idle machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = want if want is not None else max(1, min(torch.get_num_threads(), cores))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    note = ""
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        if load > cores - 0.5:
            note = (f"; the load average is {load:.1f} on {cores} core(s): other processes are using them, so this "
                    f"run is slower than on an idle machine (the progress bar's run ETA follows the real speed)")
    log(f"CPU: {threads} torch thread(s), {cores} core(s) available (set run.num_threads to change){note}")
    return threads


@contextlib.contextmanager
def start_run(cfg, extra_info: dict | None = None) -> Iterator[Run]:
    """Join the processes, open the run folder (afresh, or to resume it), pick the device, record config and
    environment, add the metrics sinks, seed torch. A start that fails before training begins leaves nothing behind
    (folder.py). `cfg` is a `hba_fast.config.Config`; `extra_info` goes into config.yaml beside it."""
    dist = setup_distributed()
    out = Path(cfg.run.out_dir)
    dir_existed, lock_existed = out.exists(), (out / LOCK_NAME).exists()
    try:  # one process per run folder: a second one stops here, touching nothing
        lock, lock_note = hold_run_folder(out, dist)
    except BaseException:
        teardown(dist)
        raise
    existed = {name for name in RUN_FILES if (out / name).exists()} - ({LOCK_NAME} if not lock_existed else set())
    log = RunLog(out, is_main=dist.is_main, progress=cfg.run.progress)
    folder = RunFolder(log)
    try:
        with log.forward_logging(), SIGNALS.installed():
            if lock_note:
                log.info(f"warning: {lock_note}")
            device = pick_device(cfg.train, dist, log.info)
            set_cpu_threads(cfg.run.num_threads, device, log.info)
            check_gpu_options(cfg, device, log.info)
            config = {**cfg.to_dict(), **(extra_info or {})}
            changed = check_run_folder(log.dir, config, cfg.run.resume, cfg.free_on_resume(run_kind(config)))
            if dist.is_main:
                removed = atomic.remove_orphans(log.dir)
                if removed:
                    log.info(f"removed {len(removed)} temporary file(s) of writes that a kill interrupted: "
                             f"{', '.join(removed)}")
            env = environment(device)
            if changed is None:
                folder.start_afresh(config, env)
                log.info(f"run folder {log.dir} (new run)")
            else:
                folder.expect_resume(config, env, changed)
                log.info(f"run folder {log.dir} (holds a checkpoint: resuming"
                         f"{'; changed: ' + '; '.join(changed) if changed else ''})")
            if cfg.run.tensorboard and dist.is_main:
                from .tensorboard import TensorBoardSink

                log.add_sink(TensorBoardSink(log.dir / "tensorboard"))
                log.info(f"TensorBoard events in {log.dir / 'tensorboard'} (tensorboard --logdir {log.dir.parent})")
            torch.manual_seed(cfg.train.seed)
            yield Run(dist, folder, device, env)
    except BaseException as e:
        folder.stopped(e, dir_existed, existed)
        raise
    finally:
        log.close_sinks()
        lock.release()
        teardown(dist)


def place_model(model: nn.Module, run: Run, channels_last: bool) -> tuple[nn.Module, bool]:
    """Model on the run's device (channels_last on CUDA when asked), identical on every rank."""
    channels_last = channels_last and run.device.type == "cuda"
    model = model.to(run.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    broadcast_parameters(model, run.dist)
    return model, channels_last
