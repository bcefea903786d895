"""One op per image, any mix of the 15 ops, in a fixed set of batched passes: the policy's static form.

`apply_mixed(images, params, centres)` gives every image i the result of its drawn op at its magnitude (op -1: the
image unchanged), bit for bit what `ops.apply_op` gives for that image alone (and so what Pillow gives),
but its work and its shapes do not depend on which ops were drawn: no data-dependent shapes, no host syncs, no
Python branch on a tensor value, so it runs inside a CUDA graph. The 15 ops fall into four stages; every stage is
the identity for the images whose op is not in it, so the stages are simply applied one after the other:

  1. affine   the five geometric ops are one AFFINE + NEAREST gather (`ops.affine_nearest`) with per-image
              coefficients (B, 6): the drawn op's Pillow data, the identity (1, 0, 0, 0, 1, 0) for every other
              image (sampled exactly: b = d = 0 takes Pillow's ImagingScaleAffine path, floor(x + 1/2) = x).
  2. tables   AutoContrast, Invert, Equalize, Solarize, Posterize are per-image, per-channel 256-entry tables
              (B, 3, 256), from each image's histogram / lowest / highest values and its magnitude; the identity
              table for the other images; then one gather.
  3. blend    Contrast, Color, Brightness, Sharpness are Image.blend(degenerate, img, f) = uint8(clip(deg + f *
              (img - deg))) in float32 (`ops.blend`): one blend with a per-image degenerate image (its grey level,
              its luma, black, its SMOOTH filtering) and factor; f = 1 and deg = 0 for every other image, which
              returns it exactly (integers below 2^24: every float32 step is exact). The degenerate images are made
              from stage 2's input, which equals its output for these images.
  4. cutout   the square of side round(m * min(H, W)) for Cutout's images, side 0 (nothing) for the others.

What each image's op does in each stage depends only on the draw (op, magnitude), not on the image: `mixed_params`
turns a draw of any shape, e.g. both positions (2, B) at once, into `MixedParams` (per image: AFFINE data, table
kind and argument, degenerate kind, blend factor, Cutout side), made once per batch; `MixedParams.at(pos)` is one
position. The image-dependent parts (histograms, lowest / highest values, luma, SMOOTH) are computed for every
image in every call.

Two implementations of the passes, identical results (tests/test_mixed_ops.py): `impl="torch"`, batched torch ops
(any device; about 180 operator calls per position, each a kernel launch on a GPU) and `impl="triton"`, three
fused kernels per position (`static_triton.py`: statistics, tables, one pixel pass). "auto": Triton on CUDA
when triton is installed, torch elsewhere. Do not hand the torch passes to torch.compile: a fused kernel may contract
the blend's multiply and add into one FMA, which rounds differently from Pillow's two float32 operations (the
Triton kernels are compiled with `enable_fp_fusion=False` for that reason).

Compare `hba_fast.augment.policy`'s indexed form, which runs each drawn op on its own images (fewer pixels touched, but
data-dependent shapes and host syncs). References: SPEC 3 (the ops), `hba_fast/augment/ops.py` (each op's Pillow
arithmetic), Pillow src/libImaging.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch

from ..kernels.triton_support import use_triton
from .ops import (
    CUTOUT_FILL,
    FILL,
    OPS,
    affine_nearest,
    auto_contrast_lut,
    blend,
    cutout,
    cutout_size,
    equalize_lut,
    grey_level,
    luma,
    rotate_coeffs,
    smooth,
)

# The stage of each op and its constants come from the op table (OpSpec.kind: affine | rotate -> stage 1, table ->
# stage 2 with OpSpec.table, blend -> stage 3 with OpSpec.degenerate, cutout -> stage 4).
_ROTATE = [k for k, op in enumerate(OPS) if op.kind == "rotate"]
_ROUNDED = [k for k, op in enumerate(OPS) if op.rounds]  # magnitudes used as whole numbers (Posterize's bits)
_CUTOUT = [k for k, op in enumerate(OPS) if op.kind == "cutout"]
assert len(_ROTATE) == len(_CUTOUT) == 1 and len(_ROUNDED) <= 1
assert all(op.fill == FILL for op in OPS if op.geometric) and FILL == (128, 128, 128)  # the Triton pass writes
# the geometric fill as one grey value


@dataclass(frozen=True)
class MixedParams:
    """What each image's drawn op does in each stage, for any leading shape: (B,) for one position, (P, B) for P
    positions; depends on the draw only. The Triton pass reads these tensors as they are (contiguous (B,) rows),
    so their dtypes are part of the contract."""

    coeffs: torch.Tensor  # float64 (..., 6): AFFINE data (a, b, c, d, e, f); the identity unless geometric
    table: torch.Tensor  # int32 (...,): OpSpec.table, 0 = identity table
    table_arg: torch.Tensor  # float32 (...,): Solarize's magnitude, Posterize's number of cleared bits (0..8)
    degenerate: torch.Tensor  # int32 (...,): OpSpec.degenerate, 0 = none
    factor: torch.Tensor  # float32 (...,): blend factor, 1 unless an ImageEnhance op
    side: torch.Tensor  # int32 (...,): Cutout's square side in pixels, 0 unless Cutout

    def at(self, pos: int) -> MixedParams:
        """The parameters of position `pos` of (P, B) parameters: every field [pos], a contiguous view."""
        return MixedParams(**{f.name: getattr(self, f.name)[pos] for f in fields(self)})


def _on_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A copy of a small CPU tensor on `device` made with fill kernels, one per non-zero entry: no host-to-device
    copy, which would synchronise (and is not allowed while a CUDA graph is captured)."""
    if device.type == "cpu":
        return values.clone()
    out = torch.zeros(values.shape, dtype=values.dtype, device=device)
    for index in values.nonzero().tolist():  # host reads of a host tensor: no device sync
        out[tuple(index)] = values[tuple(index)].item()
    return out


