"""The HBA trainer: paper Algorithm 1 (alternating weight and hyper steps), also used for plain training.

One round = `t_train` weight steps, then `t_val` hyper steps:

    weight step (eq. 13): batch of augmented images, each with its own lambda_i = lambda + eps_i (drawn by the
        pipeline's sampler, which also augmented the image with it);
        phi <- SGD(phi, grad_phi CE(F(x_i; theta(lambda_i)))).
    hyper step  (eq. 11): clean validation batch through theta(lambda) with ONE shared lambda;
        lambda <- Adam(lambda, grad_lambda CE). Only lambda's gradient is computed (torch.autograd.grad).
        Batch norm (train.hyper_bn): `running` (the default) runs the step in eval mode (running statistics), as
        STN and Delta-STN do; `batch` uses batch statistics, as in the weight steps, but leaves the running
        statistics alone (momentum 0 for the step), so validation data never leak into them.
        No hyper steps during the first train.hyper_warmup_epochs epochs (lambda stays where it starts).

lambda itself, its Adam optimiser, its per-sample draw and the per-epoch schedule live in `Hyperparams`
(hyperparams.py); the trainer only computes the losses and asks it to step. Without one (`hyper=None`, and then
`t_val = 0`) this is a plain trainer, used by `hba-fast train` for the paper's evaluation protocol.

No host syncs inside a step: losses are accumulated on the device and read every `log_every` steps, where a
non-finite loss is also detected (the first bad step is tracked on the device, and agreed on by every rank). Every
stateful part has `state_dict()` / `load_state_dict()`; checkpoints are written atomically (see `checkpoint.py`).

Several processes (torchrun): gradients of phi and lambda are averaged across ranks after each backward, so phi
and lambda stay identical everywhere; batch-norm running statistics are averaged at the end of each epoch. Each
rank's own randomness and data position (pipeline with its sampler, RNG) are gathered into the checkpoint, which rank 0
alone writes, and every rank resumes from its own entry.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .errors import NonFiniteLossError
from .hyperparams import Hyperparams, NoHyperparams
from .pipelines.base import Pipeline
from .session import Run


def lr_factor(optim_cfg, epoch_float: float, total_epochs: int) -> float:
    """Multiplier of the base learning rate at a (fractional) epoch: warm-up, then cosine | step | constant."""
    if optim_cfg.warmup_epochs > 0 and epoch_float < optim_cfg.warmup_epochs:
        return (epoch_float + 1e-8) / optim_cfg.warmup_epochs
    if optim_cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch_float / total_epochs, 1.0)))
    if optim_cfg.schedule == "step":
        return optim_cfg.gamma ** sum(epoch_float >= m for m in optim_cfg.milestones)
    return 1.0


@contextlib.contextmanager
def frozen_bn_statistics(model: nn.Module):
    """Batch statistics for normalisation, but running statistics untouched (momentum 0 for the block)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) or hasattr(m, "running_var")]
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


@contextlib.contextmanager
def hyper_bn_mode(model: nn.Module, mode: str):
    """Batch norm in the hyper step: `batch` (batch statistics, running ones frozen) or `running` (eval mode)."""
    if mode == "batch":
        with frozen_bn_statistics(model):
            yield
        return
    assert mode == "running", mode
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


CHECKPOINT_FORMAT = 2  # the layout of Trainer.state_dict(); older checkpoints are refused


@dataclass
class Meter:
    """Device-side sums of a scalar, read at log time only."""
    device: torch.device
    total: torch.Tensor = field(init=False)
    count: int = 0

    def __post_init__(self):
        self.total = torch.zeros((), device=self.device)

    def add(self, value: torch.Tensor) -> None:
        self.total += value.detach().float()
        self.count += 1

    def pop(self) -> float | None:
        if self.count == 0:
            return None
        mean = (self.total / self.count).item()
        self.total.zero_()
        self.count = 0
        return mean


