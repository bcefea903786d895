"""The pure-torch pipeline, its recipe ops and the policy samplers, against simple numpy / Pillow references."""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from hba_fast.data import Batch, PolicySample, build_pipeline, recipes
from hba_fast.data.datasets import ImageSet, Splits
from hba_fast.data.torch_pipeline import TorchPipeline
from hba_fast.engine.hyperparams import SearchSampler
from hba_fast.schedule.file import Schedule
from hba_fast.schedule.sampler import ScheduleSampler

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def make_cfg(**kw):
    base = {"dataset": "npz", "path": None, "image_size": 16, "num_train": None, "num_val": 0, "num_test": None,
            "split_seed": 0, "recipe": "none", "backend": "torch", "batch_size": 8, "num_threads": 1,
            "on_corrupt": "skip", "device_resident": True, "cutout": True}
    return types.SimpleNamespace(**{**base, **kw})


def make_splits(n_train=40, n_val=12, n_test=11, size=16, seed=0) -> Splits:
    """Random images whose label is their index (so a batch says which images it holds)."""
    g = torch.Generator().manual_seed(seed)

    def mk(n, offset):
        return ImageSet(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                        torch.arange(offset, offset + n))

    n = n_train + n_val + n_test
    return Splits(mk(n_train, 0), mk(n_val, n_train), mk(n_test, n_train + n_val), n, MEAN, STD,
                  [str(k) for k in range(n)])


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def standardise_np(x_uint8: np.ndarray) -> np.ndarray:
    m, s = np.array(MEAN).reshape(1, 3, 1, 1), np.array(STD).reshape(1, 3, 1, 1)
    return (x_uint8.astype(np.float64) / 255 - m) / s


# ---------------------------------------------------------------- recipe ops

def test_random_crop_is_a_zero_filled_shift_within_pad():
    x = torch.randint(1, 256, (24, 3, 10, 12), generator=gen(1), dtype=torch.uint8)  # no zeros: fill is visible
    out = recipes.random_crop(x, 4, gen(2)).numpy()
    seen = set()
    for i in range(len(x)):
        matches = []
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                ref = np.zeros((3, 10 + 8, 12 + 8), np.uint8)  # pad 4 then crop at offset (4 + dy, 4 + dx)
                ref[:, 4:14, 4:16] = x[i].numpy()
                if np.array_equal(out[i], ref[:, 4 + dy:14 + dy, 4 + dx:16 + dx]):
                    matches.append((dy, dx))
        assert len(matches) == 1, f"image {i}: not a unique shift within 4 px"
        seen.add(matches[0])
    assert len(seen) > 10  # shifts really vary per sample


def test_random_flip_mirrors_about_half():
    x = torch.randint(0, 256, (200, 3, 5, 7), generator=gen(3), dtype=torch.uint8)
    out = recipes.random_flip(x, gen(4))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 70 < int(mirrored.sum()) < 130


def test_standardise_matches_numpy():
    x = torch.randint(0, 256, (4, 3, 6, 6), generator=gen(5), dtype=torch.uint8)
    out = recipes.standardise(x, torch.tensor(MEAN), torch.tensor(STD))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), standardise_np(x.numpy()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [16, 20])
def test_cutout_fixed_box_size_and_fill(size):
    x = torch.rand((300, 3, 32, 32), generator=gen(6)) + 1.0  # never 0 before cutout
    out = recipes.cutout_fixed(x, size, gen(7)).numpy()
    interior = 0
    for i in range(len(out)):
        zero = out[i] == 0
        assert (zero == zero[0]).all(), "the box covers all channels"
        rows, cols = np.nonzero(zero[0].any(1))[0], np.nonzero(zero[0].any(0))[0]
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert zero[0].sum() == h * w, "a filled rectangle"
        np.testing.assert_array_equal(out[i][~zero], x[i].numpy()[~zero])
        # The box is `size` wide, clipped at the borders: it spans rows [cy - size//2, cy - size//2 + size).
        assert h <= size and w <= size
        assert h == size or rows.min() == 0 or rows.max() == 31
        assert w == size or cols.min() == 0 or cols.max() == 31
        interior += (h == size) and (w == size)
        assert h >= size // 2 and w >= size // 2  # the centre lies inside the image
    assert interior > 50


