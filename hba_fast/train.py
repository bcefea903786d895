"""`hba-fast train`: the paper's evaluation protocol. Train a plain model (strategy `none`) with a learned
schedule (stretched linearly to this run's epochs; a PBA file by PBA's own replay), or with a hand-made augmentation,
and report the test error.

    --schedule schedule.json   policy of each epoch from the search, then the dataset's recipe (its Cutout as
                               data.cutout says: on unless the config turns it off, as demo.yaml does)
    --schedule pba:FILE        a PBA schedule file (PBA's published rcifar10_16_wrn.txt, or `hba-fast export --to
                               pba`), replayed for this run's epochs as PBA's own `train.py --epochs E
                               --hp_policy_epochs H` replays it (hba_fast/schedule/pba.py): the faithful PBA arm; then
                               the recipe as for a schedule
    --augment baseline         the recipe only, without Cutout (crop + flip + standardise for CIFAR)
    --augment cutout           the recipe with its Cutout (16 px for CIFAR, 20 px for SVHN), whatever data.cutout says
    --augment autoaugment[:P] | randaugment[:N,M] | trivialaugment
                               that policy per sample (hba_fast/augment/baselines.py), then the recipe (its Cutout as
                               data.cutout says)

`train(cfg, ...)` writes into cfg.run.out_dir; the command line gives each kind of `hba-fast train` run a folder
of its own inside it (cli.py), so that it never collides with the search run of the same config.
result.json: the test error and loss, the arm, and the training time: `train_s`, the seconds spent in training
steps summed over the epochs (from the epoch rows of metrics.jsonl, so a resumed run counts every epoch once;
evaluation passes excluded) and `images_per_s` = training images / train_s.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .atomic import save_torch, write_json
from .augment.arms import AUGMENT_HELP, parse_augment
from .config import Config
from .data import build_pipeline
from .data.datasets import load_splits
from .data.recipes import resolve_recipe
from .engine.trainer import Trainer
from .errors import ConfigError
from .models import build_model
from .run.session import place_model, start_run
from .schedule.file import read_schedule
from .schedule.sampler import ScheduleSampler


def evaluation_config(cfg: Config, schedule: str | None, augment: str | None) -> tuple[Config, dict]:
    """The config a `train` run uses (plain model, no hyper steps, Cutout as the arm needs it) and the extra record
    written into its run folder's config.yaml."""
    if (schedule is None) == (augment is None):
        raise ConfigError(f"hba-fast train needs exactly one of --schedule schedule.json or --augment NAME "
                          f"({AUGMENT_HELP})")
    arm = parse_augment(augment) if augment is not None else None
    # Cutout: `baseline` never, `cutout` always, the policy arms (a schedule, AutoAugment, ...) as data.cutout says
    cutout = arm.cutout if arm is not None and arm.name in ("baseline", "cutout") else cfg.data.cutout
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, cutout=cutout),
        model=dataclasses.replace(cfg.model, strategy="none"),
        train=dataclasses.replace(cfg.train, t_val=0),
    )
    return cfg, {"evaluate": {"schedule": schedule, "augment": augment}}


def train(cfg: Config, schedule: str | None = None, augment: str | None = None) -> dict:
    cfg, record = evaluation_config(cfg, schedule, augment)
    arm = parse_augment(augment) if augment is not None else None
    sampler = None
    if schedule is not None:  # checked before anything is written
        # stretched to this run's epochs by the file's own rule: hba-fast's linearly, PBA's by PBA's replay
        sampler = ScheduleSampler(read_schedule(schedule, cfg.train.epochs), cfg.train.epochs)
    with start_run(cfg, record) as run:
        splits = load_splits(cfg.data)
        if arm is not None:
            sampler = arm.sampler(cfg.data.dataset, cfg.data.image_size,
                                  seed=cfg.train.seed * 1000 + run.dist.rank + 0xA06)
        pipeline = build_pipeline(cfg.data, splits, sampler, run.device, shard=(run.dist.rank, run.dist.world),
                                  seed=cfg.train.seed)
        model, channels_last = place_model(build_model(cfg.model.name, splits.num_classes, "none",
                                                       checkpoint=cfg.model.checkpoint), run,
                                           cfg.model.channels_last)
        what = f"schedule {schedule}" if schedule else f"{arm} augmentation"
        n = pipeline.sizes  # images in use, undecodable ones dropped
        run.log.info(f"train: {cfg.model.name} on {cfg.data.dataset} ({n['train']} train / {n['test']} test images) "
                     f"with {what}, the {resolve_recipe(cfg.data)} recipe with Cutout "
                     f"{'on' if cfg.data.cutout else 'off'}, {type(pipeline).__name__} on {run.device}; "
                     f"outputs in {run.log.dir}")
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
            save_torch(out / "model.pt", {"model": cfg.model.name, "num_classes": splits.num_classes,
                                          "state_dict": model.state_dict()})
            write_json(out / "result.json", result)
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

