"""The hand-made augmentation arms, one registry: the names `hba-fast train --augment NAME` and the arms of
`hba-fast compare` take, how each reads its argument, and the sampler it runs (hba_fast/augment/baselines.py).

    baseline                  the dataset's recipe without its Cutout (CIFAR: pad-4 crop, flip, standardise)
    cutout                    the recipe with its Cutout (16 px CIFAR, 20 px SVHN)
    autoaugment[:POLICY]      AutoAugment's published policy (cifar10 | svhn | imagenet; default: by dataset)
    randaugment[:N,M]         RandAugment, N ops per image at magnitude M of 31 levels (default 2,9, torchvision's)
    trivialaugment            TrivialAugment-wide: one op per image at a uniform magnitude of 31 levels

`AUGMENTS` is the registry (the command line's help and `train.py` read it); `parse_augment(text)` reads one arm.
This module imports no torch: the command line builds its help from it at once, and the samplers are made (and
baselines.py imported) only when a run needs one.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import ConfigError

AUTOAUGMENT_POLICIES = ("cifar10", "svhn", "imagenet")  # the keys of baselines.AUTOAUGMENT (tests hold them equal)
# Which published policy `autoaugment` means for each data.dataset (the closest one).
AUTOAUGMENT_FOR_DATASET = {"cifar10": "cifar10", "cifar100": "cifar10", "shapes10": "cifar10", "npz": "cifar10",
                           "svhn": "svhn", "folder": "imagenet"}


@dataclass(frozen=True)
class Augment:
    """A parsed --augment value: `name` in AUGMENTS and its arguments."""

    name: str
    policy: str | None = None  # autoaugment: cifar10 | svhn | imagenet (None: by dataset)
    n: int | None = None  # randaugment's N and M (None: the sampler's defaults, torchvision's 2 and 9)
    m: int | None = None

    @property
    def cutout(self) -> bool:
        """Whether the recipe's Cutout runs: every arm but `baseline`."""
        return self.name != "baseline"

    def __str__(self) -> str:
        if self.name == "autoaugment" and self.policy:
            return f"autoaugment:{self.policy}"
        if self.name == "randaugment" and self.n is not None:
            return f"randaugment:{self.n},{self.m}"
        return self.name

    def sampler(self, dataset: str, image_size: int, seed: int):
        """The sampler of this arm (a `Sampler`), or None for `baseline` / `cutout` (the recipe only)."""
        return AUGMENTS[self.name].sampler(self, dataset, image_size, seed)


def _no_args(name: str, arg: str) -> Augment:
    if arg:
        raise ConfigError(f"{name} takes no arguments, got {name}:{arg}")
    return Augment(name)


def _autoaugment_args(name: str, arg: str) -> Augment:
    if arg and arg not in AUTOAUGMENT_POLICIES:
        raise ConfigError(f"unknown AutoAugment policy {arg!r} in {name}:{arg}; use autoaugment:"
                          + " | autoaugment:".join(AUTOAUGMENT_POLICIES))
    return Augment(name, policy=arg or None)


def _randaugment_args(name: str, arg: str) -> Augment:
    if not arg:
        return Augment(name)
    try:
        n, m = (int(v) for v in arg.split(","))
    except ValueError:
        raise ConfigError(f"randaugment takes N,M (ops per image, magnitude level 0-30), e.g. randaugment:2,9; "
                          f"got {name}:{arg}") from None
    from .baselines import RandAugmentSampler

    RandAugmentSampler(n, m)  # validates N and M, with the fix
    return Augment(name, n=n, m=m)


def _autoaugment(a: Augment, dataset: str, size: int, seed: int):
    from .baselines import AutoAugmentSampler

    return AutoAugmentSampler(a.policy or AUTOAUGMENT_FOR_DATASET.get(dataset, "cifar10"), seed)


def _randaugment(a: Augment, dataset: str, size: int, seed: int):
    from .baselines import RandAugmentSampler

    n_m = {} if a.n is None else {"n": a.n, "m": a.m}
    return RandAugmentSampler(**n_m, image_size=size, seed=seed)


def _trivialaugment(a: Augment, dataset: str, size: int, seed: int):
    from .baselines import TrivialAugmentSampler

    return TrivialAugmentSampler(image_size=size, seed=seed)


@dataclass(frozen=True)
class Arm:
    """One hand-made augmentation: its forms on the command line, how its argument is read, what sampler it runs."""

    form: str
    parse: Callable[[str, str], Augment]  # (name, text after the colon) -> Augment; ConfigError on a bad argument
    sampler: Callable[[Augment, str, int, int], object]  # (augment, dataset, image size, seed) -> Sampler | None


AUGMENTS: Mapping[str, Arm] = MappingProxyType({
    "baseline": Arm("baseline", _no_args, lambda a, dataset, size, seed: None),
    "cutout": Arm("cutout", _no_args, lambda a, dataset, size, seed: None),
    "autoaugment": Arm("autoaugment[:" + "|".join(AUTOAUGMENT_POLICIES) + "]", _autoaugment_args, _autoaugment),
    "randaugment": Arm("randaugment[:N,M]", _randaugment_args, _randaugment),
    "trivialaugment": Arm("trivialaugment", _no_args, _trivialaugment),
})
AUGMENT_HELP = " | ".join(arm.form for arm in AUGMENTS.values())


def parse_augment(text: str) -> Augment:
    """'randaugment:3,5' -> Augment('randaugment', n=3, m=5); ConfigError naming the valid forms otherwise."""
    name, _, arg = str(text).strip().partition(":")
    if name not in AUGMENTS:
        raise ConfigError(f"unknown augmentation {text!r}; use one of {AUGMENT_HELP}")
    return AUGMENTS[name].parse(name, arg)
