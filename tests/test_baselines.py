"""The hand-made policies of hba_fast.baselines: what each applies (op rates, magnitudes, signs over many draws,
against the published tables and torchvision's definitions, written out independently here), the same ops on
real images against Pillow called as the reference code calls it, and both pipelines applying the ready draws."""
from __future__ import annotations

import math
import types as pytypes
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from hba_fast.augment.arms import parse_augment
from hba_fast.augment.baselines import (
    AUTOAUGMENT,
    WIDE_CHOICES,
    AutoAugmentSampler,
    RandAugmentSampler,
    TrivialAugmentSampler,
    aa_magnitude,
    wide_magnitudes,
)
from hba_fast.augment.ops import OP_INDEX, OPS, apply_op
from hba_fast.augment.policy import PolicyDraw, apply_draw
from hba_fast.errors import ConfigError

N = 20_000  # draws for the rate tests
FILL = (128, 128, 128)
ENHANCE = {"Contrast": ImageEnhance.Contrast, "Color": ImageEnhance.Color, "Brightness": ImageEnhance.Brightness,
           "Sharpness": ImageEnhance.Sharpness}


def within(rate: float, p: float, n: int, z: float = 5.0) -> bool:
    return abs(rate - p) <= z * math.sqrt(max(p * (1 - p), 1e-4) / n)


# ---------------------------------------------------------------- the tables

def test_published_tables():
    assert set(AUTOAUGMENT) == {"cifar10", "svhn", "imagenet"}
    for table in AUTOAUGMENT.values():
        assert len(table) == 25
        for sub in table:
            assert len(sub) == 2
            for op, p, level in sub:
                assert 0.0 <= p <= 1.0
                assert (level is None) == (not OPS[OP_INDEX[op]].has_magnitude)
                assert level is None or level in range(10)
    # spot checks against the paper's appendix (AutoAugment, Cubuk et al. 2019)
    assert AUTOAUGMENT["cifar10"][0] == (("Invert", 0.1, None), ("Contrast", 0.2, 6))
    assert AUTOAUGMENT["cifar10"][21] == (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9))
    assert AUTOAUGMENT["svhn"][24] == (("ShearX", 0.7, 2), ("Invert", 0.1, None))
    assert AUTOAUGMENT["imagenet"][0] == (("Posterize", 0.4, 8), ("Rotate", 0.6, 9))


def aa_reference(op: str, level: int) -> float:
    """The AutoAugment reference code's magnitudes (augmentation_transforms.py, PARAMETER_MAX = 10), in our units."""
    float_parameter = lambda lv, maxval: float(lv) * maxval / 10  # noqa: E731
    int_parameter = lambda lv, maxval: int(lv * maxval / 10)  # noqa: E731
    return {"ShearX": float_parameter(level, 0.3), "ShearY": float_parameter(level, 0.3),
            "TranslateX": int_parameter(level, 10) / 32, "TranslateY": int_parameter(level, 10) / 32,
            "Rotate": int_parameter(level, 30), "Solarize": int_parameter(level, 256),  # ours: 256 - threshold
            "Posterize": int_parameter(level, 4),  # bits cleared (fixed posterize keeps 8 - this)
            "Contrast": float_parameter(level, 1.8) + 0.1, "Color": float_parameter(level, 1.8) + 0.1,
            "Brightness": float_parameter(level, 1.8) + 0.1, "Sharpness": float_parameter(level, 1.8) + 0.1}[op]


def test_autoaugment_levels_are_the_reference_codes():
    for op in ("ShearX", "TranslateY", "Rotate", "Solarize", "Posterize", "Color", "Sharpness"):
        for level in range(10):
            assert aa_magnitude(op, level) == pytest.approx(aa_reference(op, level), abs=1e-12), (op, level)
    assert aa_magnitude("Equalize", None) == 0.0
    assert aa_magnitude("Color", 5) == pytest.approx(1.0)  # level 5 is the identity of the enhance ops


