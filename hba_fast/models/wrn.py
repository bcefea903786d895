"""Pre-activation Wide-ResNet (Zagoruyko & Komodakis 2016) for 32x32 inputs, with optional hyper-layers.

The network of the AutoAugment / PBA / Fast-AA code (and xternalz/WideResNet-pytorch):

    x (B, 3, 32, 32) -> conv3x3 16 -> group(16k, stride 1) -> group(32k, 2) -> group(64k, 2)
      -> BN -> ReLU -> global average pool (B, 64k) -> linear (B, num_classes)

Each group has n = (depth - 4) / 6 BasicBlocks (two 3x3 convs, BN-ReLU before each, stride on the first).
When a block changes shape its shortcut is a 1x1 conv applied to the *pre-activated* input (BN-ReLU shared
with the residual branch); otherwise the shortcut is the identity on the raw input. Convs have no bias.
WRN-40-2: 2,243,546 parameters (10 classes); WRN-28-10: 36,479,194.

Which layers are hyper-layers depends on the strategy (hba_fast/models/strategy.py); lam (B, lam_dim) or
(lam_dim,) is threaded through every block's forward (no global state).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..augment.space import LAM_DIM
from .layers import apply_layer
from .strategy import LayerFactory, init_weights_, model_lam


class WideBasic(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus the shortcut."""

    def __init__(self, f: LayerFactory, in_ch: int, out_ch: int, stride: int, first: bool = False) -> None:
        super().__init__()
        self.bn1 = f.bn(in_ch, first=first)
        self.conv1 = f.conv(in_ch, out_ch, 3, stride, 1)
        self.bn2 = f.bn(out_ch)
        self.conv2 = f.conv(out_ch, out_ch, 3, 1, 1)
        self.shortcut = f.conv(in_ch, out_ch, 1, stride, 0) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: Tensor, lam: Tensor | None) -> Tensor:
        o = F.relu(apply_layer(self.bn1, x, lam), inplace=True)
        skip = x if self.shortcut is None else apply_layer(self.shortcut, o, lam)
        o = apply_layer(self.conv1, o, lam)
        o = F.relu(apply_layer(self.bn2, o, lam), inplace=True)
        return apply_layer(self.conv2, o, lam) + skip


class WideResNet(nn.Module):
    """WRN-depth-k; forward(x (B, 3, H, W), lam=None) -> logits (B, num_classes)."""

    def __init__(self, depth: int, widen: int, num_classes: int, strategy: str = "none",
                 lam_dim: int = LAM_DIM) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4 (e.g. 28, 40), got {depth}")
        n = (depth - 4) // 6
        self.strategy, self.lam_dim = strategy, lam_dim
        f = LayerFactory(strategy, lam_dim)
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = f.conv(3, 16, 3, 1, 1, first=True)
        blocks, in_ch = [], 16
        for g, (width, stride) in enumerate(zip(widths, (1, 2, 2), strict=True)):
            for i in range(n):
                blocks.append(WideBasic(f, in_ch, width, stride if i == 0 else 1, first=(g == 0 and i == 0)))
                in_ch = width
        self.blocks = nn.ModuleList(blocks)
        self.bn = f.bn(in_ch)
        self.fc = f.linear(in_ch, num_classes)
        init_weights_(self)

    def forward(self, x: Tensor, lam: Tensor | None = None) -> Tensor:
        lam = model_lam(self.strategy, self.lam_dim, x, lam)
        x = apply_layer(self.conv1, x, lam)
        for block in self.blocks:
            x = block(x, lam)
        x = F.relu(apply_layer(self.bn, x, lam), inplace=True)
        return apply_layer(self.fc, x.mean(dim=(2, 3)), lam)


def wrn_40_2(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> WideResNet:
    return WideResNet(40, 2, num_classes, strategy, lam_dim)


def wrn_28_10(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> WideResNet:
    return WideResNet(28, 10, num_classes, strategy, lam_dim)


def wrn_16_2(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> WideResNet:
    """A small WRN (0.69M parameters) for the CPU demo and quick experiments; not a paper model."""
    return WideResNet(16, 2, num_classes, strategy, lam_dim)


def wrn_10_2(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> WideResNet:
    """A tiny WRN (one block per group, 0.30M parameters, about half the compute of WRN-16-2) for studies on a
    CPU (docs/results/fidelity-cpu.md); not a paper model."""
    return WideResNet(10, 2, num_classes, strategy, lam_dim)
