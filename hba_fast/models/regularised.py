"""A network under a regularisation search space: lambda_i's consumers applied per sample (issue 19, paper 4.3).

    Regularised(net, space, mean, std, hyper_dropout="off").forward(x, lam)
        x     (B, 3, H, W) standardised images (the pipeline's recipe `none`: STN trains on plain images)
        lam   (B, H) per-sample lambda_i (weight step), (H,) one shared lambda (hyper step, evaluation), or None:
              the fixed lambda given at construction (`fixed`: plain training / random search at fixed values)

In training mode (the weight step), with v_i = the space's used values of lambda_i (discrete ones floored):
    x -> colour jitter (hue, sat, bright, contrast; in [0, 1], un-standardised and back) -> Cutout (cutlength,
    cutholes) -> input dropout (indropout, element-wise, per sample) -> input scale (inscale)
    -> the network, each `RateDropout` at its own per-sample rate v_i[name] (hard masks), and its hyper-layers
       fed lambda_i
STN's order (`cnn/datasets/cifar.py`: jitter on the PIL image, then ToTensor + normalise, then Cutout;
`cnn/hypertrain.py::optimization_step`: then indropout, then inscale).
In eval mode (evaluation; the hyper step under train.hyper_bn=running, as STN runs its hyper step after cnn.eval()):
no augmentation and no dropout, the hyper-layers fed lambda; with hyper_dropout="concrete", when lambda needs a
gradient (the hyper step), the dropout layers run the Concrete relaxation at lambda's rates (models/dropout.py),
so the rates also get a direct gradient.

`materialize(lam)` is the plain network theta(lam) (inference applies no regularisation).
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from ..augment import regularisers as reg
from ..augment.table_space import TableSpace
from .dropout import RateDropout, sample_dropout
from .registry import materialize

HYPER_DROPOUT = ("off", "concrete")
MAX_HOLES = 4  # the top of STN's cutholes range [0, 4]


class Regularised(nn.Module):
    def __init__(self, net: nn.Module, space: TableSpace, mean: Tensor, std: Tensor, hyper_dropout: str = "off",
                 fixed: Tensor | None = None) -> None:
        super().__init__()
        assert hyper_dropout in HYPER_DROPOUT, hyper_dropout
        self.net, self.space, self.hyper_dropout = net, space, hyper_dropout
        self.register_buffer("mean", mean.detach().float().view(1, 3, 1, 1).clone(), persistent=False)
        self.register_buffer("std", std.detach().float().view(1, 3, 1, 1).clone(), persistent=False)
        self.register_buffer("fixed", (space.init_lam() if fixed is None else fixed).float().clone(),
                             persistent=False)  # (H,) the lambda used when forward gets none
        self.searched = getattr(net, "strategy", "none") != "none"  # the net's hyper-layers take lam
        self.dropouts = [m for m in net.modules() if isinstance(m, RateDropout)]
        unknown = [m.name for m in self.dropouts if m.name not in space.index]
        assert not unknown, f"dropout layers {unknown} have no hyperparameter in space {space.name!r}"
        self.strategy, self.lam_dim = getattr(net, "strategy", "none"), space.lam_dim

    def _value(self, v: Tensor, name: str) -> Tensor | None:
        i = self.space.index.get(name)
        return None if i is None else v[:, i]

    def augment(self, x: Tensor, v: Tensor) -> Tensor:
        """The input consumers at per-sample values v (B, H) (module docstring)."""
        def get(name: str) -> Tensor | None:
            return self._value(v, name)

        if get("hue") is not None:
            img = (x * self.std + self.mean).clamp(0.0, 1.0)
            factors = reg.jitter_factors(*(reg.robustify(get(n)) for n in ("bright", "contrast", "sat", "hue")))
            x = (reg.colour_jitter(img, *factors) - self.mean) / self.std
        if get("cutlength") is not None:
            centres = reg.cutout_centres(x.shape[0], MAX_HOLES, x.shape[2], x.shape[3], x.device)
            x = reg.cutout(x, get("cutlength"), get("cutholes"), centres)
        if get("indropout") is not None:
            x = sample_dropout(x, get("indropout"))
        if get("inscale") is not None:
            x = reg.input_scale(x, get("inscale"))
        return x

    @contextlib.contextmanager
    def _rates(self, v: Tensor | None, mode: str | None):
        for m in self.dropouts:
            m.rate, m.mode = (None, None) if v is None else (self._value(v, m.name), mode)
        try:
            yield
        finally:
            for m in self.dropouts:
                m.rate, m.mode = None, None

    def forward(self, x: Tensor, lam: Tensor | None = None) -> Tensor:
        lam = self.fixed if lam is None else lam
        B = x.shape[0]
        lam_b = lam.expand(B, -1) if lam.dim() == 1 else lam  # (B, H)
        if self.training:
            v = self.space.used_values(lam_b.detach().float())  # no gradient through the hard masks (STN)
            x = self.augment(x, v)
            mode = "hard"
        elif self.hyper_dropout == "concrete" and lam.requires_grad and torch.is_grad_enabled():
            v, mode = self.space.values(lam_b.float()), "concrete"  # the rates carry lambda's gradient
        else:
            v, mode = None, None
        with self._rates(v, mode):
            return self.net(x, lam if self.searched else None)

    @torch.no_grad()
    def materialize(self, lam: Tensor) -> nn.Module:
        """The plain network theta(lam) for one shared lam (H,)."""
        return materialize(self.net, lam) if self.searched else self.net