class Trainer:
    """Alternating HBA updates of phi (SGD) and lambda (`Hyperparams`) over a pipeline; see the module docstring."""

    def __init__(self, model: nn.Module, pipeline: Pipeline, run: Run, optim_cfg, train_cfg,
                 hyper: Hyperparams | None = None, channels_last: bool = False):
        assert hyper is not None or train_cfg.t_val == 0, "hyper steps need Hyperparams"
        self.model, self.pipeline, self.run = model, pipeline, run
        self.hyper = hyper if hyper is not None else NoHyperparams()
        self.optim_cfg, self.cfg = optim_cfg, train_cfg
        self.device, self.log, self.world = run.device, run.log, run.dist.world
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.steps_per_epoch = pipeline.steps_per_epoch
        if train_cfg.steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, train_cfg.steps_per_epoch)
        fused = self.device.type == "cuda"
        self.opt_phi = torch.optim.SGD(model.parameters(), lr=optim_cfg.lr, momentum=optim_cfg.momentum,
                                       nesterov=optim_cfg.nesterov, weight_decay=optim_cfg.weight_decay,
                                       **({"fused": True} if fused else {}))
        amp = train_cfg.amp == "bf16" or (train_cfg.amp == "auto" and self.device.type == "cuda")
        self.autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp)
        self.epoch, self.step = 0, 0
        self._train_loss, self._val_loss = Meter(self.device), Meter(self.device)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)

    @property
    def schedule(self) -> list[dict]:
        """One decoded policy per finished epoch (empty when nothing is searched)."""
        return self.hyper.schedule

    # ----------------------------------------------------------------------------------------- steps
    def _set_lr(self) -> None:
        factor = lr_factor(self.optim_cfg, self.step / self.steps_per_epoch, self.cfg.epochs)
        for group in self.opt_phi.param_groups:
            group["lr"] = self.optim_cfg.lr * factor

    def _check_finite(self, loss: torch.Tensor) -> None:
        self._first_bad.masked_fill_((~torch.isfinite(loss.detach())) & (self._first_bad < 0), self.step)

    def _loss(self, images: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor | None) -> torch.Tensor:
        with self.autocast():
            logits = self.model(images.contiguous(memory_format=self.memory_format), lam)
        return F.cross_entropy(logits.float(), labels)

    def weight_step(self, batch) -> None:
        """Eq. 13: one SGD step on phi with per-sample lambda_i (already used by the pipeline's augmentation)."""
        self._set_lr()
        loss = self._loss(batch.images, batch.labels, batch.lam)
        self.opt_phi.zero_grad(set_to_none=True)
        loss.backward()
        self._all_reduce([p.grad for p in self.model.parameters() if p.grad is not None])
        self.opt_phi.step()
        self._train_loss.add(loss)
        self._check_finite(loss)
        self.step += 1

    def hyper_step(self) -> None:
        """Eq. 11: one Adam step on lambda from a clean validation batch through theta(lambda)."""
        batch = self.pipeline.val_batch()
        with hyper_bn_mode(self.model, self.cfg.hyper_bn):
            loss = self._loss(batch.images, batch.labels, self.hyper.lam)
        self.hyper.step(loss, self._all_reduce)
        self._val_loss.add(loss)
        self._check_finite(loss)

    def _all_reduce(self, tensors: list[torch.Tensor]) -> None:
        """Average tensors over the ranks, in place."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    # ----------------------------------------------------------------------------------------- loop
    def fit(self) -> None:
        """Run the remaining epochs: rounds of t_train weight steps and t_val hyper steps; log; checkpoint."""
        self.log.info(f"training {self.cfg.epochs - self.epoch} epochs x {self.steps_per_epoch} steps "
                      f"({self.world} process(es)) on {self.device}")
        while self.epoch < self.cfg.epochs:
            self.model.train()
            bar = self.log.progress(self.steps_per_epoch, f"epoch {self.epoch + 1}/{self.cfg.epochs}")
            t0, seen = time.perf_counter(), 0
            for i, batch in enumerate(itertools.islice(self.pipeline.train_epoch(self.epoch), self.steps_per_epoch)):
                self.weight_step(batch)
                seen += batch.labels.shape[0] * self.world
                if self.step % self.cfg.t_train == 0 and self.epoch >= self.cfg.hyper_warmup_epochs:
                    for _ in range(self.cfg.t_val):
                        self.hyper_step()
                if self.step % self.cfg.log_every == 0 or i + 1 == self.steps_per_epoch:
                    ips = seen / max(time.perf_counter() - t0, 1e-9)
                    self._log_interval(ips)
                    bar.set_postfix_str(f"{ips:.0f} img/s")
                bar.update(1)
            bar.close()
            self._end_epoch(seen / max(time.perf_counter() - t0, 1e-9))

    def _log_interval(self, images_per_s: float) -> None:
        none = torch.iinfo(torch.long).max
        first_bad = torch.where(self._first_bad < 0, none, self._first_bad)
        if self.world > 1:  # a NaN on one rank stops every rank (else the others hang, or checkpoint NaN weights)
            torch.distributed.all_reduce(first_bad, op=torch.distributed.ReduceOp.MIN)
        first_bad = int(first_bad.item())
        if first_bad != none:
            raise NonFiniteLossError(
                f"the loss became NaN/Inf at step {first_bad} (epoch {self.epoch}); the run stopped and the last "
                f"good checkpoint is kept. Lower optim.lr / optim.hyper_lr, or try train.amp=off")
        row = {"kind": "train", "epoch": self.epoch, "step": self.step, "lr": self.opt_phi.param_groups[0]["lr"],
               "train_loss": self._train_loss.pop(), "images_per_s": round(images_per_s, 1),
               "hyper_val_loss": self._val_loss.pop()}
        self.log.metrics({k: v for k, v in row.items() if v is not None})

    def _end_epoch(self, images_per_s: float) -> None:
        # Every rank evaluates, and rank 0 saves, the same model: running statistics averaged across ranks.
        self._all_reduce([b for b in self.model.buffers() if b.is_floating_point()])
        row = {"kind": "epoch", "epoch": self.epoch, "step": self.step, "images_per_s": round(images_per_s, 1),
               **self.hyper.metrics()}
        self.hyper.end_epoch(self.epoch)
        if self.cfg.eval_every and ((self.epoch + 1) % self.cfg.eval_every == 0 or self.epoch + 1 == self.cfg.epochs):
            row.update({f"val_{k}": v for k, v in self.evaluate("val").items()})
        self.epoch += 1
        self.log.metrics(row)
        self.log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if self.epoch % self.cfg.checkpoint_every == 0 or self.epoch == self.cfg.epochs:
            self.save(self.log.dir / "checkpoint.pt")

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Loss and top-1 error of theta(lambda) (one shared lambda) over one clean pass of a split."""
        self.model.eval()
        total, loss_sum, wrong = 0, torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        lam = None if self.hyper.lam is None else self.hyper.lam.detach()
        for batch in self.pipeline.eval_batches(split):
            with self.autocast():
                logits = self.model(batch.images.contiguous(memory_format=self.memory_format), lam).float()
            loss_sum += F.cross_entropy(logits, batch.labels, reduction="sum")
            wrong += (logits.argmax(1) != batch.labels).sum()
            total += batch.labels.shape[0]
        self.model.train()
        stats = torch.stack([loss_sum, wrong.float(), torch.tensor(float(total), device=self.device)])
        if self.world > 1:  # every rank joins, also one whose share of the split is empty
            torch.distributed.all_reduce(stats)
        loss, err, n = stats.tolist()
        if n == 0:
            return {}
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"the {split} loss is NaN/Inf after epoch {self.epoch}; the last good "
                                     f"checkpoint is kept. Lower optim.lr / optim.hyper_lr, or try train.amp=off")
        return {"loss": loss / n, "error": err / n}

    # ----------------------------------------------------------------------------------------- state
    def _rank_state(self) -> dict:
        """This process's own randomness and data position (they differ between ranks)."""
        return {
            "pipeline": self.pipeline.state_dict(),
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
        }

    def state_dict(self) -> dict:
        """The whole run; `ranks` holds every rank's `_rank_state` (a collective: with several processes, every
        rank must call it)."""
        ranks = [self._rank_state()]
        if self.world > 1:
            ranks = [None] * self.world
            torch.distributed.all_gather_object(ranks, self._rank_state())
        return {"format": CHECKPOINT_FORMAT, "epoch": self.epoch, "step": self.step,
                "model": self.model.state_dict(), "opt_phi": self.opt_phi.state_dict(),
                "hyper": self.hyper.state_dict(), "ranks": ranks}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("the checkpoint was written by another version of hba-fast; start the run afresh "
                                  "in another folder (--set run.out_dir=...)")
        ranks = state["ranks"]
        if len(ranks) != self.world:  # shards, steps per epoch and the lr schedule would all change
            raise CheckpointError(f"the checkpoint was written by {len(ranks)} process(es), this run has "
                                  f"{self.world}; resume it with torchrun --nproc_per_node={len(ranks)}, or start "
                                  f"afresh in another folder (--set run.out_dir=...)")
        self.epoch, self.step = state["epoch"], state["step"]
        self.model.load_state_dict(state["model"])
        self.opt_phi.load_state_dict(state["opt_phi"])
        self.hyper.load_state_dict(state["hyper"])
        own = ranks[torch.distributed.get_rank() if self.world > 1 else 0]
        self.pipeline.load_state_dict(own["pipeline"])
        torch.set_rng_state(own["rng"]["cpu"].cpu())  # RNG states must be CPU byte tensors
        if own["rng"]["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["rng"]["cuda"].cpu(), self.device)

    def save(self, path) -> None:
        state = self.state_dict()  # on every rank: it gathers each rank's own state
        if self.log.is_main:
            save_checkpoint(path, state)

    def resume(self, path) -> bool:
        """Load `path` when it exists; True when the run continues from it."""
        state = load_checkpoint(path, map_location="cpu")  # load_state_dict puts each part on its device
        if state is None:
            return False
        self.load_state_dict(state)
        self.log.info(f"resumed from {path} at epoch {self.epoch} (step {self.step})")
        return True
