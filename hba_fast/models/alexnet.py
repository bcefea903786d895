"""STN's AlexNet for CIFAR-10 (paper 4.3, Table 6), with optional hyper-layers and rate-controlled dropout.

From STN's code (github.com/asteroidhouse/self-tuning-networks, `cnn/models/alexnet.py`, `cnn/hypermodels/alexnet.py`):

    x (B, 3, 32, 32) -> 5 convs 3x3 pad 1, filters 64, 192, 384, 256, 256, strides 2, 1, 1, 1, 1, bias, ReLU;
      2x2 max-pool after convs 0, 1 and 4; after each conv stage (after its pool) channel dropout `dropout<i>`
      -> flatten (B, 256 * 2 * 2) -> dropout `fcdropout0` -> fc 4096 -> ReLU -> dropout `fcdropout1` -> fc 4096
      -> ReLU -> fc num_classes
(STN's hyper AlexNet, the one it tunes, has no dropout between fc2 and fc3.) `width` scales every filter count and
`fc` sets the hidden fc width: `alexnet-stn` is STN's (width 1, fc 4096); `alexnet-stn-small` (width 1/4, fc 512)
is the CPU-sized variant for the reduced Table 6 (configs/stn-alexnet-cifar10-reduced.yaml).

Which layers are hyper-layers depends on the strategy (strategy.py): `conv` (the paper's choice for Table 6) makes
the five convs hyper-layers; `all` also the three fc layers, which is STN's own hypernetwork (every layer's output
gets phiV lam-scaled phiU terms: STN's `HyperConv2d`, `HyperLinear`). Dropout rates are not in lam here: the
`RateDropout` modules get their per-sample rates from models/regularised.py.
Initialisation: PyTorch's default for every layer (STN's uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights is
nn.Conv2d / nn.Linear's kaiming_uniform(a=sqrt(5)), the same bound); the hyper-layers draw phiU the same way
(layers.py); phiV ~ N(0, 0.01^2 / lam_dim), where STN draws N(0, 0.01^2) (layers.py says why).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..augment.space import LAM_DIM
from .dropout import RateDropout
from .layers import apply_layer
from .strategy import LayerFactory, model_lam

FILTERS = (64, 192, 384, 256, 256)
STRIDES = (2, 1, 1, 1, 1)
POOL_AFTER = (0, 1, 4)


class AlexNetSTN(nn.Module):
    """forward(x (B, 3, 32, 32), lam=None) -> logits (B, num_classes); see the module docstring."""

    def __init__(self, num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM, width: float = 1.0,
                 fc: int = 4096) -> None:
        super().__init__()
        self.strategy, self.lam_dim = strategy, lam_dim
        f = LayerFactory(strategy, lam_dim)
        chans = [3] + [max(1, round(c * width)) for c in FILTERS]
        self.convs = nn.ModuleList([f.conv(chans[i], chans[i + 1], 3, STRIDES[i], 1, bias=True, first=i == 0)
                                    for i in range(5)])
        self.drops = nn.ModuleList([RateDropout(f"dropout{i}", channels=True) for i in range(5)])
        self.fc_drops = nn.ModuleList([RateDropout(f"fcdropout{i}") for i in range(2)])
        self.fc1 = f.linear(chans[-1] * 2 * 2, fc)
        self.fc2 = f.linear(fc, fc)
        self.fc3 = f.linear(fc, num_classes)

    def forward(self, x: Tensor, lam: Tensor | None = None) -> Tensor:
        lam = model_lam(self.strategy, self.lam_dim, x, lam)
        for i, (conv, drop) in enumerate(zip(self.convs, self.drops, strict=True)):
            x = F.relu(apply_layer(conv, x, lam))
            if i in POOL_AFTER:
                x = F.max_pool2d(x, 2)
            x = drop(x)
        x = self.fc_drops[0](x.flatten(1))
        x = F.relu(apply_layer(self.fc1, x, lam))
        x = F.relu(apply_layer(self.fc2, self.fc_drops[1](x), lam))
        return apply_layer(self.fc3, x, lam)


def alexnet_stn(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> AlexNetSTN:
    return AlexNetSTN(num_classes, strategy, lam_dim)


def alexnet_stn_small(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> AlexNetSTN:
    return AlexNetSTN(num_classes, strategy, lam_dim, width=0.25, fc=512)
