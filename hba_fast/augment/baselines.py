"""Hand-made augmentation policies in our op set, the paper's baselines (Table 4): AutoAugment, RandAugment and
TrivialAugment (wide), as data a user can read and as per-sample samplers for the pipelines. The arms that run them
(`hba-fast train --augment NAME`, `hba-fast compare --arms`) are registered in hba_fast/augment/arms.py. Every
policy arm runs before the recipe with its Cutout, as the paper's schedule does (AutoAugment, PBA and the others
evaluated on top of crop, flip and Cutout).

AutoAugment (Cubuk et al. 2019, appendix): `AUTOAUGMENT[name]` holds the 25 sub-policies of two (op, prob, level)
each; an image gets one sub-policy drawn uniformly, each of its two ops applied with its probability. A level
(0-9) is turned into our magnitude by the reference code that learned the policies (augmentation_transforms.py,
PARAMETER_MAX = 10; the PBA code is the same): hba_fast/augment/levels.py, with the corrected Posterize rule (the
reference code clears 4 bits more, a known bug against the paper's range of 4-8 bits; torchvision's 8 - round(4 l /
9) differs by one bit at some levels). Level None: an op without a magnitude (the tables print a level no op reads).
torchvision's AutoAugment maps levels differently (l / 9 of the range; enhance factors 1 +- 0.9 l / 9; translate
150 / 331 of the side); we follow the code the policies were learned with.

RandAugment (Cubuk et al. 2020) and TrivialAugment-wide (Mueller & Hutter 2021) as torchvision defines them
(`transforms/autoaugment.py`): 14 choices (Identity and 13 ops, no Invert, no Cutout), magnitudes on 31 levels
(`torch.linspace(lo, hi, 31)` in float32, as torchvision computes them), converted to our units
(`wide_magnitudes`): enhance factors 1 + v, Posterize round(bins-level) bits cleared, Solarize m = 256 - threshold,
translations in whole pixels (torchvision's int()) as a fraction of the side. Our ops take magnitudes outside
the search ranges (rotate 135 degrees, shear 0.99), so the wide ranges apply exactly. Differences from
torchvision: geometric fill 128 (SPEC 3; torchvision fills 0) and TrivialAugment's translation of up to 32 px
scales with the image (torchvision keeps 32 px at any size; the same at 32x32).

Each sampler hands the pipeline a ready `PolicyDraw` (ops (B, P), signed mags (B, P)) in `PolicySample.draw`;
the draw is a fixed number of device ops from the sampler's own generator: per sample, no host syncs.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch

from ..errors import ConfigError
from .levels import level_value
from .ops import OP_INDEX, OPS
from .policy import PolicyDraw
from .sampler import PolicySample

Level = int | None  # AutoAugment magnitude level 0-9, None for ops without a magnitude
Step = tuple[str, float, Level]  # (op, probability, level)
SubPolicy = tuple[Step, Step]

# ------------------------------------------------------------------ AutoAugment's published policies (25 each)

AUTOAUGMENT: Mapping[str, tuple[SubPolicy, ...]] = MappingProxyType({
    "cifar10": (
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ),
    "svhn": (
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ),
    "imagenet": (
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ),
})



def aa_magnitude(op: str, level: Level) -> float:
    """Our (unsigned) magnitude for AutoAugment's `level` of `op`; 0 for ops without one (hba_fast/augment/levels.py,
    the corrected Posterize)."""
    return level_value(op, level, variant="corrected")


# ------------------------------------------------------------------ RandAugment / TrivialAugment (torchvision)

IDENTITY = "Identity"
# The 14 choices of torchvision's RandAugment and TrivialAugmentWide, in its order; True: random sign.
WIDE_CHOICES: tuple[tuple[str, bool], ...] = (
    (IDENTITY, False), ("ShearX", True), ("ShearY", True), ("TranslateX", True), ("TranslateY", True),
    ("Rotate", True), ("Brightness", True), ("Color", True), ("Contrast", True), ("Sharpness", True),
    ("Posterize", False), ("Solarize", False), ("AutoContrast", False), ("Equalize", False),
)
RANDAUGMENT_N, RANDAUGMENT_M, WIDE_BINS = 2, 9, 31  # torchvision's defaults


def wide_magnitudes(op: str, bins: int = WIDE_BINS, wide: bool = False, image_size: int = 32) -> torch.Tensor:
    """float32 (bins,): our unsigned magnitude of `op` at each level, RandAugment's space (wide=False) or
    TrivialAugment-wide's, as torchvision builds them (module docstring); zeros for ops without a magnitude."""
    lin = lambda lo, hi: torch.linspace(lo, hi, bins, dtype=torch.float32)  # noqa: E731 (torchvision's bins)
    if op in ("ShearX", "ShearY"):
        return lin(0.0, 0.99 if wide else 0.3)
    if op in ("TranslateX", "TranslateY"):  # whole pixels (torchvision's int()), as a fraction of the side
        return lin(0.0, 32.0 if wide else 150.0 / 331.0 * image_size).trunc() / image_size
    if op == "Rotate":
        return lin(0.0, 135.0 if wide else 30.0)
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 1.0 + lin(0.0, 0.99 if wide else 0.9)  # factor 1 + v (the sign goes on v, see `_signed`)
    if op == "Posterize":  # torchvision keeps 8 - round(level / ((bins - 1) / k)) bits: we clear the rest
        return (torch.arange(bins) / ((bins - 1) / (6 if wide else 4))).round().float()
    if op == "Solarize":  # torchvision inverts pixels >= threshold = linspace(255, 0); ours: >= 256 - m
        return 256.0 - lin(255.0, 0.0)
    return torch.zeros(bins)  # Identity, AutoContrast, Equalize


