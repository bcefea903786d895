"""Model registry: `build_model(name, num_classes, strategy)` and `materialize(model, lam)`.

    build_model("wrn-28-10", 10, "first_bn") -> nn.Module with forward(x, lam=None)
    materialize(model, lam (lam_dim,)) -> the plain model theta(lam): same architecture and parameter names,
        strategy "none", every hyper-layer replaced by nn.Conv2d / nn.Linear / nn.BatchNorm2d holding its
        theta(lam) (and, for BN, its running statistics). Its state dict loads into
        build_model(name, num_classes, "none"); its outputs equal model(x, lam) for the shared lam.

The search's final model theta(lambda*) is saved this way, so `hba-fast train` and other projects can use it
as a plain network.
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..augment.space import LAM_DIM
from .alexnet import alexnet_stn, alexnet_stn_small
from .external import ModelNames, build_external, is_external, load_checkpoint_weights
from .layers import HyperModule
from .pyramidnet import pyramidnet_272_200
from .resnet import resnet_50
from .shake_shake import shake_shake_26_2x32d, shake_shake_26_2x96d, shake_shake_26_2x112d
from .strategy import STRATEGIES
from .wrn import wrn_10_2, wrn_16_2, wrn_28_10, wrn_40_2

MODELS: dict[str, Callable[..., nn.Module]] = {
    "wrn-40-2": wrn_40_2,  # CIFAR / SVHN, 32x32
    "wrn-28-10": wrn_28_10,  # CIFAR / SVHN, 32x32
    "resnet-50": resnet_50,  # ImageNet, 224x224
    "wrn-16-2": wrn_16_2,  # small: the CPU demo and tests
    "wrn-10-2": wrn_10_2,  # tiny: CPU studies (docs/results/fidelity-cpu.md)
    "shake-shake-26-2x32d": shake_shake_26_2x32d,  # evaluation models of the paper's Table 4 (32x32)
    "shake-shake-26-2x96d": shake_shake_26_2x96d,
    "shake-shake-26-2x112d": shake_shake_26_2x112d,
    "pyramidnet-272-200": pyramidnet_272_200,  # PyramidNet (bottleneck, alpha 200) + ShakeDrop
    "alexnet-stn": alexnet_stn,  # STN's AlexNet for CIFAR-10 (paper 4.3, Table 6), 32x32
    "alexnet-stn-small": alexnet_stn_small,  # the same at 1/4 width, fc 512: the CPU-sized Table 6
}
# What model.name accepts: the registry, and any torchvision:NAME / timm:NAME (models/external.py).
MODEL_NAMES = ModelNames((*MODELS, "torchvision:<name>", "timm:<name>"))


def _unknown(kind: str, value: object, valid: tuple[str, ...]) -> ValueError:
    near = difflib.get_close_matches(str(value), valid, n=1, cutoff=0.0)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return ValueError(f"unknown {kind} {value!r}: valid {kind}s are {', '.join(valid)}{hint}")


def build_model(name: str, num_classes: int, strategy: str = "first_bn", lam_dim: int = LAM_DIM,
                checkpoint: str | None = None) -> nn.Module:
    """A model by registry name, with hyper-layers where `strategy` puts them (see models/strategy.py);
    `torchvision:NAME` / `timm:NAME` build that library's model (`external.py`) and hyperize it (`hba_fast.hyperize`).
    `checkpoint` (model.checkpoint): a local file of weights to start from, for every model
    (`external.load_checkpoint_weights`): tensors of another shape or name stay at their initialisation and are named
    in the log; a hyper-layer's phi0 (`weight`, `bias`) takes the plain layer's tensors of the same name, so a plain
    model.pt starts a search, its phiU / phiV stay fresh."""
    if is_external(name):
        if strategy not in STRATEGIES:
            raise _unknown("strategy", strategy, STRATEGIES)
        from .hyperize import hyperize

        return hyperize(build_external(name, num_classes, checkpoint), strategy, lam_dim)
    if name not in MODELS:
        raise _unknown("model name", name, tuple(MODELS))
    if strategy not in STRATEGIES:
        raise _unknown("strategy", strategy, STRATEGIES)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(lam_dim, int) or lam_dim < 1:
        raise ValueError(f"lam_dim must be a positive int, got {lam_dim!r}")
    model = MODELS[name](num_classes, strategy, lam_dim)
    if checkpoint is not None:  # the same rules as for torchvision: / timm: models (external.py)
        load_checkpoint_weights(model, checkpoint)
    return model


def hyper_layer_names(model: nn.Module) -> list[str]:
    """Qualified names of the hyper-layers of `model`, in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, HyperModule)]


@torch.no_grad()
def materialize(model: nn.Module, lam: Tensor) -> nn.Module:
    """A plain copy of `model` with every hyper-layer replaced by its theta(lam); `model` is left untouched.
    A hyperized model (`hba_fast.hyperize`) gives back the user's own model class."""
    if hasattr(model, "materialize") and not isinstance(model, HyperModule):
        return model.materialize(lam)
    lam_dim = getattr(model, "lam_dim", None)
    names = hyper_layer_names(model)
    if names:
        lam_dim = model.get_submodule(names[0]).lam_dim
    if lam_dim is not None and (not isinstance(lam, Tensor) or lam.shape != (lam_dim,)):
        got = tuple(lam.shape) if isinstance(lam, Tensor) else type(lam).__name__
        raise ValueError(f"materialize needs one shared lam of shape ({lam_dim},), got {got}")
    # deepcopy consults its memo first: pre-seeding it with each hyper-layer's plain replacement swaps the layers
    # in during the copy (and never copies phiU / phiV).
    memo = {id(m): m.materialize(lam) for m in model.modules() if isinstance(m, HyperModule)}
    plain = copy.deepcopy(model, memo)
    if hasattr(plain, "strategy"):
        plain.strategy = "none"
    return plain
