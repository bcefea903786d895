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

The round is one function, `_round`, of static device buffers only, with no host sync, so a CUDA graph can capture
it (graphs.py runs it: eagerly, or captured once and replayed, per train.graphs; the model through torch.compile
per train.compile):
- batches come from the pipeline's RoundFeed (data/round_feed.py): indices (or finished batches) copied into
  static buffers between rounds; gather, policy (static form) and recipe run inside the round;
- the learning rate is a device scalar, read by fused SGD, set at every weight step from this epoch's table of
  rates (`lr_factor` evaluated on the host once per epoch, copied to a static device buffer) at a device step
  counter; lambda's Adam keeps its step on the device (hyperparams.py);
- losses are summed on the device and read every `log_every` steps, where a non-finite loss is also detected (the
  first bad step, weight or hyper step, is tracked on the device with the device step counter, and agreed on by
  every rank); one device read per log line.
Rounds follow the global step as in Algorithm 1 (a hyper step after every t_train-th weight step), so when
steps_per_epoch is not a multiple of t_train a round straddles the epoch boundary: its two parts run eagerly, on
either side of the boundary (evaluation, schedule entry, checkpoint), which stays outside any graph. Every
stateful part has `state_dict()` / `load_state_dict()`; checkpoints are written atomically (see `checkpoint.py`)
and loading one rebuilds the graph.

Several processes (torchrun): gradients of phi and lambda are averaged across ranks after each backward, so phi
and lambda stay identical everywhere; batch-norm running statistics are averaged at the end of each epoch. Each
rank's own randomness and data position (pipeline with its sampler, RNG; inside an epoch also its BN running
statistics) are gathered into the checkpoint, which rank 0 alone writes, and every rank resumes from its own entry.