def torchvision_space(bins: int, wide: bool, size: int = 32) -> dict[str, tuple[torch.Tensor, bool]]:
    """torchvision's `_augmentation_space` (RandAugment / TrivialAugmentWide), its units, written out."""
    lin = lambda lo, hi: torch.linspace(lo, hi, bins)  # noqa: E731
    k = 6 if wide else 4
    t = 32.0 if wide else 150.0 / 331.0 * size
    e = 0.99 if wide else 0.9
    return {"Identity": (torch.tensor(0.0), False), "ShearX": (lin(0.0, 0.99 if wide else 0.3), True),
            "ShearY": (lin(0.0, 0.99 if wide else 0.3), True), "TranslateX": (lin(0.0, t), True),
            "TranslateY": (lin(0.0, t), True), "Rotate": (lin(0.0, 135.0 if wide else 30.0), True),
            "Brightness": (lin(0.0, e), True), "Color": (lin(0.0, e), True), "Contrast": (lin(0.0, e), True),
            "Sharpness": (lin(0.0, e), True),
            "Posterize": (8 - (torch.arange(bins) / ((bins - 1) / k)).round().int(), False),
            "Solarize": (lin(255.0, 0.0), False), "AutoContrast": (torch.tensor(0.0), False),
            "Equalize": (torch.tensor(0.0), False)}


def ours_from_torchvision(op: str, v: float, size: int = 32) -> float:
    """torchvision's (signed) magnitude -> ours, as its _apply_op uses it."""
    if op in ("TranslateX", "TranslateY"):
        return int(v) / size  # torchvision translates by int(v) pixels
    if op in ENHANCE:
        return 1.0 + v
    if op == "Posterize":
        return 8 - int(v)  # torchvision keeps v bits
    if op == "Solarize":
        return 256.0 - v  # torchvision inverts pixels >= v
    return v


@pytest.mark.parametrize("wide", [False, True])
def test_wide_space_is_torchvisions(wide):
    space = torchvision_space(31, wide)
    assert [name for name, _ in WIDE_CHOICES] == list(space)
    for name, signed in WIDE_CHOICES:
        tv, tv_signed = space[name]
        assert signed == tv_signed, name
        ours = wide_magnitudes(name, 31, wide)
        if tv.dim() == 0:
            assert (ours == 0).all(), name
            continue
        for b in range(31):
            assert float(ours[b]) == pytest.approx(ours_from_torchvision(name, float(tv[b])), abs=1e-6), (name, b)
            if signed and name in ENHANCE:  # the negative sign: factor 1 - v
                assert 2.0 - float(ours[b]) == pytest.approx(ours_from_torchvision(name, -float(tv[b])), abs=1e-6)


# ---------------------------------------------------------------- what each sampler applies

def test_autoaugment_rates_magnitudes_and_pairs():
    for name, table in AUTOAUGMENT.items():
        draw = AutoAugmentSampler(name, seed=1).sample(N, 0, "cpu").draw
        assert draw.ops.shape == (N, 2) and draw.mags.shape == (N, 2) and (draw.slots == -1).all()
        for pos in range(2):
            for k, op in enumerate(OPS):
                want = sum(sub[pos][1] for sub in table if sub[pos][0] == op.name) / 25
                rate = (draw.ops[:, pos] == k).float().mean().item()
                assert within(rate, want, N), (name, pos, op.name, rate, want)
                hit = draw.ops[:, pos] == k
                if not hit.any():
                    continue
                allowed = {round(aa_magnitude(op.name, sub[pos][2]), 5) for sub in table if sub[pos][0] == op.name}
                seen = {round(v, 5) for v in draw.mags[hit, pos].abs().tolist()}
                assert seen <= allowed, (name, op.name, seen, allowed)
                if op.signed:
                    assert within((draw.mags[hit, pos] < 0).float().mean().item(), 0.5, int(hit.sum()))
                else:
                    assert (draw.mags[hit, pos] >= 0).all()
        both = (draw.ops >= 0).all(1)
        pairs = {(OPS[a].name, OPS[b].name) for a, b in draw.ops[both].tolist()}
        assert pairs <= {(s[0][0], s[1][0]) for s in table}, name  # both ops come from one sub-policy
        assert (draw.mags[draw.ops < 0] == 0).all()


def test_randaugment_rates_and_magnitudes():
    n, m = 3, 9
    draw = RandAugmentSampler(n, m, seed=2).sample(N, 0, "cpu").draw
    assert draw.ops.shape == (N, n)
    space = torchvision_space(31, wide=False)
    for name, signed in WIDE_CHOICES:
        k = OP_INDEX.get(name, -1)
        hit = draw.ops == k
        assert within(hit.float().mean().item(), 1 / 14, N * n), name
        tv = space[name][0]
        if k < 0:
            assert (draw.mags[hit] == 0).all()
            continue
        mags = draw.mags[hit]
        if tv.dim() == 0:
            assert (mags == 0).all(), name
            continue
        pos = float(ours_from_torchvision(name, float(tv[m])))
        neg = float(ours_from_torchvision(name, -float(tv[m]))) if signed else pos
        assert torch.isclose(mags, torch.tensor(pos), atol=1e-5).logical_or(
            torch.isclose(mags, torch.tensor(neg), atol=1e-5)).all(), name
        if signed:
            assert within(torch.isclose(mags, torch.tensor(neg), atol=1e-5).float().mean().item(), 0.5, len(mags))
    assert float(draw.mags[draw.ops == OP_INDEX["Rotate"]].abs().max()) == pytest.approx(9.0)


