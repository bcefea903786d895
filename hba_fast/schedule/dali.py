"""A `SchedulePolicy` as a piece of the user's own DALI pipeline: `policy.dali(images)`.

    @pipeline_def(batch_size=..., num_threads=..., device_id=..., enable_conditionals=True)
    def train_pipe():
        jpegs, labels = fn.readers.file(...)
        images = fn.decoders.image(jpegs, device="mixed")          # HWC uint8, CPU or GPU
        images = policy.dali(images)                               # the schedule's policy, per sample
        ...

Per sample, a `fn.external_source` callback draws the ops of the current epoch (`SchedulePolicy.draw`, the rule
of `hba_fast.augment.pba_draw`, from the policy's own generator) as op indices (2,) int32 and signed magnitudes (2,)
float32, -1 / 0 where fewer than two ops apply. The affine matrix of each position is built in the graph from
the op, the magnitude and the sample's own height and width (float64, the matrices of `dali_ops.affine_matrices`),
so images of any size work. Then `dali_ops.apply_op_by_index` applies each position with DALI conditionals.

The callback runs in the pipeline's Python thread and reads the policy's epoch when DALI asks for a sample:
DALI prefetches (`prefetch_queue_depth`, 2 by default), so the first batches after `set_epoch(e)` may still use
epoch e - 1's entry. Not for `parallel` external sources (their worker processes would not see set_epoch).
"""
from __future__ import annotations

import math

import numpy as np
import nvidia.dali.math as dmath
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline

from ..augment.dali_ops import apply_op_by_index
from ..augment.ops import OPS
from ..augment.policy import MAX_OPS
from ..errors import ConfigError

_F64 = types.FLOAT64


class _DrawSource:
    """Per-sample callback: the next image's ops (2,) int32 and signed magnitudes (2,) float32."""

    def __init__(self, policy):
        self.policy = policy

    def __call__(self, sample_info):
        ops = np.full(MAX_OPS, -1, np.int32)
        mags = np.zeros(MAX_OPS, np.float32)
        for pos, (op, m) in enumerate(self.policy.draw()):
            ops[pos], mags[pos] = op, m
        return ops, mags


def _is(op, indices: list[int]):
    """1.0 where the sample's op is one of `indices`, else 0.0 (float64 graph node)."""
    hit = None
    for k in indices:
        hit = (op == k) if hit is None else (hit | (op == k))
    return fn.cast(hit, dtype=_F64)


def affine_matrix(img, op, m):
    """The (2, 3) Pillow AFFINE matrix of op `op` (int32 scalar node) at signed magnitude m for each sample of
    `img`, built in the graph (identity for the non-affine ops; `OpSpec.affine` and kind rotate)."""
    shape = img.shape()
    h, w = fn.cast(shape[0], dtype=_F64), fn.cast(shape[1], dtype=_F64)
    m = fn.cast(m, dtype=_F64)
    rot = _is(op, [k for k, spec in enumerate(OPS) if spec.kind == "rotate"])
    angle = m * (-math.pi / 180.0)  # Image.rotate: counter-clockwise m degrees, as the inverse map's -m
    cos, sin = dmath.cos(angle), dmath.sin(angle)
    cx, cy = w * 0.5, h * 0.5
    keep = 1.0 - rot
    entries = [rot * cos + keep, rot * sin, rot * (cos * -cx + sin * -cy + cx),
               rot * (0.0 - sin), rot * cos + keep, rot * ((0.0 - sin) * -cx + cos * -cy + cy)]  # a .. f
    scales = {"1": 1.0, "width": w, "height": h}
    for k, spec in enumerate(OPS):
        if spec.affine is not None:  # entry = m * scale for this op's samples
            entry, scale = spec.affine
            entries[entry] = entries[entry] + _is(op, [k]) * m * scales[scale]
    matrix = fn.cast(fn.stack(*entries), dtype=types.FLOAT)  # (6,)
    return fn.reshape(matrix, shape=[2, 3])


def apply_schedule_policy(images, policy):
    """`policy.dali(images)`: see the module docstring."""
    pipe = Pipeline.current()
    if pipe is None:
        raise ConfigError("policy.dali(images) builds DALI graph nodes: call it inside a function decorated with "
                          "@nvidia.dali.pipeline_def (with enable_conditionals=True)")
    if not getattr(pipe, "_conditionals_enabled", False):
        raise ConfigError("policy.dali(images) applies a different op to each sample with DALI conditionals: "
                          "decorate the pipeline with @pipeline_def(..., enable_conditionals=True)")
    ops, mags = fn.external_source(source=_DrawSource(policy), batch=False, num_outputs=2,
                                   dtype=[types.INT32, types.FLOAT], ndim=[1, 1])
    for pos in range(MAX_OPS):
        op, m = ops[pos], mags[pos]
        images = apply_op_by_index(images, op, m, affine_matrix(images, op, m))
    return images
