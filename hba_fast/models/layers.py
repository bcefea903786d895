"""Hyper-layers: conv, linear and batch-norm layers whose weights are a low-rank linear function of lambda.

Every hyper-layer holds three sets of parameters (paper 3.3 and appendix C, after STN [MacKay et al. 2019]):

    theta(lam) = phi0 + diag(phiV lam) phiU          phi0, phiU shaped like the plain layer's parameter,
                                                     phiV (out, lam_dim), so phiV lam (out,) scales each
                                                     output channel's slice of phiU.

Weight and bias have their own phiV (`weight_v`, `bias_v`), as in the paper's eq. 20-21 and STN's code.
Parameter names: `weight`, `bias` (phi0, shaped exactly as in nn.Conv2d / nn.Linear / nn.BatchNorm2d, so a
plain state dict loads into them), `weight_u`, `bias_u` (phiU, same shapes), `weight_v`, `bias_v` (phiV).

forward(x, lam) takes lam in one of two shapes:
- (B, lam_dim), one lambda_i per sample (the weight step). With s_i = phiV lam_i (B, out):
    HyperConv2d       y_i = conv(x_i, phi0) + s_i[:, None, None] * conv(x_i, phiU) + b_i
                      (fused in `hba_fast.kernels.hyper_conv2d`; b_i = bias + (bias_v lam_i) * bias_u is added
                      here, because the kernel's single scale (B, Cout) is the *weight* scale)
    HyperLinear       y_i = phi0 x_i + s_i * (phiU x_i) + b_i    (`hba_fast.kernels.hyper_linear`, b_i as above)
    HyperBatchNorm2d  batch statistics over the whole batch as usual, then a per-sample affine
                      gamma_i = weight + (weight_v lam_i) * weight_u, beta_i = bias + (bias_v lam_i) * bias_u
                      (`hba_fast.kernels.hyper_batch_norm`); running statistics update as in nn.BatchNorm2d.
- (lam_dim,), one lambda shared by the batch (the validation step): the layer is one model, so theta(lam) is
  materialised once (a few element-wise ops on the weights) and the plain torch op runs. Gradients reach
  phi0, phiU, phiV and lam either way.

Initialisation (MacKay et al. 2019, "Self-Tuning Networks", github.com/asteroidhouse/self-tuning-networks,
`cnn/hypermodels/hyperconv2d.py` and `hyperlinear.py`): phi0 as the plain layer, phiU drawn from the same
distribution as phi0 (an independent draw), phiV small. Both phiU and phiV must be non-zero for lambda to get a
gradient at step 0 (d theta / d lam = phiU phiV^T per channel), and phiV small keeps theta(lam) close to phi0,
so training starts near the plain net. STN draws phiV ~ N(0, 0.01^2) for a handful of hyperparameters; lambda
here has 54 entries near -2.9 (the logit of the initial values, SPEC 3), which would make s = phiV lam of std
~0.2. So phiV ~ N(0, 0.01^2 / lam_dim): std(s) = 0.01 * rms(lam), whatever lam_dim (Adam on lambda does not
care about the gradient's scale).
For batch norm, phi0 is gamma = 1, beta = 0 and phiU "like phi0" is weight_u = 1, bias_u = 0: gamma_i =
1 + weight_v lam_i starts near 1 and carries lambda's gradient, beta starts at exactly 0. Models re-initialise
phi0 with their own scheme (kaiming) and draw phiU the same way (see `hba_fast.models.strategy.init_weights_`).

Each layer has an `impl` attribute (one of `hba_fast.kernels.IMPLS`: "auto" | "triton" | "torch") passed to the
kernels; `set_hyper_impl(model, impl)` validates it and sets it on every hyper-layer of a model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ..augment.space import LAM_DIM
from ..kernels import IMPLS as IMPLS  # re-exported: the valid `impl` values, owned by the kernels
from ..kernels import check_impl, hyper_batch_norm, hyper_conv2d, hyper_linear

PHI_V_STD = 0.01  # std of phiV at initialisation is PHI_V_STD / sqrt(lam_dim) (STN's 0.01, see the docstring)


def check_lam(lam: Tensor, batch: int, lam_dim: int, where: str = "hyper-layer") -> bool:
    """Validate lam for a batch of `batch` samples; return True when it is per-sample (B, lam_dim)."""
    if not isinstance(lam, Tensor):
        raise TypeError(f"{where}: lam must be a torch.Tensor of shape ({batch}, {lam_dim}) or ({lam_dim},), "
                        f"got {type(lam).__name__}")
    if lam.ndim == 1 and lam.shape[0] == lam_dim:
        return False
    if lam.ndim == 2 and lam.shape[1] == lam_dim:
        if lam.shape[0] != batch:
            raise ValueError(f"{where}: per-sample lam has {lam.shape[0]} rows but the batch has {batch} samples; "
                             f"pass lam of shape ({batch}, {lam_dim}), or ({lam_dim},) to share one lambda")
        return True
    raise ValueError(f"{where}: lam must have shape ({batch}, {lam_dim}) (per sample) or ({lam_dim},) (shared), "
                     f"got {tuple(lam.shape)}")


class HyperModule(nn.Module):
    """Base of the hyper-layers: lam checks and the kernel `impl` switch."""

    lam_dim: int
    impl: str

    def _is_per_sample(self, x: Tensor, lam: Tensor) -> bool:
        return check_lam(lam, x.shape[0], self.lam_dim, type(self).__name__)

    def _make_weights(self, shape: tuple[int, ...], bias: bool) -> None:
        """phi0, phiU of `shape` (out, ...) and phiV (out, lam_dim); likewise for the bias when there is one."""
        out = shape[0]
        self.weight = nn.Parameter(torch.empty(shape))
        self.weight_u = nn.Parameter(torch.empty(shape))
        self.weight_v = nn.Parameter(torch.empty(out, self.lam_dim))
        if bias:
            self.bias = nn.Parameter(torch.empty(out))
            self.bias_u = nn.Parameter(torch.empty(out))
            self.bias_v = nn.Parameter(torch.empty(out, self.lam_dim))
        else:
            self.register_parameter("bias", None)
            self.register_parameter("bias_u", None)
            self.register_parameter("bias_v", None)

    def _reset_weights(self, fan_in: int) -> None:
        """phi0 as nn.Conv2d / nn.Linear.reset_parameters; phiU from the same distribution; phiV small (STN)."""
        for w in (self.weight, self.weight_u):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(fan_in)
        for p in (self.bias, self.bias_u):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)
        for v in (self.weight_v, self.bias_v):
            if v is not None:
                nn.init.normal_(v, 0.0, PHI_V_STD / math.sqrt(self.lam_dim))

    def materialize(self, lam: Tensor) -> nn.Module:
        """The plain layer with parameters theta(lam) for one shared lam (lam_dim,)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"lam_dim={self.lam_dim}, impl={self.impl!r}"


