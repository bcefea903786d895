"""One op per image, any mix of the 15 ops, in a fixed set of batched passes: the policy's static form.

`apply_mixed(images, op, mag, centres)` gives every image i the result of op[i] at magnitude mag[i] (op -1: the
image unchanged), bit for bit what `hba_fast.ops.apply_op` gives for that image alone (and so what Pillow gives),
but its work and its shapes do not depend on which ops were drawn: no data-dependent shapes, no host syncs, no
Python branch on a tensor value, so it runs inside a CUDA graph. The 15 ops fall into four stages, and every stage
is the identity for the images whose op is not in it, so the stages are simply applied one after the other:

  1. affine   the five geometric ops are one AFFINE + NEAREST gather (`ops.affine_nearest`) with per-image
              coefficients (B, 6): the drawn op's Pillow data, the identity (1, 0, 0, 0, 1, 0) for every other
              image (which `affine_nearest` samples exactly: b = d = 0 takes Pillow's ImagingScaleAffine path,
              floor(x + 1/2) = x). Pillow's per-image choice of fixed point vs doubles is made inside.
  2. tables   AutoContrast, Invert, Equalize, Solarize, Posterize are per-image, per-channel 256-entry tables
              (B, 3, 256): built for every image from its histogram / lowest / highest values (tiny tensors), the
              drawn op's table kept per image (the identity table for the others), then one gather.
  3. blend    Contrast, Color, Brightness, Sharpness are Image.blend(degenerate, img, f) = uint8(clip(deg + f *
              (img - deg))) in float32 (`ops.blend`): one blend with a per-image degenerate image (its grey level,
              its luma, black, or its SMOOTH filtering) and factor; f = 1 for every other image, which returns the
              image exactly (integers below 2^24: img - deg, 1 * d and deg + d are exact in float32). The
              degenerate images are made from stage 2's input, which equals its output for these images.
  4. cutout   the square mask with side round(m * min(H, W)) for Cutout's images and side 0 for the others.

Cost: per call one affine gather, one histogram and min/max, one table gather, one luma, one 3x3 SMOOTH, one
blend and one mask over the batch, plus per-image work on (B, 6) and (B, 3, 256) tensors, whatever was drawn.
Compare `hba_fast.policy`'s indexed form, which runs each drawn op on its own images (fewer pixels touched, but
data-dependent shapes and host syncs). Do not hand this to torch.compile: a fused kernel may contract the blend's
multiply and add into one FMA, which rounds differently from Pillow's two float32 operations.

References: SPEC 3 (the ops), `hba_fast/ops.py` (each op's Pillow arithmetic), Pillow src/libImaging.
"""
from __future__ import annotations

import torch

from .ops import (
    OP_INDEX,
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
    shear_x_coeffs,
    shear_y_coeffs,
    smooth,
    translate_x_coeffs,
    translate_y_coeffs,
)

# Stage 1: AFFINE data (B, 6) float64 of each geometric op, f(m (B,), height, width).
AFFINE = {"ShearX": shear_x_coeffs, "ShearY": shear_y_coeffs, "TranslateX": translate_x_coeffs,
          "TranslateY": translate_y_coeffs, "Rotate": rotate_coeffs}
# Stage 2: tables that depend on the image (its histogram, its lowest / highest values) and those that do not.
IMAGE_TABLES = ("AutoContrast", "Equalize")
DRAW_TABLES = ("Invert", "Solarize", "Posterize")
# Stage 3: the ImageEnhance ops, each with its degenerate image (see pixel_stage).
ENHANCE = ("Contrast", "Color", "Brightness", "Sharpness")

CUTOUT = OP_INDEX["Cutout"]
_covered = [*AFFINE, *IMAGE_TABLES, *DRAW_TABLES, *ENHANCE, "Cutout"]
assert sorted(_covered) == sorted(op.name for op in OPS) and len(set(_covered)) == len(OPS), \
    "every op of hba_fast.ops.OPS must belong to exactly one stage of mixed_ops.py"
assert all(OPS[OP_INDEX[name]].geometric for name in AFFINE)


def _is(name: str, op: torch.Tensor) -> torch.Tensor:
    """bool (B,): which images drew op `name`."""
    return op == OP_INDEX[name]


def _bits(names) -> int:
    return sum(1 << OP_INDEX[n] for n in names)


