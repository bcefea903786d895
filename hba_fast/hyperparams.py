"""The augmentation hyperparameters lambda: where they live, how they are drawn, stepped and written down.

lambda (54,) is the search's one central variable (SPEC 3, paper Algorithm 1). Its walk through a search:

    config (policy.sigma, optim.hyper_lr) -> Hyperparams(space, sigma, hyper_lr, device)     lambda = init_lam()
      -> weight steps: the pipeline asks `hyper.sampler.sample(B, epoch, device)` for each training batch:
             lambda_i = lambda + sigma * eps_i, eps_i ~ N(0, I_54), decoded into per-sample (probs, mags);
             the pipeline augments sample i with them and hands lambda_i on to the hypernetwork (eq. 12-13)
      -> hyper steps: the trainer computes the validation loss through theta(lambda) and calls
             `hyper.step(loss)`: grad wrt lambda only, averaged over ranks, one Adam step (eq. 11)
      -> end of epoch: `hyper.end_epoch(epoch)` averages lambda over the epoch's hyper steps and decodes it
             into that epoch's schedule entry (probabilities in [0, 1], magnitudes in the ops' ranges)
      -> `hyper.schedule` is what schedule.py writes to schedule.json.

Samplers answer one question for a pipeline: the per-sample policy of a training batch. They share the
`Sampler` protocol: `sample(batch_size, epoch, device) -> PolicySample(probs (B, 30), mags (B, 30), lam, draw)`,
and `set_epoch(epoch, device)`, called at each epoch's start outside the trainer's round, so that `sample` inside a
captured round reads only device buffers (a CUDA graph replays kernels, not Python: nothing may depend on a Python
epoch there). A sampler hands either PBA's per-sample (probs, mags), from which the pipeline draws the ops, or a
ready `draw` (`hba_fast.baselines`: AutoAugment, RandAugment, TrivialAugment), which the pipeline applies as it is.
- `SearchSampler`: lambda_i = lambda + sigma * eps_i around a live lambda; lam (B, 54) is lambda_i itself.
  It reads lambda (detached) at call time, so it follows lambda as Adam moves it; a prefetching pipeline may
  draw a few steps ahead, and hands the trainer the exact lambda_i it used.
- `ScheduleSampler`: a learned schedule's entry for the epoch, the same for every sample; lam None. A schedule
  of E_s entries used for E epochs is stretched linearly: epoch e takes entry min(E_s - 1, floor(e E_s / E + 1/2)).
  The entry in use sits in a static device buffer, filled by `set_epoch` (or by `sample` when the epoch changed).
A sampler's state (its random generator) differs between ranks; the pipeline that calls it checkpoints it with
its own per-rank state. `Hyperparams.state_dict()` is the part every rank shares (lambda, Adam, the schedule), so
`Hyperparams` hands pipelines its `sampler` rather than being one.

`NoHyperparams` stands in when nothing is searched (plain training): no lambda, no hyper steps, no schedule.

Sync-free and capturable: `Hyperparams.step` and both samplers' `sample` run only device ops (lambda's Adam is
`capturable=True` on CUDA and `fused=True` on the CPU, both keeping its step count on the device; the epoch's sum and
count of lambda are device tensors), so they run inside the trainer's CUDA-graph round. `end_epoch`, `metrics` and
the state dicts read the device: they run at epoch boundaries only.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import torch
from torch import nn

from .policy import NUM_SLOTS, PolicyDraw, SearchSpace


class PolicySample(NamedTuple):
    probs: torch.Tensor | None  # (B, 30) slot probabilities in [0, 1] (None when `draw` is given)
    mags: torch.Tensor | None  # (B, 30) slot magnitudes, 0 where an op has none (None when `draw` is given)
    lam: torch.Tensor | None  # (B, 54) the lambda_i these were decoded from, or None
    # A ready per-sample draw (ops (B, P), signed mags (B, P)) that the pipeline applies as it is, instead of
    # drawing PBA's policy from probs/mags: the fixed policies of hba_fast.baselines (AutoAugment, RandAugment, ...).
    draw: PolicyDraw | None = None


class Sampler(Protocol):
    """What policy each sample of a training batch is augmented with (module docstring)."""

    def sample(self, batch_size: int, epoch: int, device: torch.device | str) -> PolicySample: ...

    def set_epoch(self, epoch: int, device: torch.device | str) -> None: ...

    def generators(self, device: torch.device | str) -> list[torch.Generator]:
        """The generators `sample` draws from on `device` (a CUDA graph of the round registers them)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class SearchSampler:
    """Per-sample lambda_i = lambda + sigma * N(0, I) around the live hyperparameter `lam` (54,)."""

    def __init__(self, lam: torch.Tensor, sigma: float, space: SearchSpace | None = None,
                 generator: torch.Generator | None = None):
        space = space if space is not None else SearchSpace()
        if lam.dim() != 1 or lam.numel() != space.lam_dim:
            raise ValueError(f"lam must have shape ({space.lam_dim},), got {tuple(lam.shape)}")
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
        self.lam, self.sigma, self.space = lam, float(sigma), space
        if generator is None:  # reproducible under torch.manual_seed(run seed), distinct from the global stream
            generator = torch.Generator(device=lam.device).manual_seed((torch.initial_seed() + 0x5A3) % 2**63)
        self.generator = generator
        space.bounds(lam.device)  # decode's constants copied to the device now, not inside the first (timed) step

    def sample(self, batch_size: int, epoch: int, device: torch.device | str) -> PolicySample:
        noise = torch.randn((batch_size, self.lam.numel()), generator=self.generator,
                            device=self.generator.device)  # (B, 54)
        lam_i = self.lam.detach().to(device=device, dtype=torch.float32) + self.sigma * noise.to(device)
        probs, mags = self.space.decode(lam_i)
        return PolicySample(probs, mags, lam_i)

    def set_epoch(self, epoch: int, device: torch.device | str) -> None:
        pass  # lambda is live: nothing depends on the epoch

    def generators(self, device: torch.device | str) -> list[torch.Generator]:
        return [self.generator]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].to(torch.uint8).cpu())