def test_random_resized_crop_boxes_follow_torchvision_ranges():
    boxes = recipes.random_resized_crop_boxes(2000, 40, 30, gen(8), "cpu")
    top, left, h, w = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 40) & (left + w <= 30) & (h > 0) & (w > 0)).all())
    area = (h * w).float() / (40 * 30)
    assert area.min() >= 0.05 and area.max() <= 1.0
    aspect = w.float() / h.float()
    assert aspect.min() > 0.6 and aspect.max() < 1.6  # 3/4..4/3 up to rounding on small boxes
    assert area.std() > 0.1  # boxes really vary


def test_resized_crop_matches_pillow_bilinear():
    from PIL import Image

    x = torch.randint(0, 256, (3, 3, 20, 24), generator=gen(9), dtype=torch.uint8)
    boxes = torch.tensor([[0, 0, 20, 24], [2, 5, 10, 12], [7, 1, 13, 9]])
    out = recipes.resized_crop(x, boxes, 26).numpy()
    for i, (t, l, h, w) in enumerate(boxes.tolist()):
        im = Image.fromarray(x[i].permute(1, 2, 0).numpy())
        ref = np.asarray(im.resize((26, 26), Image.BILINEAR, box=(l, t, l + w, t + h))).transpose(2, 0, 1)
        assert np.abs(out[i].astype(int) - ref.astype(int)).max() <= 1


def test_color_jitter_and_lighting_semantics():
    x = torch.rand((6, 3, 8, 8), generator=gen(10))
    torch.testing.assert_close(recipes.color_jitter(x, gen(11), strength=0.0), x)
    torch.testing.assert_close(recipes.pca_lighting(x, gen(12), std=0.0), x)
    lit = recipes.pca_lighting(x, gen(13))
    shift = (lit - x).flatten(2)  # PCA lighting adds one RGB offset per image
    torch.testing.assert_close(shift, shift[:, :, :1].expand_as(shift))
    assert shift.abs().max() > 1e-3
    jit = recipes.color_jitter(x, gen(14))
    assert jit.min() >= 0 and jit.max() <= 1 and not torch.allclose(jit, x)
    grey = torch.rand((4, 1, 8, 8), generator=gen(15)).expand(4, 3, 8, 8)  # saturation leaves grey alone
    brightness_only = recipes.color_jitter(grey, gen(16))
    assert torch.allclose(brightness_only[:, 0], brightness_only[:, 1], atol=1e-5)


@pytest.mark.parametrize("dataset,size,recipe,expected", [
    ("cifar10", 32, "auto", "cifar"), ("shapes10", 32, "auto", "cifar"), ("npz", 32, "auto", "cifar"),
    ("svhn", 32, "auto", "svhn"), ("folder", 32, "auto", "imagenet"), ("shapes10", 224, "auto", "imagenet"),
    ("cifar10", 32, "none", "none"),
])
def test_resolve_recipe(dataset, size, recipe, expected):
    assert recipes.resolve_recipe(make_cfg(dataset=dataset, image_size=size, recipe=recipe)) == expected


def test_recipe_table_follows_spec():
    """SPEC 3's baseline augmentations, one record each; CUTOUT_SIZE is derived from them."""
    r = recipes.RECIPES
    assert tuple(r) == ("cifar", "svhn", "imagenet", "none") and "cifar" in r
    assert (r["cifar"].crop_pad, r["cifar"].flip, r["cifar"].cutout_size) == (4, True, 16)
    assert (r["svhn"].crop_pad, r["svhn"].flip, r["svhn"].cutout_size) == (0, False, 20)
    im = r["imagenet"]
    assert (im.resized_crop, im.flip, im.jitter, im.lighting_std, im.cutout_size) == (True, True, 0.4, 0.1, 0)
    assert not any((r["none"].resized_crop, r["none"].crop_pad, r["none"].flip, r["none"].jitter,
                    r["none"].lighting_std, r["none"].cutout_size))
    assert sum(rec.resized_crop for rec in r.values()) == 1
    assert recipes.CUTOUT_SIZE == {"cifar": 16, "svhn": 20}
    from hba_fast.errors import ConfigError

    with pytest.raises(ConfigError, match="one of"):
        recipes.post_policy("cifar10", torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="data.recipe"):
        recipes.resolve_recipe(make_cfg(recipe="imagenet1k"))


