"""What a data pipeline asks of a sampler: the per-sample policy of each training batch (the `Sampler` contract).

`sample(batch_size, epoch, device) -> PolicySample(probs (B, 30), mags (B, 30), lam, draw)` and `set_epoch(epoch,
device)`, called at each epoch's start outside the trainer's round, so that `sample` inside a captured round reads
only device buffers (a CUDA graph replays kernels, not Python: nothing may depend on a Python epoch there). A sampler
hands either PBA's per-sample (probs, mags), from which the pipeline draws the ops (hba_fast/augment/policy.py), or
a ready `draw`, which the pipeline applies as it is. The samplers:
- `hba_fast.engine.hyperparams.SearchSampler`: lambda_i = lambda + sigma * eps_i around the search's live lambda;
  lam (B, 54) is lambda_i itself (the hypernetwork's input);
- `hba_fast.schedule.sampler.ScheduleSampler`: a learned schedule's entry for the epoch, the same for every sample;
- `hba_fast.augment.baselines`: AutoAugment, RandAugment, TrivialAugment hand a ready `draw`;
- none (None): no policy, the recipe only (the baseline and Cutout arms).
A sampler's state (its random generators) is per rank; the pipeline that calls it checkpoints it.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import torch

from .policy import PolicyDraw


class PolicySample(NamedTuple):
    probs: torch.Tensor | None  # (B, 30) slot probabilities in [0, 1] (None when `draw` is given)
    mags: torch.Tensor | None  # (B, 30) slot magnitudes, 0 where an op has none (None when `draw` is given)
    lam: torch.Tensor | None  # (B, 54) the lambda_i these were decoded from, or None
    # A ready per-sample draw (ops (B, P), signed mags (B, P)) that the pipeline applies as it is, instead of
    # drawing PBA's policy from probs/mags: the fixed policies of hba_fast.augment.baselines (AutoAugment, ...).
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