@functools.cache
def _lookup(device: torch.device, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Per-op tables on `device`, row k + 1 for op index k (row 0: no op), made once per device and size:
    identity float64 (6,) and slope float64 (16, 6): a linear geometric op's AFFINE data at magnitude m is
    identity + m * slope (ShearX/Y, TranslateX/Y: one entry m * scale, `OpSpec.affine`); the other rows are 0.
    table / degenerate kind int32 (16,) each (`OpSpec.table`, `OpSpec.degenerate`)."""
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    slope = torch.zeros(len(OPS) + 1, 6, dtype=torch.float64)
    scales = {"1": 1.0, "width": float(width), "height": float(height)}
    for k, op in enumerate(OPS):
        if op.affine is not None:
            entry, scale = op.affine
            slope[k + 1, entry] = scales[scale]
    table = torch.tensor([0] + [op.table for op in OPS], dtype=torch.int32)
    degenerate = torch.tensor([0] + [op.degenerate for op in OPS], dtype=torch.int32)
    return tuple(_on_device(t, device) for t in (identity, slope, table, degenerate))


def _is(op: torch.Tensor, indices: list[int]) -> torch.Tensor:
    """bool (N,): op is one of `indices` (a short static list: one comparison each)."""
    out = torch.zeros_like(op, dtype=torch.bool)
    for k in indices:
        out |= op == k
    return out


def mixed_params(op: torch.Tensor, mag: torch.Tensor, height: int, width: int) -> MixedParams:
    """op long (...) in -1..14 (-1: none), mag float (...) signed magnitudes -> MixedParams of the same shape."""
    shape = op.shape
    op, mag = op.reshape(-1), mag.reshape(-1).float()  # (N,)
    identity, slope, table_kinds, degenerate_kinds = _lookup(op.device, height, width)
    row = op + 1  # (N,) row of the per-op tables
    coeffs = identity + mag.double()[:, None] * slope[row]  # (N, 6): m * scale in one entry, exactly as _coeffs
    coeffs = torch.where(_is(op, _ROTATE)[:, None], rotate_coeffs(mag, height, width), coeffs)
    whole = torch.round(mag).clamp(0, 8)  # (N,) as ops.posterize
    table_arg = torch.where(_is(op, _ROUNDED), whole, mag)
    degenerate = degenerate_kinds[row]
    factor = torch.where(degenerate > 0, mag, 1.0)
    side = torch.where(_is(op, _CUTOUT), cutout_size(mag, height, width), 0).int()
    return MixedParams(coeffs.view(*shape, 6), table_kinds[row].view(shape), table_arg.view(shape),
                       degenerate.view(shape), factor.view(shape), side.view(shape))


def apply_mixed(images: torch.Tensor, params: MixedParams, centres: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """images uint8 (B, 3, H, W) contiguous; params (B,) (one position); centres long (B, 2) Cutout's (row, col)
    -> uint8 (B, 3, H, W): image i through its op (see the module docstring)."""
    # "auto": the kernels on CUDA uint8 images; "triton" also on the CPU under TRITON_INTERPRET=1 (slow, for
    # tests), else TritonUnavailableError (a ValueError) naming the fix; "torch": never
    if use_triton(impl, images, "static", dtypes=(torch.uint8,)):
        from .static_triton import mixed_pass

        return mixed_pass(images, params, centres, CUTOUT_FILL)
    out = affine_nearest(images, params.coeffs)
    out = _pixel_stage(out, params)
    return cutout(out, params.side, centres=centres)


def apply_positions(images: torch.Tensor, ops: torch.Tensor, mags: torch.Tensor, centres: list[torch.Tensor],
                    impl: str = "auto") -> torch.Tensor:
    """A whole draw: ops long (B, P), mags (B, P) -> the images after positions 0, 1, ... in order; centres one
    long (B, 2) per position. The parameters of all positions are made in one go, position-major (P, B)."""
    params = mixed_params(ops.t(), mags.t(), images.shape[2], images.shape[3])
    out = images
    for pos in range(ops.shape[1]):
        out = apply_mixed(out, params.at(pos), centres[pos], impl)
    return out


def _tables(images: torch.Tensor, params: MixedParams) -> torch.Tensor:
    """uint8 (B, 3, 256): each image's table (stage 2), the identity for images without a LUT op."""
    b, ch, h, w = images.shape
    flat = images.reshape(b, ch, h * w)  # (B, 3, HW)
    index = flat.long()
    hist = torch.zeros(b, ch, 256, dtype=torch.int64, device=images.device)
    hist.scatter_add_(2, index, torch.ones_like(index))  # (B, 3, 256), as ops.histogram
    bins = torch.arange(256, device=images.device)  # (256,) the identity table
    inverted = 255 - bins
    m = params.table_arg[:, None]  # (B, 1)
    # ops.solarize compares float32(m) >= 256 - float32(x); x = the table's index gives the same comparison.
    solarized = torch.where(m >= (256 - bins.float()), inverted, bins)  # (B, 256)
    posterized = bins & torch.bitwise_left_shift(torch.full_like(bins, 255), m.long())  # (B, 256), as ops.posterize
    candidates = ((1, auto_contrast_lut(flat.amin(2), flat.amax(2))), (2, equalize_lut(hist)), (3, inverted),
                  (4, solarized[:, None]), (5, posterized[:, None]))
    lut = bins.expand(b, ch, 256)
    for kind, table in candidates:
        lut = torch.where((params.table == kind)[:, None, None], table, lut)
    return lut.to(torch.uint8)


def _pixel_stage(images: torch.Tensor, params: MixedParams) -> torch.Tensor:
    """Stages 2 and 3: one table gather (the LUT ops' images), then one blend (the ImageEnhance ops' images)."""
    b, ch, h, w = images.shape
    out = _tables(images, params).gather(2, images.reshape(b, ch, h * w).long()).view(b, ch, h, w)
    # Degenerate images: Contrast its grey level, Color its luma, Brightness black, Sharpness SMOOTH; 0 for the rest.
    kind = params.degenerate[:, None, None, None]  # (B, 1, 1, 1)
    lum = luma(images)  # (B, 1, H, W) int32
    deg = torch.where(kind == 1, grey_level(lum).float()[:, None, None, None], 0.0)  # (B, 1, 1, 1)
    deg = torch.where(kind == 2, lum.float(), deg)  # (B, 1, H, W); kind 3 (black) stays 0
    deg = torch.where(kind == 4, smooth(images).float(), deg)  # (B, 3, H, W)
    return blend(deg, out, params.factor)
