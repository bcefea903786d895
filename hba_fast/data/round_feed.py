"""The data of one trainer round in static device buffers, so the round can run without a host sync and be captured
in a CUDA graph.

A round (trainer.py) is `t_train` weight steps then `t_val` hyper steps. A CUDA graph replays kernels with the
pointers they had at capture, so everything a round reads must sit in buffers that stay put, refilled between
rounds. A `RoundFeed` splits a pipeline's work accordingly:

    start_epoch(epoch)        outside the round: the epoch's index table, the sampler's entry for the epoch
    prepare(n_train, n_val)   outside the round, before it: the next round's indices (or batches) into the static
                              buffers, by device-to-device or asynchronous pinned copies (no host sync)
    train_batch(k) -> Batch   inside the round: weight step k's batch, computed from the static buffers only
    val_batch(j) -> Batch     inside the round: hyper step j's clean validation batch
    generators()              the torch.Generators the round draws from (a CUDA graph registers them, so every
                              replay draws fresh numbers and their states stay exact for checkpoints)

Feeds:
- `TorchPipeline.round_feed` (torch_pipeline.py): uint8 arrays on the device, rows gathered with the round's device
  indices, the policy (static form) and recipe applied inside the round. Arrays kept on the host go through a
  `HostStager` (below): gathered on the host into pinned memory, copied on a side stream while the previous round
  runs, then augmented inside the round.
- `StagedFeed`, for any other `Pipeline` (DALI, which runs its own GPU graph and hands device tensors): finished
  batches copied into static buffers before the round. Batch k is the same batch the pipeline's iterators give.
`round_feed(pipeline, ...)` picks the pipeline's own feed when it has one, else a `StagedFeed`.
"""
from __future__ import annotations

from typing import Protocol

import torch

from ..errors import DataError
from .base import Batch, Pipeline


class RoundFeed(Protocol):
    """A pipeline's batches for the trainer's rounds, from static buffers (module docstring)."""

    def generators(self) -> list[torch.Generator]: ...

    def start_epoch(self, epoch: int) -> None: ...

    def prepare(self, n_train: int, n_val: int) -> None: ...

    def train_batch(self, k: int) -> Batch: ...

    def val_batch(self, j: int) -> Batch: ...


def round_feed(pipeline: Pipeline, t_train: int, t_val: int, device: torch.device,
               capture_ready: bool = True) -> RoundFeed:
    """The pipeline's own round feed (`pipeline.round_feed(t_train, t_val, capture_ready)`) when it has one, else a
    StagedFeed. `capture_ready`: the round must make no host sync (it is captured, or train.graphs=on); otherwise the
    pipeline may use what is fastest on its device (the torch pipeline's data.policy_form)."""
    make = getattr(pipeline, "round_feed", None)
    return make(t_train, t_val, capture_ready) if make is not None else StagedFeed(pipeline, t_train, t_val, device)


