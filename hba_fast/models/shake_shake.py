"""Shake-Shake (Gastaldi 2017) for 32x32 inputs, the "26 2xKd" networks of the paper's Table 4, with optional
hyper-layers.

    x (B, 3, 32, 32) -> conv3x3 16 -> BN -> stage(d, stride 1) -> stage(2d, 2) -> stage(4d, 2)
      -> ReLU -> global average pool (B, 4d) -> linear (B, num_classes)

Depth 26: each stage has (26 - 2) / 6 = 4 blocks. A block adds two residual branches to its shortcut, each branch
ReLU - conv3x3(stride) - BN - ReLU - conv3x3 - BN. When the shape changes the shortcut is ReLU, then two paths
(1x1 average pool with the stride, then conv1x1 to half the channels; the second path on the input shifted by
one pixel), concatenated, BN. The layout of the AutoAugment / PBA code (shake_shake.py) and Gastaldi's
(fb.resnet.torch-based) code. Convs have no bias. Parameters for 10 classes: 2x32d 2,923,162, 2x96d 26,192,922,
2x112d 35,640,442 (published: 2.9M, 26.2M, 35.7M; 2x64d gives Gastaldi's 11.7M; the 2x112d count rounds to
35.7M with a 100-class head, 35,680,852: the papers' 35.7M is 0.06M above ours for 10 classes).

Shake-shake regularisation ("Shake-Shake-Image", the CIFAR setting): in training the branches are mixed as
alpha a + (1 - alpha) b with alpha ~ U(0, 1) drawn per sample, and the backward pass uses an independent
beta ~ U(0, 1) per sample (gradients beta g and (1 - beta) g); in eval mode the expected value (a + b) / 2.
Random numbers come from torch's default generator on the input's device (checkpointed with the run).

Layers come from the strategy's `LayerFactory` (hba_fast/models/strategy.py), so the network can also be searched:
`first_conv` / `first_bn` are the stem conv / BN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment.space import LAM_DIM
from .layers import apply_layer
from .strategy import LayerFactory, init_weights_, model_lam


class _ShakeShake(torch.autograd.Function):
    """out = alpha a + (1 - alpha) b; grad_a = beta g, grad_b = (1 - beta) g (alpha, beta (B, 1, 1, 1))."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        ctx.save_for_backward(beta)
        return alpha * a + (1 - alpha) * b

    @staticmethod
    def backward(ctx, grad: Tensor):
        (beta,) = ctx.saved_tensors
        return beta * grad, (1 - beta) * grad, None, None


def shake_shake(a: Tensor, b: Tensor, training: bool) -> Tensor:
    """Mix two branch outputs (B, C, H, W): random per sample in training (module docstring), the mean in eval."""
    if not training:
        return 0.5 * (a + b)
    shape = (a.shape[0], 1, 1, 1)
    alpha = torch.rand(shape, device=a.device, dtype=a.dtype)
    beta = torch.rand(shape, device=a.device, dtype=a.dtype)
    return _ShakeShake.apply(a, b, alpha, beta)


class Branch(nn.Module):
    """ReLU - conv3x3(stride) - BN - ReLU - conv3x3 - BN."""

    def __init__(self, f: LayerFactory, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = f.conv(in_ch, out_ch, 3, stride, 1), f.bn(out_ch)
        self.conv2, self.bn2 = f.conv(out_ch, out_ch, 3, 1, 1), f.bn(out_ch)

    def forward(self, x: Tensor, lam: Tensor | None) -> Tensor:
        o = apply_layer(self.bn1, apply_layer(self.conv1, F.relu(x), lam), lam)
        return apply_layer(self.bn2, apply_layer(self.conv2, F.relu(o), lam), lam)


class Shortcut(nn.Module):
    """Shape-changing shortcut: ReLU, two strided 1x1 paths (the second shifted one pixel), concatenated, BN."""

    def __init__(self, f: LayerFactory, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = f.conv(in_ch, out_ch // 2, 1)
        self.conv2 = f.conv(in_ch, out_ch - out_ch // 2, 1)
        self.bn = f.bn(out_ch)

    def forward(self, x: Tensor, lam: Tensor | None) -> Tensor:
        x = F.relu(x)
        p1 = x[:, :, ::self.stride, ::self.stride]  # avg pool with a 1x1 window = strided pick
        p2 = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))[:, :, ::self.stride, ::self.stride]
        out = torch.cat([apply_layer(self.conv1, p1, lam), apply_layer(self.conv2, p2, lam)], 1)
        return apply_layer(self.bn, out, lam)


class ShakeBlock(nn.Module):
    def __init__(self, f: LayerFactory, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.branch1 = Branch(f, in_ch, out_ch, stride)
        self.branch2 = Branch(f, in_ch, out_ch, stride)
        self.shortcut = Shortcut(f, in_ch, out_ch, stride) if (stride != 1 or in_ch != out_ch) else None

    def forward(self, x: Tensor, lam: Tensor | None) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x, lam)
        return skip + shake_shake(self.branch1(x, lam), self.branch2(x, lam), self.training)


class ShakeShake(nn.Module):
    """Shake-Shake-`depth` 2x`width`d; forward(x (B, 3, H, W), lam=None) -> logits (B, num_classes)."""

    def __init__(self, depth: int, width: int, num_classes: int, strategy: str = "none",
                 lam_dim: int = LAM_DIM) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"Shake-Shake depth must be 6n + 2 (e.g. 26), got {depth}")
        n = (depth - 2) // 6
        self.strategy, self.lam_dim = strategy, lam_dim
        f = LayerFactory(strategy, lam_dim)
        self.conv1 = f.conv(3, 16, 3, 1, 1, first=True)
        self.bn1 = f.bn(16, first=True)
        blocks, in_ch = [], 16
        for s, stride in enumerate((1, 2, 2)):
            for i in range(n):
                blocks.append(ShakeBlock(f, in_ch, width * 2 ** s, stride if i == 0 else 1))
                in_ch = width * 2 ** s
        self.blocks = nn.ModuleList(blocks)
        self.fc = f.linear(in_ch, num_classes)
        init_weights_(self)

    def forward(self, x: Tensor, lam: Tensor | None = None) -> Tensor:
        lam = model_lam(self.strategy, self.lam_dim, x, lam)
        x = apply_layer(self.bn1, apply_layer(self.conv1, x, lam), lam)
        for block in self.blocks:
            x = block(x, lam)
        return apply_layer(self.fc, F.relu(x).mean(dim=(2, 3)), lam)


def shake_shake_26_2x32d(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> ShakeShake:
    return ShakeShake(26, 32, num_classes, strategy, lam_dim)


def shake_shake_26_2x96d(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> ShakeShake:
    return ShakeShake(26, 96, num_classes, strategy, lam_dim)


def shake_shake_26_2x112d(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> ShakeShake:
    return ShakeShake(26, 112, num_classes, strategy, lam_dim)