@pytest.mark.parametrize("recipe", ["cifar", "svhn", "imagenet", "none"])
@pytest.mark.parametrize("cutout", [True, False])
def test_post_policy_draws_in_spec_order(recipe, cutout):
    """post_policy = SPEC 3's steps written out, drawing from the generator in this order (bit for bit)."""
    x = torch.randint(0, 256, (6, 3, 16, 16), generator=gen(20), dtype=torch.uint8)
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    got = recipes.post_policy(recipe, x, mean, std, gen(21), cutout)
    g = gen(21)
    if recipe == "cifar":
        want = recipes.standardise(recipes.random_flip(recipes.random_crop(x, 4, g), g), mean, std)
    elif recipe == "imagenet":
        y = recipes.random_flip(x, g).float() / 255
        want = recipes.standardise(recipes.pca_lighting(recipes.color_jitter(y, g, 0.4), g, 0.1), mean, std)
    else:
        want = recipes.standardise(x, mean, std)
    if cutout and recipe in ("cifar", "svhn"):
        want = recipes.cutout_fixed(want, 16 if recipe == "cifar" else 20, g)
    assert torch.equal(got, want)
    pre = recipes.pre_policy(recipe, x, gen(22))
    assert torch.equal(pre, recipes.random_resized_crop(x, 16, gen(22)) if recipe == "imagenet" else x)


# ---------------------------------------------------------------- samplers

def test_search_sampler_draws_lambda_i_around_live_lambda():
    from hba_fast.augment.space import SearchSpace

    space = SearchSpace()
    lam = torch.nn.Parameter(space.init_lam())
    sampler = SearchSampler(lam, 0.7, space, generator=gen(17))
    s = sampler.sample(4096, 0, "cpu")
    assert s.lam.shape == (4096, 54) and s.lam.dtype == torch.float32 and not s.lam.requires_grad
    eps = s.lam - lam.detach()
    assert abs(eps.mean().item()) < 0.01 and abs(eps.std().item() - 0.7) < 0.01
    probs, mags = space.decode(s.lam)
    torch.testing.assert_close(s.probs, probs)
    torch.testing.assert_close(s.mags, mags)
    assert not torch.equal(sampler.sample(4, 0, "cpu").lam, sampler.sample(4, 0, "cpu").lam)  # fresh per call
    with torch.no_grad():
        lam.add_(3.0)  # the optimiser moves lambda in place: the next draws follow
    assert abs((sampler.sample(4096, 0, "cpu").lam - lam.detach()).mean().item()) < 0.01
    state = sampler.state_dict()
    a = sampler.sample(8, 1, "cpu").lam
    sampler.load_state_dict(state)
    torch.testing.assert_close(sampler.sample(8, 1, "cpu").lam, a, rtol=0, atol=0)


def test_schedule_sampler_stretches_linearly():
    probs = torch.linspace(0, 1, 200)[:, None].expand(200, 30)  # entry k has probability k / 199
    mags = torch.zeros(200, 30)
    half = ScheduleSampler(Schedule(probs, mags), epochs=100)  # a 200-epoch schedule used for 100 epochs
    assert [half.entry_index(e) for e in (0, 1, 50, 99)] == [0, 2, 100, 198]
    s = half.sample(5, 50, "cpu")
    assert s.lam is None and s.probs.shape == (5, 30) and s.mags.shape == (5, 30)
    torch.testing.assert_close(s.probs, probs[100].expand(5, 30))
    double = ScheduleSampler(Schedule(probs[:100], mags[:100]), epochs=200)
    assert [double.entry_index(e) for e in (0, 1, 2, 3, 199)] == [0, 1, 1, 2, 99]  # round half up, clamped
    same = ScheduleSampler(Schedule(probs[:10], mags[:10]), epochs=10)
    assert [same.entry_index(e) for e in range(10)] == list(range(10))


