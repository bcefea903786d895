"""`hba-fast train`: the paper's evaluation protocol. Train a plain model (strategy `none`) with a learned
schedule (stretched linearly to this run's epochs), or with a hand-made augmentation, and report the test error.

    --schedule schedule.json   policy of each epoch from the search, then the dataset's recipe (with Cutout)
    --augment baseline         the recipe only, without Cutout (crop + flip + standardise for CIFAR)
    --augment cutout           the recipe with its Cutout (16 px for CIFAR, 20 px for SVHN)
    --augment autoaugment[:P] | randaugment[:N,M] | trivialaugment
                               that policy per sample (hba_fast/baselines.py), then the recipe with its Cutout

result.json: the test error and loss, the arm, and the training time: `train_s`, the seconds spent in training
steps summed over the epochs (from the epoch rows of metrics.jsonl, so a resumed run counts every epoch once;
evaluation passes excluded) and `images_per_s` = training images / train_s.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from .baselines import AUGMENT_HELP, augment_sampler, parse_augment
from .checkpoint import write_text_atomic
from .config import Config, ConfigError
from .datasets import load_splits
from .hyperparams import ScheduleSampler
from .models import build_model
from .pipelines import build_pipeline
from .schedule import read_schedule
from .session import place_model, start_run
from .trainer import Trainer


def evaluation_config(cfg: Config, schedule: str | None, augment: str | None) -> tuple[Config, dict]:
    """The config a `train` run uses (plain model, no hyper steps, Cutout for every arm but `baseline`) and the
    extra record written into its run folder's config.yaml."""
    if (schedule is None) == (augment is None):
        raise ConfigError(f"hba-fast train needs exactly one of --schedule schedule.json or --augment NAME "
                          f"({AUGMENT_HELP})")
    arm = parse_augment(augment) if augment is not None else None
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, cutout=arm is None or arm.cutout),
        model=dataclasses.replace(cfg.model, strategy="none"),
        train=dataclasses.replace(cfg.train, t_val=0),
    )
    return cfg, {"evaluate": {"schedule": schedule, "augment": augment}}


def train(cfg: Config, schedule: str | None = None, augment: str | None = None) -> dict:
    cfg, record = evaluation_config(cfg, schedule, augment)
    arm = parse_augment(augment) if augment is not None else None
    with start_run(cfg, record) as run:
        splits = load_splits(cfg.data)
        if schedule is not None:
            probs, mags = read_schedule(schedule)
            sampler = ScheduleSampler((probs, mags), cfg.train.epochs)
        else:
            sampler = augment_sampler(arm, cfg.data.dataset, cfg.data.image_size,
                                      seed=cfg.train.seed * 1000 + run.dist.rank + 0xA06)
        pipeline = build_pipeline(cfg.data, splits, sampler, run.device, shard=(run.dist.rank, run.dist.world),
                                  seed=cfg.train.seed)
        model, channels_last = place_model(build_model(cfg.model.name, splits.num_classes, "none"), run,
                                           cfg.model.channels_last)
        what = f"schedule {schedule}" if schedule else f"{arm} augmentation"
        run.log.info(f"train: {cfg.model.name} on {cfg.data.dataset} with {what}, {type(pipeline).__name__} "
                     f"on {run.device}")

        trainer = Trainer(model, pipeline, run, cfg.optim, cfg.train, channels_last=channels_last)
        if cfg.run.resume:
            trainer.resume(run.log.dir / "checkpoint.pt")
        trainer.fit()
        test = trainer.evaluate("test")
        result = {"model": cfg.model.name, "dataset": cfg.data.dataset, "augmentation": what,
                  "epochs": cfg.train.epochs, "seed": cfg.train.seed, **{f"test_{k}": v for k, v in test.items()},
                  **training_time(run.log.dir / "metrics.jsonl",
                                  trainer.steps_per_epoch * cfg.data.batch_size * run.dist.world)}
        if run.dist.is_main:
            out = run.log.dir
            torch.save({"model": cfg.model.name, "num_classes": splits.num_classes, "state_dict": model.state_dict()},
                       out / "model.pt")
            write_text_atomic(out / "result.json", json.dumps(result, indent=2) + "\n")
            run.log.metrics({"kind": "final", **result})
            run.log.info(f"test error {result.get('test_error', float('nan')):.4f} ({what}); results in {out}")
        return result


def training_time(metrics_file: Path, images_per_epoch: int) -> dict:
    """{"train_s", "images_per_s"} from the epoch rows of metrics.jsonl (the last row of each epoch counts)."""
    rates = {}
    if metrics_file.exists():
        for line in metrics_file.read_text().splitlines():
            row = json.loads(line)
            if row.get("kind") == "epoch" and row.get("images_per_s"):
                rates[row["epoch"]] = row["images_per_s"]
    if not rates:
        return {}
    seconds = sum(images_per_epoch / r for r in rates.values())
    return {"train_s": round(seconds, 1), "images_per_s": round(images_per_epoch * len(rates) / seconds, 1)}

