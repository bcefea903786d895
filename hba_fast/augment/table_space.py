"""A search space made from a table of hyperparameters (`TableSpace`), e.g. STN's (stn_space.py).

Each `Hyperparameter` names one entry of lambda: its range [lo, hi]; its transform between the unbounded lambda entry
and the value (`logit`: value = lo + (hi - lo) sigmoid(lambda), for rates in (0, 1) and bounded ranges; `log`: value
= exp(lambda), for scales in (0, inf)); its initial value; whether it is discrete (the value used is floor(value),
as STN's `hparam_transform` does); and who consumes it (`input`: done to the images, `model`: read by a layer of the
network, e.g. a dropout layer's rate). See spaces.py for the interface every space offers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .sampler import PolicySample

TRANSFORMS = ("logit", "log")
CONSUMERS = ("input", "model")


@dataclass(frozen=True)
class Hyperparameter:
    """One entry of lambda in a table space."""

    name: str  # e.g. 'dropout0', 'hue', 'cutlength'
    lo: float  # the value's range [lo, hi]; for a `log` entry only random search's range (hba-fast tune)
    hi: float
    init: float  # the value at the search's start
    transform: str = "logit"  # logit: lo + (hi - lo) sigmoid(lambda); log: exp(lambda)
    consumer: str = "model"  # input: applied to the images; model: read by a layer of the network
    discrete: bool = False  # the value used is floor(value) (STN's `hparam_transform`)
    doc: str = ""  # what it does, one line

    def __post_init__(self):
        assert self.transform in TRANSFORMS and self.consumer in CONSUMERS, self
        if self.transform == "logit":
            assert self.lo < self.init < self.hi, f"{self.name}: init {self.init} outside ({self.lo}, {self.hi})"
        else:
            assert self.init > 0, self

    def to_lam(self, value: float) -> float:
        """The unbounded lambda entry of `value` (the inverse of the transform)."""
        if self.transform == "log":
            return math.log(value)
        unit = (value - self.lo) / (self.hi - self.lo)
        return math.log(unit / (1.0 - unit))


class TableSpace:
    """A search space from a table of `Hyperparameter` records (module docstring)."""

    def __init__(self, name: str, hyperparameters: tuple[Hyperparameter, ...]):
        self.name = name
        self.hyperparameters = hyperparameters
        self.lam_dim = len(hyperparameters)
        self.index = {h.name: i for i, h in enumerate(hyperparameters)}  # name -> position in lambda
        assert len(self.index) == self.lam_dim, "hyperparameter names must differ"
        self._lo = torch.tensor([h.lo for h in hyperparameters])  # (H,)
        self._hi = torch.tensor([h.hi for h in hyperparameters])
        self._log = torch.tensor([h.transform == "log" for h in hyperparameters])
        self._discrete = torch.tensor([h.discrete for h in hyperparameters])
        self._constants: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def entry_names(self) -> list[str]:
        return [h.name for h in self.hyperparameters]

    def _on(self, device, dtype) -> tuple[torch.Tensor, ...]:
        """lo, hi, log, discrete (H,) on `device`, copied there once."""
        key = (torch.device(device), dtype)
        if key not in self._constants:
            self._constants[key] = (self._lo.to(key[0], dtype), self._hi.to(key[0], dtype), self._log.to(key[0]),
                                    self._discrete.to(key[0]))
        return self._constants[key]

    def bounds(self, device=None, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi, _, _ = self._on(device if device is not None else "cpu", dtype)
        return lo, hi

    def values(self, lam: torch.Tensor) -> torch.Tensor:
        """lam (..., H) unbounded -> the hyperparameters' values (..., H); differentiable, not floored."""
        if lam.shape[-1] != self.lam_dim:
            raise ValueError(f"lam must have shape (..., {self.lam_dim}) for space {self.name!r}, got "
                             f"{tuple(lam.shape)}")
        lo, hi, log, _ = self._on(lam.device, lam.dtype)
        return torch.where(log, lam.exp(), lo + (hi - lo) * torch.sigmoid(lam))

    def used_values(self, lam: torch.Tensor) -> torch.Tensor:
        """The values the consumers apply: `values`, with discrete ones floored (STN's `hparam_transform`)."""
        v = self.values(lam)
        _, _, _, discrete = self._on(lam.device, lam.dtype)
        return torch.where(discrete, v.floor(), v)

    def encode(self, values: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Inverse of `values`: values (..., H) -> lam (..., H), clamped into the open ranges."""
        lo, hi, log, _ = self._on(values.device, values.dtype)
        unit = ((values - lo) / (hi - lo)).clamp(eps, 1.0 - eps)
        return torch.where(log, values.clamp_min(eps).log(), torch.logit(unit))

    def init_lam(self, device=None, *_pba_options, **_pba_keywords) -> torch.Tensor:
        """lambda (H,) float32 at each hyperparameter's initial value (the PBA init options do not apply)."""
        return torch.tensor([h.to_lam(h.init) for h in self.hyperparameters], dtype=torch.float32, device=device)

    def policy_sample(self, lam_i: torch.Tensor) -> PolicySample:
        """No PBA policy: the pipeline hands lambda_i (B, H) on, its consumers apply it (models/regularised.py)."""
        return PolicySample(None, None, lam_i)

    def schedule_entry(self, epoch: int, lam: torch.Tensor) -> dict:
        """{"epoch", "lam": [H], "values": {name: value}}: lam (H,) on the host (the used, floored values)."""
        values = self.used_values(lam.float().cpu())
        return {"epoch": epoch, "lam": lam.cpu().tolist(),
                "values": {n: float(v) for n, v in zip(self.entry_names(), values.tolist(), strict=True)}}
