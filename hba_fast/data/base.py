"""The Pipeline contract every data pipeline (torch or DALI) keeps, what it hands the trainer, and how the backend
is chosen.

A pipeline yields `Batch(images, labels, lam)`: images float32 (B, 3, H, W), standardised, on the training
device; labels int64 (B,); lam float32 (B, 54), the exact lambda_i used to augment each sample (SPEC section 3),
or None for clean batches and for runs without a search. The per-sample policy of each training batch comes
from a `hba_fast.augment.sampler.Sampler` (or none: the recipe only), which the pipeline calls and checkpoints.
The trainer reads batches through a `RoundFeed` (round_feed.py): a pipeline may offer its own,
`round_feed(t_train, t_val, capture_ready)` (the torch pipeline does: the whole batch computation inside a CUDA-graph
round; `capture_ready`: the round must make no host sync);
any other is fed through a `StagedFeed` over its iterators.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Protocol

import torch

from ..augment.sampler import PolicySample  # noqa: F401 (part of what a pipeline deals in)
from ..errors import BackendError

BACKENDS = ("auto", "torch", "dali")

# The data errors both backends raise, worded once
EMPTY_VAL = ("the validation split is empty (data.num_val=0, or every validation image was skipped as corrupt); "
             "the hyper steps need validation images: set data.num_val > 0")


def too_few_train_images(n: int, batch_size: int, world: int) -> str:
    """The message for a training split of `n` images that does not fill one batch on each of `world` processes."""
    return (f"the training split has {n} images, fewer than one batch of data.batch_size={batch_size} x {world} "
            f"process(es); lower data.batch_size or raise data.num_train")


class Batch(NamedTuple):
    images: torch.Tensor  # (B, 3, H, W) float32, standardised
    labels: torch.Tensor  # (B,) int64
    lam: torch.Tensor | None  # (B, 54) float32: lambda_i per sample, or None


class Pipeline(Protocol):
    """What the trainer needs from a data pipeline (both backends; docs/ARCHITECTURE.md, "Pipelines")."""

    steps_per_epoch: int  # training batches per epoch and process
    batch_size: int  # images per training batch and process
    sizes: dict[str, int]  # images of "train", "val", "test" in use (undecodable files dropped), all processes

    def train_epoch(self, epoch: int) -> Iterator[Batch]:
        """Augmented training batches of `epoch` (policy, then the recipe), from where the pipeline stands."""
        ...

    def val_batch(self) -> Batch:
        """The next clean validation batch (an endless stream of shuffled passes)."""
        ...

    def eval_batches(self, split: str) -> Iterator[Batch]:
        """One clean pass over this process's share of "val" or "test" (the last batch may be short)."""
        ...

    def state_dict(self) -> dict:
        """This process's position, random state and sampler state, for resume."""
        ...

    def load_state_dict(self, state: dict) -> None: ...


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
    raise BackendError(f"data.backend must be one of {BACKENDS}, got {backend!r}")