def _scale(lam: Tensor, v: Tensor) -> Tensor:
    """phiV lam for lam (lam_dim,) or (B, lam_dim) -> (out,) or (B, out)."""
    return F.linear(lam.to(v.dtype), v)


class HyperConv2d(HyperModule):
    """Conv2d with theta(lam) = phi0 + diag(phiV lam) phiU (groups = 1, dilation = 1)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int = 0, bias: bool = True, lam_dim: int = LAM_DIM) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.lam_dim = in_ch, out_ch, lam_dim
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), stride, padding
        self.impl = "auto"
        self._make_weights((out_ch, in_ch, *self.kernel_size), bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_weights(self.in_channels * self.kernel_size[0] * self.kernel_size[1])

    def theta(self, lam: Tensor) -> tuple[Tensor, Tensor | None]:
        """Materialised (weight (Cout, Cin, kh, kw), bias (Cout,) | None) for a shared lam (lam_dim,)."""
        w = self.weight + _scale(lam, self.weight_v)[:, None, None, None] * self.weight_u
        b = None if self.bias is None else self.bias + _scale(lam, self.bias_v) * self.bias_u
        return w, b

    def forward(self, x: Tensor, lam: Tensor) -> Tensor:
        if not self._is_per_sample(x, lam):
            w, b = self.theta(lam)
            return F.conv2d(x, w, b, self.stride, self.padding)
        s = _scale(lam, self.weight_v)  # (B, Cout)
        y = hyper_conv2d(x, self.weight, self.weight_u, s, None, None, self.stride, self.padding, impl=self.impl)
        if self.bias is not None:
            b = self.bias + _scale(lam, self.bias_v) * self.bias_u  # (B, Cout): its own phiV, not s
            y = y + b[:, :, None, None].to(y.dtype)
        return y

    @torch.no_grad()
    def materialize(self, lam: Tensor) -> nn.Conv2d:
        w, b = self.theta(lam)
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         bias=b is not None, device=w.device, dtype=w.dtype)
        conv.weight.copy_(w)
        if b is not None:
            conv.bias.copy_(b)
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}, " + super().extra_repr())


class HyperLinear(HyperModule):
    """Linear with theta(lam) = phi0 + diag(phiV lam) phiU; x (B, in_f). `hba_fast.kernels.hyper_linear` is
    torch on every device (the classifier is tiny; that file says why), so `impl` is unused here."""

    def __init__(self, in_f: int, out_f: int, bias: bool = True, lam_dim: int = LAM_DIM) -> None:
        super().__init__()
        self.in_features, self.out_features, self.lam_dim = in_f, out_f, lam_dim
        self.impl = "auto"
        self._make_weights((out_f, in_f), bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_weights(self.in_features)

    def theta(self, lam: Tensor) -> tuple[Tensor, Tensor | None]:
        """Materialised (weight (out, in), bias (out,) | None) for a shared lam (lam_dim,)."""
        w = self.weight + _scale(lam, self.weight_v)[:, None] * self.weight_u
        b = None if self.bias is None else self.bias + _scale(lam, self.bias_v) * self.bias_u
        return w, b

    def forward(self, x: Tensor, lam: Tensor) -> Tensor:
        if x.ndim != 2:
            raise ValueError(f"HyperLinear expects x of shape (B, {self.in_features}), got {tuple(x.shape)}")
        if not self._is_per_sample(x, lam):
            w, b = self.theta(lam)
            return F.linear(x, w, b)
        y = hyper_linear(x, self.weight, self.weight_u, _scale(lam, self.weight_v), None, None)  # (B, out)
        if self.bias is not None:
            y = y + (self.bias + _scale(lam, self.bias_v) * self.bias_u).to(y.dtype)  # (B, out)
        return y

    @torch.no_grad()
    def materialize(self, lam: Tensor) -> nn.Linear:
        w, b = self.theta(lam)
        lin = nn.Linear(self.in_features, self.out_features, bias=b is not None, device=w.device, dtype=w.dtype)
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
        return lin

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                + super().extra_repr())


class HyperBatchNorm2d(HyperModule):
    """BatchNorm2d (batch statistics, running averages as nn.BatchNorm2d) with a lambda-dependent affine."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 lam_dim: int = LAM_DIM) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum, self.lam_dim = num_features, eps, momentum, lam_dim
        self.impl = "auto"
        self.weight = nn.Parameter(torch.empty(num_features))
        self.bias = nn.Parameter(torch.empty(num_features))
        self.weight_u = nn.Parameter(torch.empty(num_features))
        self.bias_u = nn.Parameter(torch.empty(num_features))
        self.weight_v = nn.Parameter(torch.empty(num_features, lam_dim))
        self.bias_v = nn.Parameter(torch.empty(num_features, lam_dim))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        # phi0 = (1, 0) as nn.BatchNorm2d; phiU like phi0 = (1, 0); phiV small (see the module docstring).
        self.reset_running_stats()
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        nn.init.ones_(self.weight_u)
        nn.init.zeros_(self.bias_u)
        nn.init.normal_(self.weight_v, 0.0, PHI_V_STD / math.sqrt(self.lam_dim))
        nn.init.normal_(self.bias_v, 0.0, PHI_V_STD / math.sqrt(self.lam_dim))

    def affine(self, lam: Tensor) -> tuple[Tensor, Tensor]:
        """(gamma, beta): (C,) each for lam (lam_dim,), (B, C) each for lam (B, lam_dim)."""
        gamma = self.weight + _scale(lam, self.weight_v) * self.weight_u
        beta = self.bias + _scale(lam, self.bias_v) * self.bias_u
        return gamma, beta

    def _momentum(self) -> float:
        """nn.BatchNorm2d's exponential_average_factor; counts the batch when training."""
        if not self.training:
            return 0.0
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def forward(self, x: Tensor, lam: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"HyperBatchNorm2d expects x of shape (B, {self.num_features}, H, W), "
                             f"got {tuple(x.shape)}")
        per_sample = self._is_per_sample(x, lam)
        gamma, beta = self.affine(lam)
        momentum = self._momentum()
        if not per_sample:
            return F.batch_norm(x, self.running_mean, self.running_var, gamma, beta, self.training, momentum,
                                self.eps)
        return hyper_batch_norm(x, gamma, beta, self.running_mean, self.running_var, self.training, momentum,
                                self.eps, impl=self.impl)

    @torch.no_grad()
    def materialize(self, lam: Tensor) -> nn.BatchNorm2d:
        gamma, beta = self.affine(lam)
        bn = nn.BatchNorm2d(self.num_features, self.eps, self.momentum, device=gamma.device, dtype=gamma.dtype)
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
        bn.running_mean.copy_(self.running_mean)
        bn.running_var.copy_(self.running_var)
        bn.num_batches_tracked.copy_(self.num_batches_tracked)
        bn.train(self.training)
        return bn

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, " + super().extra_repr()