def test_schedule_sampler_reads_a_searchs_entries():
    """The sampler replays a `Schedule`; a search's entries (Hyperparams.schedule) become one, and bad shapes are
    refused by the Schedule's one validator."""
    entries = [{"epoch": e, "probs": [0.1 * e] * 30, "mags": [0.0] * 30} for e in range(3)]
    s = ScheduleSampler(Schedule.from_entries(entries), epochs=3).sample(2, 2, "cpu")
    torch.testing.assert_close(s.probs, torch.full((2, 30), 0.2))
    plain = [{"probs": [0.5] * 30, "mags": [0.0] * 30}]
    assert ScheduleSampler(Schedule.from_entries(plain), epochs=7).sample(1, 6, "cpu").probs.shape == (1, 30)
    with pytest.raises(ValueError, match="shape"):
        ScheduleSampler(Schedule.from_entries([{"probs": [0.5] * 29, "mags": [0.0] * 29}]), epochs=1)


# ---------------------------------------------------------------- the pipeline

class RecordingSampler:
    """Hands out per-sample policies where only Invert (slots 6 and 21) may fire, and records them."""

    def __init__(self, seed=0):
        from hba_fast.augment.space import SearchSpace

        self.space, self.g, self.drawn = SearchSpace(), gen(seed), []

    def sample(self, batch_size, epoch, device):
        lam = torch.full((batch_size, 54), -30.0)  # every probability ~ 0
        on = torch.rand(batch_size, generator=self.g) < 0.5
        lam[:, 6] = torch.where(on, 30.0, -30.0)  # Invert.0 probability ~ 1 or ~ 0 per sample
        probs, mags = self.space.decode(lam)
        self.drawn.append(lam)
        return PolicySample(probs, mags, lam)


def test_batches_shapes_dtypes_and_standardisation():
    splits = make_splits()
    pipe = TorchPipeline(make_cfg(), splits, None, "cpu", seed=0)
    assert pipe.steps_per_epoch == 40 // 8
    batches = list(pipe.train_epoch(0))
    assert len(batches) == 5
    for b in batches:
        assert isinstance(b, Batch) and b.lam is None
        assert b.images.shape == (8, 3, 16, 16) and b.images.dtype == torch.float32
        assert b.labels.dtype == torch.int64
        ref = standardise_np(splits.train.images[b.labels].numpy())  # recipe none, no policy: just standardised
        np.testing.assert_allclose(b.images.numpy(), ref, rtol=1e-5, atol=1e-5)
    seen = torch.cat([b.labels for b in batches])
    assert sorted(seen.tolist()) == list(range(40))  # one shuffled pass
    v = pipe.val_batch()
    assert v.images.shape == (8, 3, 16, 16) and v.lam is None
    np.testing.assert_allclose(v.images.numpy(), standardise_np(splits.val.images[v.labels - 40].numpy()),
                               rtol=1e-5, atol=1e-5)


def test_cifar_recipe_batches_are_augmented():
    splits = make_splits(size=32)
    pipe = build_pipeline(make_cfg(recipe="cifar", image_size=32), splits, None, torch.device("cpu"))
    b = next(iter(pipe.train_epoch(0)))
    clean = torch.from_numpy(standardise_np(splits.train.images[b.labels].numpy())).float()
    assert b.images.shape == (8, 3, 32, 32)
    assert not torch.allclose(b.images, clean)
    assert ((b.images == 0).all(1).flatten(1).sum(1) >= 64).all()  # every image has its 16x16 cutout (>= 8x8 clipped)