# ------------------------------------------------------------------ samplers (the Sampler protocol)

def _signed(mags: torch.Tensor, ops: torch.Tensor, signed: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Apply a random sign where `signed`; an enhance op's (kind blend) factor 1 + v becomes 1 - v."""
    enhance = torch.zeros_like(signed)
    for k, op in enumerate(OPS):
        if op.kind == "blend":
            enhance |= ops == k
    neg = signed & flip
    return torch.where(neg, torch.where(enhance, 2.0 - mags, -mags), mags)


class _DrawSampler:
    """A fixed policy's per-sample draw (`PolicySample.draw`), from this sampler's own generator, one per device
    (seeded by `seed`); tables are copied to each device once."""

    positions: int  # P: ops tried per image

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._gens: dict[str, torch.Generator] = {}
        self._tables: dict[str, tuple[torch.Tensor, ...]] = {}

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _draw(self, batch: int, tables: tuple[torch.Tensor, ...], g: torch.Generator) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _on(self, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Generator]:
        key = str(device)
        if key not in self._gens:
            self._gens[key] = torch.Generator(device=device).manual_seed(self.seed)
            self._tables[key] = tuple(t.to(device) for t in self._tensors())
        return self._tables[key], self._gens[key]

    def set_epoch(self, epoch: int, device: torch.device | str) -> None:
        self._on(torch.device(device))  # tables and generator on the device before any (captured) round

    def generators(self, device: torch.device | str) -> list[torch.Generator]:
        return [self._on(torch.device(device))[1]]

    def sample(self, batch_size: int, epoch: int, device: torch.device | str) -> PolicySample:
        tables, g = self._on(torch.device(device))
        ops, mags = self._draw(batch_size, tables, g)  # (B, P) long, (B, P) float32
        slots = torch.full_like(ops, -1)
        return PolicySample(None, None, None, PolicyDraw(slots, ops, mags, (ops >= 0).sum(1)))

    def state_dict(self) -> dict:
        return {"generators": {k: g.get_state() for k, g in self._gens.items()}}

    def load_state_dict(self, state: dict) -> None:
        for key, g_state in state.get("generators", {}).items():
            self._on(torch.device(key))[1].set_state(g_state.to(torch.uint8).cpu())


class AutoAugmentSampler(_DrawSampler):
    """AutoAugment's published policy `name`: a uniform sub-policy per image, each op with its probability."""

    positions = 2

    def __init__(self, name: str = "cifar10", seed: int = 0):
        if name not in AUTOAUGMENT:
            raise ConfigError(f"unknown AutoAugment policy {name!r}; use autoaugment:" + " | autoaugment:".join(
                AUTOAUGMENT))
        super().__init__(seed)
        self.name = name

    def _tensors(self):
        table = AUTOAUGMENT[self.name]
        ops = torch.tensor([[OP_INDEX[op] for op, _, _ in sub] for sub in table])  # (25, 2)
        probs = torch.tensor([[p for _, p, _ in sub] for sub in table], dtype=torch.float32)
        mags = torch.tensor([[aa_magnitude(op, lv) for op, _, lv in sub] for sub in table], dtype=torch.float32)
        signed = torch.tensor([[OPS[OP_INDEX[op]].signed for op, _, _ in sub] for sub in table])
        return ops, probs, mags, signed

    def _draw(self, batch, tables, g):
        ops_t, probs_t, mags_t, signed_t = tables
        dev = ops_t.device
        sub = torch.randint(len(AUTOAUGMENT[self.name]), (batch,), generator=g, device=dev)  # (B,)
        applied = torch.rand(batch, 2, generator=g, device=dev) < probs_t[sub]  # (B, 2)
        flip = torch.rand(batch, 2, generator=g, device=dev) < 0.5
        ops = torch.where(applied, ops_t[sub], -1)
        mags = torch.where(applied, torch.where(signed_t[sub] & flip, -mags_t[sub], mags_t[sub]), 0.0)
        return ops, mags


class _WideSampler(_DrawSampler):
    """RandAugment / TrivialAugment: ops uniform over `WIDE_CHOICES` (Identity is op -1)."""

    wide: bool

    def __init__(self, bins: int, image_size: int, seed: int):
        super().__init__(seed)
        self.bins, self.image_size = int(bins), int(image_size)

    def _tensors(self):
        ops = torch.tensor([OP_INDEX.get(name, -1) for name, _ in WIDE_CHOICES])  # (14,)
        mags = torch.stack([wide_magnitudes(name, self.bins, self.wide, self.image_size)
                            for name, _ in WIDE_CHOICES])  # (14, bins)
        signed = torch.tensor([s for _, s in WIDE_CHOICES])
        return ops, mags, signed

    def _choose(self, choice: torch.Tensor, level: torch.Tensor, tables, g):
        ops_t, mags_t, signed_t = tables
        flip = torch.rand(choice.shape, generator=g, device=choice.device) < 0.5
        ops = ops_t[choice]
        return ops, _signed(mags_t[choice, level], ops, signed_t[choice], flip)


class RandAugmentSampler(_WideSampler):
    """RandAugment: N ops per image, each uniform over the 14 choices, all at level M of `bins`."""

    wide = False

    def __init__(self, n: int = RANDAUGMENT_N, m: int = RANDAUGMENT_M, bins: int = WIDE_BINS, image_size: int = 32,
                 seed: int = 0):
        if not (isinstance(n, int) and 1 <= n <= 8):
            raise ConfigError(f"RandAugment needs 1 <= N <= 8 ops per image, got N={n!r}; e.g. randaugment:2,9")
        if not (isinstance(m, int) and 0 <= m < bins):
            raise ConfigError(f"RandAugment's magnitude M must be a level in 0..{bins - 1}, got M={m!r}; "
                              f"e.g. randaugment:2,9")
        super().__init__(bins, image_size, seed)
        self.n, self.m, self.positions = n, m, n

    def _draw(self, batch, tables, g):
        dev = tables[0].device
        choice = torch.randint(len(WIDE_CHOICES), (batch, self.n), generator=g, device=dev)  # (B, N)
        return self._choose(choice, torch.full_like(choice, self.m), tables, g)


class TrivialAugmentSampler(_WideSampler):
    """TrivialAugment-wide: one op per image, uniform over the 14 choices, at a uniform level of `bins`."""

    wide = True
    positions = 1

    def __init__(self, bins: int = WIDE_BINS, image_size: int = 32, seed: int = 0):
        super().__init__(bins, image_size, seed)

    def _draw(self, batch, tables, g):
        dev = tables[0].device
        choice = torch.randint(len(WIDE_CHOICES), (batch, 1), generator=g, device=dev)  # (B, 1)
        level = torch.randint(self.bins, (batch, 1), generator=g, device=dev)
        return self._choose(choice, level, tables, g)


assert all(op in OP_INDEX for table in AUTOAUGMENT.values() for sub in table for op, _, _ in sub)
assert all(len(table) == 25 for table in AUTOAUGMENT.values())
assert all(OPS[OP_INDEX[op]].level is not None for table in AUTOAUGMENT.values() for sub in table for op, _, lv in sub
           if lv is not None)
