"""The data: datasets (`datasets`, the generated `shapes10`) and the pipelines that feed the trainer, the pure-torch
batched path (`torch_pipeline`) and the NVIDIA DALI path (`dali_pipeline`, `dali_readers`), behind one contract
(`base`: the `Pipeline` protocol; docs/ARCHITECTURE.md, "Data"), with the datasets' recipes (`recipes`) and the
round's static buffers (`round_feed`). DALI is optional and only imported when chosen.

    build_pipeline(data_cfg, splits, sampler, device, shard, seed) -> Pipeline
"""
from __future__ import annotations

import torch

from ..augment.sampler import Sampler
from .base import BACKENDS, BackendError, Batch, Pipeline, PolicySample, dali_available, resolve_backend


def build_pipeline(data_cfg, splits, sampler: Sampler | None, device: torch.device, shard: tuple[int, int] = (0, 1),
                   seed: int = 0) -> Pipeline:
    """Build the configured pipeline (`data_cfg.backend`: auto | torch | dali) for this process's shard;
    `seed` (the run's seed) fixes data order and augmentation draws."""
    backend = resolve_backend(data_cfg.backend, device)
    if backend == "dali":
        from .dali_pipeline import DaliPipeline

        return DaliPipeline(data_cfg, splits, sampler, device, shard, seed=seed)
    from .torch_pipeline import TorchPipeline

    return TorchPipeline(data_cfg, splits, sampler, device, shard, seed=seed)


def dali_apply_op(images: torch.Tensor, name: str, magnitude: torch.Tensor, device: str = "cpu") -> torch.Tensor:
    """Run one op through a DALI pipeline; the contract of `hba_fast.augment.ops.apply_op` (test entry point)."""
    from ..augment.dali_ops import dali_apply_op as _dali_apply_op

    return _dali_apply_op(images, name, magnitude, device=device)


__all__ = [
    "BACKENDS",
    "BackendError",
    "Batch",
    "Pipeline",
    "PolicySample",
    "build_pipeline",
    "dali_apply_op",
    "dali_available",
    "resolve_backend",
]
