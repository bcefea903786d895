"""The searched hyperparameters lambda: where they live, how they are drawn around and stepped.

lambda is the search's one central variable (SPEC 3, paper Algorithm 1): (54,) in PBA's space, the default, and
(lam_dim,) in any other space of the registry (augment/spaces.py: e.g. STN's 15 regularisation hyperparameters,
whose lambda_i the pipeline hands on untouched and the model applies; the entry of an epoch is then the space's
`schedule_entry`, values by name). STN's method (train.method=stn) adds a learned perturbation scale per entry
(`Hyperparams(tune_scale=True)`, see `hyper_lam` and `step`). Its walk through a search (PBA's space):

    config (policy.*, optim.hyper_lr) -> Hyperparams(space, sigma, hyper_lr, device, init, init_prob, init_magnitude)
      -> weight steps: the pipeline asks `hyper.sampler.sample(B, epoch, device)` for each training batch:
             lambda_i = lambda + sigma * eps_i, eps_i ~ N(0, I_54), decoded into per-sample (probs, mags);
             the pipeline augments sample i with them and hands lambda_i on to the hypernetwork (eq. 12-13)
      -> hyper steps: the trainer computes the validation loss through theta(lambda) and calls
             `hyper.step(loss)`: grad wrt lambda only, averaged over ranks, one Adam step (eq. 11)
      -> end of epoch: `hyper.end_epoch(epoch)` averages lambda over the epoch's hyper steps and decodes it
             into that epoch's schedule entry (probabilities in [0, 1], magnitudes in the ops' ranges)
      -> `hyper.schedule`, one entry per epoch, is the learned schedule (search.py makes it a `Schedule` and
             writes schedule.json)

`SearchSampler` is lambda's side of the pipeline's `Sampler` contract (hba_fast/augment/sampler.py): lambda_i =
lambda + sigma * eps_i around the live lambda, lam (B, 54) the lambda_i themselves. It reads lambda (detached) at
call time, so it follows lambda as Adam moves it; a prefetching pipeline may draw a few steps ahead, and hands the
trainer the exact lambda_i it used. Its state (its random generator) differs between ranks; the pipeline that
calls it checkpoints it with its own per-rank state. `Hyperparams.state_dict()` is the part every rank shares
(lambda, Adam, the schedule), so `Hyperparams` hands pipelines its `sampler` rather than being one.

`NoHyperparams` stands in when nothing is searched (plain training): no lambda, no hyper steps, no schedule.

Sync-free and capturable: `Hyperparams.step` and `SearchSampler.sample` run only device ops (lambda's Adam is
`capturable=True` on CUDA and `fused=True` on the CPU, both keeping its step count on the device; the epoch's sum and
count of lambda are device tensors), so they run inside the trainer's CUDA-graph round. `end_epoch`, `metrics` and
the state dicts read the device: they run at epoch boundaries only.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..augment.sampler import PolicySample
from ..augment.space import SearchSpace
from ..augment.table_space import TableSpace


class SearchSampler:
    """Per-sample lambda_i = lambda + sigma * N(0, I) around the live hyperparameter `lam` (54,)."""

    def __init__(self, lam: torch.Tensor, sigma: float, space: SearchSpace | TableSpace | None = None,
                 generator: torch.Generator | None = None):
        space = space if space is not None else SearchSpace()
        if lam.dim() != 1 or lam.numel() != space.lam_dim:
            raise ValueError(f"lam must have shape ({space.lam_dim},), got {tuple(lam.shape)}")
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
        self.lam, self.sigma, self.space = lam, float(sigma), space
        self.scale: torch.Tensor | None = None  # STN's learned per-entry scale (Hyperparams(tune_scale=True))
        if generator is None:  # reproducible under torch.manual_seed(run seed), distinct from the global stream
            generator = torch.Generator(device=lam.device).manual_seed((torch.initial_seed() + 0x5A3) % 2**63)
        self.generator = generator
        space.bounds(lam.device)  # decode's constants copied to the device now, not inside the first (timed) step

    def sample(self, batch_size: int, epoch: int, device: torch.device | str) -> PolicySample:
        noise = torch.randn((batch_size, self.lam.numel()), generator=self.generator,
                            device=self.generator.device)  # (B, 54)
        sigma = self.sigma if self.scale is None else F.softplus(self.scale.detach()).to(device)  # () or (H,)
        lam_i = self.lam.detach().to(device=device, dtype=torch.float32) + sigma * noise.to(device)
        if isinstance(self.space, TableSpace):  # no PBA policy: lambda_i's consumers apply it (spaces.py)
            return self.space.policy_sample(lam_i)
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




AllReduce = Callable[[list[torch.Tensor]], None]


class Hyperparams:
    """lambda (54,) with its Adam optimiser, its per-sample draw, and the per-epoch schedule (module docstring).

    `generator` drives this rank's eps_i (seed it per rank); `all_reduce` averages a list of gradients over the
    ranks in place (the identity for one process)."""

    def __init__(self, space: SearchSpace | TableSpace, sigma: float, lr: float, device: torch.device | str,
                 generator: torch.Generator | None = None, init: str = "paper", init_prob: float = 0.05,
                 init_magnitude: float = 0.05, tune_scale: bool = False, entropy_weight: float = 0.0):
        self.space = space
        self.lam = nn.Parameter(space.init_lam(device, init, init_prob, init_magnitude))  # (lam_dim,) unbounded
        # Adam with its step count on the device, no host read per step (module docstring): capturable on CUDA,
        # fused on the CPU (where capturable is not offered and the plain form reads the count with .item())
        on_cuda = self.lam.device.type == "cuda"
        # STN's method (train.method=stn): a learned perturbation scale per entry, softplus(scale), initialised at
        # sigma, stepped by the same Adam with an entropy bonus (STN's --tune_scales, `compute_entropy`)
        self.scale = nn.Parameter(torch.full_like(self.lam.detach(), math.log(math.expm1(sigma)))) if tune_scale \
            else None
        self.entropy_weight = float(entropy_weight)
        params = [self.lam] if self.scale is None else [self.lam, self.scale]
        self.optimizer = torch.optim.Adam(params, lr=lr, **({"capturable": True} if on_cuda else {"fused": True}))
        self._adam_flags = {k: self.optimizer.param_groups[0][k] for k in ("capturable", "fused")}  # this device's
        self.sampler = SearchSampler(self.lam, sigma, space, generator)
        self.sampler.scale = self.scale
        self.schedule: list[dict] = []  # one decoded policy per finished epoch
        self._sum = torch.zeros_like(self.lam.detach())  # lambda summed over this epoch's hyper steps
        self._count = torch.zeros((), dtype=torch.long, device=self.lam.device)  # this epoch's hyper steps

    def hyper_lam(self, batch_size: int) -> torch.Tensor:
        """The lambda a hyper step feeds the model: lambda itself (HBA: one shared lambda), or with a learned scale
        (STN's --tune_scales) lambda + softplus(scale) eps_i (B, H), so the scale gets a gradient."""
        if self.scale is None:
            return self.lam
        noise = torch.randn((batch_size, self.lam.numel()), generator=self.sampler.generator,
                            device=self.sampler.generator.device).to(self.lam.device)
        return self.lam + F.softplus(self.scale) * noise

    def entropy(self) -> torch.Tensor:
        """Entropy of the perturbation N(0, diag(softplus(scale)^2)) (STN's `compute_entropy`)."""
        return torch.log(F.softplus(self.scale) * math.sqrt(2 * math.pi * math.e)).sum()

    def step(self, loss: torch.Tensor, all_reduce: AllReduce = lambda tensors: None) -> None:
        """One Adam step on lambda from `loss` (the validation loss through theta(lambda)); only lambda's gradient
        is computed, so the model's weights get none. With a learned scale, STN's objective loss - w H(scale)."""
        if self.scale is None:
            (grad,) = torch.autograd.grad(loss, [self.lam])
            all_reduce([grad])
            self.lam.grad = grad
        else:
            grads = list(torch.autograd.grad(loss - self.entropy_weight * self.entropy(), [self.lam, self.scale]))
            all_reduce(grads)
            self.lam.grad, self.scale.grad = grads
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._sum += self.lam.detach()
        self._count += 1

    def end_epoch(self, epoch: int) -> dict:
        """This epoch's schedule entry: lambda averaged over its hyper steps, decoded; appended to `schedule`."""
        count = int(self._count.item())  # the epoch boundary: reading the device is fine here
        mean = self._sum / count if count else self.lam.detach()
        entry = self.space.schedule_entry(epoch, mean)  # PBA: {epoch, lam, probs, mags}; a table space: values
        self.schedule.append(entry)
        self._sum.zero_()
        self._count.zero_()
        return entry

    def metrics(self) -> dict:
        """lambda's range: raw logits can saturate the sigmoid while the decoded values barely move."""
        lam = self.lam.detach()
        out = {"lam_min": round(lam.min().item(), 4), "lam_max": round(lam.max().item(), 4),
               "lam_mean": round(lam.mean().item(), 4)}
        if self.scale is not None:
            out["scale_mean"] = round(F.softplus(self.scale.detach()).mean().item(), 4)
        return out

    def state_dict(self) -> dict:
        """What every rank shares: lambda, Adam's moments, the schedule so far, the epoch's running sum."""
        state = {"lam": self.lam.detach().clone(), "optimizer": self.optimizer.state_dict(),
                 "schedule": list(self.schedule), "sum": self._sum.clone(), "count": int(self._count.item())}
        if self.scale is not None:
            state["scale"] = self.scale.detach().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.lam.copy_(state["lam"])
            if self.scale is not None:
                self.scale.copy_(state["scale"])
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
