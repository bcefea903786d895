"""The 15 ops on one PIL image with Pillow's own functions: the reference every fast path is held to (SPEC 3).

    apply_pil_op(img RGB PIL.Image, op index or name, magnitude float (signed for the geometric ops), rng) -> PIL.Image

Each op is exactly what SPEC section 3 writes (the PBA / AutoAugment code the paper follows, fill 128):
ShearX `img.transform(size, AFFINE, (1, m, 0, 0, 1, 0), NEAREST, fillcolor=128)`, ShearY `(1, 0, 0, m, 1, 0)`,
TranslateX `(1, 0, m * width, 0, 1, 0)`, TranslateY `(1, 0, 0, 0, 1, m * height)`, Rotate `img.rotate(m, NEAREST,
fillcolor=128)`; AutoContrast / Invert / Equalize `ImageOps`; Solarize `ImageOps.solarize(img, 256 - m)`; Posterize
`ImageOps.posterize(img, 8 - round(m))` (black for 8 bits); Contrast / Color / Brightness / Sharpness
`ImageEnhance.*(img).enhance(m)`; Cutout a round(m * min(H, W)) square of (125, 122, 113) at a uniformly random
centre pixel (row, col), rows [row - s//2, row - s//2 + s) clipped at the borders.

Magnitudes are used as float32 values (the schedule's precision and the batched torch ops'), so a PIL image and
the same image through `hba_fast.ops` agree bit for bit (tests/test_schedule_policy.py checks every op). Pure
Pillow and numpy: this module runs in DataLoader worker processes without torch doing any work.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .ops import CUTOUT_FILL, FILL, OP_INDEX, OPS

_NEAREST = Image.Resampling.NEAREST
_AFFINE = Image.Transform.AFFINE
_ENHANCERS = {"Contrast": ImageEnhance.Contrast, "Color": ImageEnhance.Color,
              "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}


def _affine(img: Image.Image, data: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, _AFFINE, data, _NEAREST, fillcolor=FILL)


def cutout_box(m: float, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of Cutout's square, clipped; the draw order (row, then column) and the
    rounding (float32 m * min side, round half to even) are those of `hba_fast.ops.cutout_op`."""
    short = min(height, width)
    side = int(min(max(np.round(np.float32(m) * np.float32(short)), 0), short))
    u = rng.random(2)
    row, col = min(int(u[0] * height), height - 1), min(int(u[1] * width), width - 1)
    top, left = row - side // 2, col - side // 2
    return max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)


def apply_pil_op(img: Image.Image, op: int | str, m: float, rng: np.random.Generator | None = None) -> Image.Image:
    """Op `op` (index into OPS or name) with magnitude m on an RGB image; `rng` draws Cutout's centre."""
    k = OP_INDEX[op] if isinstance(op, str) else int(op)
    name = OPS[k].name
    m = float(np.float32(m))
    w, h = img.size
    if name == "ShearX":
        return _affine(img, (1, m, 0, 0, 1, 0))
    if name == "ShearY":
        return _affine(img, (1, 0, 0, m, 1, 0))
    if name == "TranslateX":
        return _affine(img, (1, 0, m * w, 0, 1, 0))
    if name == "TranslateY":
        return _affine(img, (1, 0, 0, 0, 1, m * h))
    if name == "Rotate":
        return img.rotate(m, _NEAREST, fillcolor=FILL)
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Solarize":
        return ImageOps.solarize(img, 256 - m)
    if name == "Posterize":
        bits = int(np.round(np.float32(m)))  # round half to even, as torch.round
        if bits <= 0:
            return img.copy()
        return ImageOps.posterize(img, 8 - bits) if bits < 8 else Image.new("RGB", img.size, 0)
    if name in _ENHANCERS:
        return _ENHANCERS[name](img).enhance(m)
    if name == "Cutout":
        rng = rng if rng is not None else np.random.default_rng()
        box = cutout_box(m, h, w, rng)
        out = img.copy()
        if box[2] > box[0] and box[3] > box[1]:
            out.paste(CUTOUT_FILL, box)
        return out
    raise AssertionError(f"op {name} has no Pillow implementation")  # OPS and this function must agree
