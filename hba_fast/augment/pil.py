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
the same image through `hba_fast.augment.ops` agree bit for bit (tests/test_schedule_policy.py checks every op). Pure
Pillow and numpy: this module runs in DataLoader worker processes without torch doing any work.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .ops import CUTOUT_FILL, FILL, OP_INDEX, OPS

_NEAREST = Image.Resampling.NEAREST
_AFFINE = Image.Transform.AFFINE


def _affine(img: Image.Image, data: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, _AFFINE, data, _NEAREST, fillcolor=FILL)


def cutout_box(m: float, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of Cutout's square, clipped; the draw order (row, then column) and the
    rounding (float32 m * min side, round half to even) are those of `hba_fast.augment.ops.cutout_op`."""
    short = min(height, width)
    side = int(min(max(np.round(np.float32(m) * np.float32(short)), 0), short))
    u = rng.random(2)
    row, col = min(int(u[0] * height), height - 1), min(int(u[1] * width), width - 1)
    top, left = row - side // 2, col - side // 2
    return max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)


# ---------------------------------------------------------------- one function per op (OpSpec.pil names it)

def shear_x(img, m, rng):
    return _affine(img, (1, m, 0, 0, 1, 0))


def shear_y(img, m, rng):
    return _affine(img, (1, 0, 0, m, 1, 0))


def translate_x(img, m, rng):
    return _affine(img, (1, 0, m * img.size[0], 0, 1, 0))


def translate_y(img, m, rng):
    return _affine(img, (1, 0, 0, 0, 1, m * img.size[1]))


def rotate(img, m, rng):
    return img.rotate(m, _NEAREST, fillcolor=FILL)


def auto_contrast(img, m, rng):
    return ImageOps.autocontrast(img)


def invert(img, m, rng):
    return ImageOps.invert(img)


def equalize(img, m, rng):
    return ImageOps.equalize(img)


def solarize(img, m, rng):
    return ImageOps.solarize(img, 256 - m)


def posterize(img, m, rng):
    bits = int(np.round(np.float32(m)))  # round half to even, as torch.round
    if bits <= 0:
        return img.copy()
    return ImageOps.posterize(img, 8 - bits) if bits < 8 else Image.new("RGB", img.size, 0)


def contrast(img, m, rng):
    return ImageEnhance.Contrast(img).enhance(m)


def color(img, m, rng):
    return ImageEnhance.Color(img).enhance(m)


def brightness(img, m, rng):
    return ImageEnhance.Brightness(img).enhance(m)


def sharpness(img, m, rng):
    return ImageEnhance.Sharpness(img).enhance(m)


def cutout(img, m, rng):
    rng = rng if rng is not None else np.random.default_rng()
    box = cutout_box(m, img.size[1], img.size[0], rng)
    out = img.copy()
    if box[2] > box[0] and box[3] > box[1]:
        out.paste(CUTOUT_FILL, box)
    return out


def _resolve(name: str):
    impl = globals().get(name)
    if not callable(impl):  # a wrong table is a bug: say where
        raise LookupError(f"hba_fast.augment.ops.OPS names Pillow implementation {name!r}, which is not a function of "
                          f"{__name__}")
    return impl


PIL_FNS = tuple(_resolve(op.pil) for op in OPS)  # op index -> f(img, m, rng)


def apply_pil_op(img: Image.Image, op: int | str, m: float, rng: np.random.Generator | None = None) -> Image.Image:
    """Op `op` (index into OPS or name) with magnitude m on an RGB image; `rng` draws Cutout's centre."""
    k = OP_INDEX[op] if isinstance(op, str) else int(op)
    return PIL_FNS[k](img, float(np.float32(m)), rng)