class StagedFeed:
    """Any Pipeline's batches, made outside the round by its iterators and copied into static device buffers."""

    def __init__(self, pipeline: Pipeline, t_train: int, t_val: int, device: torch.device):
        self.pipeline, self.rows, self.device = pipeline, {"train": t_train, "val": t_val}, torch.device(device)
        self._static: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}  # made at first batch
        self._it = None

    def generators(self) -> list[torch.Generator]:
        return []  # the pipeline draws its randomness outside the round

    def start_epoch(self, epoch: int) -> None:
        self._it = iter(self.pipeline.train_epoch(epoch))

    def _put(self, split: str, k: int, batch: Batch) -> None:
        if split not in self._static:
            n = self.rows[split]
            lam = None if batch.lam is None else torch.empty((n, *batch.lam.shape), device=self.device)
            self._static[split] = (torch.empty((n, *batch.images.shape), device=self.device),  # (n, B, 3, H, W)
                                   torch.empty((n, *batch.labels.shape), dtype=torch.long, device=self.device),
                                   lam)  # (n, B, 54) | None
        images, labels, lam = self._static[split]
        if batch.images.shape != images.shape[1:] or (batch.lam is None) != (lam is None):
            raise DataError(f"the pipeline's {split} batches changed shape ({tuple(images.shape[1:])} -> "
                            f"{tuple(batch.images.shape)}); every batch of a round must hold data.batch_size "
                            f"images of data.image_size: a pipeline that hands a short last batch cannot feed the "
                            f"round, so make data.num_train and data.num_val multiples of data.batch_size "
                            f"(times the processes)")
        images[k].copy_(batch.images, non_blocking=True)
        labels[k].copy_(batch.labels, non_blocking=True)
        if lam is not None:
            lam[k].copy_(batch.lam, non_blocking=True)

    def prepare(self, n_train: int, n_val: int) -> None:
        assert self._it is not None, "start_epoch first"
        for k in range(n_train):
            self._put("train", k, next(self._it))
        for j in range(n_val):
            self._put("val", j, self.pipeline.val_batch())

    def _batch(self, split: str, k: int) -> Batch:
        images, labels, lam = self._static[split]
        return Batch(images[k], labels[k], None if lam is None else lam[k])

    def train_batch(self, k: int) -> Batch:
        return self._batch("train", k)

    def val_batch(self, j: int) -> Batch:
        return self._batch("val", j)


class HostStager:
    """uint8 rows of arrays kept on the host, gathered into pinned memory and copied to the device on a side stream.

    `stage({split: indices (n, B) on the CPU})` fills `images[split][:n]` (uint8 (rows, B, 3, H, W)) and
    `labels[split][:n]` (long (rows, B)), static device buffers. The copy runs on a side stream into a fresh staging
    buffer, so it overlaps the round in flight (the host gathers while the GPU computes: the trainer calls `stage`
    right after launching the previous round); one device copy on the main stream then moves it into the static
    buffers, after the previous round has read them. Pinned buffers come from torch's caching host allocator, which
    reuses a block only after its copy finished, and the staging buffer is recorded on the main stream: no host
    waits. Off CUDA (tests) the same gathers go straight into the buffers."""

    def __init__(self, sets: dict[str, tuple[torch.Tensor, torch.Tensor]], rows: dict[str, int], batch_size: int,
                 device: torch.device):
        self.sets, self.device = sets, torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.images = {s: torch.empty((n, batch_size, *sets[s][0].shape[1:]), dtype=torch.uint8, device=self.device)
                       for s, n in rows.items()}  # (rows, B, 3, H, W)
        self.labels = {s: torch.empty((n, batch_size), dtype=torch.long, device=self.device) for s, n in rows.items()}

    def stage(self, indices: dict[str, torch.Tensor]) -> None:
        for split, idx in indices.items():
            n, b = idx.shape
            images, labels = self.sets[split]
            host_images = torch.empty((n * b, *images.shape[1:]), dtype=torch.uint8, pin_memory=self.cuda)
            host_labels = torch.empty((n * b,), dtype=torch.long, pin_memory=self.cuda)
            torch.index_select(images, 0, idx.reshape(-1), out=host_images)
            torch.index_select(labels, 0, idx.reshape(-1), out=host_labels)
            out_images, out_labels = self.images[split][:n], self.labels[split][:n]
            if not self.cuda:
                out_images.copy_(host_images.view(out_images.shape))
                out_labels.copy_(host_labels.view(out_labels.shape))
                continue
            with torch.cuda.stream(self.stream):  # overlaps the round in flight on the main stream
                staged_images = host_images.to(self.device, non_blocking=True)
                staged_labels = host_labels.to(self.device, non_blocking=True)
            main = torch.cuda.current_stream(self.device)
            main.wait_stream(self.stream)
            out_images.copy_(staged_images.view(out_images.shape))
            out_labels.copy_(staged_labels.view(out_labels.shape))
            staged_images.record_stream(main)  # freed for reuse only once the main stream has read them
            staged_labels.record_stream(main)
