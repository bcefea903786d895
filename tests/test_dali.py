"""The DALI path against independent references, with DALI's CPU operators (no GPU needed).

- every op (dali_ops) against Pillow (written out here from SPEC section 3) and against hba_fast.ops.apply_op
  on real CIFAR-10 images, each sample at its own magnitude: bit-exact, except Rotate (<= 0.1% of pixels may
  differ, where a source coordinate lands within float rounding of a pixel edge) and Cutout (random centre:
  checked as a clipped square of the right side, exact fill, rest untouched);
- PBA's draw (`draw_policy`) against a plain-Python transcription of PBA's loop (K distribution, per-slot
  application rates, signs), and the images a DaliPipeline outputs against hba_fast.ops applied to the draw it
  reports;
- DaliPipeline batches (shapes, dtypes, lam_i handed back = the sampler's), sharding, resume, and the JPEG
  folder path with corrupted files in both `on_corrupt` modes.
"""
from __future__ import annotations

import random
import types as pytypes

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install nvidia-dali-cuda130)")

from PIL import Image, ImageEnhance, ImageOps

from hba_fast.augment import dali_ops
from hba_fast.augment.ops import OP_INDEX, OPS, apply_op
from hba_fast.augment.sampler import PolicySample
from hba_fast.data import dali_apply_op
from hba_fast.data.dali_pipeline import DaliPipeline
from hba_fast.data.dali_readers import CorruptImageError, draw_policy, epoch_order, scan_jpegs
from hba_fast.errors import DataError

B = 16


def pil_op(img: np.ndarray, name: str, m: float) -> np.ndarray:
    """SPEC section 3 in Pillow: HWC uint8 -> HWC uint8."""
    im = Image.fromarray(img)
    w, h = im.size
    affine = {"ShearX": (1, m, 0, 0, 1, 0), "ShearY": (1, 0, 0, m, 1, 0), "TranslateX": (1, 0, m * w, 0, 1, 0),
              "TranslateY": (1, 0, 0, 0, 1, m * h)}
    if name in affine:
        out = im.transform(im.size, Image.Transform.AFFINE, affine[name], Image.Resampling.NEAREST,
                           fillcolor=(128, 128, 128))
    elif name == "Rotate":
        out = im.rotate(m, fillcolor=(128, 128, 128))
    elif name in ("AutoContrast", "Invert", "Equalize"):
        no_mag = {"AutoContrast": ImageOps.autocontrast, "Invert": ImageOps.invert, "Equalize": ImageOps.equalize}
        out = no_mag[name](im)
    elif name == "Solarize":
        out = im.point(lambda v: 255 - v if v >= 256 - m else v)
    elif name == "Posterize":  # ImageOps.posterize(im, 8 - round(m)); Pillow refuses 0 bits, which is black
        out = im.point(lambda v: v & (256 - 2 ** round(m)))
    else:
        out = getattr(ImageEnhance, name)(im).enhance(m)
    return np.asarray(out)


def _magnitudes(spec, n: int, seed: int) -> np.ndarray:
    """One magnitude per stratum of the range (jittered, so coordinates do not sit exactly on pixel edges)."""
    lo, hi = (spec.lo, spec.hi) if spec.has_magnitude else (0.0, 1.0)
    rng = np.random.default_rng(seed)
    mags = (lo + (hi - lo) * (np.arange(n) + rng.uniform(0.05, 0.95, n)) / n).astype(np.float32)
    if spec.signed:
        mags[::2] *= -1
    rng.shuffle(mags)
    return mags


@pytest.fixture(scope="module")
def batch(cifar_mini):
    return torch.from_numpy(cifar_mini["train_images"][:B]).permute(0, 3, 1, 2).contiguous()  # (B, 3, 32, 32)


def test_every_op_has_a_dali_implementation():
    """OPS names each op's function in dali_ops; the affine ops (SPEC 3) are the one warp, filled with 128."""
    for op in OPS:
        impl = getattr(dali_ops, op.dali or "", None)
        assert callable(impl), f"{op.name}: dali_ops has no function {op.dali!r}"
        assert dali_ops.OP_FNS[op.name] is impl
        assert (impl is dali_ops.warp) == op.geometric, op.name
    assert [op.name for op in OPS if op.geometric] == ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"]
    assert dali_ops.GEOMETRIC_FILL == 128 and dali_ops.CUTOUT_FILL == (125, 122, 113)


