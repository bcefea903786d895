"""One epoch of a schedule as an Albumentations pipeline (`A.save` JSON, loaded back with `A.load`).

Albumentations has no "walk the slots in a random order and keep the first K accepted" composition, so the export
writes PBA's draw by its exact law instead (`hba_fast.augment.pba_draw.pba_law`): one `OneOf` whose children are
- `NoOp`, weighted P(no op),
- `Sequential([T_a])` for each slot a, weighted P(only a is applied),
- `Sequential([RandomOrder([T_a, T_b], n=2)])` for each pair of slots, weighted P(a, b) + P(b, a) (the law is
  symmetric, so a random order is exact),
children of zero weight left out. So which ops an image gets, and in which order, follows the schedule exactly;
what differs is each op's implementation (`OP_MAP` below; `APPROXIMATE` says how, for each op that is not the
same arithmetic as Pillow's up to rounding). A signed op is `OneOf([T(+m), T(-m)])`.

Exact up to rounding (nearest-neighbour sampling, fill 128, Pillow's formula):
    TranslateX/Y   A.Affine(translate_percent=m): the same pixels at whole-pixel shifts; at fractional shifts
                   OpenCV and Pillow round the sample position differently (up to one pixel apart)
    Rotate         A.Affine(rotate=m) (about the centre (W-1)/2 rather than Pillow's W/2: half a pixel)
    Invert         A.InvertImg
    Solarize       A.Solarize(threshold = (256 - m) / 255)
    Posterize      A.Posterize(num_bits = 8 - round(m)); at 0 bits (black) A.ColorJitter(brightness=0)
    Brightness     A.ColorJitter(brightness=m): img * m;   Color A.ColorJitter(saturation=m): blend with grey
    Contrast       A.ColorJitter(contrast=m): blend with the mean grey (unrounded; Pillow rounds the mean)
    Sharpness m>=1 A.Sharpen(alpha=(m - 1) / 13, lightness=1): img + (m - 1)/13 (8 img - neighbours), Pillow's
                   SMOOTH blend on the interior (Albumentations filters the border too)
Approximate:
    AutoContrast   A.AutoContrast(method="pil"): Pillow's linear stretch, its rounding differs by up to 2 levels
    Equalize       A.Equalize(mode="pil", by_channels=True): per-channel histogram equalisation like Pillow's,
                   but its look-up table differs by a few levels (mean |difference| ~3 on CIFAR-10 images)
    ShearX/Y       A.Affine(shear=degrees(atan(m))) shears about the image centre; Pillow's shear is about the
                   top-left corner, so it also shifts the content by m * H / 2 (PBA's ShearX)
    Sharpness m<1  (a blend towards SMOOTH, i.e. a blur) A.GaussianBlur 3x3 with the sigma whose centre weight
                   equals the blended kernel's centre weight m + (1 - m) 5/13
    Cutout         A.CoarseDropout with one square hole of side m (fraction of the side), fill (125, 122, 113),
                   placed wholly inside the image; PBA's square has a uniformly random centre and is clipped
"""
from __future__ import annotations

import math

import numpy as np

from ..augment.ops import CUTOUT_FILL, FILL, OPS
from ..augment.pba_draw import pba_law
from ..augment.space import NUM_OPS, NUM_SLOTS

APPROXIMATE = {
    "AutoContrast": "A.AutoContrast(method='pil') rounds its look-up table differently (up to 2 levels off)",
    "Equalize": "A.Equalize(mode='pil') builds a slightly different look-up table (a few levels off Pillow's)",
    "ShearX": "A.Affine(shear) shears about the image centre; Pillow's about the top-left corner (also shifts)",
    "ShearY": "A.Affine(shear) shears about the image centre; Pillow's about the top-left corner (also shifts)",
    "Sharpness": "below 1 (blur): A.GaussianBlur 3x3 with the same centre weight instead of Pillow's SMOOTH blend",
    "Cutout": "A.CoarseDropout's hole lies wholly inside the image; PBA's is centred uniformly and clipped",
}
MIN_WEIGHT = 1e-9  # children less likely than this are left out (their mass is reported)


