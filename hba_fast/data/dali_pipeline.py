"""The NVIDIA DALI data pipeline: per-sample PBA policy with continuous magnitudes, then the dataset's recipe.

Graph of an augmented training batch (HWC uint8 until the final normalisation; "gpu"/"mixed" operators on a
CUDA device, the same graph with CPU operators otherwise):

    images: external_source (in-memory arrays)  |  readers.file -> decoders.image_random_crop -> resize
    draw:   external_source ops (P,), mags (P,), affine matrices (P, 2, 3), lam (54,) per sample (`draw_policy`,
            or a fixed policy's ready draw; P = 2, or more for RandAugment's N)
    for position in 0..P-1: img = OP[ops[position]](img, mags[position])       (DALI conditionals, dali_ops)
    recipe  the steps its `recipes.RECIPES` record turns on, in the torch path's order (`_recipe_tail`):
            random crop (crop_pad, zero fill), flip, colour jitter (jitter), PCA lighting (lighting_std),
            standardise (CHW float), Cutout (cutout_size, fill 0); e.g. cifar: crop, flip, standardise, Cutout;
            imagenet (random-resized-crop before the policy): flip, jitter, lighting, standardise
    outputs images (B, 3, H, W) float32, labels (B,) int64, lam (B, 54), ops (B, 2), mags (B, 2)

lam_i travels through the pipeline next to its image, so the batch hands the trainer exactly the lambda_i that
augmented each sample even though DALI prefetches (the sampler may be a few steps ahead of the trainer).
Clean batches (val/test) are only standardised (JPEG files: resize the shorter side to size/0.875, centre
crop). The training pipeline is built once (graph construction with 22 conditionals takes seconds) and streams
across epochs; data order and policy draws are seeded per (seed, rank, epoch, step), so a run resumed from
`state_dict()` gets the same images and, given the same probs/mags, the same draws for in-memory data (DALI's own
crop/flip/Cutout randomness restarts from the pipeline seed).

Exact resume, also inside an epoch (`state_dict`): the training stream is built with DALI's checkpointing on, and
the state holds DALI's own checkpoint of it (`Pipeline.checkpoint()`: its random operators' states and the file
reader's position, as of the last batch handed out; external sources are ours to position) and the policy draws
made ahead of the trainer: DALI calls the draw source up to its prefetch depth early, so the sampler's state is
already past them, and those draws (with the lambda_i current when they were made) are handed out first by the
rebuilt stream (`_PolicySource`). A stream rebuilt so gives the batches the uninterrupted one would have given, bit
for bit (tests/test_stop.py). A state without DALI's checkpoint (older ones) rebuilds from the seed: same data order
and policy draws for in-memory data, fresh DALI randomness; the file reader then drops the steps already done. The
JPEG validation stream skips the batches it had handed out.
"""
from __future__ import annotations

import logging
import math
import warnings
from functools import partial

import numpy as np
import nvidia.dali.math as dmath
import torch
from nvidia.dali import fn, pipeline_def, types

from ..augment.dali_ops import affine_matrices, apply_op_by_index, to_torch
from ..augment.space import SearchSpace
from ..errors import DataError
from .base import EMPTY_VAL, Batch, too_few_train_images
from .dali_readers import ArrayFeeder, FileFeeder, draw_policy, epoch_order, identity_draw, ready_draw, scan_jpegs
from .recipes import PCA_EIGVAL, PCA_EIGVEC, get_recipe, resolve_recipe

log = logging.getLogger(__name__)

LAM_DIM = SearchSpace.lam_dim  # 54
# PCA lighting's RGB offset per unit alpha, in pixels: eigvec[c][k] * eigval[k] * 255 (float32, as DALI adds it).
_PCA_RGB = np.array(PCA_EIGVEC, np.float32) * np.array(PCA_EIGVAL, np.float32)[None, :] * 255.0  # (3, 3)


