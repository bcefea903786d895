"""`hba-fast tune`: baselines at fixed hyperparameters of a regularisation space (paper 4.3, Table 6's RS row).

    hba-fast tune CONFIG --random N [--trial-epochs E] [--final-epochs F]
        random search over the space's hyperparameters (policy.space, e.g. stn-cifar's 15): trial k draws every
        value uniformly in its range (log-uniformly for a `log` entry; a discrete one uniformly, then floored as
        it is used), seeded by (train.seed, k), and trains the plain model (model.strategy none) at those fixed
        values for E epochs (default train.epochs); the trial with the lowest validation loss is retrained for F
        epochs (default train.epochs) in <out>/best.
    hba-fast tune CONFIG --fixed [--final-epochs F]
        one run at the space's initial values (STN's start: the "fixed initial hyperparameters" row), in <out>/fixed.
    hba-fast tune CONFIG --values SCHEDULE [--final-epochs F]
        one run at the values of the last epoch of a search's schedule.json in this space (what it found), in
        <out>/values.

A fixed run is `search`'s data flow without hyper steps: the pipeline hands no lambda_i, the model
(models/regularised.py) applies the fixed values to every sample (the same augmentation and dropout consumers as a
search). Each trial is its own run folder <out>/random/trial<k> (out = run.out_dir), with result.json (values, val
and test loss and error, training time) once finished: a finished trial is read back, an unfinished one resumes from
its checkpoint, so `tune` killed at any moment continues with the same command. <out>/random-search.json lists
every trial and the retrained best.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path

import torch

from .atomic import save_torch, write_json
from .augment.spaces import build_space
from .augment.table_space import TableSpace
from .config import Config
from .data import build_pipeline
from .data.datasets import load_splits
from .engine.trainer import Trainer
from .errors import ConfigError
from .models import build_model
from .models.regularised import Regularised
from .run.session import place_model, start_run
from .schedule.trajectory import read_trajectory


def _space(cfg: Config) -> TableSpace:
    space = build_space(cfg.policy.space)
    if not isinstance(space, TableSpace):
        raise ConfigError(f"hba-fast tune draws fixed values of a regularisation space, got policy.space="
                          f"{cfg.policy.space!r}; set policy.space=stn-cifar (for PBA's space use hba-fast compare)")
    return space


def draw_values(space: TableSpace, seed: int, trial: int) -> dict[str, float]:
    """Trial `trial`'s values: uniform in each range (log-uniform for `log` entries, within [lo, hi])."""
    rng = random.Random(seed * 100003 + trial)
    values = {}
    for h in space.hyperparameters:
        if h.transform == "log":
            values[h.name] = math.exp(rng.uniform(math.log(h.lo), math.log(h.hi)))
        else:  # strictly inside the range, so the logit stays finite
            values[h.name] = h.lo + (h.hi - h.lo) * rng.uniform(1e-3, 1.0 - 1e-3)
    return values


def fixed_run(cfg: Config, values: dict[str, float], out: Path) -> dict:
    """Train the plain model at fixed hyperparameter values in run folder `out`; its result (also result.json)."""
    space = _space(cfg)
    lam = space.encode(torch.tensor([values[n] for n in space.entry_names()]))  # (H,)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, strategy="none"),
                              train=dataclasses.replace(cfg.train, t_val=0),
                              run=dataclasses.replace(cfg.run, out_dir=str(out)))
    done = out / "result.json"
    if done.exists():
        try:
            result = json.loads(done.read_text())
            if result.get("epochs") == cfg.train.epochs:
                return result
        except ValueError:
            pass  # unreadable: run (resume) again
    started = time.perf_counter()
    with start_run(cfg, {"evaluate": {"fixed_values": values}}) as run:
        splits = load_splits(cfg.data)
        pipeline = build_pipeline(cfg.data, splits, None, run.device, shard=(run.dist.rank, run.dist.world),
                                  seed=cfg.train.seed)
        net = build_model(cfg.model.name, splits.num_classes, "none", space.lam_dim)
        model = Regularised(net, space, torch.tensor(splits.mean), torch.tensor(splits.std), fixed=lam)
        model, channels_last = place_model(model, run, cfg.model.channels_last)
        trainer = Trainer(model, pipeline, run, cfg.optim, cfg.train, channels_last=channels_last)
        if cfg.run.resume:
            trainer.resume(run.log.dir / "checkpoint.pt")
        trainer.fit()
        val, test = trainer.evaluate("val"), trainer.evaluate("test")
        result = {"values": values, "epochs": cfg.train.epochs, "seed": cfg.train.seed,
                  **{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": v for k, v in test.items()},
                  "wall_s": round(time.perf_counter() - started, 1)}
        if run.dist.is_main:
            save_torch(out / "model.pt", {"model": cfg.model.name, "num_classes": splits.num_classes,
                                          "state_dict": net.state_dict()})
            write_json(done, result)
            run.log.metrics({"kind": "final", **{k: v for k, v in result.items() if k != "values"}})
            run.log.info(f"fixed values: val loss {result.get('val_loss', float('nan')):.4f}, test loss "
                         f"{result.get('test_loss', float('nan')):.4f}, test error "
                         f"{result.get('test_error', float('nan')):.4f}; results in {out}")
        return result


def _with_epochs(cfg: Config, epochs: int | None) -> Config:
    return cfg if epochs is None else dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))


def searched_values(space: TableSpace, path: str | Path) -> dict[str, float]:
    """The values of the last epoch of a search's schedule.json (a trajectory in `space`)."""
    doc = read_trajectory(path)
    if doc["space"] != space.name or not doc["epochs"]:
        raise ConfigError(f"{path} holds {len(doc['epochs'])} epoch(s) of space {doc['space']!r}, this config's "
                          f"space is {space.name!r}: give the schedule.json of a search in this space")
    return {n: float(v) for n, v in doc["epochs"][-1]["values"].items()}


def tune(cfg: Config, trials: int = 0, fixed: bool = False, trial_epochs: int | None = None,
         final_epochs: int | None = None, values: str | None = None) -> dict:
    """Random search (`trials` > 0), the fixed initial values (`fixed`), a search's values (`values`: its
    schedule.json); see the module docstring."""
    space = _space(cfg)
    out = Path(cfg.run.out_dir)
    report: dict = {"space": space.name, "config": cfg.to_dict()}
    if values is not None:
        found = searched_values(space, values)
        report["values"] = fixed_run(_with_epochs(cfg, final_epochs), found, out / "values")
    if fixed:
        init = {h.name: h.init for h in space.hyperparameters}
        report["fixed"] = fixed_run(_with_epochs(cfg, final_epochs), init, out / "fixed")
    if trials > 0:
        results = []
        for k in range(trials):
            values = draw_values(space, cfg.train.seed, k)
            results.append(fixed_run(_with_epochs(cfg, trial_epochs), values, out / "random" / f"trial{k}"))
        best = min(range(trials), key=lambda k: results[k].get("val_loss", math.inf))
        report["trials"] = results
        report["best_trial"] = best
        report["best"] = fixed_run(_with_epochs(cfg, final_epochs), results[best]["values"], out / "random" / "best")
        write_json(out / "random-search.json", report)
    return report
