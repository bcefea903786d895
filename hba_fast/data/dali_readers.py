"""What the DALI pipelines read: batch feeders for `fn.external_source`, the policy draw, and the JPEG pre-scan.

- `ArrayFeeder`: in-memory uint8 images (N, 3, H, W) (CIFAR, SVHN, npz, shapes10) handed to DALI as HWC
  batches, in a per-epoch permutation shared by all ranks and split rank::world (sharding), or in order for an
  evaluation pass (the last batch may be short).
- `FileFeeder`: the same for JPEG files (encoded bytes, decoded in the pipeline), used for clean passes, which
  must see every file exactly once; augmented training on files goes through `fn.readers.file`.
- `draw_policy`: PBA's per-image sampling (SPEC section 3; `hba_fast.augment.policy.sample_policy`) from per-sample
  probs/mags (B, 30), on the host, as numpy: ops (B, 2) int32 (op index or -1), mags (B, 2) float32 signed,
  slots (B, 2) int32, k (B,).
- `scan_jpegs`: corrupted files are found before DALI sees them (a decoder error inside DALI stops the whole
  pipeline and cannot be skipped per sample): a file must start with the JPEG SOI marker (FF D8), end with EOI
  (FF D9, trailing zero padding allowed) and parse as an image header in Pillow. `on_corrupt="skip"` drops and
  counts them; `"error"` raises `CorruptImageError` naming the first bad file.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..errors import CorruptImageError, DataError


def draw_policy(probs: np.ndarray, mags: np.ndarray, seed: int | Sequence[int]) -> dict[str, np.ndarray]:
    """PBA's draw for a batch, as numpy arrays for `external_source`: probs, mags (B, 30) -> {ops, mags, slots (B, 2),
    k (B,)}. The one implementation of the sampling is `hba_fast.augment.policy.sample_policy`; this runs it on the CPU
    with a generator seeded by `seed` (an int or a tuple such as (seed, rank, epoch, step))."""
    from ..augment.policy import sample_policy

    g = torch.Generator().manual_seed(int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0] % 2**63))
    d = sample_policy(torch.from_numpy(probs), torch.from_numpy(mags), generator=g)
    return {"ops": d.ops.numpy().astype(np.int32), "mags": d.mags.numpy().astype(np.float32),
            "slots": d.slots.numpy().astype(np.int32), "k": d.k.numpy().astype(np.int32)}


def ready_draw(draw, positions: int) -> dict[str, np.ndarray]:
    """A fixed policy's `PolicyDraw` (hba_fast.augment.baselines) as `draw_policy`'s arrays, padded with no-op positions
    (-1 / 0) to `positions` columns."""
    ops, mags = draw.ops.cpu().numpy().astype(np.int32), draw.mags.cpu().numpy().astype(np.float32)
    b, p = ops.shape
    assert p <= positions, f"the draw has {p} positions, the DALI graph {positions}"
    pad = positions - p
    ops = np.concatenate([ops, np.full((b, pad), -1, np.int32)], 1)
    mags = np.concatenate([mags, np.zeros((b, pad), np.float32)], 1)
    return {"ops": ops, "mags": mags, "slots": np.full((b, positions), -1, np.int32),
            "k": (ops >= 0).sum(1).astype(np.int32)}


def identity_draw(batch: int) -> dict[str, np.ndarray]:
    """The draw of a run without a policy: no op anywhere."""
    return {"ops": np.full((batch, 2), -1, np.int32), "mags": np.zeros((batch, 2), np.float32),
            "slots": np.full((batch, 2), -1, np.int32), "k": np.zeros(batch, np.int32)}


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's sample order for an epoch: one permutation of all n shared by the ranks, split rank::world.

    Every rank gets n // world indices, so all ranks run the same number of steps.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[rank::world][: n // world]


class ArrayFeeder:
    """Batch callback for `fn.external_source(num_outputs=...)` over in-memory images.

    `__call__` returns [images (list of HWC uint8), labels (list of int64 scalars)]. With `batches=None` it
    cycles forever (reshuffling each pass); otherwise it raises StopIteration after them.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, order_fn, batch_size: int,
                 batches: int | None, start: int = 0):
        self.hwc = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (N, H, W, 3): DALI's layout
        self.labels = labels.cpu().numpy().astype(np.int64)
        self.order_fn, self.batch_size, self.batches = order_fn, batch_size, batches
        self.step = start  # batches produced so far (runs ahead of consumption by the prefetch depth)
        self._pass, self._order = -1, None
        self._per_pass: int | None = None  # full batches per pass (cycling), measured once

    def _indices(self, step: int) -> np.ndarray:
        if self.batches is None:  # cycle: pass p covers steps [p * per_pass, (p + 1) * per_pass)
            if self._per_pass is None:  # every pass has the same length; don't redraw a permutation per batch
                self._per_pass = max(1, len(self.order_fn(0)) // self.batch_size)
            p, step = divmod(step, self._per_pass)
        else:
            p = 0
        if p != self._pass:
            self._pass, self._order = p, self.order_fn(p)
        return self._order[step * self.batch_size:(step + 1) * self.batch_size]

    def __call__(self):
        if self.batches is not None and self.step >= self.batches:
            raise StopIteration
        idx = self._indices(self.step)
        self.step += 1
        return [list(self.hwc[idx]), list(self.labels[idx])]


class FileFeeder:
    """Like `ArrayFeeder` for JPEG files: [encoded bytes (list of uint8 1-D), labels], one pass in order."""

    def __init__(self, files: Sequence[str], labels: np.ndarray, batch_size: int):
        self.files, self.labels, self.batch_size = list(files), np.asarray(labels, np.int64), batch_size
        self.pos = 0

    def __call__(self):
        if self.pos >= len(self.files):
            raise StopIteration
        sl = slice(self.pos, self.pos + self.batch_size)
        self.pos += self.batch_size
        return [[np.fromfile(f, dtype=np.uint8) for f in self.files[sl]], list(self.labels[sl])]


def _jpeg_ok(path: str) -> bool:
    from PIL import Image

    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64))
            tail = f.read().rstrip(b"\x00")
        if head != b"\xff\xd8" or not tail.endswith(b"\xff\xd9"):
            return False
        with Image.open(path) as im:  # parses the headers only: SOF, size, mode
            return im.format == "JPEG" and im.width > 0 and im.height > 0
    except (OSError, ValueError, SyntaxError):
        return False


def scan_jpegs(files: Sequence[str], labels: np.ndarray, on_corrupt: str, threads: int = 8
               ) -> tuple[list[str], np.ndarray, list[str]]:
    """Check every file (see module docstring); returns (good files, their labels, bad files)."""
    if on_corrupt not in ("skip", "error"):
        raise DataError(f"data.on_corrupt must be 'skip' or 'error', got {on_corrupt!r}; set data.on_corrupt=skip "
                        f"to skip and count undecodable files, or error to stop at the first")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        ok = np.fromiter(pool.map(_jpeg_ok, files), dtype=bool, count=len(files))
    bad = [f for f, good in zip(files, ok) if not good]
    if bad and on_corrupt == "error":
        raise CorruptImageError(
            f"corrupted or undecodable JPEG: {bad[0]} ({len(bad)} bad file(s) in all); remove it, or set "
            f"data.on_corrupt=skip to skip and count such files")
    good = [f for f, g in zip(files, ok) if g]
    return good, np.asarray(labels)[ok], bad
