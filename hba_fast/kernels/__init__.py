"""Fused hyper-layer kernels (Triton), usable on their own: this package imports only torch and triton.

    hyper_conv2d(x, w0, wu, scale, bias0=None, biasu=None, stride=1, padding=0, dilation=1, impl="auto")
        y = conv(x, w0) + scale[:, :, None, None] * conv(x, wu) (+ bias0 + scale * biasu); scale (B, Cout)
    hyper_batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps, impl="auto")
        batch norm with a per-sample affine: gamma, beta (B, C); running stats updated in place as torch does
    hyper_linear(x, w0, wu, scale, bias0=None, biasu=None)
        y = x w0^T + scale * (x wu^T) (+ bias0 + scale * biasu); scale (B, out) or (out,). Torch only: two
        F.linear and one addcmul; hyper_linear.py's docstring gives the FLOP/byte argument for not fusing it.

impl="auto" runs Triton on CUDA float32/float16/bfloat16 tensors and the torch path otherwise; "triton" forces
the kernel (on CPU only under TRITON_INTERPRET=1); "torch" forces the pure-torch path.
"""
from .hyper_bn import hyper_batch_norm, hyper_batch_norm_ref
from .hyper_conv import hyper_conv2d, hyper_conv2d_ref
from .hyper_linear import hyper_linear, hyper_linear_ref

__all__ = [
    "hyper_batch_norm",
    "hyper_batch_norm_ref",
    "hyper_conv2d",
    "hyper_conv2d_ref",
    "hyper_linear",
    "hyper_linear_ref",
]
