"""`hba-fast search`: the data flow of an HBA search (paper Algorithm 1), in one screen.

    config -> datasets -> policy sampler (lambda + eps_i) -> pipeline (augments with lambda_i, hands lambda_i back)
           -> model with hyper-layers -> trainer (weight steps on phi, hyper steps on lambda)
           -> schedule.json + schedule.png + model.pt (theta(lambda*) as a plain model) in the run folder
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import Config
from .datasets import load_splits
from .distributed import broadcast_parameters, pick_device, setup_distributed, teardown
from .models import build_model, materialize
from .pipelines import build_pipeline
from .pipelines.sampler import SearchSampler
from .policy import SearchSpace
from .runlog import RunLog, environment
from .schedule import plot_schedule, write_schedule
from .trainer import Trainer


class RunFolderError(RuntimeError):
    """The run folder holds an earlier run that this one would overwrite."""


def search(cfg: Config) -> Path:
    dist = setup_distributed()
    log = RunLog(cfg.run.out_dir, is_main=dist.is_main, progress=cfg.run.progress)
    try:
        device = pick_device(cfg.train, dist, log.info)
        check_run_folder(log.dir, cfg.run.resume)
        env = environment(device)
        log.write_run_info(cfg.to_dict(), env)
        torch.manual_seed(cfg.train.seed)

        splits = load_splits(cfg.data)
        space = SearchSpace()
        lam = nn.Parameter(space.init_lam().to(device))  # (54,) the augmentation hyperparameters, unbounded
        sampler = SearchSampler(lam, cfg.policy.sigma, space,
                                generator=torch.Generator(device).manual_seed(cfg.train.seed * 1000 + dist.rank))
        pipeline = build_pipeline(cfg.data, splits, sampler, device, shard=(dist.rank, dist.world),
                                  seed=cfg.train.seed)
        model = build_model(cfg.model.name, splits.num_classes, cfg.model.strategy).to(device)
        channels_last = device.type == "cuda" and cfg.model.channels_last
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        broadcast_parameters(model, dist)
        log.info(f"search: {cfg.data.dataset} ({len(splits.train.labels)} train / {len(splits.val.labels)} val), "
                 f"{cfg.model.name} [{cfg.model.strategy}], {type(pipeline).__name__} on {device}")

        trainer = Trainer(model, pipeline, lam, cfg.optim, cfg.train, device, log, space=space, world=dist.world,
                          stateful={"sampler": sampler}, channels_last=channels_last)
        if cfg.run.resume:
            trainer.resume(log.dir / "checkpoint.pt")
        trainer.fit()

        test = trainer.evaluate("test")
        if dist.is_main:
            write_schedule(log.dir / "schedule.json", trainer.schedule, cfg.to_dict(), env)
            plot_schedule(log.dir / "schedule.png", trainer.schedule)
            final = materialize(model, lam.detach())
            torch.save({"model": cfg.model.name, "num_classes": splits.num_classes, "lam": lam.detach().cpu(),
                        "state_dict": final.state_dict()}, log.dir / "model.pt")
            log.metrics({"kind": "final", **{f"test_{k}": v for k, v in test.items()}})
            log.info(f"done: test error of theta(lambda*) {test.get('error', float('nan')):.4f}; "
                     f"schedule, plot and model in {log.dir}")
        return log.dir
    finally:
        teardown(dist)


def check_run_folder(out_dir: Path, resume: bool) -> None:
    """Never overwrite an earlier run silently: resume it, or ask for another folder."""
    if not resume and (out_dir / "checkpoint.pt").exists():
        raise RunFolderError(f"{out_dir} already holds a run (checkpoint.pt); choose another folder with "
                             f"--set run.out_dir=..., or resume it with run.resume=true")
