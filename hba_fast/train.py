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

import torch

from .config import Config, ConfigError
from .datasets import load_splits
from .hyperparams import ScheduleSampler
from .models import build_model
from .pipelines import build_pipeline
from .schedule import read_schedule
from .session import place_model, start_run
from .tensorboard import attach_tensorboard
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
    with start_run(cfg, {"evaluate": {"schedule": schedule, "augment": augment}}) as run:
        splits = load_splits(cfg.data)
        sampler = None
        if schedule is not None:
            probs, mags = read_schedule(schedule)
            sampler = ScheduleSampler((probs, mags), cfg.train.epochs)
        pipeline = build_pipeline(cfg.data, splits, sampler, run.device, shard=(run.dist.rank, run.dist.world),
                                  seed=cfg.train.seed)
        model, channels_last = place_model(build_model(cfg.model.name, splits.num_classes, "none",
                                                       checkpoint=cfg.model.checkpoint), run,
                                           cfg.model.channels_last)
        what = f"schedule {schedule}" if schedule else f"{augment} augmentation"
        run.log.info(f"train: {cfg.model.name} on {cfg.data.dataset} with {what}, {type(pipeline).__name__} "
                     f"on {run.device}")

        tensorboard = attach_tensorboard(run, cfg)
        trainer = Trainer(model, pipeline, run, cfg.optim, cfg.train, channels_last=channels_last)
        if cfg.run.resume:
            trainer.resume(run.log.dir / "checkpoint.pt")
        trainer.fit()
        test = trainer.evaluate("test")
        result = {"model": cfg.model.name, "dataset": cfg.data.dataset, "augmentation": what,
                  "epochs": cfg.train.epochs, **{f"test_{k}": v for k, v in test.items()}}
        if run.dist.is_main:
            out = run.log.dir
            torch.save({"model": cfg.model.name, "num_classes": splits.num_classes, "state_dict": model.state_dict()},
                       out / "model.pt")
            (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
            run.log.metrics({"kind": "final", **result})
            run.log.info(f"test error {result.get('test_error', float('nan')):.4f} ({what}); results in {out}")
        if tensorboard is not None:
            tensorboard.close()
        return result
