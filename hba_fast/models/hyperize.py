"""`hba_fast.hyperize(model, strategy, lam_dim)`: any nn.Module as the hypernetwork of a search (see below).

    net = hyperize(torchvision.models.resnet18(num_classes=10))    # the user's model, pretrained or not
    logits = net(x, lam)                 # lam (B, 54) per sample (weight step) or (54,) shared (hyper step)
    plain = net.materialize(lam)         # the user's own class (here torchvision's ResNet), plain weights theta(lam)
    torchvision.models.resnet18(num_classes=10).load_state_dict(plain.state_dict())    # loads

The strategy (paper 4.1, `hba_fast.models.STRATEGIES`) picks the layers that become hyper-layers:
`all` every Conv2d, BatchNorm2d and Linear; `conv+bn`, `conv`, `bn` those kinds; `first_conv` / `first_bn` the
first Conv2d / BatchNorm2d *in forward execution order*, found by running the model once on a small probe batch
(eval mode, no gradients; 32x32, else the size the model declares, else 224x224), not module order; `none` none.
Each chosen layer is replaced, in a deep copy of the model, by a subclass of HyperConv2d / HyperBatchNorm2d /
HyperLinear that keeps the layer's weights as phi0 (a pretrained model starts where it was), draws phiU like a
fresh layer's weights (BN: (1, 0)) and phiV small (see hba_fast/models/layers.py). Grouped and dilated convolutions,
'same' padding and padding modes, timm's BatchNormAct2d (norm, then its drop and activation) and Linear layers on
(B, ..., in) inputs are supported; a subclass with its own forward (timm's Conv2dSame, StdConv2d, ...) is left
plain under conv/bn/all and is an error when a first_* strategy would pick it.

The user's forward is not rewritten: `Hyperized.forward(x, lam)` puts lam in a context object the hyper-layers
share, calls the model's own forward, and clears it. So the wrapped model takes (x, lam) whatever its forward
does (one caveat: nn.DataParallel's replicas would share that context; use DDP). A model without the layer a
strategy needs (`first_bn` on a LayerNorm ConvNeXt) is a ConfigError naming the strategies that fit.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment.space import LAM_DIM
from ..errors import ConfigError
from ..kernels import hyper_conv2d
from .layers import HyperBatchNorm2d, HyperConv2d, HyperLinear, HyperModule, _scale, check_lam

PROBE_SIZES = (32, 224)  # probe batch side in pixels (with the model's declared input size between them)


class LamContext:
    """The lam of the forward call in progress, read by every hyper-layer of a hyperized model."""

    lam: Tensor | None = None


def _template(module: nn.Module) -> nn.Module:
    """The original layer without its storage (meta tensors): the class and settings `materialize` rebuilds."""
    return copy.deepcopy(module).to("meta")


class _Adapted:
    """Mixin: the lam from the shared context, and materialize into the original layer's own class."""

    _ctx: LamContext

    def _bind(self, module: nn.Module, ctx: LamContext) -> None:
        object.__setattr__(self, "_template_layer", _template(module))  # not a submodule: no state, not moved
        self._ctx = ctx

    def _lam(self, lam: Tensor | None) -> Tensor:
        lam = self._ctx.lam if lam is None else lam
        if lam is None:
            raise RuntimeError(f"{type(self).__name__} was called without lam: call the model returned by "
                               f"hba_fast.hyperize(...) as model(x, lam), not the layers it wraps")
        return lam

    @torch.no_grad()
    def materialize(self, lam: Tensor) -> nn.Module:
        """The original layer's class with plain parameters theta(lam) (and this layer's buffers)."""
        weight, bias = self.theta_pair(lam)
        plain = copy.deepcopy(self._template_layer).to_empty(device=weight.device)
        state = {k: v for k, v in self.state_dict().items() if not k.endswith(("_u", "_v"))}
        state["weight"] = weight
        if bias is not None:
            state["bias"] = bias
        plain.load_state_dict(state)
        return plain.train(self.training)


