"""`hba-fast train`: the paper's evaluation protocol. Train a plain model (strategy `none`) with a learned
schedule (stretched linearly to this run's epochs), or with the `baseline` / `cutout` augmentation, and
report the test error.

    --schedule schedule.json   policy of each epoch from the search, then the dataset's recipe (with Cutout)
    --augment baseline         the recipe only, without Cutout (crop + flip + standardise for CIFAR)
    --augment cutout           the recipe with its Cutout (16 px for CIFAR, 20 px for SVHN)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from .config import Config, ConfigError
from .datasets import load_splits
from .distributed import broadcast_parameters, pick_device, setup_distributed, teardown
from .models import build_model
from .pipelines import build_pipeline
from .pipelines.sampler import ScheduleSampler
from .runlog import RunLog, environment
from .schedule import read_schedule
from .search import check_run_folder
from .trainer import Trainer


def train(cfg: Config, schedule: str | None = None, augment: str | None = None) -> dict:
    if (schedule is None) == (augment is None):
        raise ConfigError("hba-fast train needs exactly one of --schedule schedule.json or --augment baseline|cutout")
    if augment not in (None, "baseline", "cutout"):
        raise ConfigError(f"--augment must be 'baseline' or 'cutout', got {augment!r}")
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, cutout=augment != "baseline"),
        model=dataclasses.replace(cfg.model, strategy="none"),
        train=dataclasses.replace(cfg.train, t_val=0),
    )
    dist = setup_distributed()
    log = RunLog(cfg.run.out_dir, is_main=dist.is_main, progress=cfg.run.progress)
    try:
        device = pick_device(cfg.train, dist, log.info)
        check_run_folder(log.dir, cfg.run.resume)
        log.write_run_info({**cfg.to_dict(), "evaluate": {"schedule": schedule, "augment": augment}}, environment(device))
        torch.manual_seed(cfg.train.seed)

        splits = load_splits(cfg.data)
        sampler = None
        if schedule is not None:
            probs, mags = read_schedule(schedule)
            sampler = ScheduleSampler((probs, mags), cfg.train.epochs)
        pipeline = build_pipeline(cfg.data, splits, sampler, device, shard=(dist.rank, dist.world),
                                  seed=cfg.train.seed)
        model = build_model(cfg.model.name, splits.num_classes, "none").to(device)
        channels_last = device.type == "cuda" and cfg.model.channels_last
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        broadcast_parameters(model, dist)
        what = f"schedule {schedule}" if schedule else f"{augment} augmentation"
        log.info(f"train: {cfg.model.name} on {cfg.data.dataset} with {what}, {type(pipeline).__name__} on {device}")

        trainer = Trainer(model, pipeline, None, cfg.optim, cfg.train, device, log, world=dist.world,
                          stateful={"sampler": sampler} if sampler is not None else None,
                          channels_last=channels_last)
        if cfg.run.resume:
            trainer.resume(log.dir / "checkpoint.pt")
        trainer.fit()
        test = trainer.evaluate("test")
        result = {"model": cfg.model.name, "dataset": cfg.data.dataset, "augmentation": what,
                  "epochs": cfg.train.epochs, **{f"test_{k}": v for k, v in test.items()}}
        if dist.is_main:
            torch.save({"model": cfg.model.name, "num_classes": splits.num_classes, "state_dict": model.state_dict()},
                       log.dir / "model.pt")
            (Path(log.dir) / "result.json").write_text(json.dumps(result, indent=2) + "\n")
            log.metrics({"kind": "final", **result})
            log.info(f"test error {result.get('test_error', float('nan')):.4f} ({what}); results in {log.dir}")
        return result
    finally:
        teardown(dist)
