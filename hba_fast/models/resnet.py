"""ResNet-50 for ImageNet (He et al. 2016), torchvision-style bottleneck v1.5, with optional hyper-layers.

    x (B, 3, H, W) -> conv7x7/2 64 -> BN -> ReLU -> maxpool3x3/2
      -> 4 stages of [3, 4, 6, 3] bottlenecks, widths 64, 128, 256, 512 (x4 out), stride 1, 2, 2, 2
      -> global average pool (B, 2048) -> linear (B, num_classes)

Bottleneck v1.5: conv1x1 - BN - ReLU - conv3x3(stride) - BN - ReLU - conv1x1 - BN, + shortcut, ReLU; the
stride sits on the 3x3 conv; the shortcut is conv1x1(stride) - BN when the shape changes. No conv biases.
25,557,032 parameters for 1000 classes, as torchvision.models.resnet50. Weight init as torchvision
(kaiming-normal fan-out convs, BN (1, 0)). Parameter names are torchvision's (`layer3.2.conv2.weight`,
`layer2.0.downsample.1.running_mean`, `fc.bias`), so its state dicts load into the plain model (and, with
strict=False, into phi0 of a hyper model).

Which layers are hyper-layers depends on the strategy (hba_fast/models/strategy.py); `first_conv` is the
stem conv, `first_bn` the stem BN. lam (B, lam_dim) or (lam_dim,) is threaded through every block.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..augment.space import LAM_DIM
from .layers import apply_layer
from .strategy import LayerFactory, init_weights_, model_lam

EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride), 1x1 expand, each followed by BN; ReLU after the residual sum."""

    def __init__(self, f: LayerFactory, in_ch: int, planes: int, stride: int) -> None:
        super().__init__()
        out_ch = planes * EXPANSION
        self.conv1, self.bn1 = f.conv(in_ch, planes, 1), f.bn(planes)
        self.conv2, self.bn2 = f.conv(planes, planes, 3, stride, 1), f.bn(planes)
        self.conv3, self.bn3 = f.conv(planes, out_ch, 1), f.bn(out_ch)
        self.downsample = None  # a ModuleList, not Sequential (its layers take lam); keys as torchvision's
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.ModuleList([f.conv(in_ch, out_ch, 1, stride), f.bn(out_ch)])

    def forward(self, x: Tensor, lam: Tensor | None) -> Tensor:
        o = F.relu(apply_layer(self.bn1, apply_layer(self.conv1, x, lam), lam), inplace=True)
        o = F.relu(apply_layer(self.bn2, apply_layer(self.conv2, o, lam), lam), inplace=True)
        o = apply_layer(self.bn3, apply_layer(self.conv3, o, lam), lam)
        if self.downsample is not None:
            conv, bn = self.downsample
            x = apply_layer(bn, apply_layer(conv, x, lam), lam)
        return F.relu(o + x, inplace=True)


class ResNet50(nn.Module):
    """forward(x (B, 3, H, W), lam=None) -> logits (B, num_classes); any H, W >= 32."""

    def __init__(self, num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> None:
        super().__init__()
        self.strategy, self.lam_dim = strategy, lam_dim
        f = LayerFactory(strategy, lam_dim)
        self.conv1 = f.conv(3, 64, 7, 2, 3, first=True)
        self.bn1 = f.bn(64, first=True)
        in_ch = 64
        for s, (planes, count, stride) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2), strict=True)):
            blocks = []
            for i in range(count):
                blocks.append(Bottleneck(f, in_ch, planes, stride if i == 0 else 1))
                in_ch = planes * EXPANSION
            setattr(self, f"layer{s + 1}", nn.ModuleList(blocks))
        self.fc = f.linear(in_ch, num_classes)
        init_weights_(self)

    def forward(self, x: Tensor, lam: Tensor | None = None) -> Tensor:
        lam = model_lam(self.strategy, self.lam_dim, x, lam)
        x = F.relu(apply_layer(self.bn1, apply_layer(self.conv1, x, lam), lam), inplace=True)
        x = F.max_pool2d(x, 3, 2, 1)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x, lam)
        return apply_layer(self.fc, x.mean(dim=(2, 3)), lam)


def resnet_50(num_classes: int, strategy: str = "none", lam_dim: int = LAM_DIM) -> ResNet50:
    return ResNet50(num_classes, strategy, lam_dim)
