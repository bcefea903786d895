"""A learned schedule replayed in training: `ScheduleSampler`, the pipeline's sampler for `hba-fast train
--schedule` and for `SchedulePolicy.batch`.

A schedule of E_s entries used for E epochs is stretched linearly: epoch e takes entry min(E_s - 1, floor(e E_s / E
+ 1/2)) (`stretch_index`). Every sample of a batch gets the epoch's entry (probs, mags (30,)); the pipeline draws
each sample's ops from it (PBA's rule, hba_fast/augment/policy.py). The entry in use sits in a static device buffer,
filled by `set_epoch` (or by `sample` when the epoch changed), so a captured CUDA graph reads the epoch set last.
"""
from __future__ import annotations

import torch

from ..augment.sampler import PolicySample
from ..augment.space import NUM_SLOTS
from .file import Schedule, stretch_index


class ScheduleSampler:
    """The learned schedule's policy for each epoch, stretched linearly to `epochs`, shared by the batch."""

    def __init__(self, schedule: Schedule, epochs: int):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"ScheduleSampler takes a hba_fast.schedule.file.Schedule, got {type(schedule).__name__}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        probs, mags = torch.from_numpy(schedule.probs), torch.from_numpy(schedule.mags)
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