def _any_of(bits: int, op: torch.Tensor) -> torch.Tensor:
    """bool (B,): which images drew one of the ops in the bit set (op -1: none), computed on the device."""
    return (torch.bitwise_right_shift(bits, op.clamp(min=0)) & (op >= 0)).bool()


_ENHANCE_BITS = _bits(ENHANCE)


def apply_mixed(images: torch.Tensor, op: torch.Tensor, mag: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """images uint8 (B, 3, H, W); op long (B,) in -1..14 (-1: none); mag float32 (B,) signed magnitudes; centres
    long (B, 2) Cutout's (row, col) -> uint8 (B, 3, H, W), image i = apply_op(images[i], OPS[op[i]], mag[i])."""
    _, _, h, w = images.shape
    out = affine_stage(images, op, mag)
    out = pixel_stage(out, op, mag)
    side = torch.where(_is("Cutout", op), cutout_size(mag, h, w), 0)  # (B,): side 0 leaves the image alone
    return cutout(out, side, centres=centres)


def affine_stage(images: torch.Tensor, op: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Stage 1: each geometric op's images through their AFFINE data, every other image through the identity."""
    b, _, h, w = images.shape
    coeffs = torch.zeros(b, 6, dtype=torch.float64, device=images.device)
    coeffs[:, 0] = 1.0
    coeffs[:, 4] = 1.0  # (B, 6) identity (1, 0, 0, 0, 1, 0)
    for name, make in AFFINE.items():
        coeffs = torch.where(_is(name, op)[:, None], make(mag, h, w), coeffs)
    return affine_nearest(images, coeffs)


def draw_tables(op: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """int64 (B, 256): the table of Invert / Solarize / Posterize images (they need only the magnitude), the
    identity for the others. Entries as ops.invert / solarize / posterize compute them for a pixel of that value."""
    bins = torch.arange(256, device=op.device)  # (256,)
    inverted = 255 - bins
    # ops.solarize compares float32(m) >= 256 - float32(x); x = the table's index gives the same comparison.
    solarized = torch.where(mag.float()[:, None] >= (256 - bins.float()), inverted, bins)  # (B, 256)
    low_bits = torch.round(mag.float()).clamp(0, 8).long()  # (B,) as ops.posterize
    posterized = bins & torch.bitwise_left_shift(torch.full_like(low_bits, 255), low_bits)[:, None]  # (B, 256)
    table = torch.where(_is("Posterize", op)[:, None], posterized, bins)
    table = torch.where(_is("Solarize", op)[:, None], solarized, table)
    return torch.where(_is("Invert", op)[:, None], inverted, table)


def pixel_stage(images: torch.Tensor, op: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Stages 2 and 3: one table gather (the LUT ops' images), then one blend (the ImageEnhance ops' images)."""
    b, ch, h, w = images.shape
    flat = images.reshape(b, ch, h * w)  # (B, 3, HW) uint8
    index = flat.long()  # (B, 3, HW): pixel values as gather / scatter indices
    hist = torch.zeros(b, ch, 256, dtype=torch.int64, device=images.device)
    hist.scatter_add_(2, index, torch.ones_like(index))  # (B, 3, 256), as ops.histogram
    lut = draw_tables(op, mag)[:, None, :]  # (B, 1, 256)
    lut = torch.where(_is("Equalize", op)[:, None, None], equalize_lut(hist), lut)  # (B, 3, 256)
    lut = torch.where(_is("AutoContrast", op)[:, None, None], auto_contrast_lut(flat.amin(2), flat.amax(2)), lut)
    out = lut.to(torch.uint8).gather(2, index).view(b, ch, h, w)

    # Degenerate images: Contrast its grey level, Color its luma, Brightness black, Sharpness SMOOTH; factor 1 and
    # degenerate 0 for the other images (the blend then returns them exactly).
    lum = luma(images)  # (B, 1, H, W) int32
    level = torch.where(_is("Contrast", op), grey_level(lum), 0.0).float()[:, None, None, None]  # (B, 1, 1, 1)
    deg = torch.where(_is("Color", op)[:, None, None, None], lum.float(), level)  # (B, 1, H, W)
    deg = torch.where(_is("Sharpness", op)[:, None, None, None], smooth(images).float(), deg)  # (B, 3, H, W)
    factor = torch.where(_any_of(_ENHANCE_BITS, op), mag.float(), 1.0)  # (B,)
    return blend(deg, out, factor)
