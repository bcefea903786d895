"""Per-sample dropout: each sample's mask drawn at its own rate (STN's regularisation space, stn_space.py).

    sample_dropout(x, rate)      the weight step: hard Bernoulli masks, x_i * m_i / (1 - p_i), m_i ~ Bernoulli(1 - p_i)
                                 element-wise, or per channel with channels=True (dropout_2d: a whole feature map).
                                 The rate is detached: it gets no gradient here (STN's `cnn/util/dropout.py` detaches
                                 its probs the same way).
    concrete_dropout(x, rate)    the relaxed Bernoulli (Concrete, Maddison et al. 2017; Gal et al. 2017, "Concrete
                                 Dropout", temperature 0.1) keep-mask
                                     z = sigmoid((log(1 - p) - log p + log u - log(1 - u)) / t),  u ~ U(0, 1)
                                 x_i * z_i / (1 - p_i): differentiable in p, so a rate can carry a gradient in a
                                 hyper step (train.hyper_dropout=concrete).
    RateDropout                  the module a network places where a rate-controlled dropout goes; the wrapper
                                 (models/regularised.py) sets its per-sample `rate` (B,) and `mode` ("hard",
                                 "concrete" or None: identity) around each forward.

What STN's code does in its hyper step (`cnn/hypertrain.py`, `optimization_step(hyper=True)` after `cnn.eval()`):
no dropout and no augmentation at all, so the validation loss depends on the hyperparameters only through the
hypernetwork's response (the best-response gradient); STN's CNN code has no relaxation. That is the default here
(train.hyper_dropout=off, the hyper step in eval mode). The Concrete relaxation is the option for a direct gradient
of the dropout rates; it is not what STN's CIFAR code runs (its discrete Cutout hyperparameters likewise get their
gradient only through the hypernetwork, whose input is the unbounded lambda entry).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

CONCRETE_TEMPERATURE = 0.1  # Gal et al. 2017's choice


def _per_sample(rate: Tensor, like: Tensor) -> Tensor:
    """rate (B,) -> (B, 1, ..., 1), broadcastable against x and its mask."""
    return rate.view(-1, *([1] * (like.dim() - 1)))


def _mask_shape(x: Tensor, channels: bool) -> tuple[int, ...]:
    return (*x.shape[:2], *([1] * (x.dim() - 2))) if channels else tuple(x.shape)


def sample_dropout(x: Tensor, rate: Tensor, channels: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """x (B, ...) with sample i dropped at rate[i] (B,) in [0, 1): hard masks, inverted scaling."""
    p = _per_sample(rate.detach().to(x.dtype), x)
    u = torch.rand(_mask_shape(x, channels), generator=generator, device=x.device, dtype=x.dtype)
    keep = (u >= p).to(x.dtype)
    return x * keep / (1.0 - p)


def concrete_mask(rate: Tensor, u: Tensor, temperature: float = CONCRETE_TEMPERATURE, eps: float = 1e-7) -> Tensor:
    """The relaxed keep-mask z in (0, 1) for drop rates `rate` broadcast against uniform noise `u`."""
    p = rate.clamp(eps, 1.0 - eps)
    u = u.clamp(eps, 1.0 - eps)
    return torch.sigmoid((torch.log1p(-p) - torch.log(p) + torch.log(u) - torch.log1p(-u)) / temperature)


def concrete_dropout(x: Tensor, rate: Tensor, channels: bool = False, temperature: float = CONCRETE_TEMPERATURE,
                     u: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """x (B, ...) * z / (1 - p) with the relaxed mask z (module docstring); differentiable in rate (B,).
    `u`: the uniform noise, of the mask's shape (drawn when None)."""
    if u is None:
        u = torch.rand(_mask_shape(x, channels), generator=generator, device=x.device, dtype=x.dtype)
    p = _per_sample(rate.to(x.dtype), x)
    return x * concrete_mask(p, u, temperature) / (1.0 - p)


class RateDropout(nn.Module):
    """Dropout at a per-sample rate set from outside (models/regularised.py): `name` is the rate's hyperparameter
    name in the search space, `channels` picks dropout_2d (a whole feature map) over element-wise dropout."""

    def __init__(self, name: str, channels: bool = False) -> None:
        super().__init__()
        self.name, self.channels = name, channels
        self.rate: Tensor | None = None  # (B,) while the wrapper's forward runs
        self.mode: str | None = None  # "hard" | "concrete" | None

    def forward(self, x: Tensor) -> Tensor:
        if self.mode is None or self.rate is None:
            return x
        if self.mode == "hard":
            return sample_dropout(x, self.rate, self.channels)
        assert self.mode == "concrete", self.mode
        return concrete_dropout(x, self.rate, self.channels)

    def extra_repr(self) -> str:
        return f"{self.name!r}, channels={self.channels}"