def test_trivialaugment_rates_and_uniform_levels():
    draw = TrivialAugmentSampler(seed=3).sample(N, 0, "cpu").draw
    assert draw.ops.shape == (N, 1)
    space = torchvision_space(31, wide=True)
    for name, _ in WIDE_CHOICES:
        k = OP_INDEX.get(name, -1)
        hit = draw.ops[:, 0] == k
        assert within(hit.float().mean().item(), 1 / 14, N), name
        tv = space[name][0]
        if tv.dim() == 0:
            assert (draw.mags[hit] == 0).all()
            continue
        mags = draw.mags[hit, 0]
        unsigned = torch.where(mags < 1.0, 2.0 - mags, mags) if name in ENHANCE else mags.abs()
        table = torch.tensor([float(ours_from_torchvision(name, float(v))) for v in tv])
        level = (unsigned[:, None] - table[None]).abs().argmin(1)  # (n,) which of the 31 levels
        assert torch.allclose(table[level], unsigned, atol=1e-5), name
        counts = torch.bincount(level, minlength=31).float()
        if name not in ("Posterize",):  # Posterize's 31 levels hold only 7 distinct values
            assert within(counts.max().item() / len(mags), 1 / 31, len(mags)), name
            assert within(counts.min().item() / len(mags), 1 / 31, len(mags)), name
    rot = draw.mags[draw.ops[:, 0] == OP_INDEX["Rotate"], 0].abs()
    assert float(rot.max()) == pytest.approx(135.0)  # outside the search range: applied as is


def test_draws_are_reproducible_and_resumable():
    a = RandAugmentSampler(seed=5)
    a.sample(16, 0, "cpu")
    state = a.state_dict()
    nxt = a.sample(16, 0, "cpu").draw
    b = RandAugmentSampler(seed=5)
    b.load_state_dict(state)
    again = b.sample(16, 0, "cpu").draw
    assert torch.equal(nxt.ops, again.ops) and torch.equal(nxt.mags, again.mags)
    assert not torch.equal(AutoAugmentSampler(seed=1).sample(64, 0, "cpu").draw.ops,
                           AutoAugmentSampler(seed=2).sample(64, 0, "cpu").draw.ops)


def test_arms_name_the_published_policies():
    from hba_fast.augment.arms import AUTOAUGMENT_POLICIES

    assert tuple(AUTOAUGMENT) == AUTOAUGMENT_POLICIES  # arms.py reads them without importing the samplers


def test_parse_augment():
    assert parse_augment("randaugment:3,5").n == 3 and parse_augment("randaugment:3,5").m == 5
    assert str(parse_augment("randaugment")) == "randaugment"
    assert parse_augment("autoaugment:svhn").policy == "svhn"
    assert not parse_augment("baseline").cutout and parse_augment("trivialaugment").cutout
    for bad, match in (("foo", "unknown augmentation"), ("autoaugment:mnist", "unknown AutoAugment policy"),
                       ("randaugment:2", "N,M"), ("randaugment:2,31", "0..30"), ("cutout:3", "no arguments")):
        with pytest.raises(ConfigError, match=match):
            parse_augment(bad)


# ---------------------------------------------------------------- on real images, against Pillow

def images_of(cifar_mini, n: int, start: int = 0) -> torch.Tensor:
    return torch.from_numpy(cifar_mini["train_images"][start:start + n]).permute(0, 3, 1, 2).contiguous()


