"""The pure-torch batched data pipeline: uint8 images in memory (on the GPU when they fit), per-sample policy
(`hba_fast.augment.policy.apply_policy`) and the dataset's recipe (`recipes.py`), all as batched tensor ops.

Contract (docs/ARCHITECTURE.md, "Pipelines"): `steps_per_epoch`, `train_epoch(epoch)`, `val_batch()`,
`eval_batches(split)`, `state_dict()` / `load_state_dict()`; every batch is `Batch(images float32 (B, 3, H, W)
standardised on device, labels int64 (B,), lam (B, 54) | None)`.

Indices. Epoch e shuffles the training split with a generator seeded by (seed, e), identical on every rank;
with `world` processes the first steps * B * world indices are dealt out as perm.view(steps, world, B)[:, rank]
(disjoint shards, the same number of steps per rank, the remainder dropped). The validation split is an endless
stream of shuffled passes (a rank-specific generator), cut into full batches of B. `eval_batches` walks
images rank::world in order, last batch partial (ranks may get one batch fewer: reduce sums, not per batch).

Randomness. Augmentation draws come from one generator on the device, seeded by (seed, rank); the policy
sampler owns its own. `seed` defaults to a mix of data_cfg.split_seed and torch.initial_seed(), so a run
seeded with torch.manual_seed(run seed) reproduces. Permutations are drawn on the host (the same on every rank
and whatever the storage), once per epoch or validation pass, and copied to the device from pinned memory without
blocking; every other random draw is a device op.

Two ways out, one set of batches. The iterators (`train_epoch`, `val_batch`) serve the Pipeline contract; the
trainer's rounds use `round_feed(t_train, t_val, static)` (`TorchRoundFeed`, the RoundFeed of round_feed.py): indices
copied into static device buffers between rounds, then gather, policy and recipe inside the round. The policy is
applied in the form `data.policy_form` names (`augment.policy.static_form`; auto: static on CUDA, indexed on the
CPU), and always in the static form in a round that is captured or capture-ready (train.graphs): the static form
makes no host syncs, the indexed form a few per op and position (each op runs only on the images that drew it,
which needs the drawn ops on the host). Both forms give identical images and draw the same random numbers in the
same order, so both ways out give the same batches. Arrays kept on the CPU (not device_resident) are gathered on
the host: per batch for the iterators, per round into pinned memory with a side-stream copy for the feed
(`round_feed.HostStager`).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..augment.policy import apply_draw, apply_policy, static_form
from ..errors import DataError
from . import recipes
from .base import EMPTY_VAL, Batch, too_few_train_images
from .datasets import ImageSet, Splits, with_images
from .round_feed import HostStager


def _mix(*parts: int) -> int:
    """A 63-bit seed from several integers (independent streams for different purposes)."""
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1, np.uint64)[0] % 2**63)


class TorchPipeline:
    """The Pipeline contract in pure torch (module docstring). `seed` overrides the default seed mix."""

    def __init__(self, data_cfg, splits: Splits, sampler, device: torch.device | str,
                 shard: tuple[int, int] = (0, 1), seed: int | None = None):
        rank, world = shard
        if not (world >= 1 and 0 <= rank < world):
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        self.device = torch.device(device)
        self.rank, self.world = rank, world
        self.batch_size = int(data_cfg.batch_size)
        self.sampler = sampler
        self.recipe = recipes.resolve_recipe(data_cfg)
        self.cutout = bool(getattr(data_cfg, "cutout", True))
        self.static_policy = static_form(getattr(data_cfg, "policy_form", "auto"), self.device)
        if any(getattr(splits, k).images is None for k in ("train", "val", "test")):
            splits = with_images(splits, data_cfg.image_size, data_cfg.on_corrupt, data_cfg.num_threads)
        self._store = self.device if self._fits_on_device(data_cfg, splits) else torch.device("cpu")
        self._sets = {k: self._put(getattr(splits, k)) for k in ("train", "val", "test")}
        self.sizes = {k: len(v[1]) for k, v in self._sets.items()}  # images per split, undecodable ones dropped
        self.mean = torch.tensor(splits.mean, dtype=torch.float32, device=self.device)  # (3,)
        self.std = torch.tensor(splits.std, dtype=torch.float32, device=self.device)
        n_train = len(self._sets["train"][1])
        self.steps_per_epoch = n_train // (self.batch_size * world)
        if self.steps_per_epoch == 0:
            raise DataError(too_few_train_images(n_train, self.batch_size, world))
        self.seed = _mix(data_cfg.split_seed, torch.initial_seed()) if seed is None else int(seed)
        self._aug_gen = torch.Generator(device=self.device).manual_seed(_mix(self.seed, rank, 1))
        self._val_gen = torch.Generator().manual_seed(_mix(self.seed, rank, 2))
        self._val_perm: torch.Tensor | None = None  # the current validation pass, on the CPU
        self._val_perm_store: torch.Tensor | None = None  # the same on the store (copied once per pass)
        self._val_pos = 0
        self.epoch, self.step = 0, 0  # position in training: the next batch is step `step` of epoch `epoch`

    def _fits_on_device(self, data_cfg, splits: Splits) -> bool:
        """Keep the uint8 arrays on the GPU when asked and they take at most half of its free memory."""
        if not (data_cfg.device_resident and self.device.type == "cuda"):
            return False
        need = sum(getattr(splits, k).images.numel() for k in ("train", "val", "test"))
        free, _ = torch.cuda.mem_get_info(self.device)
        return need <= free // 2

    def _put(self, split: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        assert split.images is not None
        return split.images.to(self._store), split.labels.to(self._store)

    def _to_store(self, t: torch.Tensor) -> torch.Tensor:
        """A CPU tensor on the store; on CUDA from pinned memory without blocking (no host sync)."""
        if self._store.type == "cuda":
            return t.pin_memory().to(self._store, non_blocking=True)
        return t.to(self._store)

    def _fetch(self, split: str, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """images uint8 (B, 3, H, W), labels (B,) on the device for indices idx (a tensor on the store, or a slice)."""
        images, labels = self._sets[split]
        return images[idx].to(self.device, non_blocking=True), labels[idx].to(self.device, non_blocking=True)

    # ---- training ----

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """long (steps_per_epoch, B): this rank's training indices for `epoch`, on the CPU."""
        n = len(self._sets["train"][1])
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(self.seed, epoch, 3)))
        used = self.steps_per_epoch * self.batch_size * self.world
        return perm[:used].view(self.steps_per_epoch, self.world, self.batch_size)[:, self.rank]

    def augment(self, images: torch.Tensor, epoch: int,
                static: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (B, 3, H, W) on the device -> (float32 standardised (B, 3, H, W), lam_i (B, 54) | None);
        `static`: the policy's static form (no host syncs), or the indexed one; None: as data.policy_form says."""
        g = self._aug_gen
        images = recipes.pre_policy(self.recipe, images, g)
        lam = None
        if self.sampler is not None:
            sample = self.sampler.sample(images.shape[0], epoch, self.device)
            static = self.static_policy if static is None else static
            if sample.draw is not None:  # a fixed policy's ready draw (baselines.py)
                images = apply_draw(images, sample.draw, static=static, generator=g)
            elif sample.probs is None:  # a regularisation space (augment/spaces.py): the model applies lambda_i
                pass
            else:
                images = apply_policy(images, sample.probs, sample.mags, generator=g, static=static)
            lam = sample.lam
        return recipes.post_policy(self.recipe, images, self.mean, self.std, g, self.cutout), lam

    def train_epoch(self, epoch: int, start_step: int | None = None) -> Iterator[Batch]:
        """Augmented training batches of `epoch`, from step `start_step` to the end. By default an epoch starts
        where the pipeline stands (`state_dict()`'s position after a mid-epoch resume), else at step 0."""
        if start_step is None:
            start_step = self.step if epoch == self.epoch else 0
        table = self._to_store(self.epoch_indices(epoch))  # one transfer per epoch
        for step in range(start_step, self.steps_per_epoch):
            images, labels = self._fetch("train", table[step])
            x, lam = self.augment(images, epoch)
            self.epoch, self.step = (epoch, step + 1) if step + 1 < self.steps_per_epoch else (epoch + 1, 0)
            yield Batch(x, labels, lam)

    # ---- validation and evaluation ----

    def clean(self, images: torch.Tensor) -> torch.Tensor:
        """A clean batch: uint8 (B, 3, H, W) -> standardised float32 (images are stored at the training size)."""
        return recipes.standardise(images, self.mean, self.std)

    def val_indices(self, count: int) -> torch.Tensor:
        """long (count,) on the store: the next `count` positions of the endless stream of shuffled validation
        passes (a pass is drawn on the host and copied to the store once)."""
        n = len(self._sets["val"][1])
        if n == 0:
            raise DataError(EMPTY_VAL)
        parts = []
        while count:
            if self._val_perm is None or self._val_pos == n:
                self._val_perm, self._val_pos = torch.randperm(n, generator=self._val_gen), 0
                self._val_perm_store = None
            if self._val_perm_store is None:
                self._val_perm_store = self._to_store(self._val_perm)
            take = min(count, n - self._val_pos)
            parts.append(self._val_perm_store[self._val_pos:self._val_pos + take])
            self._val_pos += take
            count -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def val_batch(self) -> Batch:
        """The next clean validation batch of B images from an endless stream of shuffled passes."""
        images, labels = self._fetch("val", self.val_indices(self.batch_size))
        return Batch(self.clean(images), labels, None)

    def round_feed(self, t_train: int, t_val: int, capture_ready: bool = True) -> TorchRoundFeed:
        """The trainer's RoundFeed over this pipeline (module docstring; round_feed.py)."""
        return TorchRoundFeed(self, t_train, t_val, capture_ready)

    def eval_batches(self, split: str = "test") -> Iterator[Batch]:
        """One clean pass over this rank's share (rank::world) of 'val' or 'test'; the last batch may be short."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        images, labels = self._sets[split]
        images, labels = images[self.rank::self.world], labels[self.rank::self.world]
        for start in range(0, len(labels), self.batch_size):
            sl = slice(start, start + self.batch_size)
            yield Batch(self.clean(images[sl].to(self.device, non_blocking=True)),
                        labels[sl].to(self.device, non_blocking=True), None)

    # ---- resume ----

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed,
                "aug_generator": self._aug_gen.get_state(), "val_generator": self._val_gen.get_state(),
                "val_perm": self._val_perm, "val_pos": self._val_pos,
                "sampler": None if self.sampler is None else self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step, self.seed = int(state["epoch"]), int(state["step"]), int(state["seed"])
        self._aug_gen.set_state(state["aug_generator"].cpu())
        self._val_gen.set_state(state["val_generator"].cpu())
        self._val_perm = None if state["val_perm"] is None else state["val_perm"].cpu()
        self._val_perm_store = None
        self._val_pos = int(state["val_pos"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])


class TorchRoundFeed:
    """TorchPipeline's batches for the trainer's rounds (round_feed.RoundFeed): the same batches as its iterators.

    Static buffers: the round's training and validation indices, long (t_train, B) and (t_val, B) on the device
    (device-resident arrays), or the rows themselves, staged from the host (`HostStager`). `prepare` advances the
    pipeline's position (its `state_dict` stays the one source of truth for resume)."""

    def __init__(self, pipe: TorchPipeline, t_train: int, t_val: int, capture_ready: bool = True):
        self.pipe = pipe
        self.static = True if capture_ready else None  # the policy's form: static, or data.policy_form's choice
        b = pipe.batch_size
        self.train_idx: torch.Tensor | None = None  # static (t_train, B) on the device, with device-resident arrays
        self.val_idx: torch.Tensor | None = None  # static (t_val, B)
        self.stager = None
        if pipe._store != pipe.device:  # arrays on the host: rows go over per round, not indices
            self.stager = HostStager({k: pipe._sets[k] for k in ("train", "val")}, {"train": t_train, "val": t_val},
                                     b, pipe.device)
        else:
            self.train_idx = torch.zeros((t_train, b), dtype=torch.long, device=pipe.device)
            self.val_idx = torch.zeros((t_val, b), dtype=torch.long, device=pipe.device)
        self._table: torch.Tensor | None = None  # (steps, B) this epoch's indices on the store
        self._epoch, self._pos = 0, 0

    def generators(self) -> list[torch.Generator]:
        sampler = self.pipe.sampler
        return [self.pipe._aug_gen] + (sampler.generators(self.pipe.device) if sampler is not None else [])

    def start_epoch(self, epoch: int) -> None:
        p = self.pipe
        self._epoch, self._pos = epoch, (p.step if epoch == p.epoch else 0)
        table = p.epoch_indices(epoch)
        self._table = table if self.stager is not None else p._to_store(table)
        if p.sampler is not None:
            p.sampler.set_epoch(epoch, p.device)  # the schedule entry lands in its static buffer here, not in a round

    def prepare(self, n_train: int, n_val: int) -> None:
        p = self.pipe
        assert self._table is not None and self._pos + n_train <= p.steps_per_epoch, "start_epoch first"
        rows = self._table[self._pos:self._pos + n_train]  # (n_train, B)
        self._pos += n_train
        p.epoch, p.step = (self._epoch, self._pos) if self._pos < p.steps_per_epoch else (self._epoch + 1, 0)
        val = p.val_indices(n_val * p.batch_size).view(n_val, p.batch_size) if n_val else None  # (n_val, B)
        if self.stager is not None:
            self.stager.stage({"train": rows, **({"val": val} if val is not None else {})})
            return
        self.train_idx[:n_train].copy_(rows, non_blocking=True)
        if val is not None:
            self.val_idx[:n_val].copy_(val, non_blocking=True)

    def _rows(self, split: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stager is not None:
            return self.stager.images[split][k], self.stager.labels[split][k]
        images, labels = self.pipe._sets[split]
        idx = (self.train_idx if split == "train" else self.val_idx)[k]  # (B,) on the device
        return images.index_select(0, idx), labels.index_select(0, idx)

    def train_batch(self, k: int) -> Batch:
        images, labels = self._rows("train", k)
        x, lam = self.pipe.augment(images, self._epoch, static=self.static)
        return Batch(x, labels, lam)

    def val_batch(self, j: int) -> Batch:
        images, labels = self._rows("val", j)
        return Batch(self.pipe.clean(images), labels, None)