def _op(A, name: str, m: float):
    """The Albumentations transform (p=1) nearest to op `name` at (signed) magnitude m."""
    import cv2

    nearest = dict(interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=FILL[0], p=1.0)
    if name == "ShearX":
        return A.Affine(shear={"x": (math.degrees(math.atan(m)),) * 2, "y": (0.0, 0.0)}, **nearest)
    if name == "ShearY":
        return A.Affine(shear={"x": (0.0, 0.0), "y": (math.degrees(math.atan(m)),) * 2}, **nearest)
    if name == "TranslateX":
        return A.Affine(translate_percent={"x": (-m, -m), "y": (0.0, 0.0)}, **nearest)  # Pillow maps x <- x + m w
    if name == "TranslateY":
        return A.Affine(translate_percent={"x": (0.0, 0.0), "y": (-m, -m)}, **nearest)
    if name == "Rotate":
        return A.Affine(rotate=(m, m), **nearest)
    if name == "AutoContrast":
        return A.AutoContrast(method="pil", p=1.0)
    if name == "Equalize":
        return A.Equalize(mode="pil", by_channels=True, p=1.0)
    if name == "Invert":
        return A.InvertImg(p=1.0)
    if name == "Solarize":
        t = min(max((256.0 - m) / 255.0, 0.0), 1.0)
        return A.Solarize(threshold_range=(t, t), p=1.0)
    jitter = dict(brightness=(1.0, 1.0), contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=(0.0, 0.0), p=1.0)
    if name == "Posterize":
        bits = int(min(max(8 - round(m), 0), 8))
        if bits == 0:  # every bit cleared: black; A.Posterize(0) computes it through a uint8 overflow (a warning)
            return A.ColorJitter(**{**jitter, "brightness": (0.0, 0.0)})
        return A.Posterize(num_bits=(bits, bits), p=1.0)
    if name in ("Brightness", "Contrast", "Color"):
        key = {"Brightness": "brightness", "Contrast": "contrast", "Color": "saturation"}[name]
        return A.ColorJitter(**{**jitter, key: (m, m)})
    if name == "Sharpness":
        if m >= 1.0:
            alpha = min((m - 1.0) / 13.0, 1.0)
            return A.Sharpen(alpha=(alpha, alpha), lightness=(1.0, 1.0), method="kernel", p=1.0)
        centre = m + (1.0 - m) * 5.0 / 13.0  # the blended kernel's centre weight (< 1)
        c1 = math.sqrt(centre)  # 1-D centre weight of a separable 3-tap Gaussian: 1 / (1 + 2 e)
        e = (1.0 / c1 - 1.0) / 2.0
        sigma = math.sqrt(-1.0 / (2.0 * math.log(e))) if 0.0 < e < 1.0 else 1e3
        return A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(sigma, sigma), p=1.0)
    if name == "Cutout":
        if m <= 0:
            return A.NoOp(p=1.0)
        return A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(m, m), hole_width_range=(m, m),
                               fill=CUTOUT_FILL, p=1.0)
    raise AssertionError(name)


def _slot_transform(A, slot: int, mags: np.ndarray):
    op = OPS[slot % NUM_OPS]
    m = float(mags[slot]) if op.has_magnitude else 0.0
    if op.signed and m != 0.0:
        return A.OneOf([_op(A, op.name, m), _op(A, op.name, -m)], p=1.0)
    return _op(A, op.name, m)


def to_albumentations(probs: np.ndarray, mags: np.ndarray):
    """The policy of one epoch (probs, mags (30,)) as an `A.Compose`; returns (compose, mass left out)."""
    import albumentations as A

    law = pba_law(probs)
    children, dropped = [], 0.0
    if law.none > MIN_WEIGHT:
        children.append(A.NoOp(p=law.none))
    for a in range(NUM_SLOTS):
        if law.single[a] > MIN_WEIGHT:
            children.append(A.Sequential([_slot_transform(A, a, mags)], p=float(law.single[a])))
        else:
            dropped += float(law.single[a])
    for a in range(NUM_SLOTS):
        for b in range(a + 1, NUM_SLOTS):
            w = float(law.pair[a, b] + law.pair[b, a])
            if w > MIN_WEIGHT:
                pair = A.RandomOrder([_slot_transform(A, a, mags), _slot_transform(A, b, mags)], n=2, p=1.0)
                children.append(A.Sequential([pair], p=w))
            else:
                dropped += w
    return A.Compose([A.OneOf(children, p=1.0)]), dropped