@pytest.mark.parametrize("spec", [op for op in OPS if op.name != "Cutout"], ids=lambda s: s.name)
def test_op_matches_pillow_and_torch(batch, spec):
    mags = _magnitudes(spec, B, seed=len(spec.name))
    got = dali_apply_op(batch, spec.name, torch.from_numpy(mags))
    assert got.dtype == torch.uint8 and got.shape == batch.shape
    hwc = batch.permute(0, 2, 3, 1).numpy()
    pil = torch.from_numpy(np.stack([pil_op(hwc[i], spec.name, float(mags[i])) for i in range(B)])).permute(0, 3, 1, 2)
    ref = apply_op(batch, spec.name, torch.from_numpy(mags))
    allowed = 1e-3 if spec.name == "Rotate" else 0.0  # fraction of pixels; see module docstring
    for other, what in ((pil, "Pillow"), (ref, "hba_fast.augment.ops")):
        frac = (got != other).float().mean().item()
        assert frac <= allowed, f"{spec.name}: {frac:.4%} of values differ from {what}"
    assert not torch.equal(got, batch) or not spec.has_magnitude  # the op really did something


def test_luts_on_flat_and_few_level_images():
    """AutoContrast and Equalize where Pillow takes its identity branches (one level, hi == lo, step == 0)."""
    rng = np.random.default_rng(1)
    flat = np.full((4, 8, 8, 3), 77, np.uint8)
    flat[1] = rng.choice([10, 200], size=(8, 8, 3)).astype(np.uint8)  # two levels
    flat[2, :, :, 0] = 0  # one channel flat, the others at 77
    flat[3] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    flat[3, :4] = 255  # a big top bin: step = #{< max} // 255 is 0 -> identity
    x = torch.from_numpy(flat).permute(0, 3, 1, 2).contiguous()
    for name in ("AutoContrast", "Equalize"):
        got = dali_apply_op(x, name, torch.zeros(4)).permute(0, 2, 3, 1).numpy()
        want = np.stack([pil_op(img, name, 0.0) for img in flat])
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_cutout_is_a_clipped_square(batch):
    mags = np.linspace(0.0, 0.2, B).astype(np.float32)
    got = dali_apply_op(batch, "Cutout", torch.from_numpy(mags)).numpy()
    fill = np.array(OPS[OP_INDEX["Cutout"]].fill, np.uint8)[:, None, None]
    for i in range(B):
        side = round(float(mags[i]) * 32)
        filled = (got[i] == fill).all(axis=0)  # (H, W)
        changed = (got[i] != batch[i].numpy()).any(axis=0)
        assert not (changed & ~filled).any(), "pixels outside the square changed"
        if side == 0:
            assert not changed.any()
            continue
        rows, cols = np.nonzero(filled & ~(batch[i].numpy() == fill).all(axis=0) | changed)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert filled[r0:r1, c0:c1].all(), "the filled region is not a solid rectangle"
        assert (side + 1) // 2 <= r1 - r0 <= side and (side + 1) // 2 <= c1 - c0 <= side


