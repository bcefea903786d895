"""Hyper-linear: y_i = phi0 x_i + s_i * (phiU x_i) (+ b0 + s_i * bU), a per-sample rank-structured linear layer.

Shapes: x (B, in); w0, wu (out, in) as in nn.Linear; scale (B, out) per sample or (out,) shared (the
validation step's single lambda); bias0, biasu (out,) or None. Returns y (B, out) in the matmuls' dtype.

Why there is no Triton kernel here (issue 3, part 5: "fuse it if it pays"). HyperLinear is the classifier,
used once per network. Its cost is two GEMMs plus one elementwise combine, and a fused kernel could only
remove the combine's memory round trip and one launch (estimates from H100 peak numbers, not measurements):

  * ResNet-50 head, B=256, 2048 -> 1000, bf16. GEMMs: 2 x 2*B*in*out = 2.1 GFLOP (about 2-5 us on an H100)
    reading 2 x 4.1 MB of weights. The unfused combine adds writing and re-reading y0, yu (B, out) and reading
    scale: 4 x 0.5 MB = 2 MB, about 0.6 us at 3.35 TB/s, plus one launch (about 3 us eager, ~0 inside the
    trainer's CUDA graph). The network's step at that batch is tens of ms, so the best case saves < 0.01 %.
  * WRN-40-2 head, B=128, 128 -> 10: 0.65 MFLOP and 5 KB of weights; purely launch-bound. Fusing saves one
    launch per step, which CUDA-graph capture already removes.
  * One GEMM against torch.cat([w0, wu]) (the other obvious layout) must copy both weights every call,
    because SGD changes them every step: +2 x 8.2 MB of traffic (~5 us) on the ResNet-50 head, more than
    the launch it saves. Two F.linear calls read each weight exactly once and copy nothing.
  * Backward: autograd runs cuBLAS GEMMs (dW0 = dy^T x, dWu = (s dy)^T x, dx = dy W0 + (s dy) Wu) and one
    reduction for ds = sum_out(dy * yu); a Triton backward would first have to match cuBLAS to break even.

So the torch path below (two F.linear, then one fused addcmul) is the implementation on every device; the
fused kernels go where the bytes are: hyper_conv2d and hyper_batch_norm, which run in every block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hyper_linear_ref(x, w0, wu, scale, bias0=None, biasu=None):
    """Independent reference: materialise each sample's weight theta_i = w0 + diag(s_i) wu, then y_i = theta_i x_i."""
    s = scale.expand(x.shape[0], -1) if scale.dim() == 1 else scale  # (B, out)
    theta = w0[None] + s[:, :, None] * wu[None]  # (B, out, in)
    y = torch.einsum("boi,bi->bo", theta, x)  # (B, out)
    if bias0 is not None:
        y = y + bias0
    if biasu is not None:
        y = y + s * biasu
    return y


def _check(x, w0, wu, scale, bias0, biasu) -> None:
    """Typed errors naming the bad value and the fix."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"hyper_linear: x must be a floating (B, in) tensor (flatten the features first), got {got}")
    B, n_in = x.shape
    if not isinstance(w0, torch.Tensor) or w0.dim() != 2 or w0.shape[1] != n_in:
        got = tuple(w0.shape) if isinstance(w0, torch.Tensor) else type(w0).__name__
        raise ValueError(f"hyper_linear: w0 must be (out, in) with in = {n_in} (nn.Linear layout), got {got}")
    n_out = w0.shape[0]
    if not isinstance(wu, torch.Tensor) or tuple(wu.shape) != tuple(w0.shape):
        got = tuple(wu.shape) if isinstance(wu, torch.Tensor) else type(wu).__name__
        raise ValueError(f"hyper_linear: wu must have w0's shape {tuple(w0.shape)}, got {got}")
    if not isinstance(scale, torch.Tensor) or tuple(scale.shape) not in ((B, n_out), (n_out,)):
        got = tuple(scale.shape) if isinstance(scale, torch.Tensor) else type(scale).__name__
        raise ValueError(f"hyper_linear: scale must be ({B}, {n_out}) per sample or ({n_out},) shared, got {got}")
    for name, b in (("bias0", bias0), ("biasu", biasu)):
        if b is not None and (not isinstance(b, torch.Tensor) or tuple(b.shape) != (n_out,)):
            got = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f"hyper_linear: {name} must be ({n_out},) or None, got {got}")
    for name, t in (("w0", w0), ("wu", wu), ("scale", scale), ("bias0", bias0), ("biasu", biasu)):
        if t is not None and t.device != x.device:
            raise ValueError(f"hyper_linear: {name} is on {t.device} but x is on {x.device}; move both to one device")


def hyper_linear(
    x: torch.Tensor,
    w0: torch.Tensor,
    wu: torch.Tensor,
    scale: torch.Tensor,
    bias0: torch.Tensor | None = None,
    biasu: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = F.linear(x, w0, bias0) + scale * F.linear(x, wu, biasu); see the module docstring for shapes and why."""
    _check(x, w0, wu, scale, bias0, biasu)
    y0 = F.linear(x, w0, bias0)  # (B, out)
    yu = F.linear(x, wu, biasu)  # (B, out)
    return torch.addcmul(y0, yu, scale.to(yu.dtype))
