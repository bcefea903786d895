"""PyramidNet with ShakeDrop (Han et al. 2017; Yamada et al. 2019) for 32x32 inputs, the paper's strongest
evaluation model (Table 4: depth 272, widening alpha 200), with optional hyper-layers.

    x (B, 3, 32, 32) -> conv3x3 16 -> BN -> 3 stages of n = (depth - 2) / 9 bottlenecks (stride 1, 2, 2)
      -> BN -> ReLU -> global average pool (B, 4 c_last) -> linear (B, num_classes)

Widths grow linearly: block i (1..3n) has c_i = round(16 + i alpha / (3n)) bottleneck channels and outputs 4 c_i.
Bottleneck (pre-activation, no ReLU before the first conv): BN - conv1x1 - BN - ReLU - conv3x3(stride) - BN - ReLU
- conv1x1 (x4) - BN - ShakeDrop, plus the shortcut: the input (2x2 average pool where the block strides), with
zero channels appended to match (PyramidNet's zero-padded identity). The layout of the PyramidNet-PyTorch and
Fast AutoAugment code. PyramidNet-272 (alpha 200), 10 classes: 26,210,842 parameters, of which 25,999,978 are conv
and linear weights: the published 26.0M counts those (the BN scales and shifts add 210,864).

ShakeDrop on the residual branch F of block i: out = x + s F(x) with, in training, per sample a gate
b ~ Bernoulli(p_i) and alpha ~ U(-1, 1): s = 1 if b else alpha in the forward pass and, independently, beta ~
U(0, 1): s' = 1 if b else beta in the backward pass; in eval mode the expected value s = p_i. The survival
probability falls linearly, p_i = 1 - 0.5 i / (3n) (the last block 0.5). The gate is drawn per sample (the
image-level variant; Fast AutoAugment's code draws one gate per batch). Random numbers come from torch's default
generator on the input's device.

Layers come from the strategy's `LayerFactory`, so the network can also be searched: `first_conv` / `first_bn` are
the stem conv / BN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment.space import LAM_DIM
from .layers import apply_layer
from .strategy import LayerFactory, init_weights_, model_lam

EXPANSION = 4


class _ShakeDrop(torch.autograd.Function):
    """out = forward_scale x; grad = backward_scale g (scales (B, 1, 1, 1))."""

    @staticmethod
    def forward(ctx, x: Tensor, forward_scale: Tensor, backward_scale: Tensor) -> Tensor:
        ctx.save_for_backward(backward_scale)
        return forward_scale * x

    @staticmethod
    def backward(ctx, grad: Tensor):
        (backward_scale,) = ctx.saved_tensors
        return backward_scale * grad, None, None


def shake_drop(x: Tensor, survival: float, training: bool) -> Tensor:
    """ShakeDrop of a residual branch's output x (B, C, H, W) (module docstring)."""
    if not training:
        return survival * x
    shape = (x.shape[0], 1, 1, 1)
    keep = torch.rand(shape, device=x.device) < survival  # (B, 1, 1, 1) the gate b
    alpha = torch.rand(shape, device=x.device, dtype=x.dtype) * 2 - 1  # U(-1, 1)
    beta = torch.rand(shape, device=x.device, dtype=x.dtype)  # U(0, 1)
    one = torch.ones((), device=x.device, dtype=x.dtype)
    return _ShakeDrop.apply(x, torch.where(keep, one, alpha), torch.where(keep, one, beta))


class Bottleneck(nn.Module):
    def __init__(self, f: LayerFactory, in_ch: int, planes: int, stride: int, survival: float) -> None:
        super().__init__()
        self.stride, self.survival = stride, survival
        self.bn1 = f.bn(in_ch)
        self.conv1, self.bn2 = f.conv(in_ch, planes, 1), f.bn(planes)
        self.conv2, self.bn3 = f.conv(planes, planes, 3, stride, 1), f.bn(planes)
        self.conv3, self.bn4 = f.conv(planes, planes * EXPANSION, 1), f.bn(planes * EXPANSION)

    def forward(self, x: Tensor, lam: Tensor | None) -> Tensor:
        o = apply_layer(self.conv1, apply_layer(self.bn1, x, lam), lam)
        o = apply_layer(self.conv2, F.relu(apply_layer(self.bn2, o, lam)), lam)
        o = apply_layer(self.conv3, F.relu(apply_layer(self.bn3, o, lam)), lam)
        o = shake_drop(apply_layer(self.bn4, o, lam), self.survival, self.training)
        skip = F.avg_pool2d(x, 2, 2, ceil_mode=True) if self.stride != 1 else x
        extra = o.shape[1] - skip.shape[1]
        if extra > 0:  # zero-padded identity: the new channels get no shortcut
            skip = F.pad(skip, (0, 0, 0, 0, 0, extra))
        return o + skip


class PyramidNet(nn.Module):
    """PyramidNet-`depth` (bottleneck) with widening `alpha` and ShakeDrop; forward(x, lam=None) -> logits."""

    def __init__(self, depth: int, alpha: float, num_classes: int, strategy: str = "none",
                 lam_dim: int = LAM_DIM) -> None:
        super().__init__()
        if (depth - 2) % 9 != 0:
            raise ValueError(f"bottleneck PyramidNet depth must be 9n + 2 (e.g. 272), got {depth}")
        n = (depth - 2) // 9
        self.strategy, self.lam_dim = strategy, lam_dim
        f = LayerFactory(strategy, lam_dim)
        self.conv1 = f.conv(3, 16, 3, 1, 1, first=True)
        self.bn1 = f.bn(16, first=True)
        blocks, in_ch, width, total = [], 16, 16.0, 3 * n
        for s, stride in enumerate((1, 2, 2)):
            for j in range(n):
                i = s * n + j + 1  # 1..3n
                width += alpha / total
                planes = int(round(width))
                blocks.append(Bottleneck(f, in_ch, planes, stride if j == 0 else 1, 1.0 - 0.5 * i / total))
                in_ch = planes * EXPANSION
        self.blocks = nn.ModuleList(blocks)
        self.bn = f.bn(in_ch)
        self.fc = f.linear(in_ch, num_classes)
        init_weights_(self)

    def forward(self, x: Tensor, lam: Tensor | None = None) -> Tensor:
        lam = model_lam(self.strategy, self.lam_dim, x, lam)
        x = apply_layer(self.bn1, apply_layer(self.conv1, x, lam), lam)
        for block in self.blocks:
            x = block(x, lam)
        x = F.relu(apply_layer(self.bn, x, lam))
        return apply_layer(self.fc, x.mean(dim=(2, 3)), lam)


def pyramidnet_272_200(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> PyramidNet:
    return PyramidNet(272, 200, num_classes, strategy, lam_dim)
