"""What every data pipeline hands the trainer, and how the backend is chosen.

A pipeline (torch or DALI) yields `Batch(images, labels, lam)`: images float32 (B, 3, H, W), standardised,
on the training device; labels int64 (B,); lam float32 (B, 54), the exact lambda_i used to augment each
sample (SPEC section 3), or None for clean batches and for runs without a search sampler.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    images: torch.Tensor  # (B, 3, H, W) float32, standardised
    labels: torch.Tensor  # (B,) int64
    lam: torch.Tensor | None  # (B, 54) float32: lambda_i per sample, or None


class PolicySample(NamedTuple):
    probs: torch.Tensor  # (B, 30) slot probabilities in [0, 1]
    mags: torch.Tensor  # (B, 30) slot magnitudes (0 where an op has none)
    lam: torch.Tensor | None  # (B, 54) the lambda_i these were decoded from, or None


class BackendError(RuntimeError):
    """The configured data backend cannot run here."""


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """`auto` -> DALI on a CUDA device when DALI is installed, else torch. `dali` needs DALI installed."""
    if backend == "torch":
        return "torch"
    if backend == "dali":
        if not dali_available():
            raise BackendError(
                "data.backend is 'dali' but NVIDIA DALI is not installed; install it with "
                "`pip install -e .[dali]` or set data.backend=torch (or auto)"
            )
        return "dali"
    if backend == "auto":
        return "dali" if (torch.device(device).type == "cuda" and dali_available()) else "torch"
    raise BackendError(f"data.backend must be 'auto', 'torch' or 'dali', got {backend!r}")