def pil_aa(img: Image.Image, op: str, level: int | None, sign: float) -> Image.Image:
    """One AutoAugment step as the reference code runs it with Pillow (posterize fixed, fill 128 as SPEC 3)."""
    if op in ("ShearX", "ShearY"):
        v = sign * level * 0.3 / 10
        data = (1, v, 0, 0, 1, 0) if op == "ShearX" else (1, 0, 0, v, 1, 0)
        return img.transform((32, 32), Image.Transform.AFFINE, data, Image.Resampling.NEAREST, fillcolor=FILL)
    if op in ("TranslateX", "TranslateY"):
        v = sign * int(level * 10 / 10)
        data = (1, 0, v, 0, 1, 0) if op == "TranslateX" else (1, 0, 0, 0, 1, v)
        return img.transform((32, 32), Image.Transform.AFFINE, data, Image.Resampling.NEAREST, fillcolor=FILL)
    if op == "Rotate":
        return img.rotate(sign * int(level * 30 / 10), Image.Resampling.NEAREST, fillcolor=FILL)
    if op == "Solarize":
        return ImageOps.solarize(img, 256 - int(level * 256 / 10))
    if op == "Posterize":
        return ImageOps.posterize(img, 8 - int(level * 4 / 10))
    if op in ENHANCE:
        return ENHANCE[op](img).enhance(level * 1.8 / 10 + 0.1)
    return {"AutoContrast": ImageOps.autocontrast, "Equalize": ImageOps.equalize, "Invert": ImageOps.invert}[op](img)


@pytest.mark.parametrize("name", list(AUTOAUGMENT))
def test_every_autoaugment_subpolicy_on_real_images_matches_pillow(cifar_mini, name):
    """Each of the 25 sub-policies with both ops applied, through the sampler's tables and apply_draw."""
    table = AUTOAUGMENT[name]
    ops, _, mags, signed = AutoAugmentSampler(name)._tensors()
    sign = torch.where(torch.arange(25)[:, None] % 2 == 0, 1.0, -1.0).expand(25, 2)
    draw = PolicyDraw(torch.full((25, 2), -1), ops, torch.where(signed, sign * mags, mags), torch.full((25,), 2))
    x = images_of(cifar_mini, 25, start=100)
    out = apply_draw(x, draw).permute(0, 2, 3, 1).numpy()
    for i, sub in enumerate(table):
        ref = Image.fromarray(cifar_mini["train_images"][100 + i])
        for op, _, level in sub:
            ref = pil_aa(ref, op, level, float(sign[i, 0]))
        assert np.array_equal(np.asarray(ref), out[i]), (name, i, sub)


def pil_torchvision(img: Image.Image, op: str, v: float) -> Image.Image:
    """torchvision's _apply_op on a PIL image with its signed magnitude v (fill 128 instead of its 0)."""
    if op in ("ShearX", "ShearY"):
        data = (1, v, 0, 0, 1, 0) if op == "ShearX" else (1, 0, 0, v, 1, 0)
        return img.transform(img.size, Image.Transform.AFFINE, data, Image.Resampling.NEAREST, fillcolor=FILL)
    if op in ("TranslateX", "TranslateY"):
        data = (1, 0, int(v), 0, 1, 0) if op == "TranslateX" else (1, 0, 0, 0, 1, int(v))
        return img.transform(img.size, Image.Transform.AFFINE, data, Image.Resampling.NEAREST, fillcolor=FILL)
    if op == "Rotate":
        return img.rotate(v, Image.Resampling.NEAREST, fillcolor=FILL)
    if op in ENHANCE:
        return ENHANCE[op](img).enhance(1.0 + v)
    if op == "Posterize":
        return ImageOps.posterize(img, int(v))
    if op == "Solarize":
        return ImageOps.solarize(img, v)
    return {"AutoContrast": ImageOps.autocontrast, "Equalize": ImageOps.equalize, "Identity": lambda im: im}[op](img)


@pytest.mark.parametrize("wide", [False, True])
def test_wide_ops_on_real_images_match_pillow(cifar_mini, wide):
    """Every choice at four levels and both signs, as torchvision applies it to a PIL image."""
    space, levels = torchvision_space(31, wide), (0, 9, 17, 30)
    cases = [(name, b, s) for name, signed in WIDE_CHOICES for b in levels for s in ((1, -1) if signed else (1,))]
    ops = torch.tensor([[OP_INDEX.get(name, -1)] for name, _, _ in cases])
    ours = [float(wide_magnitudes(name, 31, wide)[b]) for name, b, _ in cases]
    mags = torch.tensor([[(2.0 - m if name in ENHANCE else -m) if s < 0 else m]
                         for (name, _, s), m in zip(cases, ours)])
    x = images_of(cifar_mini, len(cases), start=200)
    out = apply_draw(x, PolicyDraw(torch.full_like(ops, -1), ops, mags, (ops >= 0).sum(1))).permute(0, 2, 3, 1)
    for i, (name, b, s) in enumerate(cases):
        tv = space[name][0]
        v = float(tv[b]) * s if tv.dim() else 0.0
        ref = pil_torchvision(Image.fromarray(cifar_mini["train_images"][200 + i]), name, v)
        assert np.array_equal(np.asarray(ref), out[i].numpy()), (name, b, s)


