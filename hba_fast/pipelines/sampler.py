"""Policy samplers: what policy each sample of a training batch is augmented with.

A pipeline asks `sampler.sample(batch_size, epoch, device) -> PolicySample(probs (B, 30), mags (B, 30), lam)`.

- `SearchSampler` (the search's weight steps, SPEC 3, paper eq. 12-13): every sample gets its own
  lambda_i = lambda + sigma * eps_i, eps_i ~ N(0, I_54), fresh at every call, decoded by
  `SearchSpace.decode`; lam (B, 54) is lambda_i itself, which the trainer hands to the hypernetwork.
  lambda is read (detached) at call time, so the sampler follows the live parameter as Adam moves it.
- `ScheduleSampler` (re-training with a learned schedule, SPEC 5): the decoded probabilities / magnitudes of
  epoch e's schedule entry, the same for every sample; lam None. A schedule of E_s entries used for E epochs
  is stretched linearly: epoch e takes entry min(E_s - 1, floor(e * E_s / E + 0.5)) (round half up).

Both have `state_dict()` / `load_state_dict()`; only the SearchSampler holds RNG state (its generator).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ..policy import NUM_SLOTS
from .base import PolicySample


class SearchSampler:
    """Per-sample lambda_i = lambda + sigma * N(0, I) around the live hyperparameter `lam` (54,)."""

    def __init__(self, lam: torch.Tensor, sigma: float, space=None, generator: torch.Generator | None = None):
        if space is None:
            from ..policy import SearchSpace

            space = SearchSpace()
        if lam.dim() != 1 or lam.numel() != space.lam_dim:
            raise ValueError(f"lam must have shape ({space.lam_dim},), got {tuple(lam.shape)}")
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
        self.lam, self.sigma, self.space = lam, float(sigma), space
        if generator is None:  # reproducible under torch.manual_seed(run seed), distinct from the global stream
            generator = torch.Generator(device=lam.device).manual_seed((torch.initial_seed() + 0x5A3) % 2**63)
        self.generator = generator

    def sample(self, batch_size: int, epoch: int, device: torch.device | str) -> PolicySample:
        noise = torch.randn((batch_size, self.lam.numel()), generator=self.generator,
                            device=self.generator.device)  # (B, 54)
        lam_i = self.lam.detach().to(device=device, dtype=torch.float32) + self.sigma * noise.to(device)
        probs, mags = self.space.decode(lam_i)
        return PolicySample(probs, mags, lam_i)

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
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def schedule_epochs(self) -> int:
        return self.probs.shape[0]

    def entry_index(self, epoch: int) -> int:
        """The schedule entry used at `epoch` (0-based) of a run of `self.epochs` epochs."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return min(self.schedule_epochs - 1, math.floor(epoch * self.schedule_epochs / self.epochs + 0.5))

    def sample(self, batch_size: int, epoch: int, device: torch.device | str) -> PolicySample:
        device = torch.device(device)
        if device not in self._on:  # one copy per device, made once: no transfer per batch
            self._on[device] = (self.probs.to(device), self.mags.to(device))
        probs, mags = self._on[device]
        k = self.entry_index(epoch)
        return PolicySample(probs[k].repeat(batch_size, 1), mags[k].repeat(batch_size, 1), None)  # (B, 30) each

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