def _entry_arrays(entry) -> tuple[list[float], list[float]]:
    """(probs, mags) of one schedule entry: a dict with probs/mags (or probabilities/magnitudes), or with a
    `slots` list of {prob(ability), mag(nitude)} dicts."""
    if isinstance(entry, Mapping):
        for pk, mk in (("probs", "mags"), ("probabilities", "magnitudes")):
            if pk in entry and mk in entry:
                return list(entry[pk]), list(entry[mk])
        if "slots" in entry:
            slots = entry["slots"]
            probs = [s.get("prob", s.get("probability")) for s in slots]
            mags = [s.get("mag", s.get("magnitude", 0.0)) or 0.0 for s in slots]
            if any(p is None for p in probs):
                raise ValueError("every schedule slot needs a 'prob' (or 'probability') value")
            return probs, mags
        raise ValueError(f"a schedule entry needs 'probs' and 'mags' (or 'slots'), got keys {sorted(entry)}")
    raise ValueError(f"a schedule entry must be a dict, got {type(entry).__name__}")


def stretch_index(epoch: int, schedule_epochs: int, epochs: int) -> int:
    """The entry of a schedule of `schedule_epochs` entries used at `epoch` (0-based) of a run of `epochs`."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return min(schedule_epochs - 1, math.floor(epoch * schedule_epochs / epochs + 0.5))


class ScheduleSampler:
    """The learned schedule's policy for each epoch, stretched linearly to `epochs`, shared by the batch."""

    def __init__(self, schedule, epochs: int):
        """schedule: a list of per-epoch entries (dicts, see `_entry_arrays`), or a pair (probs, mags) of
        arrays / tensors shaped (E_s, 30)."""
        if isinstance(schedule, Sequence) and len(schedule) == 2 and not isinstance(schedule[0], Mapping):
            probs, mags = (torch.as_tensor(x, dtype=torch.float32) for x in schedule)
        else:
            pairs = [_entry_arrays(e) for e in schedule]
            probs = torch.tensor([p for p, _ in pairs], dtype=torch.float32)
            mags = torch.tensor([m for _, m in pairs], dtype=torch.float32)
        if probs.dim() != 2 or probs.shape[1] != NUM_SLOTS or probs.shape != mags.shape or probs.shape[0] < 1:
            raise ValueError(f"a schedule needs probs and mags of shape (epochs >= 1, {NUM_SLOTS}), "
                             f"got {tuple(probs.shape)} and {tuple(mags.shape)}")
        if not (probs.min() >= 0 and probs.max() <= 1):
            raise ValueError("schedule probabilities must lie in [0, 1]")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.probs, self.mags, self.epochs = probs, mags, int(epochs)  # (E_s, 30) each, on the CPU
        # per device: the whole schedule (E_s, 2, 30), copied once; the entry in use (2, 30), a static buffer that
        # captured rounds read; and the epoch that entry belongs to
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._epoch_on: dict[torch.device, int] = {}

    @property
    def schedule_epochs(self) -> int:
        return self.probs.shape[0]

    def entry_index(self, epoch: int) -> int:
        """The schedule entry used at `epoch` (0-based) of a run of `self.epochs` epochs."""
        return stretch_index(epoch, self.schedule_epochs, self.epochs)

    def generators(self, device: torch.device | str) -> list[torch.Generator]:
        return []  # no randomness of its own: the pipeline draws the ops

    def set_epoch(self, epoch: int, device: torch.device | str) -> None:
        """Put `epoch`'s entry into the device's static buffer (a device copy; call it outside captured rounds)."""
        device = torch.device(device)
        if device not in self._on:  # one copy of the schedule per device, made once: no transfer per batch
            self._on[device] = (torch.stack([self.probs, self.mags], 1).to(device),
                                torch.empty(2, NUM_SLOTS, device=device))
        if self._epoch_on.get(device) != epoch:
            table, current = self._on[device]
            current.copy_(table[self.entry_index(epoch)])
            self._epoch_on[device] = epoch

    def sample(self, batch_size: int, epoch: int, device: torch.device | str) -> PolicySample:
        device = torch.device(device)
        self.set_epoch(epoch, device)  # nothing to do when the epoch's entry is already in place
        current = self._on[device][1]  # (2, 30): probs, mags
        return PolicySample(current[0].repeat(batch_size, 1), current[1].repeat(batch_size, 1), None)  # (B, 30)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