# ---------------------------------------------------------------- through the pipelines

def _splits(cifar_mini, n=64):
    def image_set(images_hwc, labels):
        return pytypes.SimpleNamespace(images=torch.from_numpy(images_hwc).permute(0, 3, 1, 2).contiguous(),
                                       labels=torch.as_tensor(labels, dtype=torch.int64), files=None)

    return pytypes.SimpleNamespace(  # labels are image ids, so batches say which images they hold
        train=image_set(cifar_mini["train_images"][:n], np.arange(n)),
        val=image_set(cifar_mini["val_images"][:16], np.arange(16)),
        test=image_set(cifar_mini["test_images"][:16], np.arange(16)),
        num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), class_names=None)


def _data_cfg(**kw):
    from hba_fast.config import DataConfig

    base = {"dataset": "cifar10", "path": "unused", "image_size": 32, "recipe": "none", "backend": "torch",
            "batch_size": 16, "num_threads": 2, "num_val": 16, "num_train": 64}
    return DataConfig(**{**base, **kw})


def _standardise(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - 0.5) / 0.25


def test_torch_pipeline_applies_the_ready_draw(cifar_mini):
    from hba_fast.data.torch_pipeline import TorchPipeline

    splits = _splits(cifar_mini)
    pipe = TorchPipeline(_data_cfg(), splits, RandAugmentSampler(3, 14, seed=7), "cpu", seed=0)
    twin = RandAugmentSampler(3, 14, seed=7)
    changed = 0
    for batch in pipe.train_epoch(0):
        assert batch.lam is None
        raw = splits.train.images[batch.labels]
        want = apply_draw(raw, twin.sample(16, 0, "cpu").draw)
        torch.testing.assert_close(batch.images, _standardise(want), rtol=0, atol=1e-5)
        changed += int((want != raw).flatten(1).any(1).sum())
    assert changed > 40  # most images get at least one op


def test_dali_pipeline_applies_the_ready_draw_with_three_positions(cifar_mini):
    pytest.importorskip("nvidia.dali")
    from hba_fast.data.dali_pipeline import DaliPipeline

    splits = _splits(cifar_mini)
    pipe = DaliPipeline(_data_cfg(backend="dali"), splits, RandAugmentSampler(3, 14, seed=8), torch.device("cpu"))
    assert pipe.positions == 3
    outs = pipe._make_train_pipe(epoch=0, start=0).run()
    images, labels = outs[0].as_array(), outs[1].as_array().reshape(-1)
    ops, mags = outs[3].as_array(), outs[4].as_array()
    want = RandAugmentSampler(3, 14, seed=8).sample(16, 0, "cpu").draw
    np.testing.assert_array_equal(ops, want.ops.numpy())
    np.testing.assert_array_equal(mags, want.mags.numpy())
    raw = splits.train.images[torch.from_numpy(labels)]
    for i in range(16):
        x = raw[i:i + 1]
        for pos in range(3):
            if ops[i, pos] >= 0:
                x = apply_op(x, OPS[ops[i, pos]].name, torch.tensor([mags[i, pos]]))
        bad = ~np.isclose(images[i], _standardise(x)[0].numpy(), atol=1e-4)
        assert bad.mean() <= 2e-3, f"sample {i}, ops {ops[i]}: {bad.mean():.3%} differ"
    assert Counter(ops.reshape(-1).tolist())[-1] < 16  # Identity is one choice in 14


@pytest.mark.gpu
def test_draws_and_their_static_application_are_sync_free_on_cuda(cifar_mini):
    """The samplers draw on the device and apply_draw(static=True) runs with CUDA sync checks set to error; the
    result equals the same draw applied on the CPU."""
    dev = torch.device("cuda")
    x = images_of(cifar_mini, 64).to(dev)
    samplers = [AutoAugmentSampler("cifar10", seed=0), RandAugmentSampler(3, 9, seed=0), TrivialAugmentSampler(seed=0)]
    for s in samplers:
        s.sample(64, 0, dev)  # the first call copies the sampler's tables to the device
    done = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for s in samplers:
            draw = s.sample(64, 0, dev).draw
            done.append((draw, apply_draw(x, draw, static=True)))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for draw, out in done:
        cpu_draw = PolicyDraw(*(t.cpu() for t in (draw.slots, draw.ops, draw.mags, draw.k)))
        assert torch.equal(out.cpu(), apply_draw(x.cpu(), cpu_draw))
