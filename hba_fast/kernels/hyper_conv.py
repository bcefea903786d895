"""Hyper-conv: y = conv(x, w0) + scale[:, :, None, None] * conv(x, wu) (+ bias0 + scale * biasu).

PLACEHOLDER HEADER (the Triton kernel lands here; the torch path below is already correct).
Shapes: x (B, Cin, H, W); w0, wu (Cout, Cin, kh, kw); scale (B, Cout); bias0, biasu (Cout,).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hyper_conv2d_ref(x, w0, wu, scale, bias0=None, biasu=None, stride=1, padding=0, dilation=1):
    """Pure-torch reference: two convolutions combined per sample and output channel."""
    y = F.conv2d(x, w0, bias0, stride, padding, dilation)
    yu = F.conv2d(x, wu, biasu, stride, padding, dilation)
    return y + scale[:, :, None, None].to(yu.dtype) * yu


def hyper_conv2d(x, w0, wu, scale, bias0=None, biasu=None, stride=1, padding=0, dilation=1, impl="auto"):
    """Public entry point; see the module docstring."""
    if impl not in ("auto", "triton", "torch"):
        raise ValueError(f"impl must be 'auto', 'triton' or 'torch', got {impl!r}")
    if impl == "triton":
        raise NotImplementedError("Triton hyper_conv2d not written yet")
    return hyper_conv2d_ref(x, w0, wu, scale, bias0, biasu, stride, padding, dilation)
