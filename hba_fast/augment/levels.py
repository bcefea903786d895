"""The reference code's levels: the magnitude AutoAugment's and PBA's published code apply for a level of an op.

AutoAugment's policies (hba_fast/augment/baselines.py) and PBA's schedules (hba_fast/schedule/pba.py) name
magnitudes by level, 0-9 (PBA: 0-9 searched, PARAMETER_MAX = 10); the code that learned them
(augmentation_transforms.py of both projects) turns a level L into a value by each op's rule, which the op table
holds (`OpSpec.level`, a `LevelRule`): int_parameter(L, maxval) = int(L maxval / 10) or float_parameter(L, maxval)
= L maxval / 10, plus an offset; sizes in pixels of the (32 px) image, which our units express as a fraction of its
side. In our units (SPEC 3):
    ShearX/Y 0.3 L / 10            TranslateX/Y int(L) px          Rotate int(3 L) degrees
    Solarize int(25.6 L)           Contrast/Color/Brightness/Sharpness 0.1 + 0.18 L (level 5 is the identity)
    Cutout int(2 L) px square      Posterize: see below
    AutoContrast, Equalize, Invert: no magnitude (0)

Posterize has two named variants (`POSTERIZE`):
    "reference"   what the published code does: it keeps 4 - int(0.4 L) bits, i.e. clears 4 + int(0.4 L) (level 0
                  already keeps only 4 bits), a known bug against the papers' range of 4-8 bits. PBA's schedules
                  were learned, and are replayed by PBA, with it.
    "corrected"   the papers' rule: clears int(0.4 L) bits (TrivialAugment's `fixed_posterize`); what hba-fast
                  applies for AutoAugment's policies.
"""
from __future__ import annotations

from .ops import OP_INDEX, OPS, OpSpec

PARAMETER_MAX = 10
POSTERIZE = ("reference", "corrected")  # the variants of the reference offset (module docstring)


def level_value(op: OpSpec | str, level: float | None, image_size: int = 32, variant: str = "corrected") -> float:
    """Our (unsigned) magnitude of `op` at the reference code's `level`; 0 for ops without a magnitude (and a level
    of None). `variant` "reference" adds what the published code adds (`LevelRule.reference_offset`)."""
    if variant not in POSTERIZE:
        raise ValueError(f"variant must be one of {POSTERIZE}, got {variant!r}")
    spec = OPS[OP_INDEX[op]] if isinstance(op, str) else op
    rule = spec.level
    if rule is None or level is None or not spec.has_magnitude:
        return 0.0
    value = float(level) * rule.maxval / PARAMETER_MAX
    if rule.whole:
        value = float(int(value))
    value += rule.offset + (rule.reference_offset if variant == "reference" else 0.0)
    return value / image_size if rule.pixels else value