Stop (hba_fast/run/stop.py): SIGTERM, SIGINT and SIGUSR1 are seen before each round, on the host (`StopAgreement
.poll`: the signal handler's flag with one process; with several, an asynchronous gloo all_reduce of it answered one
round later, so every rank stops before the same round and the round stays sync-free). The stop checks the losses
since the last log line, writes the checkpoint of this position (`epoch_step` steps into epoch `epoch + 1`, with
the epoch's loss meters and lambda sum) and raises `StopRequested`. A resume inside an epoch continues its rounds
from that step (`_set_counters`, the pipeline's own position): the run ends bit for bit where an uninterrupted one
ends.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import Batch, Pipeline
from ..data.round_feed import round_feed
from ..errors import CheckpointError, NonFiniteLossError, RunFolderError, StopRequested, UserError
from ..run.checkpoint import load_checkpoint, save_checkpoint, unusable
from ..run.session import Run
from ..run.stop import StopAgreement, signal_name
from .graphs import RoundRunner, compile_model, enable_cudnn_benchmark, use_graphs
from .hyperparams import Hyperparams, NoHyperparams
from .nonfinite import nonfinite_message


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
    """Device-side sum and count of a scalar, read at log time only."""
    device: torch.device
    total: torch.Tensor = field(init=False)
    count: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.total = torch.zeros((), device=self.device)
        self.count = torch.zeros((), device=self.device)

    def add(self, value: torch.Tensor) -> None:
        self.total += value.detach().float()
        self.count += 1

    def pop(self) -> float | None:
        return self.mean(*self.take().tolist())  # the one device read

    def take(self) -> torch.Tensor:
        """(total, count) as one device tensor (2,), for a caller that reads several things at once; resets."""
        values = torch.stack([self.total, self.count])
        self.total.zero_()
        self.count.zero_()
        return values

    @staticmethod
    def mean(total: float, count: float) -> float | None:
        return None if count == 0 else total / count


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
        dev = self.device
        self.lr = torch.tensor(optim_cfg.lr, dtype=torch.float32, device=dev)  # SGD reads it at every step
        self.opt_phi = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=optim_cfg.momentum,
                                       nesterov=optim_cfg.nesterov, weight_decay=optim_cfg.weight_decay, fused=True)
        self._lr_table = torch.zeros(self.steps_per_epoch, dtype=torch.float64, device=dev)  # this epoch's lr/step
        self._pos = torch.zeros((), dtype=torch.long, device=dev)  # weight steps taken in this epoch
        self._step = torch.zeros((), dtype=torch.long, device=dev)  # weight steps taken in the run (NaN report)
        amp = train_cfg.amp == "bf16" or (train_cfg.amp == "auto" and dev.type == "cuda")
        self.amp = amp
        # no autocast weight cache: a captured graph would keep the first round's bf16 copies of the weights
        self.autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=False)
        self.epoch, self.step = 0, 0  # epochs and weight steps done
        self.epoch_step = 0  # weight steps done in the epoch under way (a stop's checkpoint records it)
        self._saved_epoch: int | None = None  # epoch of the last checkpoint written or resumed from
        self._saved_inside = 0  # its steps into the next epoch (a stop's checkpoint; 0: at the epoch's end)
        self._train_loss, self._val_loss = Meter(dev), Meter(dev)
        # the first non-finite loss, -1 while none: 2 s + 1 for the weight step of run index s (0-based), 2 s for a
        # hyper step after s weight steps, so the order of the codes is the order of the steps (rank minimum)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=dev)
        self._set_counters()  # `_start_epoch` sets them again; here so that a fresh trainer's steps have their rate
        self._stop = StopAgreement(self.world)  # a stop signal, agreed by every rank at round boundaries
        graphs = use_graphs(train_cfg.graphs, dev, self.log.info)
        self.feed = round_feed(pipeline, train_cfg.t_train, train_cfg.t_val, dev,
                               capture_ready=graphs or train_cfg.graphs == "on")
        self.forward = compile_model(model, train_cfg.compile)
        self.rounds = RoundRunner(self._round, train_cfg.t_train, train_cfg.t_val, dev, graphs,
                                  self.feed.generators())
        tuned = enable_cudnn_benchmark(dev)
        self.log.info(f"rounds of {train_cfg.t_train} weight + {train_cfg.t_val} hyper steps: "
                      f"{'CUDA graph, captured after warm-up' if graphs else 'eager'}; torch.compile "
                      f"{train_cfg.compile}; {type(self.feed).__name__}{'; cudnn.benchmark' if tuned else ''}")

    @property
    def schedule(self) -> list[dict]:
        """One decoded policy per finished epoch (empty when nothing is searched)."""
        return self.hyper.schedule

    # ----------------------------------------------------------------------------------------- the round
    # Everything from here to `_all_reduce` runs inside the round: device ops on static buffers only.
    def _round(self, n_weight: int, n_hyper: int) -> None:
        """Algorithm 1's inner loop: n_weight weight steps, then n_hyper hyper steps, on the feed's buffers."""
        for k in range(n_weight):
            self.weight_step(self.feed.train_batch(k))
        for j in range(n_hyper):
            self.hyper_step(self.feed.val_batch(j))

    def _check_finite(self, loss: torch.Tensor, weight: bool) -> None:
        """Record the first step with a non-finite loss (its code: see `_first_bad` in __init__)."""
        bad = ~torch.isfinite(loss.detach()) & (self._first_bad < 0)
        self._first_bad.copy_(torch.where(bad, 2 * self._step + int(weight), self._first_bad))

    def _loss(self, images: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor | None) -> torch.Tensor:
        with self.autocast():
            logits = self.forward(images.contiguous(memory_format=self.memory_format), lam)
        return F.cross_entropy(logits.float(), labels)

    def weight_step(self, batch: Batch) -> None:
        """Eq. 13: one SGD step on phi with per-sample lambda_i (already used by the pipeline's augmentation)."""
        self.lr.copy_(self._lr_table.index_select(0, self._pos.view(1)).view(()))
        loss = self._loss(batch.images, batch.labels, batch.lam)
        self.opt_phi.zero_grad(set_to_none=True)
        loss.backward()
        self._all_reduce([p.grad for p in self.model.parameters() if p.grad is not None])
        self.opt_phi.step()
        self._train_loss.add(loss)
        self._check_finite(loss, weight=True)
        self._pos += 1
        self._step += 1

    def hyper_step(self, batch: Batch) -> None:
        """Eq. 11: one Adam step on lambda from a clean validation batch through theta(lambda)."""
        with hyper_bn_mode(self.model, self.cfg.hyper_bn):
            loss = self._loss(batch.images, batch.labels, self.hyper.hyper_lam(batch.labels.shape[0]))
        self.hyper.step(loss, self._all_reduce)
        self._val_loss.add(loss)
        self._check_finite(loss, weight=False)

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
        if self.epoch < self.cfg.epochs:
            which = f"{self.epoch + 1}-{self.cfg.epochs}" if self.epoch + 1 < self.cfg.epochs else self.cfg.epochs
            self.log.info(f"training epoch(s) {which} of {self.cfg.epochs}, "
                          f"{self.steps_per_epoch} steps each ({self.world} process(es)) on {self.device}")
        else:
            self.log.info(f"all {self.cfg.epochs} epochs are done; nothing left to train")
        while self.epoch < self.cfg.epochs:
            self._start_epoch()
            end = self.step + self.steps_per_epoch - self.epoch_step  # this epoch's end (a resume may start inside)
            bar = self.log.progress(end - self.step, f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                                    after=(self.cfg.epochs - self.epoch - 1) * self.steps_per_epoch)
            t0, seen = time.perf_counter(), 0
            for n_weight, n_hyper in self.rounds_of_epoch(self.epoch_step):
                signum = self._stop.poll()  # on the host: no device read (run/stop.py)
                if signum:
                    self._stop_here(signum)
                self.run_round(n_weight, n_hyper)
                seen += n_weight * self.pipeline.batch_size * self.world
                if self.step % self.cfg.log_every < n_weight or self.step == end:  # crossed a multiple of log_every
                    ips = seen / max(time.perf_counter() - t0, 1e-9)
                    self._log_interval(ips)
                    bar.set_postfix_str(f"{ips:.0f} img/s")
                bar.update(n_weight)
            bar.close()
            self._end_epoch(seen / max(time.perf_counter() - t0, 1e-9))
        self._stop.finish()

    def rounds_of_epoch(self, done: int = 0):
        """(weight steps, hyper steps) of each round of this epoch, `done` steps of it being done already: a hyper step
        after every t_train-th weight step of the run, so an epoch may start with the rest of a round and end with the
        start of one; none in the first train.hyper_warmup_epochs epochs."""
        step, end = self.step, self.step + self.steps_per_epoch - done
        t_val = self.cfg.t_val if self.epoch >= self.cfg.hyper_warmup_epochs else 0
        while step < end:
            n_weight = min(self.cfg.t_train - step % self.cfg.t_train, end - step)
            step += n_weight
            yield n_weight, (t_val if step % self.cfg.t_train == 0 else 0)

    def run_round(self, n_weight: int, n_hyper: int) -> None:
        """Fill the feed's buffers for the next round, then run it (a CUDA graph replay when it is captured)."""
        self.feed.prepare(n_weight, n_hyper)
        self.rounds.run(n_weight, n_hyper)
        self.step += n_weight
        self.epoch_step += n_weight

    def _start_epoch(self) -> None:
        """Outside the round: this epoch's learning rates and device counters, the feed's epoch."""
        self.model.train()
        self._set_counters()
        self.feed.start_epoch(self.epoch)

    def _set_counters(self) -> None:
        """The device step counters from `self.step` (a resumed run may stand inside the epoch), and the rate of each
        step of this epoch."""
        spe = self.steps_per_epoch
        first = self.step - self.epoch_step
        rates = [self.optim_cfg.lr * lr_factor(self.optim_cfg, (first + i) / spe, self.cfg.epochs) for i in range(spe)]
        host = torch.tensor(rates, dtype=torch.float64)  # (steps_per_epoch,)
        self._lr_table.copy_(host.pin_memory() if self.device.type == "cuda" else host, non_blocking=True)
        self._pos.fill_(self.epoch_step)
        self._step.fill_(self.step)

    def _stop_here(self, signum: int) -> None:
        """A stop signal (run/stop.py), agreed by every rank before this round: check the losses of the steps since
        the last log line (a checkpoint never holds NaN weights), write the checkpoint of this position (the data
        order, the RNG states, the step counters, lambda and Adam, the epoch's partial meters and sum of lambda), and
        raise StopRequested."""
        self._stop.finish()
        name, path = signal_name(signum), self.log.dir / "checkpoint.pt"
        self.log.info(f"{name}: stopping before step {self.step + 1}; writing the checkpoint (a second signal exits "
                      f"at once)")
        first_bad = int(self._agreed_first_bad().item())
        if first_bad >= 0:
            raise NonFiniteLossError(self._nonfinite(self._bad_step(first_bad), first_step=first_bad == 1))
        self.save(path)
        spe, done = self.steps_per_epoch, self.epoch_step
        where = (f"after epoch {self.epoch}/{self.cfg.epochs}" if done == 0 else
                 f"in epoch {self.epoch + 1}/{self.cfg.epochs}, {done} of its {spe} steps done")
        raise StopRequested(signum, f"stopped by {name} at step {self.step} ({where}); {path} holds this position")

    def _agreed_first_bad(self) -> torch.Tensor:
        """The code of the first non-finite loss on any rank (-1: none), on the device (see `_first_bad`)."""
        first_bad = self._first_bad
        if self.world > 1:  # a NaN on one rank stops every rank (else the others hang, or checkpoint NaN weights)
            none = torch.iinfo(torch.long).max
            first_bad = torch.where(first_bad < 0, none, first_bad)
            torch.distributed.all_reduce(first_bad, op=torch.distributed.ReduceOp.MIN)
            first_bad = torch.where(first_bad == none, -1, first_bad)
        return first_bad

    def _log_interval(self, images_per_s: float) -> None:
        first_bad = self._agreed_first_bad()
        # the one device read of the interval (float64 holds the step codes exactly)
        values = torch.cat([first_bad.double().view(1), self.lr.double().view(1),
                            self._train_loss.take().double(), self._val_loss.take().double()])
        first_bad, lr, train_total, train_count, val_total, val_count = values.tolist()
        if first_bad >= 0:
            raise NonFiniteLossError(self._nonfinite(self._bad_step(int(first_bad)), first_step=first_bad == 1))
        row = {"kind": "train", "epoch": self.epoch + 1, "step": self.step, "lr": lr,
               "train_loss": Meter.mean(train_total, train_count), "images_per_s": round(images_per_s, 1),
               "hyper_val_loss": Meter.mean(val_total, val_count)}
        self.log.metrics({k: v for k, v in row.items() if v is not None})

    def _bad_step(self, code: int) -> str:
        """Where the first non-finite loss came (`_first_bad`'s code), 1-based as in the progress bar and
        metrics.jsonl."""
        step, weight = divmod(code, 2)  # weight: the weight step of run index `step`; else the hyper step after it
        epoch = f"epoch {self.epoch + 1}/{self.cfg.epochs}"
        if weight:
            return (f"the loss became NaN/Inf by step {step + 1} (step {step - self.epoch * self.steps_per_epoch + 1}"
                    f" of {epoch})")
        return (f"the validation loss became NaN/Inf in the hyper step after weight step {step} (step "
                f"{step - self.epoch * self.steps_per_epoch} of {epoch})")

    def _end_epoch(self, images_per_s: float) -> None:
        # Every rank evaluates, and rank 0 saves, the same model: running statistics averaged across ranks.
        self._all_reduce([b for b in self.model.buffers() if b.is_floating_point()])
        row = {"kind": "epoch", "epoch": self.epoch + 1, "step": self.step, "images_per_s": round(images_per_s, 1),
               **self.hyper.metrics()}
        self.hyper.end_epoch(self.epoch)
        self.log.schedule(self.hyper.schedule)  # the sinks' view of the schedule so far (none for plain training)
        if self.cfg.eval_every and ((self.epoch + 1) % self.cfg.eval_every == 0 or self.epoch + 1 == self.cfg.epochs):
            row.update({f"val_{k}": v for k, v in self.evaluate("val").items()})
        self.epoch, self.epoch_step = self.epoch + 1, 0
        self.log.epoch(row, self.cfg.epochs)
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
            epoch = max(1, -(-self.step // self.steps_per_epoch))  # the epoch of the last step taken, 1-based
            raise NonFiniteLossError(self._nonfinite(f"the {split} loss is NaN/Inf at the end of epoch "
                                                     f"{epoch}/{self.cfg.epochs}"))
        return {"loss": loss / n, "error": err / n}

    def _nonfinite(self, where: str, first_step: bool = False) -> str:
        return nonfinite_message(where, self.optim_cfg, searched=self.hyper.lam is not None, amp=self.amp,
                                 checkpoint=self.log.dir / "checkpoint.pt", saved_epoch=self._saved_epoch,
                                 saved_inside=self._saved_inside,
                                 checkpoint_every=self.cfg.checkpoint_every, epochs=self.cfg.epochs,
                                 aside=self.run.folder.aside, first_step=first_step)

    # ----------------------------------------------------------------------------------------- state
    def _rank_state(self) -> dict:
        """This process's own randomness and data position (they differ between ranks), and with several processes
        its batch-norm running statistics: averaged over the ranks at each epoch's end only, so inside an epoch each
        rank has its own."""
        state = {
            "pipeline": self.pipeline.state_dict(),
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
        }
        if self.world > 1:
            state["buffers"] = {k: b.detach().cpu() for k, b in self.model.named_buffers() if b.is_floating_point()}
        return state

    def state_dict(self) -> dict:
        """The whole run; `ranks` holds every rank's `_rank_state` (a collective: with several processes, every
        rank must call it)."""
        ranks = [self._rank_state()]
        if self.world > 1:
            ranks = [None] * self.world
            torch.distributed.all_gather_object(ranks, self._rank_state())
        meters = {name: torch.stack([m.total, m.count]).cpu() for name, m in self._meters().items()}  # (2,) each
        return {"format": CHECKPOINT_FORMAT, "device": self.device.type, "epoch": self.epoch, "step": self.step,
                "epoch_step": self.epoch_step, "steps_per_epoch": self.steps_per_epoch,
                "model": self.model.state_dict(), "opt_phi": self.opt_phi.state_dict(),
                "hyper": self.hyper.state_dict(), "meters": meters, "ranks": ranks, "log": self.log.state_dict()}

    def _meters(self) -> dict[str, Meter]:
        """The loss sums since the last log line: a checkpoint inside an epoch keeps them, so the resumed run's next
        metrics row is the uninterrupted run's (a checkpoint at a log line holds zeros)."""
        return {"train_loss": self._train_loss, "val_loss": self._val_loss}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("the checkpoint was written by another version of hba-fast; start the run afresh "
                                  "in another folder (--set run.out_dir=...)")
        ranks = state["ranks"]
        if len(ranks) != self.world:  # shards, steps per epoch and the lr schedule would all change
            raise CheckpointError(f"the checkpoint was written by {len(ranks)} process(es), this run has "
                                  f"{self.world}; resume it with torchrun --nproc_per_node={len(ranks)}, or start "
                                  f"afresh in another folder (--set run.out_dir=...)")
        # generator states (the pipeline's, the sampler's) are of the device's kind: a CPU one cannot take a CUDA
        # one's, nor the reverse (checkpoints without "device" say it by their CUDA RNG state)
        saved = state.get("device") or ("cpu" if ranks[0]["rng"]["cuda"] is None else "cuda")
        if saved != self.device.type:
            where = ("on a GPU machine" if saved == "cuda" else
                     "on the CPU (hide the GPU: CUDA_VISIBLE_DEVICES= hba-fast ...)")
            raise CheckpointError(f"the checkpoint was written on {saved}, this run is on {self.device.type}: resume "
                                  f"it {where} (or start afresh in another folder: --set run.out_dir=...)")
        if state["epoch"] > self.cfg.epochs:
            raise RunFolderError(f"the run in {self.log.dir} has done {state['epoch']} epochs, more than "
                                 f"train.epochs={self.cfg.epochs}: a run can be extended, not cut back; set "
                                 f"train.epochs={state['epoch']} or more, or start a new run with "
                                 f"--set run.out_dir=...")
        inside = int(state.get("epoch_step", 0))  # steps done in epoch `epoch` (older checkpoints: at its start)
        if inside and (state.get("steps_per_epoch") != self.steps_per_epoch or not 0 < inside < self.steps_per_epoch):
            raise CheckpointError(f"the checkpoint stands {inside} steps into an epoch of "
                                  f"{state.get('steps_per_epoch')} steps, but an epoch of this run has "
                                  f"{self.steps_per_epoch}: resume it with the data and train settings it was made "
                                  f"with, or start afresh in another folder (--set run.out_dir=...)")
        self.epoch, self.step, self.epoch_step = state["epoch"], state["step"], inside
        self.model.load_state_dict(state["model"])
        self.opt_phi.load_state_dict(state["opt_phi"])
        for group in self.opt_phi.param_groups:  # the loaded groups hold the saved lr: read ours, set every step
            group["lr"] = self.lr
        self.hyper.load_state_dict(state["hyper"])
        self.rounds.reset()  # the optimisers' state tensors are new objects: capture the round again
        for name, meter in self._meters().items():  # checkpoints without meters were written at log lines: zeros
            total, count = state.get("meters", {}).get(name, torch.zeros(2)).tolist()
            meter.total.fill_(total)
            meter.count.fill_(count)
        own = ranks[torch.distributed.get_rank() if self.world > 1 else 0]
        if own.get("buffers"):  # this rank's running statistics (the model's state holds rank 0's)
            buffers = dict(self.model.named_buffers())
            with torch.no_grad():
                for k, v in own["buffers"].items():
                    buffers[k].copy_(v)
        self.pipeline.load_state_dict(own["pipeline"])
        torch.set_rng_state(own["rng"]["cpu"].cpu())  # RNG states must be CPU byte tensors
        if own["rng"]["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["rng"]["cuda"].cpu(), self.device)
        self.log.load_state_dict(state.get("log"))  # metrics.jsonl back to the checkpoint's rows

    def save(self, path) -> None:
        state = self.state_dict()  # on every rank: it gathers each rank's own state
        if self.log.is_main:
            save_checkpoint(path, state)
        self._saved_epoch, self._saved_inside = self.epoch, self.epoch_step

    def resume(self, path) -> bool:
        """Load `path` when it exists; True when the run continues from it."""
        state = load_checkpoint(path, map_location="cpu")  # load_state_dict puts each part on its device
        if state is None:
            return False
        try:
            self.load_state_dict(state)
        except UserError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:  # another model, a damaged state
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise unusable(path, f"it does not fit this run ({type(e).__name__}: {first})") from None
        self._saved_epoch, self._saved_inside = self.epoch, self.epoch_step
        inside = self.epoch_step
        where = f"after epoch {self.epoch}/{self.cfg.epochs}" if not inside else \
            f"in epoch {self.epoch + 1}/{self.cfg.epochs} after {inside} of its {self.steps_per_epoch} steps"
        self.log.info(f"resumed from {path} {where} (step {self.step})")
        self.run.folder.resumed(self.epoch, self.cfg.epochs)
        return True
