"""`hba-fast search`: the data flow of an HBA search (paper Algorithm 1), in one screen.

    config -> datasets -> hyperparameters lambda (Hyperparams: draws lambda_i = lambda + eps_i, steps lambda)
           -> pipeline (augments sample i with lambda_i, hands lambda_i on) -> model with hyper-layers
           -> trainer (weight steps on phi, hyper steps on lambda)
           -> the learned Schedule -> schedule.json + schedule.png, and model.pt (theta(lambda*) as a plain model)
              in the run folder (+ TensorBoard events with run.tensorboard: the run log's metrics sink)
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .atomic import save_torch
from .augment.spaces import build_space
from .augment.table_space import TableSpace
from .config import Config
from .data import build_pipeline, resolve_backend
from .data.datasets import load_splits
from .engine.hyperparams import Hyperparams
from .engine.trainer import Trainer
from .errors import ConfigError
from .models import build_model, materialize
from .models.layers import init_hyper_bn, set_hyper_impl
from .models.regularised import Regularised
from .run.session import place_model, start_run
from .schedule.file import Schedule, write_schedule
from .schedule.plot import plot_schedule
from .schedule.trajectory import plot_trajectory, read_trajectory, write_trajectory


def search(cfg: Config) -> Path:
    if cfg.model.strategy == "none" or cfg.train.t_val == 0:
        raise ConfigError(f"a search needs hyper-layers and hyper steps, got model.strategy={cfg.model.strategy!r}, "
                          f"train.t_val={cfg.train.t_val}; set model.strategy=first_bn (or another) and train.t_val>=1 "
                          f"(to train a plain model use `hba-fast train`)")
    if cfg.train.method == "stn" and cfg.model.strategy != "all":
        raise ConfigError(f"train.method=stn is STN's hypernetwork, a best-response part in every layer, got "
                          f"model.strategy={cfg.model.strategy!r}; set model.strategy=all (or train.method=hba)")
    space = build_space(cfg.policy.space)
    started = time.perf_counter()
    with start_run(cfg) as run:
        regularising = isinstance(space, TableSpace)  # lambda_i applied by the model, not by a PBA policy
        if regularising and resolve_backend(cfg.data.backend, run.device) != "torch":
            raise ConfigError(f"policy.space={space.name} is applied on the device by the model; the DALI pipeline "
                              f"does not hand its lambda_i on: set data.backend=torch")
        splits = load_splits(cfg.data)
        hyper = Hyperparams(space, cfg.policy.sigma, cfg.optim.hyper_lr, run.device, generator=torch.Generator(
            run.device).manual_seed(cfg.train.seed * 1000 + run.dist.rank), init=cfg.policy.init,
            init_prob=cfg.policy.init_prob, init_magnitude=cfg.policy.init_magnitude,
            tune_scale=cfg.train.method == "stn", entropy_weight=cfg.policy.entropy_weight)
        pipeline = build_pipeline(cfg.data, splits, hyper.sampler, run.device, shard=(run.dist.rank, run.dist.world),
                                  seed=cfg.train.seed)
        model = build_model(cfg.model.name, splits.num_classes, cfg.model.strategy, space.lam_dim,
                            checkpoint=cfg.model.checkpoint)
        init_hyper_bn(model, cfg.model.hyper_bn_bias_u, cfg.model.hyper_bn_v_std)
        set_hyper_impl(model, cfg.model.kernels)
        if regularising:
            model = Regularised(model, space, torch.tensor(splits.mean), torch.tensor(splits.std),
                                cfg.train.hyper_dropout)
        model, channels_last = place_model(model, run, cfg.model.channels_last)
        n = pipeline.sizes  # images in use, undecodable ones dropped
        run.log.info(f"search: {cfg.data.dataset} ({n['train']} train / {n['val']} val / {n['test']} test images), "
                     f"{cfg.model.name} [{cfg.model.strategy}], kernels {cfg.model.kernels}, "
                     f"{type(pipeline).__name__} on {run.device}")
        trainer = Trainer(model, pipeline, run, cfg.optim, cfg.train, hyper, channels_last=channels_last)
        if cfg.run.resume:
            trainer.resume(run.log.dir / "checkpoint.pt")
        trainer.fit()

        test = trainer.evaluate("test")
        val = trainer.evaluate("val") if regularising else {}  # Table 6 reports the validation loss too
        if run.dist.is_main:
            out, lam = run.log.dir, hyper.lam.detach()
            if regularising:
                write_trajectory(out / "schedule.json", space.name, space.entry_names(), hyper.schedule,
                                 cfg.to_dict(), run.env)
                plot_trajectory(out / "schedule.png", read_trajectory(out / "schedule.json"))
            else:
                schedule = Schedule.from_entries(hyper.schedule)
                write_schedule(out / "schedule.json", schedule, cfg.to_dict(), run.env)
                plot_schedule(out / "schedule.png", schedule)
            save_torch(out / "model.pt", {"model": cfg.model.name, "num_classes": splits.num_classes, "lam": lam.cpu(),
                                          "state_dict": materialize(model, lam).state_dict()})
            wall = time.perf_counter() - started
            run.log.metrics({"kind": "final", **{f"test_{k}": v for k, v in test.items()},
                             **{f"val_{k}": v for k, v in val.items()}, "wall_s": round(wall, 1)})
            run.log.info(f"done: test error of theta(lambda*) {test.get('error', float('nan')):.4f}; "
                         f"schedule, plot and model in {out}; wall time {wall:.1f} s")
        return run.log.dir