def test_val_cycles_and_eval_is_one_clean_pass():
    splits = make_splits(n_val=12)
    pipe = TorchPipeline(make_cfg(batch_size=5), splits, None, "cpu", seed=1)
    labels = torch.cat([pipe.val_batch().labels for _ in range(12)])  # 60 = 5 passes of 12
    for k in range(5):
        assert sorted(labels[12 * k:12 * (k + 1)].tolist()) == list(range(40, 52))
    assert not torch.equal(labels[:12], labels[12:24])  # reshuffled each pass
    ev = list(pipe.eval_batches("test"))
    assert [len(b.labels) for b in ev] == [5, 5, 1]
    assert torch.cat([b.labels for b in ev]).tolist() == list(range(52, 63))
    np.testing.assert_allclose(ev[0].images.numpy(), standardise_np(splits.test.images[:5].numpy()),
                               rtol=1e-5, atol=1e-5)


def test_lam_handed_back_is_the_one_used():
    splits = make_splits(size=16)
    sampler = RecordingSampler()
    pipe = TorchPipeline(make_cfg(recipe="none"), splits, sampler, "cpu", seed=2)
    inverted_any = 0
    for b in pipe.train_epoch(0):
        assert b.lam is sampler.drawn[-1] or torch.equal(b.lam, sampler.drawn[-1])
        src = torch.from_numpy(standardise_np(splits.train.images[b.labels].numpy())).float()
        inv = torch.from_numpy(standardise_np(255 - splits.train.images[b.labels].numpy())).float()
        was_inverted = torch.isclose(b.images, inv, atol=1e-4).flatten(1).all(1)
        untouched = torch.isclose(b.images, src, atol=1e-4).flatten(1).all(1)
        assert bool((was_inverted | untouched).all())
        p_invert = torch.sigmoid(b.lam[:, 6])
        assert bool((p_invert[was_inverted] > 0.99).all()), "an image was inverted although its lam_i says p=0"
        inverted_any += int(was_inverted.sum())
    assert inverted_any > 5  # P(invert) = 0.5 * P(K >= 1) = 0.4 per image


def test_search_sampler_through_the_pipeline():
    from hba_fast.augment.space import SearchSpace

    space = SearchSpace()
    lam = space.init_lam()
    pipe = TorchPipeline(make_cfg(recipe="cifar", image_size=32), make_splits(size=32),
                         SearchSampler(lam, 1.0, space, gen(3)), "cpu", seed=3)
    b = next(iter(pipe.train_epoch(0)))
    assert b.lam.shape == (8, 54) and b.lam.dtype == torch.float32
    assert abs((b.lam - lam).std().item() - 1.0) < 0.2


def test_imagenet_recipe_with_policy_on_folder_like_data():
    from hba_fast.augment.space import SearchSpace

    space = SearchSpace()
    cfg = make_cfg(recipe="auto", dataset="folder", image_size=24)
    pipe = TorchPipeline(cfg, make_splits(size=24), SearchSampler(space.init_lam(), 1.0, space, gen(4)), "cpu",
                         seed=4)
    assert pipe.recipe == "imagenet"
    b = next(iter(pipe.train_epoch(0)))
    assert b.images.shape == (8, 3, 24, 24) and torch.isfinite(b.images).all()


def test_sharding_gives_disjoint_equal_shares():
    splits = make_splits(n_train=43, n_test=11)
    cfg = make_cfg(batch_size=4)
    p0 = TorchPipeline(cfg, splits, None, "cpu", shard=(0, 2), seed=5)
    p1 = TorchPipeline(cfg, splits, None, "cpu", shard=(1, 2), seed=5)
    assert p0.steps_per_epoch == p1.steps_per_epoch == 43 // 8
    for epoch in (0, 1):
        a = torch.cat([b.labels for b in p0.train_epoch(epoch)])
        c = torch.cat([b.labels for b in p1.train_epoch(epoch)])
        assert len(a) == len(c) == 20 and not set(a.tolist()) & set(c.tolist())  # 5 steps of 4 each, 3 dropped
    e0 = torch.cat([b.labels for b in p0.eval_batches("test")]).tolist()
    e1 = torch.cat([b.labels for b in p1.eval_batches("test")]).tolist()
    assert not set(e0) & set(e1) and sorted(e0 + e1) == list(range(55, 66))