AllReduce = Callable[[list[torch.Tensor]], None]


class Hyperparams:
    """lambda (54,) with its Adam optimiser, its per-sample draw, and the per-epoch schedule (module docstring).

    `generator` drives this rank's eps_i (seed it per rank); `all_reduce` averages a list of gradients over the
    ranks in place (the identity for one process)."""

    def __init__(self, space: SearchSpace, sigma: float, lr: float, device: torch.device | str,
                 generator: torch.Generator | None = None, init: str = "paper"):
        self.space = space
        self.lam = nn.Parameter(space.init_lam(device, init))  # (54,) unbounded
        # Adam with its step count on the device, no host read per step (module docstring): capturable on CUDA,
        # fused on the CPU (where capturable is not offered and the plain form reads the count with .item())
        on_cuda = self.lam.device.type == "cuda"
        self.optimizer = torch.optim.Adam([self.lam], lr=lr, **({"capturable": True} if on_cuda else {"fused": True}))
        self._adam_flags = {k: self.optimizer.param_groups[0][k] for k in ("capturable", "fused")}  # this device's
        self.sampler = SearchSampler(self.lam, sigma, space, generator)
        self.schedule: list[dict] = []  # one decoded policy per finished epoch
        self._sum = torch.zeros_like(self.lam.detach())  # lambda summed over this epoch's hyper steps
        self._count = torch.zeros((), dtype=torch.long, device=self.lam.device)  # this epoch's hyper steps

    def step(self, loss: torch.Tensor, all_reduce: AllReduce = lambda tensors: None) -> None:
        """One Adam step on lambda from `loss` (the validation loss through theta(lambda)); only lambda's gradient
        is computed, so the model's weights get none."""
        (grad,) = torch.autograd.grad(loss, [self.lam])
        all_reduce([grad])
        self.lam.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._sum += self.lam.detach()
        self._count += 1

    def end_epoch(self, epoch: int) -> dict:
        """This epoch's schedule entry: lambda averaged over its hyper steps, decoded; appended to `schedule`."""
        count = int(self._count.item())  # the epoch boundary: reading the device is fine here
        mean = self._sum / count if count else self.lam.detach()
        probs, mags = self.space.decode(mean.float().cpu())
        entry = {"epoch": epoch, "lam": mean.cpu().tolist(), "probs": probs.tolist(), "mags": mags.tolist()}
        self.schedule.append(entry)
        self._sum.zero_()
        self._count.zero_()
        return entry

    def metrics(self) -> dict:
        """lambda's range: raw logits can saturate the sigmoid while the decoded values barely move."""
        lam = self.lam.detach()
        return {"lam_min": round(lam.min().item(), 4), "lam_max": round(lam.max().item(), 4),
                "lam_mean": round(lam.mean().item(), 4)}

    def state_dict(self) -> dict:
        """What every rank shares: lambda, Adam's moments, the schedule so far, the epoch's running sum."""
        return {"lam": self.lam.detach().clone(), "optimizer": self.optimizer.state_dict(),
                "schedule": list(self.schedule), "sum": self._sum.clone(), "count": int(self._count.item())}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.lam.copy_(state["lam"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the saved groups bring the flags of the device they came from
            group.update(self._adam_flags)
        self.schedule = list(state["schedule"])
        self._sum.copy_(state["sum"])
        self._count.fill_(int(state["count"]))


class NoHyperparams:
    """The stand-in for `Hyperparams` when nothing is searched: the model gets lam=None, there is no hyper step
    to take and nothing to write down."""

    lam = None

    def __init__(self):
        self.schedule: list[dict] = []  # stays empty; one list per instance

    def step(self, loss: torch.Tensor, all_reduce: AllReduce = lambda tensors: None) -> None:
        raise AssertionError("plain training takes no hyper steps (train.t_val must be 0)")

    def end_epoch(self, epoch: int) -> None:
        return None

    def metrics(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