class HyperizedConv2d(_Adapted, HyperConv2d):
    """A user's nn.Conv2d as a HyperConv2d: any groups, dilation, padding (ints, 'same', 'valid') and mode."""

    def __init__(self, conv: nn.Conv2d, ctx: LamContext, lam_dim: int = LAM_DIM):
        super().__init__(conv.in_channels // conv.groups, conv.out_channels, conv.kernel_size, conv.stride,
                         0, conv.bias is not None, lam_dim)
        self.in_channels, self.groups, self.dilation = conv.in_channels, conv.groups, conv.dilation
        self.padding, self.padding_mode = conv.padding, conv.padding_mode
        self._reversed_padding_repeated_twice = getattr(conv, "_reversed_padding_repeated_twice", None)
        with torch.no_grad():
            self.weight.copy_(conv.weight)
            if conv.bias is not None:
                self.bias.copy_(conv.bias)
        self.to(device=conv.weight.device, dtype=conv.weight.dtype)
        self._bind(conv, ctx)

    def _fused(self) -> bool:
        """The fused kernel takes groups 1, zero padding given as integers."""
        return self.groups == 1 and self.padding_mode == "zeros" and not isinstance(self.padding, str)

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":  # as nn.Conv2d._conv_forward
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, w, b, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def theta_pair(self, lam: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.theta(lam)

    def forward(self, x: Tensor, lam: Tensor | None = None) -> Tensor:
        lam = self._lam(lam)
        if not self._is_per_sample(x, lam):
            w, b = self.theta(lam)
            return self._conv(x, w, b)
        s = _scale(lam, self.weight_v)  # (B, Cout)
        if self._fused():
            y = hyper_conv2d(x, self.weight, self.weight_u, s, None, None, self.stride, self.padding,
                             self.dilation, impl=self.impl)
        else:  # y = conv(x, phi0) + s * conv(x, phiU), per output channel (groups do not change the algebra)
            y = self._conv(x, self.weight, None) + s[:, :, None, None].to(x.dtype) * self._conv(x, self.weight_u, None)
        if self.bias is not None:
            y = y + (self.bias + _scale(lam, self.bias_v) * self.bias_u)[:, :, None, None].to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", groups={self.groups}, dilation={self.dilation}"


class HyperizedBatchNorm2d(_Adapted, HyperBatchNorm2d):
    """A user's BatchNorm2d (or timm's BatchNormAct2d: then its `drop` and `act` follow) as a HyperBatchNorm2d."""

    def __init__(self, bn: nn.BatchNorm2d, ctx: LamContext, lam_dim: int = LAM_DIM):
        super().__init__(bn.num_features, bn.eps, bn.momentum, lam_dim)
        with torch.no_grad():
            self.weight.copy_(bn.weight)
            self.bias.copy_(bn.bias)
            self.running_mean.copy_(bn.running_mean)
            self.running_var.copy_(bn.running_var)
            self.num_batches_tracked.copy_(bn.num_batches_tracked)
        self.post = _post_modules(bn)
        for name, module in self.post:
            self.add_module(name, module)
        self.to(device=bn.weight.device, dtype=bn.weight.dtype)
        self.train(bn.training)
        self._bind(bn, ctx)

    def theta_pair(self, lam: Tensor) -> tuple[Tensor, Tensor]:
        return self.affine(lam)

    def forward(self, x: Tensor, lam: Tensor | None = None) -> Tensor:
        x = super().forward(x, self._lam(lam))
        for _, module in self.post:
            x = module(x)
        return x


class HyperizedLinear(_Adapted, HyperLinear):
    """A user's nn.Linear as a HyperLinear, on inputs (B, in) or (B, ..., in)."""

    def __init__(self, linear: nn.Linear, ctx: LamContext, lam_dim: int = LAM_DIM):
        super().__init__(linear.in_features, linear.out_features, linear.bias is not None, lam_dim)
        with torch.no_grad():
            self.weight.copy_(linear.weight)
            if linear.bias is not None:
                self.bias.copy_(linear.bias)
        self.to(device=linear.weight.device, dtype=linear.weight.dtype)
        self._bind(linear, ctx)

    def theta_pair(self, lam: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.theta(lam)

    def forward(self, x: Tensor, lam: Tensor | None = None) -> Tensor:
        lam = self._lam(lam)
        if x.ndim == 2 or not self._is_per_sample(x, lam):
            if x.ndim == 2:
                return super().forward(x, lam)
            w, b = self.theta(lam)
            return F.linear(x, w, b)
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (self.out_features,)  # s_i broadcast over the middle dims
        y = F.linear(x, self.weight) + _scale(lam, self.weight_v).view(shape) * F.linear(x, self.weight_u)
        if self.bias is not None:
            y = y + (self.bias + _scale(lam, self.bias_v) * self.bias_u).view(shape)
        return y


def _post_modules(bn: nn.Module) -> list[tuple[str, nn.Module]]:
    """What a BatchNorm2d subclass does after normalising: timm's BatchNormAct2d has `drop` then `act`."""
    if type(bn).forward is nn.BatchNorm2d.forward:
        return []
    if type(bn).__name__ == "BatchNormAct2d" and hasattr(bn, "act") and hasattr(bn, "drop"):
        return [("drop", bn.drop), ("act", bn.act)]
    raise _unsupported(bn)


def _unsupported(module: nn.Module) -> ConfigError:
    return ConfigError(f"{type(module).__module__}.{type(module).__name__} overrides forward, so hyperize cannot "
                       f"turn it into a hyper-layer without changing what it computes; use a strategy that "
                       f"picks other layers (e.g. first_conv, or conv / bn, which leave such layers plain)")


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, HyperModule):
        return None
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, nn.BatchNorm2d):
        return "bn"
    if isinstance(module, nn.Linear):
        return "linear"
    return None


