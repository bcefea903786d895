"""Weight-sharing strategies (paper 3.4, 4.1): which layers of a model get a hyper-layer.

A layer that all population members share needs no hyper-layer (it is a constant function of lambda), so a
strategy is just the set of layers built as hyper-layers; the rest are plain nn.Conv2d / nn.BatchNorm2d /
nn.Linear with no lambda overhead.

    all         every conv, every BN and the linear classifier: no weight sharing at all (paper Figure 2 (b),
                STN's hypernetwork); the slowest, for comparison
    conv+bn     every conv and every BN
    conv        every conv
    bn          every BN
    first_conv  only the lowest conv (the stem)
    first_bn    only the lowest BN (pre-activation WRN: the first block's first BN; ResNet-50: the stem BN).
                The paper's default (Table 2: best error, about half the search time of conv+bn).
    none        a plain model: evaluation, `hba-fast train`, and the speed baseline

The classifier is shared (plain nn.Linear) under every strategy but `all`: the paper names each strategy by the
layers that get hyper-layers ("the Conv strategy means that we add HyperConv layers to all the convolutional layers
and ignore the other layers", 4.1; Figure 2 (d) shares the linear layer).
Models ask a `LayerFactory` for each layer, marking the lowest conv / BN with `first=True`.
`init_weights_` is the shared initialisation of WRN and ResNet (kaiming-normal fan-out convs, BN (1, 0)),
applied to phi0 and, as an independent draw from the same distribution, to phiU (see hba_fast/models/layers.py).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..augment.space import LAM_DIM
from .layers import HyperBatchNorm2d, HyperConv2d, HyperLinear, check_lam

STRATEGIES = ("all", "conv+bn", "conv", "bn", "first_conv", "first_bn", "none")


class LayerFactory:
    """Builds each layer of a model as a plain or a hyper-layer according to `strategy`."""

    def __init__(self, strategy: str, lam_dim: int = LAM_DIM) -> None:
        assert strategy in STRATEGIES, strategy  # validated at the user boundary (build_model)
        self.strategy, self.lam_dim = strategy, lam_dim

    def _hyper_conv(self, first: bool) -> bool:
        return self.strategy in ("all", "conv+bn", "conv") or (self.strategy == "first_conv" and first)

    def _hyper_bn(self, first: bool) -> bool:
        return self.strategy in ("all", "conv+bn", "bn") or (self.strategy == "first_bn" and first)

    def conv(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
             bias: bool = False, first: bool = False) -> nn.Module:
        if self._hyper_conv(first):
            return HyperConv2d(in_ch, out_ch, kernel_size, stride, padding, bias, self.lam_dim)
        return nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=bias)

    def bn(self, num_features: int, first: bool = False) -> nn.Module:
        if self._hyper_bn(first):
            return HyperBatchNorm2d(num_features, lam_dim=self.lam_dim)
        return nn.BatchNorm2d(num_features)

    def linear(self, in_f: int, out_f: int) -> nn.Module:
        if self.strategy == "all":
            return HyperLinear(in_f, out_f, lam_dim=self.lam_dim)
        return nn.Linear(in_f, out_f)  # shared by the population (see the module docstring)


def init_weights_(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, relu) convs, BN gamma 1 beta 0, linear bias 0; phiU drawn like phi0.

    The rule of torchvision's ResNet and of the WRN code used by AutoAugment/PBA/Fast-AA (kaiming fan-out).
    phiV keeps the hyper-layer's own N(0, 0.01^2), BN phiU its (1, 0).
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, HyperConv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if isinstance(m, HyperConv2d):
                nn.init.kaiming_normal_(m.weight_u, mode="fan_out", nonlinearity="relu")
            for p in (m.bias, getattr(m, "bias_u", None)):
                if p is not None:
                    nn.init.zeros_(p)
        elif isinstance(m, (nn.BatchNorm2d, HyperBatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Linear, HyperLinear)):
            for p in (m.bias, getattr(m, "bias_u", None)):
                if p is not None:
                    nn.init.zeros_(p)


def model_lam(strategy: str, lam_dim: int, x: Tensor, lam: Tensor | None) -> Tensor | None:
    """The lam a model threads through its blocks: checked, or None for a plain model (which ignores lam)."""
    if strategy == "none":
        return None
    if lam is None:
        raise ValueError(f"this model has hyper-layers (strategy {strategy!r}), so forward needs lam: "
                         f"({x.shape[0]}, {lam_dim}) per sample or ({lam_dim},) shared; "
                         f"build it with strategy='none' for a plain model")
    check_lam(lam, x.shape[0], lam_dim, f"model with strategy {strategy!r}")
    return lam