def _run(pipe, epoch, n_val=3):
    out = [(b.images, b.labels, b.lam) for b in pipe.train_epoch(epoch)]
    out += [(v.images, v.labels, v.lam) for v in (pipe.val_batch() for _ in range(n_val))]
    return out


def _same(a, b) -> bool:
    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
               and ((x[2] is None and y[2] is None) or torch.equal(x[2], y[2])) for x, y in zip(a, b))


def test_determinism_by_seed():
    from hba_fast.augment.space import SearchSpace

    space = SearchSpace()
    cfg = make_cfg(recipe="cifar", image_size=32, batch_size=10)

    def pipe(seed):
        return TorchPipeline(cfg, make_splits(size=32), SearchSampler(space.init_lam(), 1.0, space, gen(seed)),
                             "cpu", seed=seed)

    assert _same(_run(pipe(7), 0), _run(pipe(7), 0))
    assert not _same(_run(pipe(7), 0), _run(pipe(8), 0))


def test_resume_from_state_dict_gives_the_same_next_batches():
    from hba_fast.augment.space import SearchSpace

    space = SearchSpace()
    cfg = make_cfg(recipe="cifar", image_size=32, batch_size=10)

    def pipe():
        return TorchPipeline(cfg, make_splits(size=32), SearchSampler(space.init_lam(), 1.0, space, gen(9)),
                             "cpu", seed=9)

    a = pipe()
    _run(a, 0, n_val=5)  # part-way into the second validation pass (12 images, batches of 10)
    state, sampler_state = a.state_dict(), a.sampler.state_dict()  # the trainer checkpoints both
    assert state["epoch"] == 1 and state["step"] == 0
    expected = _run(a, 1)
    b = pipe()
    b.load_state_dict(state)
    b.sampler.load_state_dict(sampler_state)
    assert _same(_run(b, b.epoch), expected)


def test_resume_mid_epoch_continues_the_epoch():
    """A state saved after 2 of 4 steps resumes at step 2: the same remaining batches as the uninterrupted run."""
    from hba_fast.augment.space import SearchSpace

    space = SearchSpace()
    cfg = make_cfg(recipe="cifar", image_size=32, batch_size=10)

    def pipe():
        return TorchPipeline(cfg, make_splits(size=32), SearchSampler(space.init_lam(), 1.0, space, gen(10)),
                             "cpu", seed=10)

    a = pipe()
    it = a.train_epoch(0)
    [next(it) for _ in range(2)]
    state, sampler_state = a.state_dict(), a.sampler.state_dict()
    assert (state["epoch"], state["step"]) == (0, 2)
    expected = [(b.images, b.labels, b.lam) for b in it]
    b = pipe()
    b.load_state_dict(state)
    b.sampler.load_state_dict(sampler_state)
    got = [(x.images, x.labels, x.lam) for x in b.train_epoch(0)]
    assert len(got) == len(expected) == 2 and _same(got, expected)


def test_too_small_training_split_is_a_clear_error():
    from hba_fast.errors import DataError

    with pytest.raises(DataError, match="fewer than one batch"):
        TorchPipeline(make_cfg(batch_size=64), make_splits(n_train=40), None, "cpu")


@pytest.mark.gpu
def test_device_resident_on_cuda():
    from hba_fast.augment.space import SearchSpace

    space = SearchSpace()
    lam = space.init_lam("cuda")
    pipe = TorchPipeline(make_cfg(recipe="cifar", image_size=32), make_splits(size=32),
                         SearchSampler(lam, 1.0, space), "cuda", seed=0)
    assert pipe._sets["train"][0].is_cuda
    b = next(iter(pipe.train_epoch(0)))
    assert b.images.is_cuda and b.labels.is_cuda and b.lam.is_cuda
    assert math.isfinite(b.images.sum().item())