def _supported(module: nn.Module) -> bool:
    kind = _kind(module)
    if kind == "conv":
        return type(module).forward is nn.Conv2d.forward
    if kind == "bn":
        if not (module.affine and module.track_running_stats):
            return False
        try:
            _post_modules(module)
        except ConfigError:
            return False
        return True
    if kind == "linear":
        return type(module).forward is nn.Linear.forward
    return False


_NEEDS = {"all": ("conv", "bn", "linear"), "conv+bn": ("conv", "bn"), "conv": ("conv",), "bn": ("bn",),
          "first_conv": ("conv",), "first_bn": ("bn",), "none": ()}


def _fitting(kinds: set[str]) -> list[str]:
    out = []
    for strategy, needs in _NEEDS.items():
        if strategy == "all":
            ok = bool(kinds)
        elif strategy == "conv+bn":
            ok = {"conv", "bn"} <= kinds
        else:
            ok = all(k in kinds for k in needs)
        if ok:
            out.append(strategy)
    return out


def _probe_sizes(model: nn.Module) -> list[int]:
    sizes = [PROBE_SIZES[0]]
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if size and size[-1] not in sizes:
        sizes.append(int(size[-1]))
    return sizes + [s for s in PROBE_SIZES[1:] if s not in sizes]


@torch.no_grad()
def execution_order(model: nn.Module, kinds: tuple[str, ...] = ("conv", "bn")) -> list[str]:
    """Qualified names of the model's Conv2d / BatchNorm2d / Linear layers in the order a forward pass calls
    them (first call only), from one probe batch (module docstring)."""
    names = {m: n for n, m in model.named_modules() if _kind(m) in kinds}
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: order.append(names[mod]) if names[mod] not in order
                                         else None) for m in names]
    was_training = model.training
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    errors = []
    try:
        model.eval()
        for size in _probe_sizes(model):
            order.clear()
            try:
                model(torch.zeros(2, 3, size, size, device=device, dtype=dtype))
                return list(order)
            except Exception as e:  # noqa: BLE001 - a probe size the model cannot take: try the next
                errors.append(f"{size}x{size}: {type(e).__name__}: {e}")
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    raise ConfigError("hyperize runs the model once to find its first layers, but it failed on every probe batch "
                      "(" + "; ".join(errors) + "); use a strategy without first_ (conv, bn, conv+bn, all)")


