"""Fused hyper-layer kernels (Triton), usable on their own: this package imports only torch and triton.

    hyper_conv2d(x, w0, wu, scale, bias0=None, biasu=None, stride=1, padding=0, dilation=1, impl="auto")
        y = conv(x, w0) + scale[:, :, None, None] * conv(x, wu) (+ bias0 + scale * biasu); scale (B, Cout)
    hyper_batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps, impl="auto")
        batch norm with a per-sample affine: gamma, beta (B, C)

impl="auto" runs Triton on CUDA tensors and the torch path elsewhere; "triton" forces the kernel
(on CPU only under TRITON_INTERPRET=1); "torch" forces the pure-torch path.
"""
from .hyper_bn import hyper_batch_norm, hyper_batch_norm_ref
from .hyper_conv import hyper_conv2d, hyper_conv2d_ref

__all__ = ["hyper_conv2d", "hyper_conv2d_ref", "hyper_batch_norm", "hyper_batch_norm_ref"]
