"""The search space: lambda (54,) <-> the probabilities and magnitudes of the 30 slots (SPEC 3, paper appendix A).

30 slots, slot j holds op OPS[j % 15] (copy j // 15). lambda has 54 unbounded entries: lambda[0:30] the slots'
probabilities, lambda[30:54] the magnitudes of the 24 slots whose op has one, in slot order; every value is
lo + (hi - lo) * sigmoid(lambda) with the slot's range ([0, 1] for probabilities). The initial value of everything
is 0.95 lo + 0.05 hi, i.e. lambda = logit(0.05) (`init_lam`; config policy.init).

`LAM_DIM` (54) is the length of lambda: the default `lam_dim` of every hyper-layer and model, which import it from
here (this module needs only the op table, no policy code and no Triton).

References: Lin et al., "Hypernetwork-Based Augmentation", appendix A; Ho et al., "Population Based Augmentation".
"""
from __future__ import annotations

import math

import torch

from .ops import OPS

NUM_OPS = len(OPS)  # 15
NUM_SLOTS = 2 * NUM_OPS  # 30


class SearchSpace:
    """lambda (..., 54) <-> probabilities (..., 30) and magnitudes (..., 30) of the 30 slots."""

    name: str = "pba"  # its name in the registry of search spaces (spaces.py, config policy.space)
    num_slots: int = NUM_SLOTS
    lam_dim: int = NUM_SLOTS + 2 * sum(op.has_magnitude for op in OPS)  # 54

    def __init__(self) -> None:
        self.slot_ops: tuple[int, ...] = tuple(j % NUM_OPS for j in range(NUM_SLOTS))  # op index of each slot
        self.slot_copies: tuple[int, ...] = tuple(j // NUM_OPS for j in range(NUM_SLOTS))  # 0 or 1: which copy
        # Slots whose op has a magnitude, in slot order: lambda[30 + i] belongs to slot mag_slots[i].
        self.mag_slots: tuple[int, ...] = tuple(j for j in range(NUM_SLOTS) if OPS[self.slot_ops[j]].has_magnitude)
        assert self.lam_dim == NUM_SLOTS + len(self.mag_slots) == 54
        # Runs of consecutive slots with / without a magnitude: (first slot, end slot, has magnitude).
        runs: list[tuple[int, int, bool]] = []
        for j in range(NUM_SLOTS):
            has = OPS[self.slot_ops[j]].has_magnitude
            if runs and runs[-1][2] == has:
                runs[-1] = (runs[-1][0], j + 1, has)
            else:
                runs.append((j, j + 1, has))
        self._runs = tuple(runs)
        self._bounds: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self.mag_lo = tuple(OPS[self.slot_ops[j]].lo for j in self.mag_slots)  # (24,)
        self.mag_hi = tuple(OPS[self.slot_ops[j]].hi for j in self.mag_slots)

    def slot_names(self) -> list[str]:
        """'ShearX.0', ..., 'Cutout.0', 'ShearX.1', ..., 'Cutout.1' (op name . copy)."""
        return [f"{OPS[k].name}.{c}" for k, c in zip(self.slot_ops, self.slot_copies)]

    def entry_names(self) -> list[str]:
        """A name per lambda entry: 'ShearX.0.prob', ..., then 'ShearX.0.magnitude', ... (the 24 with a magnitude)."""
        names = self.slot_names()
        return [f"{n}.prob" for n in names] + [f"{names[j]}.magnitude" for j in self.mag_slots]

    def schedule_entry(self, epoch: int, lam: torch.Tensor) -> dict:
        """One epoch's schedule entry {"epoch", "lam", "probs", "mags"} from lambda (54,) (schedule.json's)."""
        probs, mags = self.decode(lam.float().cpu())
        return {"epoch": epoch, "lam": lam.cpu().tolist(), "probs": probs.tolist(), "mags": mags.tolist()}

    def bounds(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """lo, hi (54,): the range of every lambda entry's decoded value; cached per device (copied there once)."""
        key = (torch.device(device if device is not None else "cpu"), dtype)
        if key not in self._bounds:
            lo = torch.tensor([0.0] * NUM_SLOTS + list(self.mag_lo), dtype=dtype, device=key[0])
            hi = torch.tensor([1.0] * NUM_SLOTS + list(self.mag_hi), dtype=dtype, device=key[0])
            self._bounds[key] = (lo, hi)
        return self._bounds[key]

    def _check(self, t: torch.Tensor, size: int, what: str) -> None:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{what} must be a floating-point torch.Tensor, got {getattr(t, 'dtype', type(t))}")
        if t.dim() == 0 or t.shape[-1] != size:
            raise ValueError(f"{what} must have shape (..., {size}), got {tuple(t.shape)}")

    def decode(self, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lam (..., 54) -> probs (..., 30), mags (..., 30) with mag 0 where the op has none; differentiable."""
        self._check(lam, self.lam_dim, "lam")
        lo, hi = self.bounds(lam.device, lam.dtype)
        values = lo + (hi - lo) * torch.sigmoid(lam)  # (..., 54)
        probs = values[..., :NUM_SLOTS]  # (..., 30)
        pieces, i = [], NUM_SLOTS
        for start, end, has in self._runs:  # slices and zeros: differentiable, no index tensor to copy over
            if has:
                pieces.append(values[..., i:i + end - start])
                i += end - start
            else:
                pieces.append(torch.zeros_like(values[..., : end - start]))
        mags = torch.cat(pieces, -1)  # (..., 30) in slot order, 0 where the op has no magnitude
        return probs, mags

    def encode(self, probs: torch.Tensor, mags: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Inverse of decode: probs, mags (..., 30) -> lam (..., 54); values are clamped into the open ranges."""
        self._check(probs, NUM_SLOTS, "probs")
        self._check(mags, NUM_SLOTS, "mags")
        probs, mags = torch.broadcast_tensors(probs, mags)
        with_mag = [mags[..., s:e] for s, e, has in self._runs if has]
        values = torch.cat([probs, *with_mag], -1)  # (..., 54)
        lo, hi = self.bounds(values.device, values.dtype)
        unit = ((values - lo) / (hi - lo)).clamp(eps, 1.0 - eps)
        return torch.logit(unit)

    def init_lam(self, device: torch.device | str | None = None, init: str = "paper", prob: float = 0.05,
                 magnitude: float = 0.05) -> torch.Tensor:
        """lambda (54,) float32 at the search's start (config policy.init, init_prob, init_magnitude).

        Every probability starts at `prob`. paper: every magnitude at lo + magnitude (hi - lo), the paper's 0.95 lo +
        0.05 hi at the default (appendix A); for the four enhance ops (range [0.1, 1.9], identity 1.0) that is factor
        0.19, close to their strongest end. weak: every magnitude `magnitude` of the way from its op's identity
        towards the end of its range farther from it (the low end on a tie): the same as paper for every op whose
        identity is its low end, factor 0.955 for the enhance ops at the default."""
        if init not in ("paper", "weak"):
            raise ValueError(f"init must be 'paper' or 'weak', got {init!r}")
        if not (0.0 < prob < 1.0 and 0.0 < magnitude < 1.0):
            raise ValueError(f"initial probability and magnitude fractions must lie in (0, 1), got {prob}, {magnitude}")
        lam = torch.full((self.lam_dim,), math.log(prob / (1.0 - prob)), dtype=torch.float32)
        for i, j in enumerate(self.mag_slots):
            op = OPS[self.slot_ops[j]]
            unit = magnitude
            if init == "weak":
                far = op.lo if abs(op.lo - op.identity) >= abs(op.hi - op.identity) else op.hi
                unit = (op.identity + magnitude * (far - op.identity) - op.lo) / (op.hi - op.lo)
            lam[NUM_SLOTS + i] = math.log(unit / (1.0 - unit))
        return lam.to(device)


LAM_DIM = SearchSpace.lam_dim  # 54: the length of lambda, the default lam_dim of every hyper-layer and model

