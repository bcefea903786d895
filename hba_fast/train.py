"""`hba-fast train`: the paper's evaluation protocol. Train a plain model (strategy `none`) with a learned
schedule (stretched linearly to this run's epochs), or with the `baseline` / `cutout` augmentation, and
report the test error.

    --schedule schedule.json   policy of each epoch from the search, then the dataset's recipe (its Cutout as
                               data.cutout says: on unless the config turns it off, as demo.yaml does)
    --augment baseline         the recipe only, without Cutout (crop + flip + standardise for CIFAR)
    --augment cutout           the recipe with its Cutout (16 px for CIFAR, 20 px for SVHN), whatever data.cutout says

`train(cfg, ...)` writes into cfg.run.out_dir; the command line gives each kind of `hba-fast train` run a folder
of its own inside it (cli.py), so that it never collides with the search run of the same config.
"""
from __future__ import annotations

import dataclasses

from .atomic import save_torch, write_json
from .config import Config, ConfigError
from .datasets import load_splits
from .hyperparams import ScheduleSampler
from .models import build_model
from .pipelines import build_pipeline
from .pipelines.recipes import resolve_recipe
from .schedule import read_schedule
from .session import place_model, start_run
from .tensorboard import attach_tensorboard
from .trainer import Trainer


def train(cfg: Config, schedule: str | None = None, augment: str | None = None) -> dict:
    if (schedule is None) == (augment is None):
        raise ConfigError("hba-fast train needs exactly one of --schedule schedule.json or --augment baseline|cutout")
    if augment not in (None, "baseline", "cutout"):
        raise ConfigError(f"--augment must be 'baseline' or 'cutout', got {augment!r}")
    cutout = augment == "cutout" or (cfg.data.cutout and augment != "baseline")
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, cutout=cutout),
        model=dataclasses.replace(cfg.model, strategy="none"),
        train=dataclasses.replace(cfg.train, t_val=0),
    )
    sampler = None
    if schedule is not None:  # checked before anything is written
        sampler = ScheduleSampler(read_schedule(schedule), cfg.train.epochs)
    with start_run(cfg, {"evaluate": {"schedule": schedule, "augment": augment}}) as run:
        splits = load_splits(cfg.data)
        pipeline = build_pipeline(cfg.data, splits, sampler, run.device, shard=(run.dist.rank, run.dist.world),
                                  seed=cfg.train.seed)
        model, channels_last = place_model(build_model(cfg.model.name, splits.num_classes, "none",
                                                       checkpoint=cfg.model.checkpoint), run,
                                           cfg.model.channels_last)
        what = f"schedule {schedule}" if schedule else f"{augment} augmentation"
        n = pipeline.sizes  # images in use, undecodable ones dropped
        run.log.info(f"train: {cfg.model.name} on {cfg.data.dataset} ({n['train']} train / {n['test']} test images) "
                     f"with {what}, the {resolve_recipe(cfg.data)} recipe with Cutout {'on' if cutout else 'off'}, "
                     f"{type(pipeline).__name__} on {run.device}; outputs in {run.log.dir}")

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
            save_torch(out / "model.pt", {"model": cfg.model.name, "num_classes": splits.num_classes,
                                          "state_dict": model.state_dict()})
            write_json(out / "result.json", result)
            run.log.metrics({"kind": "final", **result})
            run.log.info(f"test error {result.get('test_error', float('nan')):.4f} ({what}); results in {out}")
        if tensorboard is not None:
            tensorboard.close()
        return result