def test_rounded_magnitudes_tie_to_even_as_torch():
    """Posterize's round(m) and Cutout's round(m * side) are torch.round (ties to even) on both backends."""
    x = torch.randint(0, 256, (6, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    m = torch.tensor([0.5, 1.5, 2.5, 3.5, 0.49999997, 7.5])  # ties, and the float32 just below 0.5
    assert torch.equal(dali_apply_op(x, "Posterize", m), apply_op(x, "Posterize", m))
    zeros = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    filled = (dali_apply_op(zeros, "Cutout", torch.full((8,), 2.5 / 32)) != 0).any(1).flatten(1).sum(1)
    assert filled.max() == 4  # side round(2.5) = 2 (a 3x3 square would fill 9 pixels inside the image)


@pytest.mark.gpu
@pytest.mark.parametrize("name", [op.name for op in OPS])
def test_gpu_ops_match_cpu(batch, name):
    spec = OPS[OP_INDEX[name]]
    mags = torch.from_numpy(_magnitudes(spec, B, seed=1))
    cpu = dali_apply_op(batch, name, mags, device="cpu")
    gpu = dali_apply_op(batch.cuda(), name, mags, device="gpu").cpu()
    if name == "Cutout":
        assert gpu.shape == cpu.shape
    else:
        assert (gpu != cpu).float().mean().item() <= (1e-3 if name == "Rotate" else 0.0)


# ---------------------------------------------------------------- the policy draw


def pba_draw_ref(probs, mags, rng: random.Random):
    """PBA's loop, one image: list of (slot, signed magnitude)."""
    k = rng.choices([0, 1, 2], weights=[0.2, 0.3, 0.5])[0]
    order = list(range(30))
    rng.shuffle(order)
    out = []
    for slot in order:
        if len(out) >= k:
            break
        if rng.random() < probs[slot]:
            sign = -1.0 if OPS[slot % 15].signed and rng.random() < 0.5 else 1.0
            out.append((slot, sign * mags[slot]))
    return out, k


def test_draw_policy_statistics():
    """The draw the DALI pipeline feeds itself, against a plain-Python transcription of PBA's loop."""
    n = 20000
    probs = np.linspace(0.05, 0.95, 30).astype(np.float32)
    mags = np.linspace(0.1, 3.0, 30).astype(np.float32)
    draw = draw_policy(np.tile(probs, (n, 1)), np.tile(mags, (n, 1)), 0)
    rng = random.Random(0)
    ref = [pba_draw_ref(probs, mags, rng) for _ in range(n)]
    ref_counts = np.bincount([len(r) for r, _ in ref], minlength=3) / n
    counts = np.bincount((draw["slots"] >= 0).sum(1), minlength=3) / n
    assert np.abs(counts - ref_counts).max() < 0.02, (counts, ref_counts)
    assert np.abs(np.bincount(draw["k"], minlength=3) / n - [0.2, 0.3, 0.5]).max() < 0.015
    rate = np.array([(draw["slots"] == j).any(1).mean() for j in range(30)])
    ref_rate = np.array([np.mean([any(s == j for s, _ in r) for r, _ in ref]) for j in range(30)])
    assert np.abs(rate - ref_rate).max() < 0.02, np.abs(rate - ref_rate).max()
    assert (rate[1:] > rate[:-1] - 0.02).all()  # more probable slots are applied more often
    valid = draw["slots"] >= 0
    assert np.array_equal(draw["ops"][valid], draw["slots"][valid] % 15)
    assert (draw["ops"][~valid] == -1).all() and not valid[:, 1][~valid[:, 0]].any()  # filled in order
    with_mag = valid & np.isin(draw["ops"], [k for k, op in enumerate(OPS) if op.has_magnitude])
    np.testing.assert_allclose(np.abs(draw["mags"][with_mag]), mags[draw["slots"][with_mag]], rtol=1e-6)
    assert (draw["mags"][valid & ~with_mag] == 0).all()  # AutoContrast, Invert, Equalize carry no magnitude
    signed = valid & (draw["ops"] < 5)
    assert abs((draw["mags"][signed] < 0).mean() - 0.5) < 0.02
    assert (draw["mags"][with_mag & (draw["ops"] >= 5)] > 0).all()


# ---------------------------------------------------------------- DaliPipeline


class RecordingSampler:
    """Fixed probs/mags; lam_i = random, recorded in the order the pipeline asked for them."""

    def __init__(self, probs: float = 0.5, seed: int = 0):
        self.probs, self.g, self.lams = probs, torch.Generator().manual_seed(seed), []

    def sample(self, batch_size, epoch, device):
        lam = torch.randn(batch_size, 54, generator=self.g)
        self.lams.append(lam)
        probs = torch.full((batch_size, 30), self.probs)
        mags = torch.tensor([OPS[j % 15].lo + 0.7 * (OPS[j % 15].hi - OPS[j % 15].lo) for j in range(30)])
        return PolicySample(probs, mags.expand(batch_size, 30), lam)

    def state_dict(self):  # the pipelines checkpoint their sampler
        return {"generator": self.g.get_state()}

    def load_state_dict(self, state):
        self.g.set_state(state["generator"])


def _image_set(images_hwc, labels):
    return pytypes.SimpleNamespace(images=torch.from_numpy(images_hwc).permute(0, 3, 1, 2).contiguous(),
                                   labels=torch.as_tensor(labels, dtype=torch.int64), files=None)


@pytest.fixture(scope="module")
def splits(cifar_mini):
    n = 256
    return pytypes.SimpleNamespace(  # labels are image ids, so batches say which images they hold
        train=_image_set(cifar_mini["train_images"][:n], np.arange(n)),
        val=_image_set(cifar_mini["val_images"][:100], np.arange(100)),
        test=_image_set(cifar_mini["test_images"][:70], np.arange(70)),
        num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), class_names=None)


def data_cfg(**kw):
    from hba_fast.config import DataConfig

    base = {"dataset": "cifar10", "path": "unused", "image_size": 32, "recipe": "auto", "backend": "dali",
            "batch_size": 32, "num_threads": 2, "on_corrupt": "skip", "num_val": 100, "num_train": 256}
    return DataConfig(**{**base, **kw})


def test_pipeline_applies_the_draw_it_reports(splits):
    """recipe none: each output = standardise(ops applied in order), on shard 1 of 2 of the epoch's order."""
    sampler = RecordingSampler(probs=0.6)
    pipe = DaliPipeline(data_cfg(recipe="none"), splits, sampler, torch.device("cpu"), shard=(1, 2))
    assert pipe.steps_per_epoch == 4
    outs = pipe._make_train_pipe(epoch=3, start=0).run()
    images, labels = outs[0].as_array(), outs[1].as_array().reshape(-1)
    ops, mags = outs[3].as_array(), outs[4].as_array()
    order = epoch_order(256, 0, 3, rank=1, world=2)
    np.testing.assert_array_equal(labels, order[:32])
    probs, pol_mags = (t.numpy() for t in sampler.sample(32, 3, "cpu")[:2])
    want = draw_policy(probs, pol_mags, (0, 1, 3, 0))  # seeded (seed, rank, epoch, step)
    np.testing.assert_array_equal(ops, want["ops"])  # the DALI path's draw is draw_policy's, tested above
    np.testing.assert_array_equal(mags, want["mags"])
    raw = splits.train.images[torch.from_numpy(labels)]
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(splits.std).view(1, 3, 1, 1) * 255
    checked = 0
    for i in range(32):
        if (ops[i] == 14).any():
            continue  # Cutout's centre is DALI's own draw
        x = raw[i:i + 1]
        for pos in range(2):
            if ops[i, pos] >= 0:
                x = apply_op(x, OPS[ops[i, pos]].name, torch.tensor([mags[i, pos]]))
        want = ((x.float() - mean) / std)[0].numpy()
        bad = ~np.isclose(images[i], want, atol=1e-4)
        assert bad.mean() <= 2e-3, f"sample {i}, ops {ops[i]}: {bad.mean():.3%} differ"
        checked += 1
    assert checked >= 20 and (ops >= 0).sum() >= 20
    assert np.array_equal(outs[2].as_array(), sampler.lams[0].numpy())


@pytest.fixture(scope="module")
def cifar_pipe(splits):
    sampler = RecordingSampler()
    return DaliPipeline(data_cfg(), splits, sampler, torch.device("cpu")), sampler


def test_cifar_batches_and_lambda(cifar_pipe, splits):
    pipe, sampler = cifar_pipe
    assert pipe.recipe == "cifar" and pipe.steps_per_epoch == 8
    batches = list(pipe.train_epoch(0))
    assert len(batches) == 8
    for k, b in enumerate(batches):
        assert b.images.shape == (32, 3, 32, 32) and b.images.dtype == torch.float32
        assert b.labels.dtype == torch.int64 and b.lam.dtype == torch.float32
        assert torch.equal(b.lam, sampler.lams[k])  # the exact lambda_i, despite prefetching
    seen = torch.cat([b.labels for b in batches])
    assert sorted(seen.tolist()) == list(range(256))  # one epoch = one permutation
    zeros = torch.stack([(b.images == 0).all(1).sum((1, 2)) for b in batches]).float()
    assert zeros.mean() > 16 * 16 * 0.6  # Cutout 16 (clipped at the borders) in standardised space
    assert abs(float(torch.cat([b.images for b in batches]).mean())) < 0.5  # standardised
    assert pipe.state_dict()["epoch"] == 1


def test_eval_val_and_sharding(cifar_pipe, splits):
    pipe, _ = cifar_pipe
    test = list(pipe.eval_batches("test"))
    assert [len(b.labels) for b in test] == [32, 32, 6]
    assert torch.cat([b.labels for b in test]).tolist() == list(range(70))
    x = splits.test.images[:32].float()
    want = (x - torch.tensor(splits.mean).view(1, 3, 1, 1) * 255) / (torch.tensor(splits.std).view(1, 3, 1, 1) * 255)
    torch.testing.assert_close(test[0].images, want, atol=1e-4, rtol=1e-4)
    assert test[0].lam is None
    shards = [DaliPipeline(data_cfg(), splits, None, torch.device("cpu"), shard=(r, 2)) for r in range(2)]
    ids = [torch.cat([b.labels for b in s.eval_batches("val")]).tolist() for s in shards]
    assert sorted(ids[0] + ids[1]) == list(range(100)) and not set(ids[0]) & set(ids[1])
    orders = [epoch_order(256, 0, 5, r, 2) for r in range(2)]
    assert sorted(np.concatenate(orders).tolist()) == list(range(256))
    vals = [pipe.val_batch().labels for _ in range(4)]  # 3 batches per pass: the 4th starts a reshuffled pass
    first_pass = torch.cat(vals[:3]).tolist()
    assert len(set(first_pass)) == len(first_pass)  # no image twice within a pass


def test_resume_mid_epoch(splits):
    """Same data order and policy draws after load_state_dict (in-memory data)."""
    cfg = data_cfg(recipe="svhn")
    full = DaliPipeline(cfg, splits, RecordingSampler(), torch.device("cpu"))
    it = full.train_epoch(2)
    first = [next(it) for _ in range(3)]
    state = full.state_dict()
    fourth = next(it)
    resumed = DaliPipeline(cfg, splits, RecordingSampler(), torch.device("cpu"))
    resumed.load_state_dict(state)
    again = next(resumed.train_epoch(2))
    assert state["step"] == 3 and len(first) == 3
    assert torch.equal(again.labels, fourth.labels)
    draws = [p._train_pipe.run() for p in (full, resumed)]  # the next step's draw, straight from the pipelines
    assert np.array_equal(draws[0][3].as_array(), draws[1][3].as_array())
    assert np.array_equal(draws[0][4].as_array(), draws[1][4].as_array())


def test_stream_continues_across_epochs_under_islice(splits):
    """The trainer takes steps_per_epoch batches with islice: the next epoch continues the stream (no rebuild)."""
    import itertools

    pipe = DaliPipeline(data_cfg(recipe="none"), splits, None, torch.device("cpu"))
    first = list(itertools.islice(pipe.train_epoch(0), pipe.steps_per_epoch))
    stream = pipe._train_pipe
    assert len(first) == pipe.steps_per_epoch and pipe.state_dict()["epoch"] == 1 and pipe.state_dict()["step"] == 0
    second = list(itertools.islice(pipe.train_epoch(1), pipe.steps_per_epoch))
    assert pipe._train_pipe is stream
    assert torch.cat([b.labels for b in second]).tolist() == epoch_order(256, 0, 1, 0, 1).tolist()


def test_schedule_sampler_batches_carry_no_lam(splits):
    """A ScheduleSampler has no lambda_i: batches say lam=None (Batch contract), as on the torch path."""
    from hba_fast.schedule.file import Schedule
    from hba_fast.schedule.sampler import ScheduleSampler

    sampler = ScheduleSampler(Schedule(torch.full((2, 30), 0.5), torch.zeros(2, 30)), epochs=2)
    pipe = DaliPipeline(data_cfg(recipe="none"), splits, sampler, torch.device("cpu"))
    b = next(pipe.train_epoch(0))
    assert b.lam is None and b.images.shape == (32, 3, 32, 32)


def test_bad_data_raises_the_torch_paths_errors(splits):
    """The DALI path raises the hba_fast.errors types the torch path raises for the same data, with the fix."""
    with pytest.raises(DataError, match="fewer than one batch.*lower data.batch_size"):
        DaliPipeline(data_cfg(batch_size=512), splits, None, torch.device("cpu"))
    empty = pytypes.SimpleNamespace(images=splits.val.images[:0], labels=splits.val.labels[:0], files=None)
    no_val = pytypes.SimpleNamespace(**{**vars(splits), "val": empty})
    with pytest.raises(DataError, match="validation split is empty.*data.num_val > 0"):
        DaliPipeline(data_cfg(), no_val, None, torch.device("cpu")).val_batch()
    with pytest.raises(DataError, match="data.on_corrupt"):
        scan_jpegs([], np.zeros(0, np.int64), "ignore")


@pytest.mark.gpu
def test_gpu_pipeline_batches(splits):
    sampler = RecordingSampler()
    pipe = DaliPipeline(data_cfg(), splits, sampler, torch.device("cuda"))
    batches = list(pipe.train_epoch(0))
    assert len(batches) == pipe.steps_per_epoch
    for k, b in enumerate(batches):
        assert b.images.is_cuda and b.images.shape == (32, 3, 32, 32) and b.images.dtype == torch.float32
        assert b.labels.is_cuda and torch.equal(b.lam.cpu(), sampler.lams[k])
    test = torch.cat([b.labels for b in pipe.eval_batches("test")])
    assert test.tolist() == list(range(70))


# ---------------------------------------------------------------- JPEG class folders


@pytest.fixture(scope="module")
def jpeg_tree(tmp_path_factory):
    from hba_fast.data.shapes10 import class_dir_names, write_jpeg_tree

    root = tmp_path_factory.mktemp("jpegs")
    write_jpeg_tree(root, n_per_class=4, size=(48, 40), seed=0, quality=90, val_per_class=2)
    dirs = class_dir_names()
    bad = [root / "train" / dirs[0] / "garbage.jpg", root / "train" / dirs[1] / "truncated.jpg"]
    bad[0].write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    good = min((root / "train" / dirs[1]).glob("*.jpg")).read_bytes()
    bad[1].write_bytes(good[: len(good) // 2])

    def image_set(split):
        files, labels = [], []
        for k, d in enumerate(dirs):
            for f in sorted((root / split / d).glob("*.jpg")):
                files.append(str(f))
                labels.append(k)
        return pytypes.SimpleNamespace(images=None, labels=torch.tensor(labels), files=files)

    splits = pytypes.SimpleNamespace(train=image_set("train"), val=image_set("val"), test=image_set("val"),
                                     num_classes=10, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                     class_names=dirs)
    return splits, [str(b) for b in bad]


def test_jpeg_folder_corrupt_error(jpeg_tree):
    splits, _ = jpeg_tree
    with pytest.raises(CorruptImageError, match="garbage.jpg|truncated.jpg") as err:
        DaliPipeline(data_cfg(dataset="folder", on_corrupt="error", batch_size=8), splits, None, torch.device("cpu"))
    assert "on_corrupt=skip" in str(err.value)


def test_jpeg_folder_imagenet_recipe(jpeg_tree):
    splits, _ = jpeg_tree
    sampler = RecordingSampler(probs=0.5)
    pipe = DaliPipeline(data_cfg(dataset="folder", batch_size=8, image_size=32), splits, sampler,
                        torch.device("cpu"), shard=(0, 2))
    assert pipe.num_corrupt == 2 and pipe.recipe == "imagenet"
    assert pipe.steps_per_epoch == (40 // 2) // 8
    batches = list(pipe.train_epoch(0))
    assert len(batches) == 2
    for k, b in enumerate(batches):
        assert b.images.shape == (8, 3, 32, 32) and b.images.dtype == torch.float32
        assert b.labels.min() >= 0 and b.labels.max() <= 9
        assert torch.equal(b.lam, sampler.lams[k])
    evals = list(pipe.eval_batches("val"))
    assert sum(len(b.labels) for b in evals) == 10  # 20 val files, shard 0 of 2
    assert evals[0].images.shape[1:] == (3, 32, 32)
    assert pipe.val_batch().images.shape == (8, 3, 32, 32)