def _scale255(v) -> list[float]:
    v = [float(x) for x in torch.as_tensor(v, dtype=torch.float64).reshape(-1)]
    assert len(v) == 3, f"mean/std must have 3 channels, got {v}"
    return [x * 255.0 for x in v] if max(v) <= 1.0 else v


def _cutout_fixed(x, side: int):
    """DeVries & Taylor Cutout on the standardised CHW image: a side x side square of zeros, random centre."""
    shape = x.shape()
    h, w = fn.cast(shape[1], dtype=types.FLOAT), fn.cast(shape[2], dtype=types.FLOAT)
    cy = dmath.min(dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * h), h - 1.0)  # a pixel, as recipes.cutout_fixed
    cx = dmath.min(dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * w), w - 1.0)
    anchor = fn.stack(cy - side // 2, cx - side // 2)
    return fn.erase(x, anchor=anchor, shape=[float(side), float(side)], axis_names="HW", fill_value=0.0)


def _standardise(img, mean, std, mirror=None, crop=None):
    kw = {"crop": crop} if crop else {}
    if mirror is not None:
        kw["mirror"] = mirror
    return fn.crop_mirror_normalize(img, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std, **kw)


def _recipe_tail(img, recipe: str, mean, std, device: str, cutout: bool):
    """Everything after the policy, as the record `recipes.RECIPES[recipe]` says, in `recipes.post_policy`'s
    order: (H, W, 3) uint8 -> (3, H, W) float32 standardised."""
    r = get_recipe(recipe)
    if r.crop_pad:
        hw = fn.cast(img.shape()[0:2], dtype=types.INT32)
        shift = fn.random.uniform(values=list(range(-r.crop_pad, r.crop_pad + 1)), shape=[2])
        img = fn.slice(img, fn.cast(shift, dtype=types.INT32), hw, axes=[0, 1], out_of_bounds_policy="pad",
                       fill_values=0)
    mirror = fn.random.coin_flip() if r.flip else None
    if mirror is not None and (r.jitter or r.lighting_std):  # before the colour steps; else CMN mirrors
        img, mirror = fn.flip(img, horizontal=mirror), None
    if r.jitter:
        lo, hi = max(0.0, 1 - r.jitter), 1 + r.jitter  # as recipes.color_jitter
        img = fn.color_twist(img, brightness=fn.random.uniform(range=[lo, hi]),
                             contrast=fn.random.uniform(range=[lo, hi]),
                             saturation=fn.random.uniform(range=[lo, hi]))
    if r.lighting_std:
        alpha = fn.random.normal(shape=[3]) * r.lighting_std  # (3,) per sample
        rgb = fn.reductions.sum(types.Constant(_PCA_RGB) * alpha, axes=[1])
        img = fn.cast(img, dtype=types.FLOAT) + (rgb.gpu() if device == "gpu" else rgb)
    out = _standardise(img, mean, std, mirror=mirror)
    return _cutout_fixed(out, r.cutout_size) if cutout and r.cutout_size else out


class DaliPipeline:
    """The Pipeline contract (docs/ARCHITECTURE.md) on NVIDIA DALI; see the module docstring for the graph."""

    def __init__(self, data_cfg, splits, sampler, device, shard: tuple[int, int] = (0, 1), seed: int = 0):
        self.cfg, self.splits, self.sampler = data_cfg, splits, sampler
        self.device = torch.device(device)
        self.dali_device = "gpu" if self.device.type == "cuda" else "cpu"
        self.device_id = (self.device.index if self.device.index is not None else torch.cuda.current_device()) \
            if self.dali_device == "gpu" else None
        self.rank, self.world = shard
        if not 0 <= self.rank < self.world:
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        self.batch_size, self.threads, self.seed = data_cfg.batch_size, data_cfg.num_threads, seed
        self.recipe = resolve_recipe(data_cfg)  # the torch path's rule, so both backends agree
        self.size = data_cfg.image_size
        self.mean, self.std = _scale255(splits.mean), _scale255(splits.std)
        self.cutout = getattr(data_cfg, "cutout", True)
        train_images = splits.train.images
        # The policy sees the stored size unless the recipe resizes first.
        in_place = not get_recipe(self.recipe).resized_crop and train_images is not None
        self.policy_hw = tuple(train_images.shape[2:]) if in_place else (self.size, self.size)
        self.num_corrupt = 0
        self.train_files = self._checked_files(splits.train) if splits.train.files is not None else None
        self._eval_files = {k: self._checked_files(getattr(splits, k)) for k in ("val", "test")
                            if getattr(splits, k).files is not None}  # checked now: `sizes` counts what is used
        n = len(self.train_files[0]) if self.train_files else len(splits.train.labels)
        self.steps_per_epoch = (n // self.world) // self.batch_size
        if self.steps_per_epoch < 1:
            raise DataError(too_few_train_images(n, self.batch_size, self.world))
        self.sizes = {"train": n, **{k: len(self._eval_files[k][0]) if k in self._eval_files else
                                     len(getattr(splits, k).labels) for k in ("val", "test")}}  # corrupt ones dropped
        self._train_pipe, self._epoch, self._step = None, 0, 0
        self._policy: _PolicySource | None = None  # the training stream's draw source
        self._restore: tuple[bytes, list] | None = None  # a loaded stream state, used at the next build
        # Whether the sampler hands back lambda_i (a SearchSampler does, a ScheduleSampler gives None): batches
        # carry lam only then (the pipeline itself always streams a (B, 54) lam, zeros without one).
        self._hands_lam = sampler is not None
        # Op positions in the graph: PBA's two, or more for a fixed policy that tries more (RandAugment's N).
        self.positions = max(2, getattr(sampler, "positions", 2))
        self._val_pipe, self._val_step = None, 0
        log.info("DALI pipeline: %s operators, recipe %s, shard %d/%d, %d steps/epoch", self.dali_device,
                 self.recipe, self.rank, self.world, self.steps_per_epoch)

    # ------------------------------------------------------------------ building blocks

    def _checked_files(self, image_set) -> tuple[list[str], np.ndarray]:
        files, labels, bad = scan_jpegs(image_set.files, image_set.labels.cpu().numpy(), self.cfg.on_corrupt,
                                        self.threads)
        if bad:
            self.num_corrupt += len(bad)
            log.warning("skipped %d of %d JPEG files as corrupted (data.on_corrupt=skip), e.g. %s; set "
                        "data.on_corrupt=error to stop at them instead", len(bad), len(image_set.files), bad[0])
        return files, labels

    def _policy_inputs(self, batch: int, seed: tuple, epoch: int):
        """The per-sample draw of one batch, from the sampler (or no op without one)."""
        if self.sampler is None:
            draw, lam = identity_draw(batch), np.zeros((batch, LAM_DIM), np.float32)
        else:
            sample = self.sampler.sample(batch, epoch, torch.device("cpu"))
            if sample.draw is not None:  # a fixed policy's ready draw (baselines.py), padded to the graph's positions
                draw = ready_draw(sample.draw, self.positions)
            else:
                draw = draw_policy(sample.probs.float().cpu().numpy(), sample.mags.float().cpu().numpy(), seed)
            self._hands_lam = sample.lam is not None
            lam = sample.lam.float().cpu().numpy() if self._hands_lam else np.zeros((batch, LAM_DIM), np.float32)
        matrices = affine_matrices(draw["ops"], draw["mags"], *self.policy_hw)  # (B, 2, 2, 3)
        return [list(draw["ops"]), list(draw["mags"]), list(matrices), list(lam)]

    def _build(self, graph, seed: int, **kw):
        with warnings.catch_warnings():  # checkpointing and our external sources: we position them ourselves
            warnings.filterwarnings("ignore", message="Checkpointing enabled in a pipeline with external source")
            pipe = pipeline_def(graph, batch_size=self.batch_size, num_threads=self.threads,
                                device_id=self.device_id, seed=seed, **kw)()
            pipe.build()
        return pipe

    def _train_graph(self, feeder, policy, files, seed: int):
        dev = self.dali_device

        def graph():
            if files is None:
                img, labels = fn.external_source(source=feeder, num_outputs=2, batch=True, layout=["HWC", ""],
                                                 dtype=[types.UINT8, types.INT64])
                if dev == "gpu":
                    img = img.gpu()
                if get_recipe(self.recipe).resized_crop:
                    img = fn.random_resized_crop(img, size=[self.size, self.size])
            else:
                jpegs, labels = fn.readers.file(files=files[0], labels=[int(v) for v in files[1]],
                                                shard_id=self.rank, num_shards=self.world, random_shuffle=True,
                                                initial_fill=1024, seed=seed, name="train_reader")
                labels = fn.cast(fn.reshape(labels, shape=[]), dtype=types.INT64)
                img = fn.decoders.image_random_crop(jpegs, device="mixed" if dev == "gpu" else "cpu",
                                                    output_type=types.RGB)
                img = fn.resize(img, size=[self.size, self.size])
            ops, mags, matrices, lam = fn.external_source(source=policy, num_outputs=4, batch=True,
                                                          dtype=[types.INT32, types.FLOAT, types.FLOAT, types.FLOAT])
            for pos in range(self.positions):
                img = apply_op_by_index(img, ops[pos], mags[pos], matrices[pos])
            out = _recipe_tail(img, self.recipe, self.mean, self.std, dev, self.cutout)
            return out, labels, lam, ops, mags

        return graph

    def _clean_graph(self, feeder, files: bool):
        dev = self.dali_device

        def graph():
            data, labels = fn.external_source(source=feeder, num_outputs=2, batch=True,
                                              dtype=[types.UINT8, types.INT64])
            if files:
                img = fn.decoders.image(data, device="mixed" if dev == "gpu" else "cpu", output_type=types.RGB)
                img = fn.resize(img, resize_shorter=round(self.size / 0.875))
                return _standardise(img, self.mean, self.std, crop=[self.size, self.size]), labels
            img = fn.reshape(data, layout="HWC")
            img = img.gpu() if dev == "gpu" else img
            return _standardise(img, self.mean, self.std), labels

        return graph

    def _to_batch(self, outs, with_lam: bool) -> Batch:
        images = to_torch(outs[0], self.device)
        labels = to_torch(outs[1], self.device).reshape(-1).long()
        lam = to_torch(outs[2], self.device) if with_lam else None
        return Batch(images, labels, lam)

    # ------------------------------------------------------------------ the Pipeline contract

    def _make_train_pipe(self, epoch: int, start: int, checkpoint: bytes | None = None, pending: list | None = None):
        """The training stream from (epoch, step start) on, running on across epochs (built once: it takes seconds);
        `checkpoint`: DALI's own state of a stream that stood there (its random operators and file reader), `pending`:
        the draws that stream had made ahead (module docstring)."""
        seed = (self.seed * 1000003 + epoch * 101 + self.rank) % (2**31)
        spe = self.steps_per_epoch
        policy = _PolicySource(self._policy_inputs, self.batch_size, (self.seed, self.rank), spe, epoch * spe + start,
                               pending or [])
        self._policy = policy
        if self.train_files is None:
            train = self.splits.train
            order = partial(epoch_order, len(train.labels), self.seed, rank=self.rank, world=self.world)
            feeder = ArrayFeeder(train.images, train.labels, order, self.batch_size, None, start=epoch * spe + start)
            files = None
        else:
            feeder, files = None, self.train_files
        restore = {"checkpoint": checkpoint} if checkpoint is not None else {}
        return self._build(self._train_graph(feeder, policy, files, seed), seed, enable_conditionals=True,
                           enable_checkpointing=True, **restore)

    def train_epoch(self, epoch: int):
        """Yield `steps_per_epoch` augmented batches of this shard for `epoch`, from where the pipeline stands."""
        start = self._step if epoch == self._epoch else 0
        spe = self.steps_per_epoch
        if self._train_pipe is None or (epoch, start) != (self._epoch, self._step):
            restore = self._restore if (epoch, start) == (self._epoch, self._step) else None
            self._train_pipe = self._restore = None  # free the old stream before building the new one
            if restore is None and self.train_files is not None:
                self._train_pipe = self._make_train_pipe(epoch, 0)
                for step in range(start):  # the file reader cannot seek: drop the steps already done
                    self._train_pipe.run()
                    self._policy.consumed(epoch * spe + step + 1)
            else:
                self._train_pipe = self._make_train_pipe(epoch, start, *(restore or ()))
        self._epoch, self._step = epoch, start
        for step in range(start, spe):
            outs = self._train_pipe.run()
            # The position moves on before the yield: a consumer that stops after the last batch (islice) leaves
            # the stream at (epoch + 1, 0), so the next epoch continues it instead of rebuilding the pipeline.
            last = step + 1 == spe
            self._epoch, self._step = (epoch + 1, 0) if last else (epoch, step + 1)
            self._policy.consumed(epoch * spe + step + 1)
            yield self._to_batch(outs, self._hands_lam)

    def _eval_source(self, split: str, cycle: bool, start: int = 0):
        image_set = getattr(self.splits, split)
        if image_set.files is not None:
            if split not in self._eval_files:
                self._eval_files[split] = self._checked_files(image_set)
            files, labels = self._eval_files[split]
            files, labels = files[self.rank::self.world], labels[self.rank::self.world]
            if cycle:
                raise AssertionError("cycling over files uses _CyclingFiles")
            return FileFeeder(files, labels, self.batch_size), True
        n = len(image_set.labels)
        if cycle:
            order = lambda p: epoch_order(n, self.seed + 1, p, self.rank, self.world)
            return ArrayFeeder(image_set.images, image_set.labels, order, self.batch_size, None, start=start), False
        mine = np.arange(n)[self.rank::self.world]
        batches = math.ceil(len(mine) / self.batch_size)
        return ArrayFeeder(image_set.images, image_set.labels, lambda p: mine, self.batch_size, batches), False

    def eval_batches(self, split: str):
        """One clean pass over this shard of "val" or "test" (the last batch may be short)."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        feeder, files = self._eval_source(split, cycle=False)
        yield from _run_all(self._build(self._clean_graph(feeder, files), self.seed + 7), self)

    def val_batch(self) -> Batch:
        """The next clean validation batch (cycles forever, reshuffled each pass)."""
        if self._val_pipe is None:
            if len(self.splits.val.labels) == 0:
                raise DataError(EMPTY_VAL)
            if self.splits.val.files is not None:
                self._val_pipe = _CyclingFiles(self, skip=self._val_step)
            else:
                feeder, _ = self._eval_source("val", cycle=True, start=self._val_step)
                self._val_pipe = self._build(self._clean_graph(feeder, False), self.seed + 11)
        self._val_step += 1
        if isinstance(self._val_pipe, _CyclingFiles):
            return self._val_pipe.next()
        return self._to_batch(self._val_pipe.run(), False)

    def state_dict(self) -> dict:
        """The position, the sampler's state, and for an exact continuation the training stream's own: DALI's
        checkpoint of it (bytes) and the draws it made ahead (module docstring). Plain data and tensors only."""
        if self._train_pipe is not None:
            stream, pending = self._train_pipe.checkpoint(), self._policy.pending()
        else:  # not built since a load: hand the loaded stream state on
            stream, pending = self._restore or (None, [])
        return {"epoch": self._epoch, "step": self._step, "val_step": self._val_step, "seed": self.seed,
                "num_corrupt": self.num_corrupt, "hands_lam": self._hands_lam,
                "stream": None if stream is None else bytes(stream), "pending": pending,
                "sampler": None if self.sampler is None else self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._epoch, self._step, self._val_step = state["epoch"], state["step"], state["val_step"]
        self.seed = state.get("seed", self.seed)
        self._hands_lam = state.get("hands_lam", self._hands_lam)
        self._train_pipe = self._val_pipe = None
        # the stream is rebuilt from DALI's checkpoint at the next train_epoch (older states: from its seed)
        self._restore = (state["stream"], state["pending"]) if state.get("stream") is not None else None
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])


class _PolicySource:
    """Batch callback for the draw inputs (ops, mags, matrices, lam) of training step g = epoch * spe + step,
    seeded by (seed, rank, epoch, step). DALI calls it up to its prefetch depth ahead of the batches handed out: the
    draws made but not consumed yet are kept (`pending`), so that a stream rebuilt from a checkpoint hands out those
    very draws first (the sampler's state is already past them) and then continues exactly as this one would."""

    KEYS = ("ops", "mags", "matrices", "lam")  # the four per-sample inputs, (B, P), (B, P), (B, P, 2, 3), (B, 54)

    def __init__(self, policy, batch_size: int, seed: tuple, steps_per_epoch: int, start: int,
                 pending: list[dict] = ()):
        self.policy, self.batch_size, self.seed, self.spe, self.g = policy, batch_size, seed, steps_per_epoch, start
        self._replay = [[list(entry[k].numpy()) for k in self.KEYS] for entry in pending]
        self._made: dict[int, list] = {}  # step g -> its inputs, made and not consumed yet

    def __call__(self):
        epoch, step = divmod(self.g, self.spe)
        inputs = self._replay.pop(0) if self._replay else \
            self.policy(self.batch_size, self.seed + (epoch, step), epoch=epoch)
        self._made[self.g] = inputs
        self.g += 1
        return inputs

    def consumed(self, steps: int) -> None:
        """The batches of steps < `steps` are handed out: their draws are history."""
        for g in [g for g in self._made if g < steps]:
            del self._made[g]

    def pending(self) -> list[dict]:
        """The draws made ahead, in order, as tensors (a checkpoint holds plain data and tensors only)."""
        return [{k: torch.from_numpy(np.stack(inputs[i])) for i, k in enumerate(self.KEYS)}
                for _, inputs in sorted(self._made.items())] + \
            [{k: torch.from_numpy(np.stack(inputs[i])) for i, k in enumerate(self.KEYS)} for inputs in self._replay]


class _CyclingFiles:
    """val_batch() over JPEG files: one-pass clean pipelines, rebuilt (reshuffled) at the end of each pass."""

    def __init__(self, owner: DaliPipeline, skip: int = 0):
        self.owner, self.passes, self.it = owner, 0, None
        for _ in range(skip):  # a resumed pipeline: the batches the checkpointed one had handed out
            self.next()

    def next(self) -> Batch:
        o = self.owner
        for _ in range(2):
            if self.it is None:
                files, labels = o._eval_files.get("val") or o._checked_files(o.splits.val)
                o._eval_files["val"] = (files, labels)
                order = epoch_order(len(files), o.seed + 1, self.passes, o.rank, o.world)
                order = order[: max(o.batch_size, len(order) // o.batch_size * o.batch_size)]
                feeder = FileFeeder([files[i] for i in order], labels[order], o.batch_size)
                self.it = iter(_run_all(o._build(o._clean_graph(feeder, True), o.seed + 13 + self.passes), o))
                self.passes += 1
            try:
                return next(self.it)
            except StopIteration:
                self.it = None
        raise DataError(EMPTY_VAL)


def _run_all(pipe, owner: DaliPipeline):
    """Every clean batch of a one-pass DALI pipeline, until it raises StopIteration."""
    while True:
        try:
            outs = pipe.run()
        except StopIteration:
            return
        yield owner._to_batch(outs, False)