@torch.no_grad()
def init_hyper_bn(model: nn.Module, bias_u: float = 0.0, v_std: float = PHI_V_STD) -> None:
    """Re-initialise the lambda paths of every HyperBatchNorm2d of `model` (config model.hyper_bn_bias_u,
    model.hyper_bn_v_std): bias_u = `bias_u` (a constant, as weight_u = 1), weight_v and bias_v ~ N(0, v_std^2 /
    lam_dim). With bias_u = 0 (nn.BatchNorm2d's beta) the shift beta_i = bias + (bias_v lam_i) bias_u starts
    independent of lambda and bias_v gets no gradient at step 0, so lambda first acts only through the scale;
    bias_u != 0 opens the shift path from the start. docs/results/hyper-options-cpu.md measures both: 1 gives the
    shift path 43% of lambda's gradient, but trained a worse hypernet on the demo, so the default (the config's)
    stays 0."""
    for m in model.modules():
        if isinstance(m, HyperBatchNorm2d):
            m.bias_u.fill_(bias_u)
            for v in (m.weight_v, m.bias_v):
                nn.init.normal_(v, 0.0, v_std / math.sqrt(m.lam_dim))


def apply_layer(layer: nn.Module, x: Tensor, lam: Tensor | None) -> Tensor:
    """Call `layer` with lam when it is a hyper-layer, without otherwise: lets blocks mix both kinds."""
    return layer(x, lam) if isinstance(layer, HyperModule) else layer(x)


def set_hyper_impl(model: nn.Module, impl: str) -> None:
    """Set the kernel implementation (one of IMPLS: "auto" | "triton" | "torch") of every hyper-layer in `model`."""
    check_impl(impl, "set_hyper_impl")
    for m in model.modules():
        if isinstance(m, HyperModule):
            m.impl = impl