class Hyperized(nn.Module):
    """The user's model with hyper-layers; forward(x, lam). `model` is (a deep copy of) the user's own model."""

    def __init__(self, model: nn.Module, strategy: str, lam_dim: int, ctx: LamContext,
                 skipped: list[str] | None = None):
        super().__init__()
        self.model, self.strategy, self.lam_dim, self._ctx = model, strategy, lam_dim, ctx
        self.skipped = skipped or []  # layers the strategy covers but hyperize left plain (own forward)

    def forward(self, x: Tensor, lam: Tensor | None = None):
        if self.strategy == "none":
            return self.model(x)
        if lam is None:
            raise ValueError(f"this model has hyper-layers (strategy {self.strategy!r}): call it as model(x, lam), "
                             f"lam ({x.shape[0]}, {self.lam_dim}) per sample or ({self.lam_dim},) shared")
        check_lam(lam, x.shape[0], self.lam_dim, f"hyperized model (strategy {self.strategy!r})")
        self._ctx.lam = lam
        try:
            return self.model(x)
        finally:
            self._ctx.lam = None

    def hyper_layer_names(self) -> list[str]:
        return [n for n, m in self.model.named_modules() if isinstance(m, HyperModule)]

    @torch.no_grad()
    def materialize(self, lam: Tensor) -> nn.Module:
        """The user's own model class with plain weights theta(lam) for one shared lam (lam_dim,)."""
        if self.strategy != "none" and (not isinstance(lam, Tensor) or lam.shape != (self.lam_dim,)):
            got = tuple(lam.shape) if isinstance(lam, Tensor) else type(lam).__name__
            raise ValueError(f"materialize needs one shared lam of shape ({self.lam_dim},), got {got}")
        memo = {id(m): m.materialize(lam) for m in self.model.modules() if isinstance(m, HyperModule)}
        return copy.deepcopy(self.model, memo)


def hyperize(model: nn.Module, strategy: str = "first_bn", lam_dim: int = LAM_DIM) -> Hyperized:
    """A hypernetwork for the search made from any nn.Module (module docstring); `model` is left untouched."""
    from .strategy import STRATEGIES

    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; strategies: {', '.join(STRATEGIES)}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"hyperize needs a torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model)
    ctx = LamContext()
    layers = {n: m for n, m in model.named_modules() if _kind(m) is not None}
    kinds = {_kind(m) for m in layers.values()}
    needs = _NEEDS[strategy]
    if strategy not in _fitting(kinds):
        missing = [k for k in needs if k not in kinds] or list(needs)
        label = {"conv": "Conv2d", "bn": "BatchNorm2d", "linear": "Linear"}
        raise ConfigError(f"strategy {strategy!r} needs {' and '.join(label[k] for k in missing)} layers, and "
                          f"{type(model).__name__} has none; strategies that fit this model: "
                          f"{', '.join(_fitting(kinds))}")
    if strategy.startswith("first_"):
        kind = needs[0]
        order = [n for n in execution_order(model, (kind,))]
        if not order:
            raise ConfigError(f"strategy {strategy!r}: no {kind} layer of {type(model).__name__} runs in its forward "
                              f"pass; strategies that fit: {', '.join(s for s in _fitting(kinds) if s != strategy)}")
        if not _supported(layers[order[0]]):
            raise _unsupported(layers[order[0]])
        chosen, skipped = [order[0]], []
    else:
        covered = [n for n, m in layers.items() if _kind(m) in needs]
        chosen = [n for n in covered if _supported(layers[n])]
        skipped = [n for n in covered if n not in chosen]
    factory = {"conv": HyperizedConv2d, "bn": HyperizedBatchNorm2d, "linear": HyperizedLinear}
    for name in chosen:
        old = layers[name]
        _replace(model, name, factory[_kind(old)](old, ctx, lam_dim))
    return Hyperized(model, strategy, lam_dim, ctx, skipped)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
